"""Stripe's JSON (API answers and webhook payloads) in the payment-gateway port's types.

Pure functions over dicts: the shapes are those of Stripe's API reference
(https://docs.stripe.com/api), read defensively (a field Stripe leaves out or
sets to ``null`` reads as absent) and never through floats for money: an
exchange rate arrives as a JSON number and is read through ``str`` into a
``Decimal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spaktok_ledger._errors import InvalidInput, WebhookPayloadError
from spaktok_ledger._service._gateway import (
    BalanceTxn,
    ConnectedAccountState,
    DisputeSnapshot,
    EventSubject,
    PayoutSnapshot,
    RefundSnapshot,
    TransferSnapshot,
    WebhookEvent,
)
from spaktok_ledger._validate import check_text

__all__ = [
    "account_state",
    "balance_txn",
    "dispute_snapshot",
    "event",
    "payout_snapshot",
    "refund_snapshot",
    "transfer_snapshot",
]


def _id(value: object) -> str | None:
    """An expandable field: the id, whether Stripe sent the id or the object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def _metadata(data: Mapping[str, Any]) -> dict[str, str]:
    metadata = data.get("metadata") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else {}


def balance_txn(data: Mapping[str, Any], account: str | None = None) -> BalanceTxn:
    rate = data.get("exchange_rate")
    source = data.get("source")
    source = source if isinstance(source, Mapping) else {}
    kind = source.get("object")
    return BalanceTxn(
        id=str(data.get("id")),
        type=str(data.get("type") or ""),
        currency=str(data.get("currency") or "").upper(),
        amount_minor=int(data.get("amount") or 0),
        fee_minor=int(data.get("fee") or 0),
        net_minor=int(data.get("net") or 0),
        # Stripe sends the rate as a JSON number: read it through str so it
        # never becomes a binary float on its way to a Decimal.
        exchange_rate=Decimal(str(rate)) if rate is not None else None,
        source_id=_id(data.get("source")),
        status=str(data.get("status") or "pending"),
        available_on=int(data.get("available_on") or 0),
        created=int(data.get("created") or 0),
        account=account,
        # With ``expand=["data.source"]`` (reconciliation): what the source belongs to.
        charge_id=str(source["id"]) if kind == "charge" and not source.get("source_transfer")
        else _id(source.get("charge")) if kind in ("refund", "dispute") else None,
        transfer_id=str(source["id"]) if kind == "transfer"
        else _id(source.get("transfer")) if kind == "transfer_reversal"
        else _id(source.get("source_transfer")) if kind == "charge" else None,
        metadata=_metadata(source),
    )  # fmt: skip


def _expanded_txn(value: object, account: str | None = None) -> BalanceTxn | None:
    return balance_txn(value, account) if isinstance(value, Mapping) else None


def refund_snapshot(data: Mapping[str, Any]) -> RefundSnapshot:
    return RefundSnapshot(
        id=str(data.get("id")),
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        status=str(data.get("status") or "succeeded"),
        failure_reason=data.get("failure_reason"),
        balance_transaction=_expanded_txn(data.get("balance_transaction")),
        failure_balance_transaction=_expanded_txn(data.get("failure_balance_transaction")),
    )


def dispute_snapshot(data: Mapping[str, Any]) -> DisputeSnapshot:
    """A dispute object (API or webhook) in our terms."""
    return DisputeSnapshot(
        id=str(data.get("id")),
        status=str(data.get("status") or ""),
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        balance_transactions=tuple(
            balance_txn(t) for t in data.get("balance_transactions") or [] if isinstance(t, dict)
        ),
    )


def account_state(data: Mapping[str, Any]) -> ConnectedAccountState:
    """An account object (API or ``account.updated``) in our terms."""
    requirements = data.get("requirements") or {}
    tos = data.get("tos_acceptance") or {}
    currency = data.get("default_currency")
    return ConnectedAccountState(
        id=str(data.get("id")),
        payouts_enabled=bool(data.get("payouts_enabled")),
        charges_enabled=bool(data.get("charges_enabled")),
        details_submitted=bool(data.get("details_submitted")),
        currently_due=tuple(requirements.get("currently_due") or ()),
        past_due=tuple(requirements.get("past_due") or ()),
        disabled_reason=requirements.get("disabled_reason"),
        default_currency=str(currency).upper() if currency else None,
        country=data.get("country"),
        service_agreement=tos.get("service_agreement") if isinstance(tos, Mapping) else None,
    )


