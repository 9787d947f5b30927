"""The review queue: payouts wait while their streamer has an open case; decisions are final."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest

from spaktok_ledger import GiftRejected, InvalidInput
from spaktok_ledger.compliance import (
    CaseClosed,
    Cases,
    CaseStatus,
    Decision,
    UnknownCase,
)
from tests.compliance.conftest import QUIET, build, fund, payout_world

REVIEW = replace(QUIET, payout_review_usd_minor=1000)


def funded_streamer(world, streamer: str = "bob", rockets: int = 2) -> None:
    world.link(streamer)
    fund(world.economy, "alice", 5000 * rockets, f"fund-{streamer}")
    world.economy.send_gift("alice", streamer, "rocket", rockets, idempotency_key=f"g-{streamer}")


def test_release_sends_the_payout_on_to_its_transfer(ledger, clock, fake) -> None:
    """Released after review, the payout is transferred; the decision is audited."""
    world = payout_world(ledger, clock, fake, config=REVIEW)
    funded_streamer(world)
    payout = world.payouts.request_payout("bob", 1500, idempotency_key="p")
    cases = Cases(world.economy, payouts=world.payouts)
    (case,) = cases.find()
    cases.assign(case.id, "rita", actor="lead")
    assert cases.get(case.id).assignee == "rita"
    decided = cases.decide(case.id, Decision.RELEASE, actor="rita", reason="known streamer")
    assert decided.released_payouts == (payout.payout_id,)
    after = world.payouts.payout(payout.payout_id)
    assert after.status == "transferred" and len(world.transfers()) == 1
    assert decided.case.status is CaseStatus.CLOSED and decided.case.decided_by == "rita"
    trail = world.compliance.audit_log(subject=f"case:{case.id}")
    assert [(r.action, r.actor) for r in trail] == [("assign_case", "lead"), ("decide_case", "rita")]
    assert trail[1].reason == "known streamer"
    with pytest.raises(CaseClosed):
        cases.decide(case.id, "refuse", actor="rita", reason="second thoughts")
    with pytest.raises(UnknownCase):
        cases.get(999)


def test_refuse_voids_the_hold_and_can_block(ledger, clock, fake) -> None:
    """Refused after review: the hold is voided (money back in earnings), nothing moves."""
    world = payout_world(ledger, clock, fake, config=REVIEW)
    funded_streamer(world)
    before = world.economy.earnings("bob")
    payout = world.payouts.request_payout("bob", 1500, idempotency_key="p")
    cases = Cases(world.economy, payouts=world.payouts)
    (case,) = cases.find(subject_id="bob")
    with pytest.raises(InvalidInput):
        cases.decide(case.id, Decision.RELEASE, actor="rita", reason="x", block=True)
    decided = cases.decide(case.id, Decision.REFUSE, actor="rita", reason="mule", block=True)
    assert decided.refused_payouts == (payout.payout_id,)
    refused = world.payouts.payout(payout.payout_id)
    assert (refused.status, refused.ledger_state, refused.failure_code) == (
        "refused",
        "voided",
        "compliance_refused",
    )
    assert world.economy.earnings("bob") == before
    assert world.transfers() == [] and ledger.verify().ok
    assert world.economy.streamer("bob").blocked
    with pytest.raises(GiftRejected):
        world.economy.send_gift("alice", "bob", "rose", 1, idempotency_key="after")
    actions = [r.action for r in world.compliance.audit_log()]
    assert actions[-2:] == ["block_streamer", "decide_case"]
    topics = [e.topic for e in world.economy.outbox.pending(limit=1000)]
    assert "payout.failed" in topics and "case.opened" in topics


def test_a_payout_waits_for_every_open_case(ledger, clock, fake) -> None:
    """Two cases about the streamer: the payout moves only when the last one is released."""
    world = payout_world(ledger, clock, fake, config=REVIEW)
    funded_streamer(world)
    world.compliance.link_accounts("alice", "bob", basis="card", actor="ops")
    payout = world.payouts.request_payout("bob", 1500, idempotency_key="p")
    cases = Cases(world.economy, payouts=world.payouts)
    first, second = cases.find(subject_id="bob")
    assert {first.rule, second.rule} == {"payout_review", "linked_accounts"}
    one = cases.decide(first.id, "release", actor="rita", reason="fine")
    assert one.waiting_payouts == (payout.payout_id,) and one.released_payouts == ()
    assert world.payouts.payout(payout.payout_id).status == "review"
    # a new request while a case is open waits too, even under the threshold
    small = world.payouts.request_payout("bob", 200, idempotency_key="small")
    assert small.status == "review"
    two = cases.decide(second.id, "release", actor="rita", reason="family account")
    assert set(two.released_payouts) == {payout.payout_id, small.payout_id}
    assert len(world.transfers()) == 2


def test_without_the_payouts_service_reconcile_makes_the_transfer(ledger, clock, fake) -> None:
    """A decision taken offline (the CLI) leaves the transfer to reconcile-payouts."""
    world = payout_world(ledger, clock, fake, config=REVIEW)
    funded_streamer(world)
    payout = world.payouts.request_payout("bob", 1500, idempotency_key="p")
    offline = Cases(world.economy)
    (case,) = offline.find()
    decided = offline.decide(case.id, "release", actor="rita", reason="ok")
    assert "reconcile-payouts" in decided.notes[0]
    assert world.payouts.payout(payout.payout_id).status == "pending"
    assert world.transfers() == []
    found = world.payouts.reconcile()
    assert [(d.problem, d.resolved) for d in found] == [("transfer_missing", True)]
    assert world.payouts.payout(payout.payout_id).status == "transferred"


def test_held_credit_is_released_or_voided(ledger, clock) -> None:
    """Coins held by a rule become spendable on release, and vanish on refusal."""
    _, economy = build(ledger, clock, config=replace(QUIET, max_purchases=1))
    fund(economy, "alice", 100, "p1")
    held = fund(economy, "alice", 300, "p2")
    cases = Cases(economy)
    (case,) = cases.find()
    assert [(h.kind, h.entry_id) for h in case.holds] == [("credit", held.entry_id)]
    cases.decide(case.id, "release", actor="rita", reason="a fan")
    assert economy.wallet("alice").coins == 400
    refused = fund(economy, "alice", 50, "p3")
    assert refused.held
    (case,) = cases.find()
    cases.decide(case.id, "refuse", actor="rita", reason="stolen card")
    assert (economy.wallet("alice").coins, economy.wallet("alice").pending_coins) == (400, 0)
    assert ledger.verify().ok


def test_export_for_a_suspicious_activity_report(ledger, clock, fake) -> None:
    """JSON Lines: the case, its evidence entries and its audit trail; CSV: a row per entry."""
    world = payout_world(ledger, clock, fake, config=REVIEW)
    funded_streamer(world)
    world.payouts.request_payout("bob", 1500, idempotency_key="p")
    cases = Cases(world.economy, payouts=world.payouts)
    (case,) = cases.find()
    cases.decide(case.id, "refuse", actor="rita", reason="structuring")
    out = io.StringIO()
    progress: list[tuple[int, int]] = []
    assert cases.export(out, decision="refuse", on_progress=lambda d, t: progress.append((d, t))) == 1
    assert progress == [(0, 1), (1, 1)]
    (line,) = out.getvalue().splitlines()
    report = json.loads(line)
    assert report["case"]["decision"] == "refuse" and report["case"]["rule"] == "payout_review"
    (entry,) = report["evidence"]
    assert entry["type"] == "payout" and entry["postings"][0]["amount_minor"] == 1500
    assert [a["action"] for a in report["audit"]] == ["decide_case"]
    table = io.StringIO()
    cases.export(table, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert [(r["case_id"], r["entry_type"], r["entry_amount_minor"]) for r in rows] == [
        (str(case.id), "payout", "1500")
    ]
    assert cases.export(io.StringIO(), status="open") == 0


class TestStripePurchases:
    """Cases holding coins bought through Stripe Checkout."""

    def test_a_held_purchase_is_released_through_payments(self, ledger, clock, fake) -> None:
        """The webhook credits the over-limit purchase as held; releasing its case makes the
        coins spendable through the payments service (status credited)."""
        from tests.compliance.conftest import shop

        world = shop(ledger, clock, fake, config=replace(QUIET, max_purchases=1))
        first = world.buy("alice", "k1")
        second = world.buy("alice", "k2")
        assert world.payments.purchase(first).status == "credited"
        assert world.payments.purchase(second).status == "held"
        cases = Cases(world.economy, payments=world.payments)
        (case,) = cases.find()
        assert [(h.kind, h.reference) for h in case.holds] == [("purchase", second)]
        decided = cases.decide(case.id, "release", actor="rita", reason="a fan")
        assert decided.released_purchases == (second,)
        assert world.payments.purchase(second).status == "credited"
        assert world.economy.wallet("alice").coins == 1000

    def test_a_held_purchase_refused_is_refunded(self, ledger, clock, fake) -> None:
        """Refusing the case refuses the purchase and asks Stripe for the refund."""
        from tests.compliance.conftest import shop

        world = shop(ledger, clock, fake, config=replace(QUIET, max_purchases=1))
        world.buy("alice", "k1")
        held = world.buy("alice", "k2")
        cases = Cases(world.economy, payments=world.payments)
        (case,) = cases.find()
        decided = cases.decide(case.id, "refuse", actor="rita", reason="stolen card")
        assert decided.refused_purchases == (held,)
        assert world.payments.purchase(held).status == "refused"
        intent = world.payments.purchase(held).payment_intent_id
        assert any(
            r.path == "/v1/refunds" and r.params.get("payment_intent") == intent
            for r in fake.requests
        )
        assert world.economy.wallet("alice").pending_coins == 0

    def test_a_refusing_rule_refuses_and_refunds_a_stripe_purchase(
        self, ledger, clock, fake
    ) -> None:
        """A purchase refused by a rule: no coins, a refund, and the case in the same commit."""
        from spaktok_ledger.compliance import MovementKind, Outcome, Verdict, default_rules
        from tests.compliance.conftest import shop

        class NoBigPacks:
            name = "no_big_packs"
            kinds = frozenset({MovementKind.PURCHASE})

            def evaluate(self, movement, facts):
                if movement.amount_usd_minor >= 9_000:
                    return Verdict(Outcome.REFUSE, self.name, movement.party_id, "too big")
                return None

        world = shop(ledger, clock, fake, rules=[*default_rules(QUIET), NoBigPacks()])
        purchase = world.buy("alice", "k1", pack="big")
        record = world.payments.purchase(purchase)
        assert record.status == "refused" and "no_big_packs" in (record.note or "")
        assert world.economy.wallet("alice").coins == 0
        assert any(r.path == "/v1/refunds" for r in fake.requests)
        (case,) = Cases(world.economy).find()
        assert (case.rule, case.outcome, case.reference) == ("no_big_packs", "refuse", purchase)

    def test_chargebacks_from_stripe_feed_the_payer_ratio(self, ledger, clock, fake) -> None:
        """Two disputed purchases out of two: the payer's chargeback case opens on the webhook."""
        from tests.compliance.conftest import shop

        world = shop(ledger, clock, fake, config=replace(QUIET, payer_min_disputes=2))
        for key in ("k1", "k2"):
            purchase = world.payments.purchase(world.buy("alice", key))
            event = fake.dispute(purchase.charge_id)
            world.deliver(event)
            world.deliver(fake.dispute_funds_withdrawn(event["data"]["object"]["id"]))
        (case,) = Cases(world.economy).find()
        assert (case.rule, case.movement, case.subject_id) == ("chargeback_ratio", "dispute", "alice")
        assert case.facts == {"disputes": 2, "purchases": 2, "ratio_bps": 10_000}
        kinds = sorted(ledger.entry(i).type for i in case.evidence_entry_ids)
        assert kinds == ["dispute", "dispute", "purchase", "purchase"]


