"""Writing off a user's debt: an operator action, booked and audited in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from spaktok_ledger._compliance._audit import AuditAction, check_actor, write_audit
from spaktok_ledger._domain import EntryDraft, Posting
from spaktok_ledger._errors import InvalidInput, UnknownAccount, UnknownEntry, UnknownUser
from spaktok_ledger._money import check_minor
from spaktok_ledger._service._gifts import GiftEconomy, receivable_account
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._store import Ledger

__all__ = ["WRITE_OFF_ACCOUNT", "WriteOff", "write_off_debt"]

WRITE_OFF_ACCOUNT = "platform:refund_losses"


@dataclass(frozen=True, slots=True)
class WriteOff:
    """A debt written off."""

    user_id: str
    amount_usd_minor: int
    entry_id: int
    audit_id: int | None
    """None for a replay (the first call's record is in the audit log)."""
    replayed: bool = False


def write_off_debt(
    economy: GiftEconomy,
    user_id: str | int,
    *,
    reason: str,
    actor: str,
    idempotency_key: str,
    amount_usd_minor: int | None = None,
    request_id: str | None = None,
) -> WriteOff:
    """Write off what a user owes after a refund or chargeback of spent coins.

    Books Dr ``platform:refund_losses`` / Cr ``user:{id}:receivable`` for the
    whole debt (or ``amount_usd_minor`` of it), which lifts the spending block;
    the operator, the reason and the request are in the audit log.
    Idempotent by ``idempotency_key``.
    """
    user = check_party_id(user_id, "user_id")
    who = check_actor(actor)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("a write-off needs a reason")
    if not isinstance(idempotency_key, str) or not idempotency_key.strip():
        raise InvalidInput("idempotency_key must be a non-empty string")
    wanted = None
    if amount_usd_minor is not None:
        wanted = check_minor(amount_usd_minor, name="amount_usd_minor", allow_zero=False)
        if wanted < 0:
            raise InvalidInput("amount_usd_minor must be positive")
    key = f"write_off:{user}:{idempotency_key}"
    now = economy.clock()

    def run(tx: Ledger) -> WriteOff:
        try:
            previous = tx.entry_by_key(key)
        except UnknownEntry:
            previous = None
        if previous is not None:
            amount = sum(p.amount_minor for p in previous.postings if p.amount_minor > 0)
            return WriteOff(user, amount, previous.id, None, replayed=True)
        try:
            debt = tx.balance(receivable_account(user)).posted_minor
        except UnknownAccount as exc:
            raise UnknownUser(f"no wallet for user {user!r}", user_id=user) from exc
        amount = debt if wanted is None else wanted
        if debt <= 0 or amount > debt:
            raise InvalidInput(
                f"user {user} owes {debt} US cents; cannot write off {amount}", debt_usd_minor=debt
            )
        entry = tx.post(
            EntryDraft(
                "write_off",
                (
                    Posting.debit(WRITE_OFF_ACCOUNT, amount),
                    Posting.credit(receivable_account(user), amount),
                ),
                key,
                description=f"debt of {user} written off: {reason.strip()[:900]}",
                metadata={"user": user, "actor": who, "counterparty": "platform"},
                effective_at=now,
            ),
            request={"op": "write_off", "user": user, "amount": amount},
        )
        audit_id = write_audit(
            tx.connection(),
            tx.tables,
            AuditAction.WRITE_OFF,
            actor=who,
            subject=f"user:{user}",
            reason=reason,
            request={"user_id": user, "amount_usd_minor": wanted, "idempotency_key": key},
            request_id=request_id,
            result={"entry_id": entry.id, "amount_usd_minor": amount},
            now=now,
        )
        return WriteOff(user, amount, entry.id, audit_id)

    return economy.ledger.atomic(run)
