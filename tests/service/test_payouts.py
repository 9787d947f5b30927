"""Streamer payouts through Stripe Connect: the real SDK against FakeStripe, both backends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from spaktok_ledger import (
    Conflict,
    GiftEconomy,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    PaymentProviderError,
    PayoutBelowMinimum,
    PayoutLimitExceeded,
    PayoutsNotEnabled,
    StripeGateway,
    UnknownPayout,
    UnknownStreamer,
    WebhookVerificationError,
)
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client
from tests import apis
from tests.service.conftest import fund

SECRET = "whsec_connect_test"
PLATFORM_SECRET = "whsec_platform_test"


@pytest.fixture(params=apis.APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Every test here runs against the sync API and the asyncio API."""
    return str(request.param)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    """A Stripe whose platform balance has USD 10,000.00 available to transfer (the gifts in
    these tests are funded without Stripe charges)."""
    with FakeStripe() as fake:
        fake.top_up(1_000_000)
        yield fake


@dataclass
class World:
    economy: GiftEconomy
    fake: FakeStripe
    account: str

    def payouts(self, *, timeout: float = 10.0, **options) -> Payouts:
        gateway = StripeGateway(stripe_client(self.fake, timeout=timeout))
        return apis.payouts(self.economy, gateway, connect_webhook_secret=SECRET, **options)

    def deliver(self, payouts: Payouts, event, secret: str = SECRET):
        return payouts.handle_webhook(*signed_event(event, secret))

    def earnings(self, streamer: str = "bob") -> tuple[int, int, int]:
        e = self.economy.earnings(streamer)
        return e.pending_minor, e.available_minor, e.in_payout_minor

    def stripe_balance(self) -> int:
        return self.economy.ledger.balance("platform:stripe_balance").posted_minor

    def transfers(self) -> list[dict]:
        return [e["data"]["object"] for e in self.fake.events if e["type"] == "transfer.created"]

    def topics(self) -> list[str]:
        return [
            e.topic
            for e in self.economy.outbox.pending(limit=10_000)
            if e.topic.startswith("payout.")
        ]

    def snapshot(self) -> tuple:
        ledger = self.economy.ledger
        return ledger.count_entries(), ledger.trial_balance().rows, self.topics()


def give(economy: GiftEconomy, streamer: str, rockets: int, key: str) -> None:
    """Alice sends rockets (5000 coins each): the streamer gets 40%, 2000 US cents each."""
    economy.send_gift("alice", streamer, "rocket", rockets, idempotency_key=key)


@pytest.fixture
def world(economy: GiftEconomy, fake: FakeStripe) -> World:
    """Bob has USD 200.00 available and an onboarded, linked Connect account."""
    economy.open_user("alice")
    fund(economy, "alice", 1_000_000)
    economy.register_streamer("bob")
    give(economy, "bob", 10, "seed")
    account = fake.create_account(onboarded=True)["id"]
    world = World(economy, fake, account)
    world.payouts().link_account("bob", account)
    return world


