"""The shipped monitoring rules, each at its threshold, inside the movement's transaction."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from spaktok_ledger import InsufficientFunds, InvalidInput, Ledger
from spaktok_ledger.compliance import (
    Cases,
    Compliance,
    LinkBasis,
    MonitoringRefused,
    MonitoringRule,
    Movement,
    MovementKind,
    Outcome,
    Verdict,
    default_rules,
)
from tests.compliance.conftest import QUIET, age, build, fund, payout_world


def snapshot(ledger: Ledger) -> tuple:
    return ledger.count_entries(), ledger.trial_balance().rows


def open_cases(economy, **filters) -> list:
    return Cases(economy).find(**filters)


class TestVelocity:
    def test_gift_velocity_opens_one_case_and_lets_gifts_through(self, ledger, clock) -> None:
        """Over the per-hour gift count, gifts go on and one case (not one per gift) is open."""
        _, economy = build(ledger, clock, config=replace(QUIET, max_gifts=3))
        economy.register_streamer("bob")
        fund(economy, "alice", 1000)
        for i in range(3):
            economy.send_gift("alice", "bob", "rose", 1, idempotency_key=f"g{i}")
        assert open_cases(economy) == []
        fourth = economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g3")
        economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g4")
        (case,) = open_cases(economy)
        assert (case.rule, case.subject_id, case.subject_role) == ("velocity_gifts", "alice", "payer")
        assert case.facts["count"] == 4 and case.facts["max_count"] == 3
        assert fourth.entry_id in case.evidence_entry_ids
        assert len(case.evidence_entry_ids) == 4  # the four gifts in the window
        clock.advance(hours=2)  # the window moves on: the count starts again
        assert economy.wallet("alice").coins == 950

    def test_gift_velocity_can_refuse(self, ledger, clock) -> None:
        """A refusing rule writes nothing of the gift; its case is recorded all the same."""
        rules = [
            r if r.name != "velocity_gifts" else replace(r, outcome=Outcome.REFUSE)
            for r in default_rules(replace(QUIET, max_gift_usd_minor=25))
        ]
        _, economy = build(ledger, clock, rules=rules)
        economy.register_streamer("bob")
        fund(economy, "alice", 1000)
        economy.send_gift("alice", "bob", "rose", 2, idempotency_key="g1")
        before = snapshot(ledger)
        with pytest.raises(MonitoringRefused) as info:
            economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g2")
        assert snapshot(ledger) == before
        assert info.value.details["rule"] == "velocity_gifts"
        (case,) = open_cases(economy)
        assert info.value.details["case_id"] == case.id and case.outcome == "refuse"
        # the refused gift's key is free: a retry after the window goes through
        clock.advance(hours=2)
        economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g2")
        assert economy.wallet("alice").coins == 970

    def test_purchase_velocity_holds_the_coins(self, ledger, clock) -> None:
        """The purchase over the daily limit is credited as pending: visible, not spendable."""
        _, economy = build(ledger, clock, config=replace(QUIET, max_purchases=2))
        fund(economy, "alice", 100, "p1")
        fund(economy, "alice", 100, "p2")
        third = fund(economy, "alice", 100, "p3")
        assert third.held and (third.wallet.coins, third.wallet.pending_coins) == (200, 100)
        (case,) = open_cases(economy)
        assert case.rule == "velocity_purchases"
        assert [h.kind for h in case.holds] == ["credit"]
        again = fund(economy, "alice", 100, "p3")  # a replay is answered as first booked
        assert again.replayed and again.held and again.entry_id == third.entry_id

    def test_payout_velocity(self, ledger, clock, fake) -> None:
        """A streamer's payouts over the weekly count wait in review."""
        world = payout_world(ledger, clock, fake, config=replace(QUIET, max_payouts=1))
        world.link("bob")
        fund(world.economy, "alice", 20_000)
        world.economy.send_gift("alice", "bob", "rocket", 2, idempotency_key="g")
        first = world.payouts.request_payout("bob", 500, idempotency_key="p1")
        second = world.payouts.request_payout("bob", 500, idempotency_key="p2")
        assert first.status == "transferred" and second.status == "review"
        assert len(world.transfers()) == 1


