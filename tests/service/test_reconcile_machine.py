"""Issue 11's scenario machine: purchases, gifts, refunds (some failing), disputes (won and
lost; on credited, held and refused purchases), early fraud warnings and manual payouts
(paid, failed after paid, canceled, refused for lack of funds, re-paid, recalled) in random
order, webhooks delivered late or never. After every step reconcile() finds the books equal
to Stripe (nothing left unresolved) and verify() is clean, on SQLite and PostgreSQL.

A fresh FakeStripe per example: its balances are the truth the books are held to. The
example count is bounded (see the settings below) so CI stays fast.
"""

from __future__ import annotations

import itertools
import os

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from spaktok_ledger import (
    InsufficientFunds,
    InvalidInput,
    Ledger,
    PaymentProviderError,
    PayoutBelowMinimum,
    SpendingBlocked,
)
from spaktok_ledger.testing import FakeClock, FakeStripe, stripe_client
from tests.service.books import make_books

_prefixes = itertools.count()
EXAMPLES = 12 if os.environ.get("CI") else 6


class ReconcileMachine(RuleBasedStateMachine):
    engine: sa.Engine

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.fake = FakeStripe(clock=self.clock).start()
        ledger = Ledger(self.engine, prefix=f"rm{os.getpid()}_{next(_prefixes)}_", clock=self.clock)
        self.books = make_books(ledger, self.clock, self.fake, hold_days=1, manual_payouts=True)
        self.client = stripe_client(self.fake)
        self.keys = itertools.count()
        self.delivered = 0
        self.purchases: list[str] = []
        self.disputes: list[str] = []
        self.refunds: list[str] = []
        self.payouts: list[str] = []

    def teardown(self) -> None:
        self.fake.stop()

    def key(self, what: str) -> str:
        return f"{what}-{next(self.keys)}"

    @initialize()
    def a_streamer_with_a_connected_account(self) -> None:
        account = self.fake.create_account(onboarded=True)["id"]
        self.books.payouts.link_account("bob", account)

    # -- Stripe's side and the viewers ---------------------------------------------------

    @rule(
        risk=st.sampled_from(["normal", "normal", "elevated", "highest"]),
        pack=st.sampled_from(["starter", "big"]),
        available_now=st.booleans(),
        deliver=st.booleans(),
    )
    def a_viewer_buys(self, risk: str, pack: str, available_now: bool, deliver: bool) -> None:
        purchase = self.books.buy(
            pack=pack, risk_level=risk, available_now=available_now, deliver=deliver
        )
        self.purchases.append(purchase.id)
        event(f"purchase {risk}")

    @rule(data=st.data())
    def webhooks_arrive_late(self, data) -> None:
        """Deliver some of the events Stripe sent since the last time, in any order."""
        events = self.fake.events[self.delivered :]
        self.delivered += len(events)
        for stripe_event in data.draw(st.permutations(events)):
            if data.draw(st.booleans()):  # the others are never delivered
                if "account" in stripe_event:
                    self.books.deliver_connect(stripe_event)
                else:
                    self.books.deliver(stripe_event)

    @rule(rose=st.integers(min_value=1, max_value=60))
    def alice_sends_roses(self, rose: int) -> None:
        try:
            self.books.economy.send_gift(
                "alice", "bob", "rose", rose, idempotency_key=self.key("gift")
            )
        except (InsufficientFunds, SpendingBlocked, LookupError):
            return
        event("gift")

    @precondition(lambda self: bool(self.purchases))
    @rule(data=st.data(), part=st.booleans(), pending=st.booleans())
    def a_refund(self, data, part: bool, pending: bool) -> None:
        purchase = self.books.payments.purchase(data.draw(st.sampled_from(self.purchases)))
        charge = self.books.charge_of(purchase.id)
        try:
            self.fake.refund(
                charge, 100 if part else None, status="pending" if pending else "succeeded"
            )
        except ValueError:
            return
        self.refunds.append(self.client.v1.refunds.list(params={"charge": charge}).data[0].id)
        event("refund")

    @precondition(lambda self: bool(self.refunds))
    @rule(data=st.data(), fails=st.booleans())
    def a_refund_settles_or_fails(self, data, fails: bool) -> None:
        refund = data.draw(st.sampled_from(self.refunds))
        try:
            if fails:
                self.fake.fail_refund(refund)
            else:
                self.fake.settle_refund(refund)
        except ValueError:
            return
        event("refund failed" if fails else "refund settled")

    @precondition(lambda self: bool(self.purchases))
    @rule(data=st.data())
    def a_chargeback(self, data) -> None:
        purchase = self.books.payments.purchase(data.draw(st.sampled_from(self.purchases)))
        try:
            dispute = self.fake.dispute(self.books.charge_of(purchase.id))["data"]["object"]
        except ValueError:
            return
        self.fake.dispute_funds_withdrawn(dispute["id"])
        self.disputes.append(dispute["id"])
        event(f"chargeback on a {purchase.status} purchase")

    @precondition(lambda self: bool(self.disputes))
    @rule(data=st.data(), won=st.booleans())
    def a_dispute_is_decided(self, data, won: bool) -> None:
        dispute = self.disputes.pop(data.draw(st.integers(0, len(self.disputes) - 1)))
        if won:
            self.fake.dispute_funds_reinstated(dispute)
        self.fake.close_dispute(dispute, status="won" if won else "lost")
        event("dispute won" if won else "dispute lost")

    @precondition(lambda self: bool(self.purchases))
    @rule(data=st.data())
    def an_early_fraud_warning(self, data) -> None:
        purchase = self.books.payments.purchase(data.draw(st.sampled_from(self.purchases)))
        self.fake.early_fraud_warning(self.books.charge_of(purchase.id))
        event("early fraud warning")

    @precondition(lambda self: bool(self.purchases))
    @rule(data=st.data(), release=st.booleans())
    def a_held_purchase_is_reviewed(self, data, release: bool) -> None:
        purchase = self.books.payments.purchase(data.draw(st.sampled_from(self.purchases)))
        if purchase.status != "held":
            return
        if release:
            self.books.payments.release(purchase.id)
        else:
            self.books.payments.refuse(purchase.id)
        event("held purchase released" if release else "held purchase refused")

    @rule()
    def a_day_passes(self) -> None:
        self.clock.advance(days=1)
        self.books.economy.mature_earnings()

    # -- payouts -----------------------------------------------------------------------

    @rule(amount=st.sampled_from([100, 250, "all"]))
    def bob_asks_for_a_payout(self, amount) -> None:
        try:
            payout = self.books.payouts.request_payout("bob", amount, idempotency_key=self.key("p"))
        except (InsufficientFunds, PayoutBelowMinimum):
            return
        except PaymentProviderError as exc:  # waiting for funds: held, retried by reconcile
            retryable, payout_id = exc.retryable, exc.details["payout_id"]
        else:
            self.payouts.append(payout.payout_id)
            event("payout requested")
            return
        waiting = self.books.payouts.payout(payout_id)
        assert retryable and waiting.ledger_state == "held"
        self.payouts.append(payout_id)
        event("payout waits for funds")

    @precondition(lambda self: bool(self.payouts))
    @rule(data=st.data(), outcome=st.sampled_from(["paid", "failed", "canceled"]))
    def the_bank_answers(self, data, outcome: str) -> None:
        payout = self.books.payouts.payout(data.draw(st.sampled_from(self.payouts)))
        if payout.stripe_payout_id is None:
            return
        try:
            if outcome == "paid":
                self.fake.pay_payout(payout.stripe_payout_id)
            elif outcome == "failed":
                self.fake.fail_payout(payout.stripe_payout_id)
            else:
                self.fake.cancel_payout(payout.stripe_payout_id)
        except ValueError:
            return
        event(f"bank payout {outcome}")

    @precondition(lambda self: bool(self.payouts))
    @rule(data=st.data(), recall=st.booleans())
    def a_failed_payout_is_dealt_with(self, data, recall: bool) -> None:
        payout_id = data.draw(st.sampled_from(self.payouts))
        try:
            if recall:
                self.books.payouts.recall(payout_id, idempotency_key=self.key("recall"))
            else:
                self.books.payouts.repay(payout_id)
        except InvalidInput:
            return
        event("payout recalled" if recall else "payout repaid")

    # -- the proof -----------------------------------------------------------------------

    @invariant()
    def the_books_equal_stripe(self) -> None:
        report = self.books.reconcile()
        assert report.ok, report.to_dict()
        assert self.books.ledger.verify().ok
        # Everything is charged and settled in USD at the list price: once every event is
        # applied, nothing waits in clearing and there is no FX result.
        books = self.books.ledger.balances(["platform:stripe_clearing", "platform:fx_gain_loss"])
        assert [b.posted_minor for b in books.values()] == [0, 0], [
            self.books.payments.purchase(p).to_dict() for p in self.purchases
        ]
        for purchase_id in self.purchases:
            self.coins_follow_what_the_customer_kept(purchase_id)

    def coins_follow_what_the_customer_kept(self, purchase_id: str) -> None:
        """A credited purchase's clawed coins are its share of what Stripe shows refunded
        (refunds that did not fail) and charged back (funds withdrawn, not reinstated)."""
        purchase = self.books.payments.purchase(purchase_id)
        if purchase.status != "credited":
            return
        charge = self.fake.get_object(purchase.charge_id)
        disputes = self.client.v1.disputes.list(params={"charge": charge["id"]}).data
        taken = sum(
            d.amount for d in disputes if [t.amount < 0 for t in d.balance_transactions] == [True]
        )
        kept = min(charge["amount_refunded"] + taken, charge["amount"])
        expected = (purchase.coins * kept * 2 + charge["amount"]) // (2 * charge["amount"])
        assert purchase.clawed_coins == expected, (purchase, charge["amount_refunded"], taken)


@pytest.mark.slow
def test_reconcile_machine(engine: sa.Engine) -> None:
    """After every step of random sessions, reconcile() finds no drift and verify() is clean."""
    ReconcileMachine.engine = engine
    run_state_machine_as_test(
        ReconcileMachine,
        settings=settings(
            settings.default,
            max_examples=EXAMPLES,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
