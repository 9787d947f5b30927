"""The ``spaktok-ledger`` command line: output, JSON, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spaktok_ledger import AccountKind, AccountSpec, EntryDraft, Ledger, Posting, head_revision
from spaktok_ledger.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Ledger(url) as ledger:
        ledger.migrate()
        ledger.open_accounts(
            [
                AccountSpec("user:1:wallet", AccountKind.LIABILITY),
                AccountSpec("platform:stripe_clearing", AccountKind.ASSET),
            ]
        )
        for i in range(3):
            ledger.post(
                EntryDraft(
                    "purchase",
                    (
                        Posting.debit("platform:stripe_clearing", 1234),
                        Posting.credit("user:1:wallet", 1234),
                    ),
                    f"p{i}",
                    description=f"pack {i}",
                )
            )
    return url


def test_migrate_creates_schema(tmp_path) -> None:
    """migrate (alias init) creates the schema and reports the revision."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code, out, _ = run("--db", url, "init")
    assert code == 0 and f"revision {head_revision()}" in out
    code, out, _ = run("--db", url, "--json", "migrate")
    assert json.loads(out)["revision"] == head_revision()


def test_balance_human_and_json(db: str) -> None:
    """balance prints formatted money, or exact minor units with --json."""
    code, out, _ = run("--db", db, "balance", "user:1:wallet")
    assert code == 0 and "$37.02" in out
    code, out, _ = run("--db", db, "--json", "balance", "user:1:wallet")
    assert json.loads(out)["available_minor"] == 3702


def test_history_pages(db: str) -> None:
    """history shows newest first and hands out a cursor for the next page."""
    code, out, _ = run("--db", db, "history", "user:1:wallet", "--limit", "2")
    assert code == 0 and out.index("pack 2") < out.index("pack 1")
    cursor = out.split("--cursor ")[1].strip()
    code, out, _ = run("--db", db, "--json", "history", "user:1:wallet", "--cursor", cursor)
    assert [i["description"] for i in json.loads(out)["items"]] == ["pack 0"]


def test_trial_balance_and_verify(db: str) -> None:
    """trial-balance balances and verify finds nothing wrong: exit code 0."""
    code, out, _ = run("--db", db, "trial-balance")
    assert code == 0 and "balanced" in out
    code, out, err = run("--db", db, "verify")
    assert code == 0 and "ok" in out
    assert "verify" in err  # progress on stderr


def test_verify_problem_exit_code(db: str) -> None:
    """verify exits 1 and lists problems when a balance row was tampered with."""
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE spaktok_balances SET posted = posted + 1")
    engine.dispose()
    code, out, _ = run("--db", db, "--json", "-q", "verify")
    assert code == 1
    assert {p["check"] for p in json.loads(out)["problems"]} >= {"balances"}


def test_errors_are_one_line_with_stable_codes(db: str, tmp_path) -> None:
    """Unknown accounts exit 3, a missing schema 4, bad arguments 2; no tracebacks."""
    code, _, err = run("--db", db, "balance", "user:404:wallet")
    assert code == 3 and err.count("\n") == 1 and err.startswith("error:")
    code, _, err = run("--db", f"sqlite:///{tmp_path / 'empty.db'}", "balance", "user:1:wallet")
    assert code == 4 and "migrate" in err
    code, _, _ = run("--db", db, "balance", "not a code")
    assert code == 2
    code, _, _ = run("no-such-command")
    assert code == 2