def test_structuring(ledger, clock) -> None:
    """The third purchase just under the threshold within the window is held."""
    _, economy = build(
        ledger, clock, config=replace(QUIET, structuring_threshold_usd_minor=10_000)
    )
    for key, price in [("p1", 9_500), ("p2", 4_000), ("p3", 9_999)]:
        credit = economy.credit_purchase(
            "alice", coins=price, price_usd_minor=price, idempotency_key=key
        )
        assert not credit.held
    held = economy.credit_purchase("alice", coins=9_000, price_usd_minor=9_000, idempotency_key="p4")
    assert held.held
    (case,) = open_cases(economy)
    assert case.rule == "structuring" and case.facts["count"] == 3
    clock.advance(days=8)  # out of the window
    assert not economy.credit_purchase(
        "alice", coins=9_000, price_usd_minor=9_000, idempotency_key="p5"
    ).held


def test_payout_review_threshold(ledger, clock, fake) -> None:
    """A payout at the review threshold waits; one under it is transferred."""
    world = payout_world(ledger, clock, fake, config=replace(QUIET, payout_review_usd_minor=1000))
    world.link("bob")
    fund(world.economy, "alice", 20_000)
    world.economy.send_gift("alice", "bob", "rocket", 2, idempotency_key="g")
    assert world.payouts.request_payout("bob", 999, idempotency_key="p1").status == "transferred"
    review = world.payouts.request_payout("bob", 1000, idempotency_key="p2")
    assert (review.status, review.ledger_state, review.transfer_id) == ("review", "held", None)
    assert world.economy.earnings("bob").in_payout_minor == 1000  # the first one was paid
    (case,) = open_cases(world.economy)
    assert case.rule == "payout_review" and [h.reference for h in case.holds] == [review.payout_id]
    assert world.payouts.request_payout("bob", 1000, idempotency_key="p2").replayed


class TestRapidInOut:
    def setup_streamer(self, ledger, clock, fake):
        world = payout_world(
            ledger, clock, fake, config=replace(QUIET, rapid_min_usd_minor=5_000)
        )
        world.link("mule")
        world.economy.open_user("carder")
        return world

    def test_fresh_coins_cashed_out_within_hours(self, ledger, clock, fake) -> None:
        """Coins bought and gifted to one streamer, then a payout within hours: held."""
        world = self.setup_streamer(ledger, clock, fake)
        fund(world.economy, "carder", 20_000)
        world.economy.send_gift("carder", "mule", "rocket", 4, idempotency_key="g")
        clock.advance(hours=3)
        payout = world.payouts.request_payout("mule", "all", idempotency_key="p")
        assert payout.status == "review" and world.transfers() == []
        (case,) = open_cases(world.economy)
        assert case.rule == "rapid_in_out" and case.facts["senders"] == ["carder"]
        kinds = {ledger.entry(i).type for i in case.evidence_entry_ids}
        assert kinds == {"purchase", "gift", "payout"}

    def test_old_coins_or_many_fans_are_ordinary(self, ledger, clock, fake) -> None:
        """Coins bought days ago, or gifts from many fans, do not look like a cash-out."""
        world = self.setup_streamer(ledger, clock, fake)
        fund(world.economy, "carder", 20_000)
        clock.advance(days=2)
        world.economy.send_gift("carder", "mule", "rocket", 4, idempotency_key="g")
        assert world.payouts.request_payout("mule", 100, idempotency_key="p1").status == "transferred"
        for fan in range(4):
            fund(world.economy, f"fan{fan}", 5_000)
            world.economy.send_gift(f"fan{fan}", "mule", "rocket", 1, idempotency_key=f"f{fan}")
        assert world.payouts.request_payout("mule", 100, idempotency_key="p2").status == "transferred"


