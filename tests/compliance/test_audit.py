"""Every operator action is in the audit log, which the database keeps append-only."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from spaktok_ledger import InvalidInput, SpendingBlocked
from spaktok_ledger.compliance import (
    UNSPECIFIED_ACTOR,
    Identity,
    ListedParty,
    StaticListScreening,
    erase_user,
    rotate_keys,
)
from tests.compliance.conftest import build, fund, shop


def actions(compliance) -> list[tuple[str, str, str | None]]:
    return [(r.action, r.actor, r.subject) for r in compliance.audit_log(limit=1000)]


def test_ledger_actions_are_audited(ledger, clock, keyring) -> None:
    """Adjust, block, unblock, link, screen, rotate, erase: actor, reason, request, time."""
    screening = StaticListScreening([ListedParty("EU", "Ivan Petrov")])
    compliance, economy = build(ledger, clock, keyring=keyring, screening=screening)
    economy.register_streamer("bob")
    economy.open_user("alice")
    economy.adjust("alice", 50, reason="goodwill", idempotency_key="a1", actor="ops-1",
                   request_id="req-7")
    economy.adjust("alice", 50, reason="goodwill", idempotency_key="a1", actor="ops-1")  # replay
    economy.block_streamer("bob", "chargebacks", actor="ops-2")
    economy.unblock_streamer("bob", actor="ops-2", reason="cleared")
    compliance.link_accounts("alice", "bob", basis="device", actor="ops-3")
    compliance.screen("bob", Identity("Robert Smith"), actor="kyc-bot")
    rotate_keys(compliance, actor="sre")
    erase_user(compliance, "alice", actor="dpo", reason="GDPR request 42")
    assert actions(compliance) == [
        ("adjust", "ops-1", "user:alice"),
        ("block_streamer", "ops-2", "streamer:bob"),
        ("unblock_streamer", "ops-2", "streamer:bob"),
        ("link_accounts", "ops-3", "party:alice"),
        ("screen_party", "kyc-bot", "party:bob"),
        ("rotate_keys", "sre", "keyring"),
        ("erase_user", "dpo", "party:alice"),
    ]
    adjust = compliance.audit_log(action="adjust")[0]
    assert (adjust.reason, adjust.request_id, adjust.at) == ("goodwill", "req-7", clock())
    assert adjust.request == {"user_id": "alice", "coins": 50, "idempotency_key": "a1"}
    assert adjust.result["entry_id"] == ledger.entry_by_key("adjust:a1").id
    assert compliance.audit_log(after_id=adjust.id, limit=1)[0].action == "block_streamer"


def test_an_action_without_actor_is_marked_unspecified(ledger, clock) -> None:
    """Older call sites without actor= still leave a record, marked as such."""
    compliance, economy = build(ledger, clock)
    economy.register_streamer("bob")
    economy.block_streamer("bob", "review")
    assert actions(compliance) == [("block_streamer", UNSPECIFIED_ACTOR, "streamer:bob")]
    with pytest.raises(InvalidInput):
        economy.block_streamer("bob", "review", actor="   ")


def test_a_refused_action_leaves_no_record(ledger, clock) -> None:
    """An adjustment the ledger refuses is not in the log: the record commits with the effect."""
    compliance, economy = build(ledger, clock)
    fund(economy, "alice", 10)
    with pytest.raises(Exception, match="available"):
        economy.adjust("alice", -50, reason="oops", idempotency_key="a", actor="ops")
    assert actions(compliance) == []


def test_payment_actions_are_audited(ledger, clock, fake) -> None:
    """Release, refuse and refund of purchases, and a debt write-off."""
    world = shop(ledger, clock, fake)
    economy, payments = world.economy, world.payments
    economy.register_streamer("bob")
    held = world.buy("alice", "k1", risk_level="elevated")
    payments.release(held, actor="fraud-1", reason="looks fine", request_id="r1")
    refused = world.buy("alice", "k2", risk_level="elevated")
    payments.refuse(refused, actor="fraud-1", reason="stolen", request_id="r2")
    economy.send_gift("alice", "bob", "heart", 5, idempotency_key="g")
    charge = payments.purchase(held).charge_id
    refund_id = payments.refund(held, idempotency_key="rf", actor="support", reason="asked")
    (refunded,) = [
        e for e in fake.events
        if e["type"] == "charge.refunded" and e["data"]["object"]["id"] == charge
    ]
    world.deliver(refunded)
    with pytest.raises(SpendingBlocked):
        economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g2")
    debt = economy.wallet("alice").debt_usd_minor
    written = payments.write_off(
        "alice", reason="goodwill", idempotency_key="w1", actor="support", request_id="r3"
    )
    assert written.amount_usd_minor == debt and economy.wallet("alice").debt_usd_minor == 0
    again = payments.write_off("alice", reason="goodwill", idempotency_key="w1", actor="support")
    assert again.replayed and again.entry_id == written.entry_id  # and not audited twice
    log = world.compliance.audit_log(limit=100)
    assert [(r.action, r.actor, r.subject) for r in log] == [
        ("release_purchase", "fraud-1", f"purchase:{held}"),
        ("refuse_purchase", "fraud-1", f"purchase:{refused}"),
        ("refund", "support", f"purchase:{held}"),
        ("write_off", "support", "user:alice"),
    ]
    assert log[2].result == {"refund_id": refund_id}
    assert ledger.verify().ok


def test_the_audit_log_is_append_only(ledger, clock) -> None:
    """UPDATE and DELETE on the audit log are refused by the database itself."""
    compliance, economy = build(ledger, clock)
    economy.register_streamer("bob")
    economy.block_streamer("bob", "review", actor="ops")
    table = ledger.tables.compliance.audit_log
    for statement in (table.update().values(actor="someone else"), table.delete()):
        with pytest.raises(sa.exc.DatabaseError, match=r"append-only|not allowed"):
            ledger.atomic(lambda tx, statement=statement: tx.connection().execute(statement))
    assert actions(compliance) == [("block_streamer", "ops", "streamer:bob")]


def test_verify_reports_a_missing_audit_guard(ledger, clock, backend) -> None:
    """verify() names the audit log's trigger when someone dropped it."""
    build(ledger, clock)
    assert ledger.verify().ok
    trigger = (
        f"{ledger.prefix}audit_log_append_only" if backend == "postgresql"
        else f"{ledger.prefix}audit_log_no_delete"
    )
    on = f" ON {ledger.prefix}audit_log" if backend == "postgresql" else ""
    ledger.atomic(lambda tx: tx.connection().exec_driver_sql(f"DROP TRIGGER {trigger}{on}"))
    problems = ledger.verify().problems
    assert [(p.check, p.subject) for p in problems] == [("guards", trigger)]
