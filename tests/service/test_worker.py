"""Claims before Stripe calls, fast acknowledgement and the Worker, parked wake-ups (issue 12).

The real ``stripe`` SDK against FakeStripe, both backends.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    CoinPack,
    GiftEconomy,
    InvalidInput,
    Ledger,
    PackCatalogue,
    PaymentProviderError,
    Payments,
    Pricing,
    StripeGateway,
    WebhookVerificationError,
    Worker,
    WorkerSchedule,
)
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger._service._webhooks import acting_as, parked_backoff
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client
from tests.service.conftest import GIFTS

SECRET = "whsec_worker_platform"
CONNECT_SECRET = "whsec_worker_connect"
PACKS = PackCatalogue([CoinPack("starter", 499, 500, name="Starter")])
URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
QUIET = WorkerSchedule(
    expire_holds=None, mature_earnings=None, retry_refunds=None, reconcile_payouts=None, sweep=None
)


@pytest.fixture
def fake(clock):
    with FakeStripe(clock=clock) as fake:
        fake.top_up(1_000_000)
        yield fake


@pytest.fixture
def shop(ledger: Ledger, clock, fake: FakeStripe):
    economy = GiftEconomy(ledger, GIFTS, hold_days=0, clock=clock)
    economy.setup()
    pricing = Pricing(ledger, PACKS, StaticRateProvider({"EUR": Decimal("0.93")}, clock=clock), clock=clock)
    gateway = StripeGateway(stripe_client(fake, timeout=5))
    payouts = Payouts(economy, gateway, connect_webhook_secret=CONNECT_SECRET, clock=clock)
    payments = Payments(
        economy, pricing, gateway, webhook_secret=SECRET, clock=clock,
        transfer_events=payouts.handle_event,
    )
    return economy, payments, payouts


def paid_event(shop, fake, user="alice", key="k1"):
    economy, payments, _ = shop
    quote = payments.pricing.quote("starter", currency="USD", user_id=user)
    result = payments.create_checkout(user, quote.id, idempotency_key=key, **URLS)
    return result, fake.complete_checkout(result.checkout_session_id)


def inbox_row(payments: Payments, event_id: str):
    t = payments.ledger.tables.webhook_events
    return payments.ledger.read(
        lambda conn: conn.execute(sa.select(t).where(t.c.event_id == event_id)).first()
    )


def rows(payments: Payments):
    t = payments.ledger.tables.webhook_events
    return payments.ledger.read(lambda conn: list(conn.execute(sa.select(t))))


def stripe_gets(fake: FakeStripe) -> int:
    return sum(1 for r in fake.requests if r.method == "GET")


class TestClaims:
    def test_a_copy_during_a_claim_answers_at_once_without_stripe(self, shop, fake, clock) -> None:
        """While one delivery holds the claim, a copy answers in_progress and calls Stripe
        for nothing; once applied, copies are duplicates."""
        economy, payments, _ = shop
        _, event = paid_event(shop, fake)
        parsed = payments.gateway.parse_event(event)
        assert payments.inbox.claim(parsed, "platform", owner="other", now=clock()) == "claimed"
        before = len(fake.requests)
        body, header = signed_event(event, SECRET)
        copy = payments.handle_webhook(body, header)
        assert (copy.outcome, copy.duplicate) == ("in_progress", True)
        assert len(fake.requests) == before
        assert economy.wallet("alice").coins == 0
        # The claimant applies it (as the same owner), then copies are duplicates.
        with acting_as("other"):
            assert payments.handle_event(parsed).outcome == "credited"
        assert payments.handle_webhook(body, header).outcome == "duplicate"
        assert len([r for r in fake.requests if r.method == "GET"]) > 0
        assert economy.wallet("alice").coins == 500

    def test_a_crashed_claimants_lease_expires(self, shop, fake, clock) -> None:
        """A claim whose owner died blocks copies only until its lease ends; then the
        next delivery, or the worker, applies the stored event."""
        economy, payments, _ = shop
        _, event = paid_event(shop, fake)
        parsed = payments.gateway.parse_event(event)
        assert payments.inbox.claim(parsed, "platform", owner="dead", now=clock()) == "claimed"
        row = inbox_row(payments, event["id"])
        assert (row.status, row.lease_owner) == ("queued", "dead")
        assert row.payload["id"] == event["id"]  # stored durably before any Stripe call
        worker = Worker(payments, schedule=QUIET)
        assert worker.run_once().events == 0  # still leased
        clock.advance(timedelta(seconds=61))
        report = worker.run_once()
        assert (report.events, dict(report.outcomes)) == (1, {"credited": 1})
        assert economy.wallet("alice").coins == 500
        assert inbox_row(payments, event["id"]).status == "processed"

    def test_a_stripe_failure_gives_the_claim_back(self, shop, fake, clock) -> None:
        """A delivery that fails on Stripe releases its claim: Stripe's retry applies it."""
        economy, payments, _ = shop
        result, event = paid_event(shop, fake)
        fake.fail_next("GET", "/v1/checkout/sessions", status=500)
        body, header = signed_event(event, SECRET)
        with pytest.raises(PaymentProviderError):
            payments.handle_webhook(body, header)
        row = inbox_row(payments, event["id"])
        assert (row.status, row.lease_owner, row.lease_until) == ("queued", None, None)
        assert "PaymentProviderError" in row.last_error
        assert payments.handle_webhook(body, header).outcome == "credited"
        assert economy.wallet("alice").coins == 500

    def test_unhandled_types_leave_no_claim(self, shop, fake) -> None:
        """An event type the endpoint does not handle writes nothing, claimed or not."""
        _, payments, _ = shop
        event = {**paid_event(shop, fake)[1], "id": "evt_other", "type": "customer.created"}
        assert payments.handle_event(payments.gateway.parse_event(event)).outcome == "ignored"
        assert inbox_row(payments, "evt_other") is None