class TestConcentration:
    def test_receipts_from_new_accounts(self, ledger, clock, fake) -> None:
        """Most of the month's receipts from accounts a few days old: the payout waits."""
        world = payout_world(
            ledger, clock, fake, config=replace(QUIET, concentration_min_usd_minor=5_000)
        )
        world.link("bob")
        fund(world.economy, "old_fan", 5_000)
        age(clock)
        world.economy.send_gift("old_fan", "bob", "rocket", 1, idempotency_key="old")
        fund(world.economy, "newbie", 20_000)
        world.economy.send_gift("newbie", "bob", "rocket", 3, idempotency_key="new")
        payout = world.payouts.request_payout("bob", 500, idempotency_key="p")
        assert payout.status == "review"
        (case,) = open_cases(world.economy)
        assert case.rule == "concentration" and case.facts["new_payers"] == ["newbie"]
        assert case.facts["new_payers_share_bps"] == 7500

    def test_few_large_payers(self, ledger, clock, fake) -> None:
        """Above the large-amount floor, 90 % from two payers is reviewed."""
        config = replace(
            QUIET,
            concentration_min_usd_minor=5_000,
            top_payers_min_usd_minor=20_000,
            new_payers_share_bps=10_000,
        )
        world = payout_world(ledger, clock, fake, config=config)
        world.link("bob")
        fund(world.economy, "whale", 25_000)
        age(clock)
        world.economy.send_gift("whale", "bob", "rocket", 5, idempotency_key="w")
        payout = world.payouts.request_payout("bob", 500, idempotency_key="p")
        assert payout.status == "review"
        (case,) = open_cases(world.economy)
        assert case.rule == "concentration" and case.facts["top_payers"] == ["whale"]


def test_payer_chargeback_ratio_holds_the_next_purchase(ledger, clock) -> None:
    """Two disputes on three purchases: the payer's next credit is held for review."""
    compliance, economy = build(
        ledger, clock, config=replace(QUIET, payer_min_disputes=2, payer_dispute_ratio_bps=5000)
    )
    for key in ("p1", "p2", "p3"):
        fund(economy, "alice", 100, key)
    for ref in ("p1", "p2"):
        ledger.atomic(
            lambda tx, ref=ref: compliance.observe(
                tx, Movement(MovementKind.DISPUTE, "alice", 100, clock(), reference=ref)
            )
        )
    (case,) = open_cases(economy)
    assert case.rule == "chargeback_ratio" and case.movement == "dispute"
    assert fund(economy, "alice", 100, "p4").held


def test_streamer_paid_by_payers_who_charged_back(ledger, clock, fake) -> None:
    """A payout funded mostly by payers with chargebacks waits for review."""
    config = replace(QUIET, streamer_disputed_min_usd_minor=1_000, streamer_disputed_share_bps=5000)
    world = payout_world(ledger, clock, fake, config=config)
    world.link("bob")
    fund(world.economy, "alice", 10_000)
    world.economy.send_gift("alice", "bob", "rocket", 2, idempotency_key="g")
    ledger.atomic(
        lambda tx: world.compliance.observe(
            tx, Movement(MovementKind.DISPUTE, "alice", 10_000, clock(), reference="pur_x")
        )
    )
    payout = world.payouts.request_payout("bob", 500, idempotency_key="p")
    assert payout.status == "review"
    rules = {c.rule for c in open_cases(world.economy)}
    assert "chargeback_ratio" in rules


class TestLinkedAccounts:
    def test_gift_between_linked_accounts(self, ledger, clock) -> None:
        """A gift from an account sharing a device with the streamer opens a case on them."""
        compliance, economy = build(ledger, clock)
        economy.register_streamer("bob")
        fund(economy, "alice", 500)
        fund(economy, "carol", 500)
        compliance.link_accounts("alice", "dave", basis=LinkBasis.DEVICE, actor="ops")
        compliance.link_accounts("dave", "bob", basis="ip", actor="ops")
        assert compliance.linked_accounts("alice") == {"bob", "dave"}
        economy.send_gift("carol", "bob", "rose", 1, idempotency_key="c")
        assert open_cases(economy) == []
        economy.send_gift("alice", "bob", "rose", 1, idempotency_key="a")
        (case,) = open_cases(economy)
        assert (case.rule, case.subject_id, case.subject_role) == ("linked_accounts", "bob", "streamer")
        assert case.facts["sender"] == "alice"

    def test_unlinking_splits_the_group(self, ledger, clock) -> None:
        """Removing the link that joined two groups makes them strangers again."""
        compliance, economy = build(ledger, clock)
        compliance.link_accounts("a", "b", basis="card", actor="ops")
        compliance.link_accounts("b", "c", basis="card", actor="ops")
        compliance.link_accounts("c", "d", basis="device", actor="ops")
        assert compliance.unlink_accounts("b", "c", actor="ops") == 1
        assert compliance.linked_accounts("a") == {"b"}
        assert compliance.linked_accounts("d") == {"c"}
        with pytest.raises(InvalidInput):
            compliance.link_accounts("a", "a", basis="card", actor="ops")

    def test_payout_funded_by_linked_accounts(self, ledger, clock, fake) -> None:
        """Links declared after the gifts still hold the payout they fund."""
        world = payout_world(ledger, clock, fake)
        world.link("bob")
        fund(world.economy, "alice", 10_000)
        world.economy.send_gift("alice", "bob", "rocket", 1, idempotency_key="g")
        world.compliance.link_accounts("alice", "bob", basis="card", actor="ops")
        assert world.payouts.request_payout("bob", 500, idempotency_key="p").status == "review"