def test_bad_input_is_a_typed_error_and_writes_nothing(ledger, clock, keyring) -> None:
    """Unknown decisions, statuses, bases, actions: InvalidInput naming what is allowed."""
    compliance, economy = build(ledger, clock, keyring=keyring, config=replace(QUIET, max_purchases=1))
    fund(economy, "alice", 1, "p1")
    fund(economy, "alice", 1, "p2")
    cases = Cases(economy)
    (case,) = cases.find()
    before = compliance.audit_log()
    for call in (
        lambda: cases.decide(case.id, "maybe", actor="rita", reason="x"),
        lambda: cases.decide(case.id, "release", actor="rita", reason="  "),
        lambda: cases.decide(case.id, "release", actor="", reason="x"),
        lambda: cases.find(status="pending"),
        lambda: cases.find(limit=0),
        lambda: cases.assign("1", "rita", actor="lead"),  # type: ignore[arg-type]
        lambda: cases.assign(case.id, None, actor="lead"),  # type: ignore[arg-type]
        lambda: cases.export(io.StringIO(), fmt="xml"),
        lambda: compliance.link_accounts("a", "b", basis="phone", actor="ops"),
        lambda: compliance.link_accounts("a", "not an id!", basis="ip", actor="ops"),
        lambda: compliance.audit_log(action="nope"),
        lambda: compliance.export_audit(io.StringIO(), fmt="xml"),
    ):
        with pytest.raises(InvalidInput) as info:
            call()
        assert not isinstance(info.value, LookupError)
    with pytest.raises(InvalidInput, match="release, refuse"):
        cases.decide(case.id, "maybe", actor="rita", reason="x")
    assert cases.get(case.id).status is CaseStatus.OPEN
    assert compliance.audit_log() == before