class TestConnectedAccounts:
    def test_kyc_incomplete_names_the_requirement(self, economy, fake) -> None:
        """A restricted account refuses payouts naming what is due, until account.updated."""
        economy.open_user("alice")
        fund(economy, "alice", 100_000)
        economy.register_streamer("bob")
        give(economy, "bob", 5, "g")
        world = World(economy, fake, fake.create_account(country="DE")["id"])
        payouts = world.payouts()
        account = payouts.link_account("bob", world.account)
        assert account.kyc_status == "onboarding" and not account.payouts_enabled
        assert "external_account" in account.requirements_due
        assert account.default_currency == "EUR"
        before = world.snapshot()
        with pytest.raises(PayoutsNotEnabled, match="external_account") as info:
            payouts.request_payout("bob", 6000, idempotency_key="p1")
        assert info.value.details["account_id"] == world.account
        assert world.snapshot() == before
        submitted = fake.update_account(
            world.account,
            details_submitted=True,
            currently_due=["individual.verification.document"],
            past_due=[],
            disabled_reason="requirements.pending_verification",
        )
        assert world.deliver(payouts, submitted).outcome == "kyc_updated"
        with pytest.raises(PayoutsNotEnabled, match=r"individual\.verification\.document"):
            payouts.request_payout("bob", 6000, idempotency_key="p1")
        assert world.deliver(payouts, fake.onboard_account(world.account)).outcome == "kyc_updated"
        status = payouts.account_status("bob")
        assert status is not None and status.kyc_status == "enabled"
        assert status.requirements_due == () and status.to_dict()["kyc_status"] == "enabled"
        assert payouts.request_payout("bob", 6000, idempotency_key="p1").status == "transferred"

    def test_express_account_and_onboarding_link(self, world: World) -> None:
        """create_express_account creates once per streamer; the link is Stripe-hosted."""
        world.economy.register_streamer("lena")
        payouts = world.payouts()
        created = payouts.create_express_account("lena", country="gb", email="lena@example.com")
        assert created.account_id.startswith("acct_") and created.country == "GB"
        assert payouts.create_express_account("lena", country="GB") == created
        url = payouts.onboarding_link("lena", "https://app.example/retry", "https://app.example/ok")
        assert url.startswith("https://connect.stripe.com/")
        accounts = [r for r in world.fake.requests if r.path == "/v1/accounts"]
        assert len(accounts) == 1 and accounts[0].idempotency_key.endswith("express:lena")

    def test_account_errors(self, world: World) -> None:
        """No account, unknown streamers, bad ids and double links are clear errors."""
        payouts = world.payouts()
        world.economy.register_streamer("lena")
        with pytest.raises(PayoutsNotEnabled, match="create_express_account") as info:
            payouts.request_payout("lena", 6000, idempotency_key="p")
        assert info.value.details["requirement"] == "stripe_account"
        assert payouts.account_status("lena") is None
        with pytest.raises(PayoutsNotEnabled):
            payouts.onboarding_link("lena", "https://a.example/r", "https://a.example/o")
        with pytest.raises(UnknownStreamer):
            payouts.link_account("ghost", world.account)
        with pytest.raises(InvalidInput):
            payouts.link_account("lena", "not-an-account")
        with pytest.raises(Conflict):
            payouts.link_account("lena", world.account)
        with pytest.raises(UnknownPayout):
            payouts.payout("pyt_missing")

    def test_account_updates_in_any_order(self, world: World) -> None:
        """An older account.updated delivered last cannot undo a newer state (it is re-fetched)."""
        payouts = world.payouts()
        fake = world.fake
        older = fake.update_account(world.account, payouts_enabled=False, past_due=["tos"])
        newer = fake.onboard_account(world.account)
        world.deliver(payouts, newer)
        world.deliver(payouts, older)
        assert payouts.account_status("bob").payouts_enabled
        assert world.deliver(payouts, older).duplicate

    def test_unknown_account_is_parked_until_linked(self, world: World) -> None:
        """account.updated for an account nobody linked yet is parked, then applied as
        soon as the account is linked (its wake key), with no retry_parked needed."""
        world.economy.register_streamer("lena")
        payouts = world.payouts()
        other = world.fake.create_account()["id"]
        event = world.fake.onboard_account(other)
        assert world.deliver(payouts, event).outcome == "parked"
        assert [r.outcome for r in payouts.retry_parked()] == ["parked"]
        world.fake.update_account(other, payouts_enabled=False)
        payouts.link_account("lena", other)
        assert payouts.inbox.status(event["id"]) == "processed"
        assert payouts.retry_parked() == []
        assert not payouts.account_status("lena").payouts_enabled  # the current state


