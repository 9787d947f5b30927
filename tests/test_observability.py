"""Structured log records and OpenTelemetry spans: webhook outcomes, retries, payout state
changes and refusals are visible, with their ids and without personal or secret data."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spaktok_ledger import (
    CoinPack,
    GiftEconomy,
    InsufficientFunds,
    LedgerBusy,
    PackCatalogue,
    Payments,
    Payouts,
    Pricing,
    Retry,
    StripeGateway,
    WebhookVerificationError,
    _log,
)
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client
from tests.service.conftest import GIFTS, fund

SECRET = "whsec_obs_platform"
CONNECT_SECRET = "whsec_obs_connect"
EMAIL = "customer@example.com"
URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider():
    """One SDK tracer provider for the process (OpenTelemetry allows one), exporting to memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    return provider


@pytest.fixture
def spans():
    EXPORTER.clear()
    return EXPORTER


@pytest.fixture
def shop(ledger, clock):
    with FakeStripe(clock=clock) as fake:
        fake.top_up(1_000_000)
        economy = GiftEconomy(ledger, GIFTS, hold_days=0, clock=clock)
        economy.setup()
        economy.register_streamer("bob")
        pricing = Pricing(
            ledger,
            PackCatalogue([CoinPack("starter", 499, 500)]),
            StaticRateProvider({"EUR": Decimal("0.9")}, clock=clock),
            clock=clock,
        )
        gateway = StripeGateway(stripe_client(fake, timeout=5))
        payments = Payments(economy, pricing, gateway, webhook_secret=SECRET, clock=clock)
        payouts = Payouts(economy, gateway, connect_webhook_secret=CONNECT_SECRET, clock=clock)
        yield fake, economy, pricing, payments, payouts


def _records(caplog, name: str, operation: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == name and getattr(r, "operation", None) == operation
    ]


def _no_secrets(caplog) -> None:
    for record in caplog.records:
        if not record.name.startswith("spaktok_ledger"):
            continue
        text = record.getMessage() + repr(vars(record))
        for secret in (SECRET, CONNECT_SECRET, EMAIL, "sk_test"):
            assert secret not in text, (record.name, secret)


def test_a_webhook_delivery_logs_its_event_id_and_outcome(shop, caplog, spans) -> None:
    """checkout.session.completed: one INFO record on spaktok_ledger.payments with the event
    id, type, outcome and purchase; the redelivery is logged as a duplicate; a span too."""
    fake, economy, pricing, payments, _ = shop
    caplog.set_level(logging.DEBUG, logger="spaktok_ledger")
    quote = pricing.quote("starter", currency="USD", user_id="alice")
    result = payments.create_checkout("alice", quote.id, idempotency_key="c1", **URLS)
    event = fake.complete_checkout(result.checkout_session_id, customer_email=EMAIL)
    payments.handle_webhook(*signed_event(event, SECRET))
    payments.handle_webhook(*signed_event(event, SECRET))
    first, again = _records(caplog, "spaktok_ledger.payments", "webhook_event")
    assert first.levelno == logging.INFO
    assert (first.event_id, first.event_type, first.outcome) == (
        event["id"],
        "checkout.session.completed",
        "credited",
    )
    assert first.subject_id == result.purchase_id and first.duration_ms >= 0
    assert (again.outcome, again.duplicate) == ("duplicate", True)
    handled = [s for s in spans.get_finished_spans() if s.name == "spaktok_ledger.webhook_event"]
    assert handled[0].attributes["spaktok.event_id"] == event["id"]
    assert handled[0].attributes["spaktok.outcome"] == "credited"
    calls = [s for s in spans.get_finished_spans() if s.name == "spaktok_ledger.stripe_call"]
    assert calls and all("spaktok.call" in s.attributes for s in calls)
    posts = [s for s in spans.get_finished_spans() if s.name == "spaktok_ledger.post"]
    assert any(s.attributes.get("spaktok.entry_id") for s in posts)
    _no_secrets(caplog)