class TestFastAcknowledgement:
    def test_accept_stores_and_the_worker_applies(self, shop, fake) -> None:
        """accept_webhook verifies and stores without calling Stripe; the worker applies
        the event once, however many copies were accepted."""
        economy, payments, _ = shop
        _, event = paid_event(shop, fake)
        body, header = signed_event(event, SECRET)
        before = len(fake.requests)
        first = payments.accept_webhook(body, header)
        again = payments.accept_webhook(body, header)
        assert (first.outcome, again.outcome) == ("queued", "queued")
        assert len(fake.requests) == before
        assert economy.wallet("alice").coins == 0
        report = Worker(payments, schedule=QUIET).run_once()
        assert dict(report.outcomes) == {"credited": 1}
        assert economy.wallet("alice").coins == 500
        assert payments.accept_webhook(body, header).outcome == "duplicate"
        assert Worker(payments, schedule=QUIET).run_once().idle

    def test_accept_refuses_forgeries_and_writes_nothing(self, shop, fake) -> None:
        """A forged delivery is a WebhookVerificationError and stores nothing."""
        _, payments, _ = shop
        _, event = paid_event(shop, fake)
        body, header = signed_event(event, "whsec_forger")
        with pytest.raises(WebhookVerificationError):
            payments.accept_webhook(body, header)
        assert inbox_row(payments, event["id"]) is None

    def test_connect_events_go_through_the_worker(self, shop, fake) -> None:
        """A Connect delivery accepted fast is applied by the worker (account.updated)."""
        economy, payments, payouts = shop
        economy.register_streamer("bob")
        account = fake.create_account()["id"]
        payouts.link_account("bob", account)
        event = fake.onboard_account(account)
        body, header = signed_event(event, CONNECT_SECRET)
        assert payouts.accept_webhook(body, header).outcome == "queued"
        assert not payouts.account_status("bob").payouts_enabled
        report = Worker(payments, payouts, schedule=QUIET).run_once()
        assert dict(report.outcomes) == {"kyc_updated": 1}
        assert payouts.account_status("bob").payouts_enabled

    def test_worker_refuses_bad_settings(self, shop) -> None:
        """Misconfigured workers are InvalidInput."""
        _, payments, _ = shop
        with pytest.raises(InvalidInput):
            Worker()
        with pytest.raises(InvalidInput):
            Worker(payments, batch=0)
        for threads in (0, 17, True, 2.0):
            with pytest.raises(InvalidInput, match="threads"):
                Worker(payments, threads=threads)
        with pytest.raises(InvalidInput):
            WorkerSchedule(sweep=timedelta(0))