class TestRequest:
    def test_happy_path_with_automatic_payouts(self, world: World) -> None:
        """The transfer settles the payout: earnings down, Stripe balance down, one transfer."""
        payouts = world.payouts()
        payout = payouts.request_payout("bob", 6000, idempotency_key="req-1")
        assert (payout.status, payout.ledger_state, payout.mode) == (
            "transferred",
            "settled",
            "automatic",
        )
        assert world.earnings() == (0, 14_000, 0)
        assert world.stripe_balance() == -6000
        (request,) = [r for r in world.fake.requests if r.path == "/v1/transfers"]
        assert request.idempotency_key == f"payout:{payout.payout_id}"
        assert request.params["transfer_group"] == f"payout:{payout.payout_id}"
        assert (request.params["amount"], request.params["currency"]) == ("6000", "usd")
        assert request.params["destination"] == world.account
        settlement = world.economy.ledger.entry(payout.settlement_entry_id)
        assert settlement.metadata["stripe_transfer_id"] == payout.transfer_id
        assert [(p.account, p.amount_minor) for p in settlement.postings] == [
            ("streamer:bob:payouts_in_flight", 6000),
            ("platform:stripe_balance", -6000),
        ]
        items = world.economy.history(streamer_id="bob", types=["payout"]).items
        assert [i.change_minor for i in items] == [-6000, 0, 0]
        assert {i.type for i in items} == {"payout"} and items[0].counterparty == "stripe"
        assert world.topics() == ["payout.requested", "payout.paid"]
        assert payouts.payouts("bob") == [payout]
        assert json.dumps(payout.to_dict())
        assert world.economy.ledger.verify().ok

    def test_same_key_replays_and_other_request_conflicts(self, world: World) -> None:
        """A retried request returns the same payout; another request under the key conflicts."""
        payouts = world.payouts()
        first = payouts.request_payout("bob", 6000, idempotency_key="req-1")
        before = world.snapshot()
        again = payouts.request_payout("bob", 6000, idempotency_key="req-1")
        assert again == first and again.replayed and not first.replayed
        assert world.snapshot() == before and len(world.transfers()) == 1
        with pytest.raises(IdempotencyConflict):
            payouts.request_payout("bob", 7000, idempotency_key="req-1")
        with pytest.raises(IdempotencyConflict):
            payouts.request_payout("bob", "all", idempotency_key="req-1")

    def test_happy_path_with_manual_payouts(self, world: World) -> None:
        """Manual payouts: transfer + bank payout; payout.paid settles with the bank amount."""
        payouts = world.payouts(manual_payouts=True)
        payout = payouts.request_payout("bob", 6000, idempotency_key="req-1")
        assert (payout.status, payout.ledger_state) == ("in_transit", "held")
        assert world.earnings() == (0, 14_000, 6000)
        assert world.stripe_balance() == -6000  # the transfer left the platform's balance
        bank_request = next(r for r in world.fake.requests if r.path == "/v1/payouts")
        assert bank_request.stripe_account == world.account
        assert bank_request.idempotency_key == f"payout:{payout.payout_id}:payout"
        paid = world.fake.pay_payout(payout.stripe_payout_id)
        result = world.deliver(payouts, paid)
        assert (result.outcome, result.subject_id) == ("paid", payout.payout_id)
        assert world.deliver(payouts, paid).duplicate
        done = payouts.payout(payout.payout_id)
        assert (done.status, done.ledger_state, done.paid_out_usd_minor) == (
            "paid",
            "settled",
            6000,
        )
        assert world.earnings() == (0, 14_000, 0) and world.stripe_balance() == -6000
        meta = world.economy.ledger.entry(done.settlement_entry_id).metadata
        assert meta["stripe_payout_id"] == payout.stripe_payout_id
        assert (meta["payout_currency"], meta["payout_stripe_amount"]) == ("USD", 6000)
        assert meta["payout_amount_minor"] == 6000 and "exchange_rate" in meta
        assert world.topics() == ["payout.requested", "payout.paid"]
        assert world.economy.ledger.verify().ok

    def test_under_the_minimum(self, world: World) -> None:
        """Below USD 50.00 (or a custom minimum) is PayoutBelowMinimum and writes nothing."""
        payouts = world.payouts()
        before = world.snapshot()
        with pytest.raises(PayoutBelowMinimum) as info:
            payouts.request_payout("bob", 4999, idempotency_key="p")
        assert info.value.details["minimum_usd_minor"] == 5000
        with pytest.raises(InvalidInput):
            payouts.request_payout("bob", 0, idempotency_key="p")
        with pytest.raises(InvalidInput):
            payouts.request_payout("bob", 60.0, idempotency_key="p")
        assert world.snapshot() == before
        assert (
            world.payouts(minimum_usd_minor=100)
            .request_payout("bob", 100, idempotency_key="p")
            .status
            == "transferred"
        )

    def test_all_available(self, world: World) -> None:
        """'all' pays out exactly the available earnings; with too little it is below minimum."""
        payouts = world.payouts()
        payout = payouts.request_payout("bob", "all", idempotency_key="p1")
        assert payout.amount_usd_minor == 20_000 and world.earnings() == (0, 0, 0)
        give(world.economy, "bob", 1, "small")
        with pytest.raises(PayoutBelowMinimum, match="available: 2000"):
            payouts.request_payout("bob", "all", idempotency_key="p2")

    def test_more_than_available(self, world: World) -> None:
        """More than the available earnings is InsufficientFunds; the key stays usable."""
        payouts = world.payouts()
        before = world.snapshot()
        with pytest.raises(InsufficientFunds) as info:
            payouts.request_payout("bob", 20_001, idempotency_key="p")
        assert info.value.details["available_minor"] == 20_000
        assert world.snapshot() == before and world.transfers() == []
        assert payouts.request_payout("bob", 20_000, idempotency_key="p").status == "transferred"

    def test_pending_earnings_are_not_payable(self, held_economy, fake, clock) -> None:
        """Shares inside the hold period cannot be paid out until they mature."""
        held_economy.open_user("alice")
        fund(held_economy, "alice", 100_000)
        held_economy.register_streamer("bob")
        give(held_economy, "bob", 5, "g")
        world = World(held_economy, fake, fake.create_account(onboarded=True)["id"])
        payouts = world.payouts()
        payouts.link_account("bob", world.account)
        assert world.earnings() == (10_000, 0, 0)
        with pytest.raises(InsufficientFunds):
            payouts.request_payout("bob", 6000, idempotency_key="p")
        clock.advance(days=7)
        held_economy.mature_earnings()
        assert payouts.request_payout("bob", 6000, idempotency_key="p").status == "transferred"
        assert world.earnings() == (0, 4000, 0)

    def test_daily_and_monthly_caps(self, world: World, clock) -> None:
        """Caps count what was paid out or is in flight in the UTC day / month."""
        give(world.economy, "bob", 40, "more")
        payouts = world.payouts(daily_cap_usd_minor=10_000, monthly_cap_usd_minor=25_000)
        payouts.request_payout("bob", 6000, idempotency_key="d1")
        with pytest.raises(PayoutLimitExceeded, match="daily") as info:
            payouts.request_payout("bob", 6000, idempotency_key="d2")
        assert info.value.details["remaining_usd_minor"] == 4000
        clock.advance(days=1)
        payouts.request_payout("bob", 10_000, idempotency_key="d2")
        clock.advance(days=1)
        with pytest.raises(PayoutLimitExceeded, match="monthly"):
            payouts.request_payout("bob", 10_000, idempotency_key="d3")
        assert payouts.request_payout("bob", 9000, idempotency_key="d3").amount_usd_minor == 9000

    def test_blocked_streamer_cannot_cash_out(self, world: World) -> None:
        """A streamer blocked for fraud review has payouts frozen."""
        world.economy.block_streamer("bob", "chargeback fraud under review")
        with pytest.raises(PayoutsNotEnabled, match="chargeback fraud"):
            world.payouts().request_payout("bob", 6000, idempotency_key="p")

    def test_concurrent_requests_hold_only_what_is_available(self, world: World) -> None:
        """Eight simultaneous USD 60 requests from USD 200: three succeed, one transfer each."""
        payouts = world.payouts()
        start = threading.Barrier(8)

        def request(i: int):
            start.wait()
            try:
                return payouts.request_payout("bob", 6000, idempotency_key=f"c{i}")
            except InsufficientFunds as exc:
                return exc

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(request, range(8)))
        made = [r for r in results if not isinstance(r, Exception)]
        assert len(made) == 3 and all(r.status == "transferred" for r in made)
        assert len(world.transfers()) == 3
        assert world.earnings() == (0, 2000, 0) and world.stripe_balance() == -18_000
        assert world.economy.ledger.verify().ok

    def test_concurrent_retries_of_one_request(self, world: World) -> None:
        """The same request sent from four threads is one payout and one transfer."""
        payouts = world.payouts(manual_payouts=True)
        start = threading.Barrier(4)

        def request(_: int):
            start.wait()
            return payouts.request_payout("bob", 6000, idempotency_key="same")

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(request, range(4)))
        assert len({r.payout_id for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1
        assert len(world.transfers()) == 1
        assert len([e for e in world.fake.events if e["type"] == "payout.created"]) == 1
        assert world.earnings() == (0, 14_000, 6000)


class TestStripeFailures:
    def test_refused_transfer_voids_the_hold(self, world: World) -> None:
        """Stripe refusing the transfer raises a clear error and releases the money."""
        payouts = world.payouts()
        world.fake.fail_next(
            "POST",
            "/v1/transfers",
            status=400,
            error_type="invalid_request_error",
            code="insufficient_capabilities_for_transfer",
            message="Your destination account needs the transfers capability.",
        )
        with pytest.raises(PaymentProviderError, match="hold is released") as info:
            payouts.request_payout("bob", 6000, idempotency_key="p")
        assert not info.value.retryable
        payout_id = info.value.details["payout_id"]
        failed = payouts.payout(payout_id)
        assert (failed.status, failed.ledger_state) == ("failed", "voided")
        assert failed.failure_code == "insufficient_capabilities_for_transfer"
        assert world.earnings() == (0, 20_000, 0) and world.stripe_balance() == 0
        assert world.topics() == ["payout.requested", "payout.failed"]
        again = payouts.request_payout("bob", 6000, idempotency_key="p")
        assert again.replayed and again.status == "failed" and world.transfers() == []
        assert payouts.request_payout("bob", 6000, idempotency_key="p2").status == "transferred"
        assert world.economy.ledger.verify().ok

    def test_timeout_then_retry_with_the_same_key(self, world: World) -> None:
        """A timed-out transfer leaves the payout pending; the retry makes exactly one transfer."""
        payouts = world.payouts(timeout=0.3)
        world.fake.delay_next("POST", "/v1/transfers", 1.5)
        with pytest.raises(PaymentProviderError, match="same idempotency key") as info:
            payouts.request_payout("bob", 6000, idempotency_key="p")
        assert info.value.retryable
        pending = payouts.payout(info.value.details["payout_id"])
        assert (pending.status, pending.ledger_state) == ("pending", "held")
        assert pending.last_error and world.earnings() == (0, 14_000, 6000)
        done = payouts.request_payout("bob", 6000, idempotency_key="p")
        assert done.replayed and (done.status, done.ledger_state) == ("transferred", "settled")
        assert done.last_error is None
        posts = [r for r in world.fake.requests if r.path == "/v1/transfers"]
        assert [r.replayed for r in posts] == [False, True]
        assert len(world.transfers()) == 1
        assert world.earnings() == (0, 14_000, 0) and world.stripe_balance() == -6000

    def test_a_conflict_is_not_a_refusal(self, world: World) -> None:
        """A 409 (the key in use by a concurrent request) keeps the hold: the outcome is unknown."""
        payouts = world.payouts()
        world.fake.fail_next(
            "POST",
            "/v1/transfers",
            status=409,
            error_type="idempotency_error",
            message="There is currently another in-progress request using this key.",
        )
        with pytest.raises(PaymentProviderError) as info:
            payouts.request_payout("bob", 6000, idempotency_key="p")
        assert info.value.retryable
        assert payouts.payout(info.value.details["payout_id"]).ledger_state == "held"
        assert payouts.request_payout("bob", 6000, idempotency_key="p").status == "transferred"
        assert len(world.transfers()) == 1

    def test_dropped_response_is_resolved_by_reconcile(self, world: World) -> None:
        """A lost transfer response is found by transfer_group; reconcile books it once."""
        payouts = world.payouts()
        world.fake.drop_next("POST", "/v1/transfers")
        with pytest.raises(PaymentProviderError) as info:
            payouts.request_payout("bob", 6000, idempotency_key="p")
        payout_id = info.value.details["payout_id"]
        (item,) = payouts.reconcile()
        assert (item.payout_id, item.problem, item.resolved) == (
            payout_id,
            "transfer_not_recorded",
            True,
        )
        assert (item.status_before, item.status_after) == ("pending", "transferred")
        assert payouts.reconcile() == []
        assert len(world.transfers()) == 1 and world.stripe_balance() == -6000
        assert json.dumps(item.to_dict())

    def test_reconcile_makes_a_transfer_that_never_happened(self, world: World) -> None:
        """A payout whose transfer failed to reach Stripe is transferred by reconcile, once."""
        payouts = world.payouts()
        world.fake.fail_next("POST", "/v1/transfers", status=503, times=1)
        with pytest.raises(PaymentProviderError) as info:
            payouts.request_payout("bob", 6000, idempotency_key="p")
        assert info.value.retryable and world.transfers() == []
        (item,) = payouts.reconcile()
        assert (item.problem, item.resolved, item.status_after) == (
            "transfer_missing",
            True,
            "transferred",
        )
        assert payouts.request_payout("bob", 6000, idempotency_key="p").replayed
        assert len(world.transfers()) == 1

    def test_bank_payout_refused_after_the_transfer(self, world: World) -> None:
        """If the bank payout cannot be created the money stays in flight; reconcile retries."""
        payouts = world.payouts(manual_payouts=True)
        world.fake.fail_next(
            "POST",
            "/v1/payouts",
            status=400,
            error_type="invalid_request_error",
            code="payouts_not_allowed",
        )
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        assert (payout.status, payout.ledger_state) == ("transferred", "held")
        assert "bank payout" in payout.last_error
        (item,) = payouts.reconcile()
        assert (item.problem, item.resolved, item.status_after) == (
            "bank_payout_missing",
            True,
            "in_transit",
        )


class TestWebhooks:
    def test_paid_then_failed(self, world: World) -> None:
        """A paid payout that later fails: Stripe puts the money back on the connected account,
        so it stays in flight there (not back in earnings), and repay() pays it out again."""
        payouts = world.payouts(manual_payouts=True)
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        world.deliver(payouts, world.fake.pay_payout(payout.stripe_payout_id))
        assert world.stripe_balance() == -6000
        failed = world.fake.fail_payout(payout.stripe_payout_id, failure_code="account_closed")
        assert world.deliver(payouts, failed).outcome == "failed"
        done = payouts.payout(payout.payout_id)
        assert (done.status, done.ledger_state, done.returned_usd_minor) == ("failed", "held", 0)
        assert (done.failure_code, done.paid_out_usd_minor) == ("account_closed", 0)
        assert done.awaiting_repayment and done.on_account_minor == 6000
        assert world.earnings() == (0, 14_000, 6000) and world.stripe_balance() == -6000
        assert world.fake.balance(world.account)["usd"] == (6000, 0)
        ledger = world.economy.ledger
        assert ledger.balance("streamer:bob:stripe_balance:USD").posted_minor == 6000
        assert world.topics() == ["payout.requested", "payout.paid", "payout.failed"]
        again = payouts.repay(payout.payout_id)
        assert again.status == "in_transit" and len(world.transfers()) == 1
        world.deliver(payouts, world.fake.pay_payout(again.stripe_payout_id))
        assert world.earnings() == (0, 14_000, 0)
        assert ledger.balance("streamer:bob:stripe_balance:USD").posted_minor == 0
        assert world.fake.balance(world.account)["usd"] == (0, 0)
        assert world.economy.ledger.verify().ok

    def test_failed_then_recalled_and_a_second_request(self, world: World) -> None:
        """A payout failing before paid waits on the connected account; recall() pulls it
        back to the platform and earnings, and the streamer can request again."""
        payouts = world.payouts(manual_payouts=True)
        first = payouts.request_payout("bob", 20_000, idempotency_key="p1")
        with pytest.raises(InsufficientFunds):
            payouts.request_payout("bob", 6000, idempotency_key="p2")
        world.deliver(payouts, world.fake.fail_payout(first.stripe_payout_id))
        assert payouts.payout(first.payout_id).ledger_state == "held"
        with pytest.raises(InsufficientFunds):
            payouts.request_payout("bob", 6000, idempotency_key="p2")
        recalled = payouts.recall(first.payout_id, idempotency_key="r1")
        assert (recalled.status, recalled.ledger_state) == ("reversed", "voided")
        assert world.earnings() == (0, 20_000, 0) and world.stripe_balance() == 0
        second = payouts.request_payout("bob", 6000, idempotency_key="p2")
        world.deliver(payouts, world.fake.pay_payout(second.stripe_payout_id))
        assert world.earnings() == (0, 14_000, 0) and world.stripe_balance() == -6000
        assert len(world.transfers()) == 2
        with pytest.raises(InvalidInput):
            payouts.repay(second.payout_id)
        assert world.economy.ledger.verify().ok

    def test_canceled_payout(self, world: World) -> None:
        """payout.canceled leaves the money on the connected account, like a failure."""
        payouts = world.payouts(manual_payouts=True)
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        result = world.deliver(payouts, world.fake.cancel_payout(payout.stripe_payout_id))
        assert result.outcome == "canceled"
        assert payouts.payout(payout.payout_id).status == "canceled"
        assert world.earnings() == (0, 14_000, 6000)
        assert world.fake.balance(world.account)["usd"] == (6000, 0)

    def test_transfer_reversals(self, world: World) -> None:
        """transfer.reversed returns what was reversed, partly then fully, and never twice."""
        payouts = world.payouts()
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        part = world.fake.reverse_transfer(payout.transfer_id, amount_minor=2000)
        assert world.deliver(payouts, part).outcome == "returned"
        assert world.earnings() == (0, 16_000, 0)
        rest = world.fake.reverse_transfer(payout.transfer_id)
        assert world.deliver(payouts, rest).outcome == "reversed"
        assert world.deliver(payouts, part).duplicate
        done = payouts.payout(payout.payout_id)
        assert (done.status, done.returned_usd_minor) == ("reversed", 6000)
        assert world.earnings() == (0, 20_000, 0) and world.stripe_balance() == 0
        assert world.topics()[-2:] == ["payout.returned", "payout.failed"]
        assert world.economy.ledger.verify().ok

    def test_out_of_order_and_duplicate_deliveries(self, world: World) -> None:
        """failed before paid, created last, each twice: the ledger ends as Stripe does."""
        payouts = world.payouts(manual_payouts=True)
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        created = next(e for e in world.fake.events if e["type"] == "payout.created")
        paid = world.fake.pay_payout(payout.stripe_payout_id)
        failed = world.fake.fail_payout(payout.stripe_payout_id)
        assert world.deliver(payouts, failed).outcome == "failed"
        before = world.snapshot()
        for event in (paid, created, failed, paid):
            world.deliver(payouts, event)
        assert world.snapshot() == before
        done = payouts.payout(payout.payout_id)
        assert (done.status, done.ledger_state) == ("failed", "held")
        assert world.earnings() == (0, 14_000, 6000) and world.stripe_balance() == -6000

    def test_paid_arriving_before_the_transfer_was_recorded(self, world: World) -> None:
        """A payout.paid for a payout whose transfer response was lost re-fetches the transfer."""
        payouts = world.payouts(manual_payouts=True, timeout=0.3)
        world.fake.drop_next("POST", "/v1/transfers")
        with pytest.raises(PaymentProviderError) as info:
            payouts.request_payout("bob", 6000, idempotency_key="p")
        payout_id = info.value.details["payout_id"]
        # Stripe-side: the bank payout is created (e.g. by a retry elsewhere) and paid.
        bank = stripe_client(world.fake).v1.payouts.create(
            params={"amount": 6000, "currency": "usd", "metadata": {"payout_id": payout_id}},
            options={"stripe_account": world.account},
        )
        assert world.deliver(payouts, world.fake.pay_payout(bank.id)).outcome == "paid"
        done = payouts.payout(payout_id)
        assert (done.status, done.transfer_id) == ("paid", world.transfers()[0]["id"])
        assert world.earnings() == (0, 14_000, 0) and world.stripe_balance() == -6000

    def test_unknown_and_automatic_payouts(self, world: World) -> None:
        """Unknown payouts are parked, automatic ones acknowledged, other events left alone."""
        payouts = world.payouts()
        client = stripe_client(world.fake)
        options = {"stripe_account": world.account}
        client.v1.transfers.create(  # the account's own money, from outside these payouts
            params={"amount": 200, "currency": "usd", "destination": world.account}
        )
        stranger = client.v1.payouts.create(
            params={"amount": 100, "currency": "usd", "metadata": {"payout_id": "pyt_other"}},
            options=options,
        )
        scheduled = client.v1.payouts.create(
            params={"amount": 100, "currency": "usd"}, options=options
        )
        before = world.snapshot()
        assert world.deliver(payouts, world.fake.pay_payout(stranger.id)).outcome == "parked"
        assert (
            world.deliver(payouts, world.fake.pay_payout(scheduled.id)).outcome
            == "automatic_payout"
        )
        assert [r.outcome for r in payouts.retry_parked()] == ["parked"]
        other = {
            "id": "evt_other",
            "object": "event",
            "type": "charge.succeeded",
            "created": 1,
            "data": {"object": {"id": "ch_1", "object": "charge"}},
        }
        assert world.deliver(payouts, other).outcome == "ignored"
        assert payouts.inbox.status("evt_other") is None  # left for the platform endpoint
        assert world.snapshot() == before

    def test_forged_and_misdirected_deliveries(self, world: World) -> None:
        """Forged, tampered or platform-signed deliveries are refused and change nothing."""
        payouts = world.payouts(manual_payouts=True)
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        event = world.fake.pay_payout(payout.stripe_payout_id)
        before = world.snapshot()
        body, signature = signed_event(event, SECRET)
        with pytest.raises(WebhookVerificationError):
            payouts.handle_webhook(*signed_event(event, PLATFORM_SECRET))
        with pytest.raises(WebhookVerificationError):
            payouts.handle_webhook(body.replace(b"paid", b"failed"), signature)
        with pytest.raises(WebhookVerificationError):
            payouts.handle_webhook(*signed_event(event, SECRET, timestamp=1_600_000_000))
        with pytest.raises(WebhookVerificationError):
            payouts.handle_webhook(body, "")
        assert world.snapshot() == before
        assert payouts.inbox.status(event["id"]) is None
        assert payouts.handle_webhook(body, signature).outcome == "paid"


class TestReconcile:
    def test_paid_and_failed_without_webhooks(self, world: World) -> None:
        """reconcile() books a paid, then a failed, bank payout whose webhooks never came."""
        payouts = world.payouts(manual_payouts=True)
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        assert payouts.reconcile() == []
        world.fake.pay_payout(payout.stripe_payout_id)
        (item,) = payouts.reconcile()
        assert (item.problem, item.stripe_status, item.status_after) == (
            "bank_status_changed",
            "paid",
            "paid",
        )
        assert world.stripe_balance() == -6000
        world.fake.fail_payout(payout.stripe_payout_id)
        (item,) = payouts.reconcile()
        assert (item.status_before, item.status_after, item.resolved) == ("paid", "failed", True)
        assert world.earnings() == (0, 14_000, 6000) and world.stripe_balance() == -6000
        (waiting,) = payouts.reconcile()  # the money waits on the connected account
        assert (waiting.problem, waiting.resolved) == ("awaiting_repayment", False)
        assert world.economy.ledger.verify().ok

    def test_reversal_without_webhook_and_unsafe_cases(self, world: World) -> None:
        """A reversal is booked; a second transfer in one group is reported, not guessed."""
        payouts = world.payouts()
        payout = payouts.request_payout("bob", 6000, idempotency_key="p")
        world.fake.reverse_transfer(payout.transfer_id, amount_minor=1000)
        (item,) = payouts.reconcile()
        assert (item.problem, item.resolved) == ("transfer_reversed", True)
        assert world.earnings() == (0, 15_000, 0)
        world.fake.drop_next("POST", "/v1/transfers")
        with pytest.raises(PaymentProviderError) as info:
            payouts.request_payout("bob", 6000, idempotency_key="q")
        other = info.value.details["payout_id"]
        stripe_client(world.fake).v1.transfers.create(
            params={
                "amount": 6000,
                "currency": "usd",
                "destination": world.account,
                "transfer_group": f"payout:{other}",
            }
        )
        (item,) = payouts.reconcile()
        assert (item.payout_id, item.problem, item.resolved) == (
            other,
            "multiple_transfers",
            False,
        )
        assert payouts.payout(other).status == "pending"
