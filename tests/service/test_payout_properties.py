"""The gift-economy state machine extended with Stripe Connect payouts, on both backends.

On top of the gift machine's rules (credits, gifts, splits, blocks, time and
maturation), streamers request payouts (valid or not, sometimes retried),
and Stripe pays, fails, cancels, or fails a payout after paying it; a failed
bank payout's money waits on the connected account until it is paid out
again (``repay``) or pulled back (``recall``). Every webhook goes through the
real SDK and FakeStripe, and old deliveries are replayed. After every step,
for each streamer:

    earnings (pending + available) = received shares - settled payouts - in-flight money

and ``payouts_in_flight`` holds exactly the in-flight payouts (on their way or
waiting on the connected account), the platform's Stripe balance is down by
exactly what was transferred and not pulled back, and ``verify()`` is clean.

Transaction monitoring is on: payouts at or above a review threshold wait
in ``review`` (held, nothing at Stripe) until their case is decided, then
go on to their transfer (released) or are refused with the hold voided; a
payout never reaches Stripe while a case about its streamer is open.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from spaktok_ledger import (
    InsufficientFunds,
    PayoutBelowMinimum,
    PayoutsNotEnabled,
    StripeGateway,
)
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger.compliance import Cases, Compliance, PayoutReviewRule
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client
from tests.service.test_gift_properties import STREAMERS, GiftMachine

SECRET = "whsec_machine"
MINIMUM = 100
REVIEW_AT = 700


class PayoutMachine(GiftMachine):
    fake: FakeStripe
    # Its own, not GiftMachine's: the gift machine's test sets GiftMachine.api to
    # "async" for its async runs, and the payout services here take the sync Ledger.
    api = "sync"

    def __init__(self) -> None:
        super().__init__()
        # Only the payout review threshold: every account in the machine is new, and
        # the other rules have scenarios of their own (tests/compliance).
        self.economy.compliance = Compliance(
            self.economy.ledger, rules=[PayoutReviewRule(REVIEW_AT)], clock=self.clock
        )
        gateway = StripeGateway(stripe_client(self.fake))
        self.payouts = Payouts(
            self.economy,
            gateway,
            connect_webhook_secret=SECRET,
            manual_payouts=True,
            minimum_usd_minor=MINIMUM,
        )
        self.settled = dict.fromkeys(STREAMERS, 0)
        # payout id -> (streamer, amount, Stripe payout id); open: not yet paid or failed;
        # waiting: the bank payout failed, the money is on the connected account.
        self.waiting: dict[str, tuple[str, int, str]] = {}
        # Rules draw from these in insertion order: payout ids are random, so sorting
        # them would make the same draws pick different payouts from run to run.
        self.open: dict[str, tuple[str, int, str]] = {}
        self.paid: dict[str, tuple[str, int, str]] = {}
        self.requests: list[tuple[str, int | str, str, str]] = []
        # payout id -> (streamer, amount): held for review, nothing at Stripe yet
        self.review: dict[str, tuple[str, int]] = {}
        self.cases = Cases(self.economy, payouts=self.payouts)
        self.delivered: list[dict] = []
        self.payout_keys = itertools.count()

    @initialize()
    def link_accounts(self) -> None:
        for streamer in STREAMERS:
            self.economy.register_streamer(streamer)
            account = self.fake.create_account(onboarded=True)["id"]
            self.payouts.link_account(streamer, account)
            self.a_fan_sends_a_rocket(streamer, wait=True)

    def deliver(self, event: dict) -> str:
        self.delivered.append(event)
        return self.payouts.handle_webhook(*signed_event(event, SECRET)).outcome

    def in_flight(self, streamer: str) -> int:
        in_review = sum(amount for s, amount in self.review.values() if s == streamer)
        return self.transferred(streamer) + in_review

    def transferred(self, streamer: str) -> int:
        """In flight and already sent to Stripe (payouts in review have not been)."""
        moving = [*self.open.values(), *self.waiting.values()]
        return sum(amount for s, amount, _ in moving if s == streamer)

    @rule(streamer=st.sampled_from(STREAMERS), wait=st.booleans())
    def a_fan_sends_a_rocket(self, streamer: str, wait: bool) -> None:
        # Big gifts (and often a day for them to mature), so that earnings reach
        # the payout minimum within a short run.
        self.credit("u1", 5000)
        self.send("u1", streamer, "rocket", 1)
        if wait:
            self.time_passes_and_shares_mature(1)

    @rule(
        streamer=st.sampled_from(STREAMERS),
        amount=st.one_of(st.just("all"), st.integers(min_value=MINIMUM - 20, max_value=1500)),
    )
    def request(self, streamer: str, amount: int | str) -> None:
        key = f"p{next(self.payout_keys)}"
        available = self.model.available[streamer]
        wanted = available if amount == "all" else amount
        assert isinstance(wanted, int)
        if self.model.blocked[streamer]:
            with pytest.raises(PayoutsNotEnabled):
                self.payouts.request_payout(streamer, amount, idempotency_key=key)
            return
        if wanted < MINIMUM:
            with pytest.raises(PayoutBelowMinimum):
                self.payouts.request_payout(streamer, amount, idempotency_key=key)
            return
        if wanted > available:
            with pytest.raises(InsufficientFunds):
                self.payouts.request_payout(streamer, amount, idempotency_key=key)
            return
        payout = self.payouts.request_payout(streamer, amount, idempotency_key=key)
        self.model.available[streamer] -= wanted
        self.requests.append((streamer, amount, key, payout.payout_id))
        waiting = wanted >= REVIEW_AT or any(s == streamer for s, _ in self.review.values())
        if waiting:
            assert (payout.amount_usd_minor, payout.status) == (wanted, "review")
            assert payout.transfer_id is None and payout.stripe_payout_id is None
            self.review[payout.payout_id] = (streamer, wanted)
            event("payout held for review")
            return
        assert (payout.amount_usd_minor, payout.status) == (wanted, "in_transit")
        assert payout.stripe_payout_id is not None
        self.open[payout.payout_id] = (streamer, wanted, payout.stripe_payout_id)
        event("payout requested")

    @precondition(lambda self: bool(self.requests))
    @rule(data=st.data())
    def retry_a_request(self, data) -> None:
        streamer, amount, key, payout_id = data.draw(st.sampled_from(self.requests))
        again = self.payouts.request_payout(streamer, amount, idempotency_key=key)
        assert again.replayed and again.payout_id == payout_id

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def stripe_pays(self, data) -> None:
        payout_id = data.draw(st.sampled_from(list(self.open)))
        streamer, amount, stripe_id = self.open.pop(payout_id)
        assert self.deliver(self.fake.pay_payout(stripe_id)) == "paid"
        self.settled[streamer] += amount
        self.paid[payout_id] = (streamer, amount, stripe_id)
        event("payout paid")

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data(), how=st.sampled_from(["failed", "canceled"]))
    def stripe_fails_or_cancels(self, data, how: str) -> None:
        payout_id = data.draw(st.sampled_from(list(self.open)))
        streamer, amount, stripe_id = self.open.pop(payout_id)
        if how == "failed":
            stripe_event = self.fake.fail_payout(stripe_id, failure_code="could_not_process")
        else:
            stripe_event = self.fake.cancel_payout(stripe_id)
        assert self.deliver(stripe_event) == how
        self.waiting[payout_id] = (streamer, amount, stripe_id)

    @precondition(lambda self: bool(self.paid))
    @rule(data=st.data())
    def stripe_fails_after_paying(self, data) -> None:
        payout_id = data.draw(st.sampled_from(list(self.paid)))
        streamer, amount, stripe_id = self.paid.pop(payout_id)
        assert self.deliver(self.fake.fail_payout(stripe_id)) == "failed"
        self.settled[streamer] -= amount
        self.waiting[payout_id] = (streamer, amount, stripe_id)
        event("payout failed after paid")

    @precondition(lambda self: bool(self.waiting))
    @rule(data=st.data())
    def the_bank_is_fixed_and_repaid(self, data) -> None:
        payout_id = data.draw(st.sampled_from(list(self.waiting)))
        streamer, amount, _ = self.waiting.pop(payout_id)
        again = self.payouts.repay(payout_id)
        assert again.status == "in_transit" and again.stripe_payout_id is not None
        self.open[payout_id] = (streamer, amount, again.stripe_payout_id)
        event("payout repaid from the connected account")

    @precondition(lambda self: bool(self.waiting))
    @rule(data=st.data())
    def the_money_is_recalled(self, data) -> None:
        payout_id = data.draw(st.sampled_from(list(self.waiting)))
        streamer, amount, _ = self.waiting.pop(payout_id)
        recalled = self.payouts.recall(payout_id, idempotency_key=f"recall-{payout_id}")
        assert recalled.status == "reversed"
        self.model.available[streamer] += amount
        event("payout recalled")

    @precondition(lambda self: bool(self.review))
    @rule(data=st.data(), release=st.booleans())
    def a_reviewer_decides(self, data, release: bool) -> None:
        streamer = data.draw(st.sampled_from(sorted({s for s, _ in self.review.values()})))
        cases = self.cases.find(subject_id=streamer)
        assert cases, f"payouts of {streamer} wait in review without an open case"
        for case in cases:
            decided = self.cases.decide(
                case.id, "release" if release else "refuse", actor="rita", reason="checked"
            )
            assert not decided.notes, decided.notes
        waiting = {p: v for p, v in self.review.items() if v[0] == streamer}
        for payout_id, (_, amount) in waiting.items():
            del self.review[payout_id]
            after = self.payouts.payout(payout_id)
            if release:
                assert after.status == "in_transit" and after.stripe_payout_id is not None
                self.open[payout_id] = (streamer, amount, after.stripe_payout_id)
            else:
                assert (after.status, after.ledger_state) == ("refused", "voided")
                assert after.transfer_id is None
                self.model.available[streamer] += amount
        event("review released" if release else "review refused")

    @invariant()
    def nothing_in_review_reached_stripe(self) -> None:
        transferred = {
            e["data"]["object"]["metadata"].get("payout_id")
            for e in self.fake.events
            if e["type"] == "transfer.created"
        }
        assert not transferred & set(self.review)

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def stripe_delivers_again(self, data) -> None:
        delivered = data.draw(st.sampled_from(self.delivered))
        result = self.payouts.handle_webhook(*signed_event(delivered, SECRET))
        assert result.duplicate

    @invariant()
    def earnings_are_shares_minus_payouts(self) -> None:
        for streamer in STREAMERS:
            earnings = self.economy.earnings(streamer)
            in_flight = self.in_flight(streamer)
            assert (
                earnings.pending_minor + earnings.available_minor
                == self.model.received[streamer] - self.settled[streamer] - in_flight
            )
            assert earnings.in_payout_minor == in_flight
        stripe_balance = self.economy.ledger.balance("platform:stripe_balance").posted_minor
        moving = sum(self.transferred(streamer) for streamer in STREAMERS)
        assert stripe_balance == -sum(self.settled.values()) - moving


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        fake.top_up(100_000_000)  # the gifts are funded without Stripe charges
        yield fake


@pytest.mark.slow
def test_payout_state_machine(engine: sa.Engine, fake: FakeStripe) -> None:
    """Random gift and payout sessions keep earnings = shares - settled - in flight."""
    PayoutMachine.engine = engine
    PayoutMachine.hold_days = 1  # shares wait a day: pending earnings are never payable
    PayoutMachine.fake = fake
    run_state_machine_as_test(
        PayoutMachine,
        settings=settings(
            settings.default,
            max_examples=max(12, settings.default.max_examples // 3),
            stateful_step_count=30,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
