"""What viewers owe after a refund or chargeback of coins they already spent.

The money is gone when Stripe refunds or withdraws it, so the spent value is
an **expense** at that moment (``platform:refund_losses``). What the viewer
owes is still tracked as a **recoverable**: ``user:{id}:receivable`` holds the
claim and ``platform:receivables_allowance`` (a contra-asset) the allowance
for not collecting it, so the claim adds nothing to the platform's assets
until it is recovered. This is the allowance method of accounting for bad
debts: the expense is recognised when the loss happens, not when the debt is
given up.

- a **recovery** (a later purchase or released coins repay the debt) releases
  the allowance and recovers the expense: Dr allowance / Cr refund_losses;
- a **write-off** gives the claim up: Dr allowance / Cr receivable. The
  expense was booked already; the viewer's spending is no longer blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from spaktok_ledger._domain import Posting
from spaktok_ledger._errors import UnknownAccount
from spaktok_ledger._store import Ledger

__all__ = ["ALLOWANCE", "REFUND_LOSSES", "WriteOff", "allowance_legs", "recovery_legs"]

ALLOWANCE: Final = "platform:receivables_allowance"
REFUND_LOSSES: Final = "platform:refund_losses"


@dataclass(frozen=True, slots=True)
class WriteOff:
    """A viewer's debt given up (``payments.write_off``)."""

    user_id: str
    amount_usd_minor: int
    """What was written off, in US cents (0: there was no debt)."""
    entry_id: int | None
    reason: str
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "amount_usd_minor": self.amount_usd_minor,
            "entry_id": self.entry_id,
            "reason": self.reason,
        }


def allowance_legs(amount_minor: int) -> list[Posting]:
    """A new claim of ``amount_minor``: the loss is an expense now, the claim has an
    allowance (booked next to the Dr receivable leg of the clawback)."""
    if amount_minor <= 0:
        return []
    return [Posting.debit(REFUND_LOSSES, amount_minor), Posting.credit(ALLOWANCE, amount_minor)]


def outstanding_allowance(tx: Ledger) -> int:
    """The allowance still held against claims (a credit balance, returned positive)."""
    try:
        return -tx.balance(ALLOWANCE).posted_minor
    except UnknownAccount:  # a ledger set up before the allowance existed
        return 0


def recovery_legs(tx: Ledger, repaid_minor: int) -> list[Posting]:
    """``repaid_minor`` of a claim came back: release as much allowance (debts from
    before the allowance existed had none, so never more than is held)."""
    amount = min(repaid_minor, outstanding_allowance(tx))
    if amount <= 0:
        return []
    return [Posting.debit(ALLOWANCE, amount), Posting.credit(REFUND_LOSSES, amount)]