class TestWorkerThreads:
    def test_a_round_applies_its_events_at_once(self, shop, fake, monkeypatch) -> None:
        """threads=4: the round's events wait on Stripe side by side (Stripe answers in
        0.3 s here), each is applied once, and the outcomes are all reported."""
        economy, payments, _ = shop
        users = [f"u{n}" for n in range(6)]
        for user in users:
            _, event = paid_event(shop, fake, user=user, key=f"k-{user}")
            assert payments.accept_webhook(*signed_event(event, SECRET)).outcome == "queued"
        in_flight, most = 0, 0
        lock = threading.Lock()
        real = type(payments.gateway).purchase_state

        def slow_state(gateway, *args, **kwargs):
            nonlocal in_flight, most
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            try:
                time.sleep(0.3)
                return real(gateway, *args, **kwargs)
            finally:
                with lock:
                    in_flight -= 1

        monkeypatch.setattr(type(payments.gateway), "purchase_state", slow_state)
        report = Worker(payments, schedule=QUIET, threads=4).run_once()
        assert (report.events, dict(report.outcomes), report.errors) == (6, {"credited": 6}, ())
        assert most >= 2  # (sequentially it would be 1)
        assert [economy.wallet(u).coins for u in users] == [500] * 6
        assert Worker(payments, schedule=QUIET, threads=4).run_once().idle

    def test_a_failing_event_leaves_the_others_applied(self, shop, fake, clock) -> None:
        """An event whose Stripe fetch fails is reported and stays queued (retried after
        its backoff); the rest of the round is applied."""
        economy, payments, _ = shop
        for user in ("a1", "a2", "a3"):
            _, event = paid_event(shop, fake, user=user, key=f"k-{user}")
            payments.accept_webhook(*signed_event(event, SECRET))
        fake.fail_next("GET", "/v1/checkout/sessions", status=500)
        report = Worker(payments, schedule=QUIET, threads=3).run_once()
        assert report.events == 2 and len(report.errors) == 1
        assert dict(report.outcomes) == {"credited": 2}
        assert sorted(economy.wallet(u).coins for u in ("a1", "a2", "a3")) == [0, 500, 500]
        failed = next(r for r in rows(payments) if r.status == "queued")
        assert "PaymentProviderError" in failed.last_error
        assert failed.lease_owner is None  # given back, retried after its backoff
        assert Worker(payments, schedule=QUIET, threads=3).run_once().idle
        clock.advance(timedelta(seconds=31))
        report = Worker(payments, schedule=QUIET, threads=3).run_once()
        assert dict(report.outcomes) == {"credited": 1}
        assert [economy.wallet(u).coins for u in ("a1", "a2", "a3")] == [500] * 3