def test_console_script_runs(tmp_path) -> None:
    """python -m spaktok_ledger is the same CLI, as a real process."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "spaktok_ledger", "--db", url, "migrate"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout


def test_demo_runs_and_balances(tmp_path) -> None:
    """The demo runs twice on the same file (it starts fresh) and ends balanced."""
    for _ in range(2):
        code, out, _ = run("demo", "--file", str(tmp_path / "demo.db"))
        assert code == 0, out
        assert "balanced: debits equal credits" in out
        assert "payout.paid -> paid" in out
        assert "webhook: clawed_back" in out
        assert "verify: ok" in out


def test_mature_earnings(tmp_path) -> None:
    """mature-earnings moves shares past their hold period and reports them."""
    from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy
    from spaktok_ledger.testing import FakeClock

    url = f"sqlite:///{tmp_path / 'm.db'}"
    clock = FakeClock(datetime(2020, 1, 1, tzinfo=UTC))
    with Ledger(url, clock=clock) as ledger:
        economy = GiftEconomy(ledger, GiftCatalogue([Gift("rose", 10)]), hold_days=1, clock=clock)
        economy.setup()
        economy.register_streamer("bob")
        economy.credit_purchase("al", coins=100, price_usd_minor=100, idempotency_key="p")
        economy.send_gift("al", "bob", "rose", 2, idempotency_key="g")
    code, out, _ = run("--db", url, "--json", "mature-earnings")
    assert code == 0
    assert json.loads(out)["matured"][0]["amount_minor"] == 8
    code, out, _ = run("--db", url, "mature-earnings")
    assert "nothing to mature" in out


ECB_SAMPLE = str(Path(__file__).parent / "fixtures" / "fx" / "ecb-eurofxref-daily.xml")


def test_quote_preview_and_save(tmp_path) -> None:
    """quote prices a pack for a locale from a saved rates file, and --save stores it."""
    code, out, _ = run("quote", "fan", "--locale", "ja_JP", "--rates-file", ECB_SAMPLE)
    assert code == 0
    assert "￥3,211" in out
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run("--db", url, "migrate")
    code, out, _ = run("--db", url, "--json", "quote", "starter", "--currency", "EUR",
                       "--rates-file", ECB_SAMPLE, "--save")
    assert code == 0
    quote_id = json.loads(out)["id"]
    with Ledger(url) as ledger:
        from spaktok_ledger import QuoteStore

        assert QuoteStore(ledger).get(quote_id).currency == "EUR"
    code, _, err = run("quote", "nope", "--rates-file", ECB_SAMPLE)
    assert code == 3
    assert "nope" in err


def test_reconcile_payouts(tmp_path, monkeypatch) -> None:
    """reconcile-payouts books a transfer whose response was lost; exit 0 when all resolved."""
    from spaktok_ledger import (
        Gift,
        GiftCatalogue,
        GiftEconomy,
        PaymentProviderError,
        Payouts,
        StripeGateway,
    )
    from spaktok_ledger.testing import FakeStripe, stripe_client

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with FakeStripe() as fake, Ledger(url) as ledger:
        economy = GiftEconomy(ledger, GiftCatalogue([Gift("rocket", 5000)]))
        economy.setup()
        economy.register_streamer("bob")
        economy.credit_purchase("al", coins=50_000, price_usd_minor=50_000, idempotency_key="p")
        economy.send_gift("al", "bob", "rocket", 10, idempotency_key="g")
        payouts = Payouts(economy, StripeGateway(stripe_client(fake)), connect_webhook_secret="x")
        payouts.link_account("bob", fake.create_account(onboarded=True)["id"])
        fake.drop_next("POST", "/v1/transfers")
        with pytest.raises(PaymentProviderError):
            payouts.request_payout("bob", 6000, idempotency_key="p1")

        code, _, err = run("--db", url, "reconcile-payouts")
        assert code == 2
        assert "STRIPE_SECRET_KEY" in err
        monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli")
        monkeypatch.setenv("STRIPE_API_BASE", fake.url)
        code, out, _ = run("--db", url, "--json", "reconcile-payouts")
        assert code == 0
        (item,) = json.loads(out)["discrepancies"]
        assert (item["problem"], item["resolved"]) == ("transfer_not_recorded", True)
        code, out, _ = run("--db", url, "reconcile-payouts")
        assert "every payout agrees" in out