class TestHostRules:
    def test_a_host_rule_through_the_port(self, ledger, clock) -> None:
        """Anything with name, kinds and evaluate is a rule; it sees the transaction's facts."""

        class NoBigGiftsFromNewcomers:
            name = "newcomer_big_gift"
            kinds = frozenset({MovementKind.GIFT})

            def evaluate(self, movement, facts):
                seen = facts.first_seen([movement.party_id]).get(movement.party_id)
                new = seen is not None and movement.at - seen < timedelta(days=1)
                if new and movement.amount_usd_minor >= 5000:
                    return Verdict(Outcome.REFUSE, self.name, movement.party_id, "too soon")
                return None

        assert isinstance(NoBigGiftsFromNewcomers(), MonitoringRule)
        _, economy = build(
            ledger, clock, rules=[*default_rules(QUIET), NoBigGiftsFromNewcomers()]
        )
        economy.register_streamer("bob")
        fund(economy, "alice", 10_000)
        with pytest.raises(MonitoringRefused, match="too soon"):
            economy.send_gift("alice", "bob", "rocket", 1, idempotency_key="g")
        clock.advance(days=2)
        economy.send_gift("alice", "bob", "rocket", 1, idempotency_key="g")

    def test_rules_are_checked(self, ledger) -> None:
        """Rule sets are validated: unique names, real rules."""
        with pytest.raises(InvalidInput):
            Compliance(ledger, rules=[*default_rules(), *default_rules()])
        with pytest.raises(InvalidInput):
            Compliance(ledger, rules=[object()])  # type: ignore[list-item]


def test_refunds_cannot_be_refused(ledger, clock) -> None:
    """A REFUSE verdict on a dispute (it already happened) opens a case like HOLD."""

    class RefuseDisputes:
        name = "refuse_disputes"
        kinds = frozenset({MovementKind.DISPUTE})

        def evaluate(self, movement, facts):
            return Verdict(Outcome.REFUSE, self.name, movement.party_id, "dispute")

    compliance, economy = build(ledger, clock, rules=[RefuseDisputes()])
    ledger.atomic(
        lambda tx: compliance.observe(
            tx, Movement(MovementKind.DISPUTE, "alice", 100, clock(), reference="pur_1")
        )
    )
    (case,) = open_cases(economy)
    assert case.outcome == "hold"


def test_a_refused_gift_leaves_no_activity(ledger, clock) -> None:
    """A gift the ledger refuses (insufficient funds) counts toward no rule and opens no case."""
    _, economy = build(ledger, clock, config=replace(QUIET, max_gifts=1))
    economy.register_streamer("bob")
    fund(economy, "alice", 10)
    for key in ("g1", "g2", "g3"):
        with pytest.raises(InsufficientFunds):
            economy.send_gift("alice", "bob", "heart", 1, idempotency_key=key)
    activity = ledger.tables.compliance.activity
    rows = ledger.read(
        lambda conn: conn.execute(activity.select().where(activity.c.kind == "gift")).all()
    )
    assert rows == []
    economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g4")  # the first real gift
    assert open_cases(economy) == []
