"""``spaktok-ledger worker`` and ``spaktok-ledger relay`` (issue 12)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from spaktok_ledger import (
    CoinPack,
    GiftEconomy,
    Ledger,
    PackCatalogue,
    Payments,
    Pricing,
    StripeGateway,
)
from spaktok_ledger.cli import main
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client
from tests.test_cli import run

SECRET = "whsec_cli_worker"


def test_worker_once_applies_queued_events(tmp_path, monkeypatch) -> None:
    """``worker --once`` applies what was acknowledged fast, and says what it did."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with FakeStripe() as fake:
        ledger = Ledger(url)
        economy = GiftEconomy(ledger)
        economy.setup()
        packs = PackCatalogue([CoinPack("starter", 499, 500)])
        pricing = Pricing(ledger, packs, StaticRateProvider({"EUR": Decimal("0.93")}))
        payments = Payments(
            economy, pricing, StripeGateway(stripe_client(fake)), webhook_secret=SECRET
        )
        quote = pricing.quote("starter", currency="USD", user_id="alice")
        checkout = payments.create_checkout(
            "alice", quote.id, idempotency_key="k",
            success_url="https://a.example/ok", cancel_url="https://a.example/no",
        )
        event = fake.complete_checkout(checkout.checkout_session_id)
        assert payments.accept_webhook(*signed_event(event, SECRET)).outcome == "queued"
        monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli")
        monkeypatch.setenv("STRIPE_API_BASE", fake.url)
        code, out, err = run("--db", url, "--json", "worker", "--once", "--sweep", "off",
                             "--reconcile-payouts", "off", "--threads", "2")
        assert code == 0, err
        report = json.loads(out)
        assert report["outcomes"] == {"credited": 1}
        assert set(report["jobs"]) == {"expire_holds", "mature_earnings", "retry_refunds"}
        assert economy.wallet("alice").coins == 500
        code, out, _ = run("--db", url, "worker", "--once", "--sweep", "off")
        assert (code, out.splitlines()[0]) == (0, "0 event(s) handled")
        ledger.close()


def test_worker_options_are_checked(tmp_path, capsys) -> None:
    """A schedule under a second, or no threads, is a usage error (exit 2)."""
    code, _, err = run("--db", f"sqlite:///{tmp_path / 'x.db'}", "worker", "--sweep", "0.1")
    assert code == 2
    code, _, err = run("--db", f"sqlite:///{tmp_path / 'x.db'}", "worker", "--threads", "0")
    assert code == 2
    assert "threads must be from 1 to 16" in capsys.readouterr().err


def test_relay_once_publishes_to_redis(tmp_path) -> None:
    """``relay --once --redis URL`` publishes every pending event and acknowledges it."""
    from tests.service.test_relay import REDIS_URL, _need

    _need(6379, "Redis")
    import redis

    from tests.service.conftest import GIFTS

    url = f"sqlite:///{tmp_path / 'r.db'}"
    ledger = Ledger(url)
    economy = GiftEconomy(ledger, GIFTS)
    economy.setup()
    economy.register_streamer("bob")
    economy.open_user("alice")
    economy.credit_purchase("alice", coins=100, price_usd_minor=100, idempotency_key="c")
    economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g")
    pending = len(economy.outbox.pending())
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        code, out, err = run("--db", url, "--json", "-q", "relay", "--once", "--redis", REDIS_URL,
                             "--stream-prefix", prefix)
        assert code == 0, err
        assert json.loads(out) == {"published": pending}
        assert economy.outbox.pending() == []
        assert client.xlen(f"{prefix}gift.sent") == 1
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
        ledger.close()


def test_relay_needs_a_broker(tmp_path) -> None:
    """Without --redis or --rabbitmq (or their variables) the relay refuses to start."""
    url = f"sqlite:///{tmp_path / 'n.db'}"
    Ledger(url).close()
    assert main(["--db", url, "migrate"], out=__import__("io").StringIO()) == 0
    code, _, err = run("--db", url, "relay", "--once")
    assert code == 2 and "--redis" in err


@pytest.mark.parametrize("command", ["worker", "relay"])
def test_commands_are_listed(command: str) -> None:
    """Both commands are in the CLI's help."""
    code, _, _ = run(command, "--help")
    assert code == 0


def test_the_long_running_loops_freeze_start_up_objects() -> None:
    """worker and relay run their loops with start-up objects out of the garbage
    collector's full passes, and give them back when the loop ends."""
    import gc

    from spaktok_ledger._cli_worker import start_up_frozen

    before = gc.get_freeze_count()
    with start_up_frozen():
        assert gc.get_freeze_count() > before
    assert gc.get_freeze_count() == 0