def test_a_forged_webhook_is_logged_as_a_refusal(shop, caplog, spans) -> None:
    """A bad signature: a WARNING naming the error type, an error span, nothing else."""
    fake, _, _, payments, _ = shop
    caplog.set_level(logging.INFO, logger="spaktok_ledger")
    body, header = signed_event({"id": "evt_forged", "type": "charge.refunded"}, "whsec_wrong")
    with pytest.raises(WebhookVerificationError):
        payments.handle_webhook(body, header)
    (record,) = _records(caplog, "spaktok_ledger.payments", "webhook")
    assert record.levelno == logging.WARNING
    assert (record.outcome, record.error) == ("refused", "WebhookVerificationError")
    (span,) = [s for s in spans.get_finished_spans() if s.name == "spaktok_ledger.webhook"]
    assert span.status.status_code == trace.StatusCode.ERROR
    _no_secrets(caplog)


def test_payout_state_changes_are_logged_with_the_payout_id(shop, caplog) -> None:
    """A payout request and each state change it goes through carry the payout id."""
    fake, economy, _, _, payouts = shop
    economy.open_user("alice")
    fund(economy, "alice", 100_000)
    economy.send_gift("alice", "bob", "rocket", 3, idempotency_key="g")
    account = fake.create_account(onboarded=True)["id"]
    payouts.link_account("bob", account)
    caplog.set_level(logging.INFO, logger="spaktok_ledger")
    record = payouts.request_payout("bob", 6000, idempotency_key="req-1")
    (requested,) = _records(caplog, "spaktok_ledger.payouts", "request_payout")
    assert (requested.payout_id, requested.status) == (record.payout_id, "transferred")
    states = _records(caplog, "spaktok_ledger.payouts", "payout_state")
    assert states and {r.payout_id for r in states} == {record.payout_id}
    assert "transferred" in {r.status for r in states}
    _no_secrets(caplog)


def test_refusals_are_logged_with_their_type(ledger, caplog) -> None:
    """A gift the wallet cannot pay: INFO on spaktok_ledger.gifts, outcome refused."""
    economy = GiftEconomy(ledger, GIFTS, hold_days=0)
    economy.setup()
    economy.register_streamer("bob")
    caplog.set_level(logging.INFO, logger="spaktok_ledger")
    fund(economy, "alice", 5)
    with pytest.raises(InsufficientFunds):
        economy.send_gift("alice", "bob", "rose", idempotency_key="g1")
    (record,) = _records(caplog, "spaktok_ledger.gifts", "send_gift")
    assert (record.levelno, record.outcome, record.error) == (
        logging.INFO,
        "refused",
        "InsufficientFunds",
    )


def test_retries_are_logged_and_giving_up_is_an_error(caplog) -> None:
    """Each retry after transient contention is a WARNING with its count; the last an ERROR."""
    caplog.set_level(logging.DEBUG, logger="spaktok_ledger")

    class Busy(Exception):
        sqlite_errorcode = 5

    def busy() -> None:
        raise sa.exc.OperationalError("UPDATE ...", {}, Busy("database is locked"))

    with pytest.raises(LedgerBusy):
        Retry(attempts=3, sleep=lambda _s: None).run(busy)
    records = _records(caplog, "spaktok_ledger.store", "retry")
    assert [(r.levelname, r.retries) for r in records] == [
        ("WARNING", 1),
        ("WARNING", 2),
        ("ERROR", 3),
    ]
    assert records[0].error == "Busy" and records[0].delay_ms >= 0


def test_without_opentelemetry_spans_are_a_no_op(monkeypatch, ledger) -> None:
    """With opentelemetry-api absent (simulated), calls run and log as before, no span."""
    monkeypatch.setattr(_log, "_tracers", [None])
    with _log.span("post", entry_id=1) as span:
        span.set_attributes({"spaktok.x": 1})
    economy = GiftEconomy(ledger, GIFTS, hold_days=0)
    economy.setup()
    fund(economy, "alice", 50)
    assert economy.wallet("alice").coins == 50


def test_the_library_installs_no_handlers() -> None:
    """Records go where the host's configuration sends them: no handler of our own."""
    for name in ("store", "gifts", "payments", "payouts", "stripe"):
        assert logging.getLogger(f"spaktok_ledger.{name}").handlers == []
    assert logging.getLogger("spaktok_ledger").handlers == []