class TestParkedEvents:
    def test_an_account_update_parked_before_the_link_applies_at_the_link(
        self, shop, fake
    ) -> None:
        """account.updated for an account nobody linked yet is parked with a wake key;
        linking the account applies it at once (no retry_parked, no worker)."""
        economy, payments, payouts = shop
        economy.register_streamer("bob")
        account = fake.create_account()["id"]
        event = fake.onboard_account(account)
        parked = payouts.handle_webhook(*signed_event(event, CONNECT_SECRET))
        assert parked.outcome == "parked"
        assert inbox_row(payments, event["id"]).wake_key == f"account:{account}"
        payouts.link_account("bob", account)
        assert inbox_row(payments, event["id"]).status == "processed"

    def test_a_purchase_event_parked_before_its_purchase_applies_at_checkout(
        self, shop, fake, clock
    ) -> None:
        """An event naming a purchase the ledger has not written yet waits on
        ``purchase:{id}``; the checkout that writes the purchase applies it."""
        economy, payments, _ = shop
        # The purchase id create_checkout derives for (alice, k-early).
        import hashlib

        from spaktok_ledger._service._gateway import CheckoutRequest

        purchase_id = "pur_" + hashlib.sha256(b"alice\x00k-early").hexdigest()[:24]
        early = payments.gateway.create_checkout_session(
            CheckoutRequest(
                purchase_id=purchase_id, user_id="alice", pack_id="starter",
                quote_id="q_not_stored", product_name="x", currency="USD", stripe_amount=499,
                success_url=URLS["success_url"], cancel_url=URLS["cancel_url"],
                payment_method_types=None, idempotency_key="early",
                expires_at=int((clock() + timedelta(hours=1)).timestamp()),
            )
        )
        event = fake.complete_checkout(early.id)
        assert payments.handle_webhook(*signed_event(event, SECRET)).outcome == "parked"
        row = inbox_row(payments, event["id"])
        assert (row.status, row.wake_key) == ("parked", f"purchase:{purchase_id}")
        quote = payments.pricing.quote("starter", currency="USD", user_id="alice")
        payments.create_checkout("alice", quote.id, idempotency_key="k-early", **URLS)
        assert inbox_row(payments, event["id"]).status == "processed"

    def test_parked_events_back_off_in_the_worker(self, shop, fake, clock) -> None:
        """The worker retries a parked event only after its backoff, which doubles."""
        economy, payments, payouts = shop
        account = fake.create_account()["id"]
        event = fake.onboard_account(account)
        payouts.handle_webhook(*signed_event(event, CONNECT_SECRET))
        worker = Worker(payments, payouts, schedule=QUIET)
        assert worker.run_once().events == 0
        clock.advance(parked_backoff(1) + timedelta(seconds=1))
        assert dict(worker.run_once().outcomes) == {"parked": 1}
        row = inbox_row(payments, event["id"])
        assert row.attempts == 2
        assert row.next_attempt_at == clock() + parked_backoff(2)
        assert parked_backoff(2) == 2 * parked_backoff(1)
        assert parked_backoff(50) == timedelta(hours=1)


class TestSchedules:
    def test_jobs_run_when_due_and_once_across_workers(self, shop, fake, clock) -> None:
        """Each job runs when due, in one of two workers, and not again until its period."""
        economy, payments, payouts = shop
        schedule = WorkerSchedule(
            expire_holds=timedelta(minutes=1), mature_earnings=timedelta(minutes=5),
            retry_refunds=timedelta(minutes=5), reconcile_payouts=None, sweep=None,
        )
        one = Worker(payments, payouts, schedule=schedule)
        two = Worker(payments, payouts, schedule=schedule)
        assert set(one.run_once().jobs) == {"expire_holds", "mature_earnings", "retry_refunds"}
        assert two.run_once().jobs == ()
        clock.advance(timedelta(seconds=61))
        assert two.run_once().jobs == ("expire_holds",)
        assert one.run_once().jobs == ()
        runs = {job["name"]: job["runs"] for job in one.jobs()}
        assert runs == {"expire_holds": 2, "mature_earnings": 1, "retry_refunds": 1}

    def test_a_job_expires_a_hold(self, shop, clock) -> None:
        """The expire_holds job voids a hold past its expiry."""
        from spaktok_ledger import EntryDraft, Posting

        economy, payments, _ = shop
        ledger = economy.ledger
        economy.open_user("carol")
        economy.credit_purchase("carol", coins=100, price_usd_minor=100, idempotency_key="c")
        hold = ledger.hold(
            EntryDraft("test", (Posting.debit("user:carol:wallet", 50),
                                Posting.credit("platform:gift_revenue", 50)), "h1"),
            expires_at=clock() + timedelta(seconds=30),
        )
        assert ledger.balance("user:carol:wallet").pending_minor != 0
        clock.advance(timedelta(minutes=1))
        schedule = WorkerSchedule(mature_earnings=None, retry_refunds=None, reconcile_payouts=None,
                                  sweep=None)
        report = Worker(payments, schedule=schedule).run_once()
        assert report.jobs == ("expire_holds",)
        assert ledger.balance("user:carol:wallet").pending_minor == 0
        assert hold.id is not None
