"""The purchase row and what the payments service's parts share.

A purchase is one row of ``{prefix}purchases`` (migration 0004, extended by
0007), read into a dict, changed by the convergence steps and saved in the
same transaction as the entries it led to. :class:`_PaymentsCore` declares
what every part of :class:`~spaktok_ledger.Payments` may use, so the parts
(the purchase flow, refunds and disputes, settlement) type-check on their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger import _validate as validate
from spaktok_ledger._clock import Clock
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._service._gateway import PaymentGateway
from spaktok_ledger._service._gifts import GiftEconomy
from spaktok_ledger._service._webhooks import WebhookInbox
from spaktok_ledger._store import Ledger

if TYPE_CHECKING:
    from spaktok_ledger._service._payments import FraudPolicy, Purchase
    from spaktok_ledger._service._quotes import Pricing

__all__ = ["EarlyFraudWarningPolicy", "RefundPolicy"]

# Refund statuses only move forward (a later snapshot may show an earlier one).
_REFUND_RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}


class RefundPolicy(StrEnum):
    """What happens to coins already spent when their purchase is refunded or disputed.

    Either way the spent value is an expense (``platform:refund_losses``) when
    Stripe refunds or withdraws the money.

    ``WALLET_DEBT`` (the default): the wallet is emptied and the rest becomes the
    user's debt, a recoverable (``user:{id}:receivable``, with an allowance of
    the same size in ``platform:receivables_allowance``); spending is blocked
    (``SpendingBlocked``) until a later purchase repays it (which recovers the
    expense) or :meth:`Payments.write_off` gives it up.

    ``PLATFORM_LOSS``: the wallet is emptied and the rest stays the platform's
    loss; the user can buy and spend again at once.
    """

    WALLET_DEBT = "wallet_debt"
    PLATFORM_LOSS = "platform_loss"


class EarlyFraudWarningPolicy(StrEnum):
    """What an actionable Radar early fraud warning on a purchase's charge does.

    ``REFUND`` (the default): refund what is left of the payment at once.
    Stripe's advice: a warned charge is very likely to be disputed, and a
    refunded one can no longer be, so the platform saves the dispute fee and
    the dispute count (https://docs.stripe.com/disputes/prevention/early-fraud-warnings).
    The refund claws the coins back as a chargeback does (held gift shares
    included). ``RECORD``: only record it and tell the host (outbox
    ``purchase.fraud_warning``).
    """

    REFUND = "refund"
    RECORD = "record"


@dataclass(slots=True)
class _State:
    """A purchase row being converged, plus what the transaction decided."""

    row: dict[str, Any]
    outcomes: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class _PaymentsCore:
    """What the parts of :class:`~spaktok_ledger.Payments` share (set in its constructor)."""

    economy: GiftEconomy
    pricing: Pricing
    gateway: PaymentGateway
    ledger: Ledger
    refund_policy: RefundPolicy
    fraud_policy: FraudPolicy
    warning_policy: EarlyFraudWarningPolicy
    refund_refused: bool
    refund_mismatched: bool
    claw_back_gifts: bool
    checkout_ttl: timedelta
    clock: Clock
    inbox: WebhookInbox
    _t: sa.Table

    def _list_price(self, row: Mapping[str, Any], coins: int) -> int:
        """The share of the USD list price that ``coins`` of this purchase stand for."""
        return share(row["price_usd_minor"], coins, row["coins"])

    def _find(self, purchase_id: str) -> dict[str, Any] | None:
        return self.ledger.read(lambda conn: load_row(conn, self._t, purchase_id))

    def _save(self, conn: Connection, s: _State, now: datetime) -> None:
        row = s.row
        t = self._t
        values = {k: v for k, v in row.items() if k not in ("id", "created_at")}
        values["updated_at"] = now
        conn.execute(t.update().where(t.c.id == row["id"]).values(**values))


# -- the row ----------------------------------------------------------------------------


def load_row(
    conn: Connection, t: sa.Table, purchase_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    if not _storable_id(purchase_id):
        return None  # no purchase has it (ids are ``pur_<hex>``); never a driver error
    query = sa.select(t).where(t.c.id == purchase_id)
    if lock:
        query = query.with_for_update()
    found = conn.execute(query).first()
    if found is None:
        return None
    row = dict(found._mapping)
    row["disputes"] = dict(row["disputes"] or {})
    row["balance_txns"] = dict(row["balance_txns"] or {})
    row["refunds"] = dict(row["refunds"] or {})
    row["gift_clawbacks"] = list(row["gift_clawbacks"] or [])
    row["settled_foreign"] = dict(row["settled_foreign"] or {})
    return row


def merge_refunds(stored: Mapping[str, Any], fresh: Any) -> dict[str, Any]:
    """Refund statuses only move forward; a failed refund stays failed."""
    merged = {k: dict(v) for k, v in stored.items()}
    for refund in fresh:
        old = merged.get(refund.id)
        if old is None:
            merged[refund.id] = {"amount": refund.stripe_amount, "status": refund.status}
        elif _REFUND_RANK.get(refund.status, 0) > _REFUND_RANK.get(old["status"], 0):
            old.update(status=refund.status)
    return merged


def refunded_amount(refunds: Mapping[str, Any]) -> int:
    """What is (or is on its way) back with the customer, in Stripe's units."""
    return sum(r["amount"] for r in refunds.values() if r["status"] not in ("failed", "canceled"))


def merge_disputes(stored: Mapping[str, Any], fresh: Any) -> dict[str, Any]:
    """Dispute states only move forward: withdrawn and reinstated never become false."""
    merged = {k: dict(v) for k, v in stored.items()}
    for d in fresh:
        old = merged.get(d.id, {"withdrawn": False, "reinstated": False})
        merged[d.id] = {
            "status": d.status,
            "amount": d.stripe_amount,
            "withdrawn": bool(old.get("withdrawn")) or d.funds_withdrawn,
            "reinstated": bool(old.get("reinstated")) or d.funds_reinstated,
        }
    return merged


def disputed_amount(disputes: Mapping[str, Any]) -> int:
    """What chargebacks took and did not give back, in Stripe's units."""
    return sum(d["amount"] for d in disputes.values() if d["withdrawn"] and not d["reinstated"])


def share(total: int, part: int, whole: int) -> int:
    """``total x part / whole`` rounded half up (exact at the ends: 0 and ``total``)."""
    if whole <= 0:
        return 0
    value = Fraction(total * part, whole)
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def request_hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def check_text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(
            f"{name} must be a non-empty string of at most {limit} characters", field=name
        )
    return validate.check_text(value, name, max_length=limit)


def purchase_of(row: Mapping[str, Any]) -> Purchase:
    from spaktok_ledger._service._payments import Purchase

    return Purchase(
        id=row["id"],
        user_id=row["user_id"],
        pack_id=row["pack_id"],
        quote_id=row["quote_id"],
        coins=row["coins"],
        face_value_usd_minor=row["face_value_usd_minor"],
        price_usd_minor=row["price_usd_minor"],
        currency=row["currency"],
        local_amount_minor=row["local_amount_minor"],
        stripe_amount=row["stripe_amount"],
        status=row["status"],
        checkout_session_id=row["checkout_session_id"],
        checkout_url=row["checkout_url"],
        payment_intent_id=row["payment_intent_id"],
        charge_id=row["charge_id"],
        credit_entry_id=row["credit_entry_id"],
        refunded_stripe_amount=row["refunded_stripe_amount"],
        clawed_coins=row["clawed_coins"],
        risk_level=row["risk_level"],
        risk_score=row["risk_score"],
        note=row["note"],
        created_at=row["created_at"],
        refund_due=bool(row["refund_due"]),
        fraud_warning=row["fraud_warning"],
    )


def _storable_id(value: object) -> bool:
    """Text both backends can compare with an id column (else nothing can match it)."""
    try:
        validate.check_text(value, "id", max_length=255)
    except InvalidInput:
        return False
    return True
