"""Invariants of monitoring, on both backends: refusals leave no trace, activity counts
exactly what was written, one open case per rule and subject, concurrent movements."""

from __future__ import annotations

import itertools
import threading

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from spaktok_ledger import InsufficientFunds, Ledger
from spaktok_ledger.compliance import (
    Cases,
    MonitoringRefused,
    MovementKind,
    Outcome,
    Verdict,
    default_rules,
)
from spaktok_ledger.testing import FakeClock
from tests.compliance.conftest import QUIET, build, fund

_prefixes = itertools.count()


class Scripted:
    """A host rule whose answer per gift comes from the test (allow, hold or refuse)."""

    name = "scripted"
    kinds = frozenset({MovementKind.GIFT})

    def __init__(self) -> None:
        self.answers: dict[str, Outcome] = {}

    def evaluate(self, movement, facts):
        outcome = self.answers.get(movement.reference or "", Outcome.ALLOW)
        if outcome is Outcome.ALLOW:
            return None
        return Verdict(outcome, self.name, movement.counterparty_id or "", "scripted")


gifts = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["s1", "s2"]),
        st.integers(min_value=1, max_value=30),
        st.sampled_from(list(Outcome)),
    ),
    min_size=1,
    max_size=10,
)


@given(script=gifts)
@settings(max_examples=12, deadline=None)
def test_refusals_leave_no_trace_and_activity_counts_what_was_written(engine, script) -> None:
    """Refused gifts write no entry and count nowhere; held and allowed ones are booked and
    counted exactly once; every held gift's streamer has one open case, however many."""
    clock = FakeClock()
    ledger = Ledger(engine, prefix=f"mp{next(_prefixes)}_", clock=clock)
    ledger.migrate()
    rule = Scripted()
    compliance, economy = build(ledger, clock, rules=[*default_rules(QUIET), rule])
    for streamer in ("s1", "s2"):
        economy.register_streamer(streamer)
    fund(economy, "u1", 200, "f1")
    fund(economy, "u2", 200, "f2")
    expected: dict[tuple[str, str], int] = {}
    held: set[str] = set()
    wallets = {"u1": 200, "u2": 200}
    for i, (sender, streamer, roses, outcome) in enumerate(script):
        key = f"g{i}"
        rule.answers[f"gift:{sender}:{key}"] = outcome
        entries = ledger.count_entries()
        # the rules run first: a refusal is a refusal, funds or not
        if outcome is Outcome.REFUSE:
            with pytest.raises(MonitoringRefused) as refused:
                economy.send_gift(sender, streamer, "rose", roses, idempotency_key=key)
            assert ledger.count_entries() == entries
            assert refused.value.details["case_id"] is not None
            continue
        if roses * 10 > wallets[sender]:
            with pytest.raises(InsufficientFunds):
                economy.send_gift(sender, streamer, "rose", roses, idempotency_key=key)
            assert ledger.count_entries() == entries
            continue
        economy.send_gift(sender, streamer, "rose", roses, idempotency_key=key)
        wallets[sender] -= roses * 10
        expected[(sender, streamer)] = expected.get((sender, streamer), 0) + roses * 10
        if outcome is Outcome.HOLD:
            held.add(streamer)
        # a replay changes nothing, and is not counted again
        economy.send_gift(sender, streamer, "rose", roses, idempotency_key=key)
    activity = ledger.tables.compliance.activity
    rows = ledger.read(
        lambda conn: conn.execute(
            sa.select(
                activity.c.party_id,
                activity.c.counterparty_id,
                sa.func.sum(activity.c.amount_usd_minor),
            )
            .where(activity.c.kind == "gift")
            .group_by(activity.c.party_id, activity.c.counterparty_id)
        ).all()
    )
    assert {(r[0], r[1]): int(r[2]) for r in rows} == expected
    # one open case per rule and subject: a hold after a refusal joins the refusal's case
    open_cases = Cases(economy).find(rule="scripted")
    assert held <= {c.subject_id for c in open_cases}
    assert len({c.subject_id for c in open_cases}) == len(open_cases)
    assert ledger.verify().ok


@pytest.mark.slow
def test_concurrent_flagged_gifts_open_one_case(engine, prefix, backend) -> None:
    """Many senders gifting at once to linked accounts' streamer: one open case, all gifts
    booked, nothing lost to the case's uniqueness (PostgreSQL: truly concurrent)."""
    clock = FakeClock()
    ledger = Ledger(engine, prefix=prefix, clock=clock)
    ledger.migrate()
    compliance, economy = build(ledger, clock)
    economy.register_streamer("bob")
    senders = [f"u{i}" for i in range(6)]
    for sender in senders:
        fund(economy, sender, 1000, f"f-{sender}")
        compliance.link_accounts(sender, "bob", basis="ip", actor="ops")
    errors: list[BaseException] = []

    def gift(sender: str) -> None:
        try:
            for i in range(5):
                economy.send_gift(sender, "bob", "rose", 1, idempotency_key=f"{sender}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=gift, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (case,) = Cases(economy).find()
    assert case.rule == "linked_accounts" and case.subject_id == "bob"
    assert economy.earnings("bob").available_minor == len(senders) * 5 * 4
    assert ledger.verify().ok