def transfer_snapshot(data: Mapping[str, Any]) -> TransferSnapshot:
    reversals = data.get("reversals") or {}
    return TransferSnapshot(
        id=str(data.get("id")),
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        destination=_id(data.get("destination")) or "",
        transfer_group=data.get("transfer_group"),
        reversed_stripe_amount=int(data.get("amount_reversed") or 0),
        reversed=bool(data.get("reversed")),
        metadata=_metadata(data),
        balance_transaction=_expanded_txn(data.get("balance_transaction")),
        destination_payment_id=_id(data.get("destination_payment")),
        source_transaction=_id(data.get("source_transaction")),
        reversal_transactions=tuple(
            txn
            for r in (reversals.get("data") or [] if isinstance(reversals, Mapping) else [])
            if isinstance(r, Mapping)
            and (txn := _expanded_txn(r.get("balance_transaction"))) is not None
        ),
    )


def payout_snapshot(data: Mapping[str, Any], account: str | None = None) -> PayoutSnapshot:
    return PayoutSnapshot(
        id=str(data.get("id")),
        account=account,
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        status=str(data.get("status") or ""),
        failure_code=data.get("failure_code"),
        failure_message=data.get("failure_message"),
        arrival_date=data.get("arrival_date"),
        metadata=_metadata(data),
        balance_transaction=_expanded_txn(data.get("balance_transaction"), account),
        failure_balance_transaction=_expanded_txn(data.get("failure_balance_transaction"), account),
    )


def subject(data: Mapping[str, Any], account: str | None) -> EventSubject:
    """What an event's ``data.object`` is about."""
    kind = str(data.get("object") or "")
    charge = _id(data.get("charge"))
    if kind == "charge":
        charge = str(data.get("id"))
    client_reference = data.get("client_reference_id")
    return EventSubject(
        kind=kind,
        id=str(data.get("id") or ""),
        metadata=_metadata(data),
        client_reference_id=str(client_reference) if client_reference else None,
        charge_id=charge,
        payment_intent_id=_id(data.get("payment_intent")),
        payout=payout_snapshot(data, account) if kind == "payout" else None,
        transfer=transfer_snapshot(data) if kind == "transfer" else None,
        account=account_state(data) if kind == "account" else None,
    )


def event(data: Mapping[str, Any]) -> WebhookEvent:
    """A Stripe event object in our terms (``WebhookPayloadError`` if it is not one)."""
    inner = data.get("data")
    if (
        data.get("object") != "event"
        or not isinstance(data.get("id"), str)
        or not isinstance(data.get("type"), str)
        or not isinstance(inner, Mapping)
        or not isinstance(inner.get("object"), Mapping)
    ):
        raise WebhookPayloadError("the webhook body is not a Stripe event")
    _check_event_text(data["id"], "id")
    _check_event_text(data["type"], "type")
    created = data.get("created")
    account = data.get("account") if isinstance(data.get("account"), str) else None
    if account is not None:
        _check_event_text(account, "account")
    # Every Stripe object has an id (``data.object = {}`` is not one), and its kind
    # (``object``), when given, is short text too.
    for name in ("id", "object"):
        value = inner["object"].get(name)
        if value is None and name == "object":
            continue
        if not isinstance(value, str):
            raise WebhookPayloadError(f"the event's data.object.{name} is not a string")
        _check_event_text(value, f"data.object.{name}")
    return WebhookEvent(
        id=data["id"],
        type=data["type"],
        created=created if isinstance(created, int) else 0,
        subject=subject(inner["object"], account),
        account=account,
        livemode=bool(data.get("livemode", False)),
        raw=dict(data),
    )


def _check_event_text(value: str, field: str) -> None:
    """Stripe's ids and types are short ASCII: anything the database could not
    store (NUL, over 255 characters) is a malformed event, not a driver error."""
    try:
        check_text(value, field, max_length=255)
    except InvalidInput as exc:
        raise WebhookPayloadError(f"the event's {field} is malformed: {exc}", field=field) from exc
