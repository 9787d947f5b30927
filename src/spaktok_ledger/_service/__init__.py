"""The gift-economy use cases host apps call from their endpoints."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spaktok_ledger._service._debts import WriteOff
    from spaktok_ledger._service._gifts import (
        PLATFORM_ACCOUNTS,
        ActivityItem,
        ActivityPage,
        EarningsBalance,
        GiftDetails,
        GiftEconomy,
        GiftReceipt,
        Maturation,
        Streamer,
        WalletBalance,
        WalletCredit,
    )
    from spaktok_ledger._service._ids import check_party_id
    from spaktok_ledger._service._outbox import Outbox, OutboxEvent
    from spaktok_ledger._service._payments import (
        PURCHASE_EVENTS,
        CheckoutResult,
        EarlyFraudWarningPolicy,
        FraudDecision,
        FraudPolicy,
        Payments,
        Purchase,
        RadarPolicy,
        RefundPolicy,
        VelocityLimits,
    )
    from spaktok_ledger._service._payouts import (
        ConnectedAccount,
        PayoutDiscrepancy,
        PayoutRecord,
        Payouts,
    )
    from spaktok_ledger._service._quotes import Pricing, QuoteStore
    from spaktok_ledger._service._reconcile import (
        BalanceCheck,
        Drift,
        ReconcileReport,
        Reconciliation,
    )

# Each name and its module, imported on first use (see spaktok_ledger/__init__.py).
_EXPORTS: dict[str, str] = {
    "ActivityItem": "spaktok_ledger._service._gifts",
    "ActivityPage": "spaktok_ledger._service._gifts",
    "BalanceCheck": "spaktok_ledger._service._reconcile",
    "CheckoutResult": "spaktok_ledger._service._payments",
    "ConnectedAccount": "spaktok_ledger._service._payouts",
    "Drift": "spaktok_ledger._service._reconcile",
    "EarlyFraudWarningPolicy": "spaktok_ledger._service._payments",
    "EarningsBalance": "spaktok_ledger._service._gifts",
    "FraudDecision": "spaktok_ledger._service._payments",
    "FraudPolicy": "spaktok_ledger._service._payments",
    "GiftDetails": "spaktok_ledger._service._gifts",
    "GiftEconomy": "spaktok_ledger._service._gifts",
    "GiftReceipt": "spaktok_ledger._service._gifts",
    "Maturation": "spaktok_ledger._service._gifts",
    "Outbox": "spaktok_ledger._service._outbox",
    "OutboxEvent": "spaktok_ledger._service._outbox",
    "PLATFORM_ACCOUNTS": "spaktok_ledger._service._gifts",
    "PURCHASE_EVENTS": "spaktok_ledger._service._payments",
    "Payments": "spaktok_ledger._service._payments",
    "PayoutDiscrepancy": "spaktok_ledger._service._payouts",
    "PayoutRecord": "spaktok_ledger._service._payouts",
    "Payouts": "spaktok_ledger._service._payouts",
    "Pricing": "spaktok_ledger._service._quotes",
    "Purchase": "spaktok_ledger._service._payments",
    "QuoteStore": "spaktok_ledger._service._quotes",
    "RadarPolicy": "spaktok_ledger._service._payments",
    "ReconcileReport": "spaktok_ledger._service._reconcile",
    "Reconciliation": "spaktok_ledger._service._reconcile",
    "RefundPolicy": "spaktok_ledger._service._payments",
    "Streamer": "spaktok_ledger._service._gifts",
    "VelocityLimits": "spaktok_ledger._service._payments",
    "WalletBalance": "spaktok_ledger._service._gifts",
    "WalletCredit": "spaktok_ledger._service._gifts",
    "WriteOff": "spaktok_ledger._service._debts",
    "check_party_id": "spaktok_ledger._service._ids",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spaktok_ledger._service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "PLATFORM_ACCOUNTS",
    "PURCHASE_EVENTS",
    "ActivityItem",
    "ActivityPage",
    "BalanceCheck",
    "CheckoutResult",
    "ConnectedAccount",
    "Drift",
    "EarlyFraudWarningPolicy",
    "EarningsBalance",
    "FraudDecision",
    "FraudPolicy",
    "GiftDetails",
    "GiftEconomy",
    "GiftReceipt",
    "Maturation",
    "Outbox",
    "OutboxEvent",
    "Payments",
    "PayoutDiscrepancy",
    "PayoutRecord",
    "Payouts",
    "Pricing",
    "Purchase",
    "QuoteStore",
    "RadarPolicy",
    "ReconcileReport",
    "Reconciliation",
    "RefundPolicy",
    "Streamer",
    "VelocityLimits",
    "WalletBalance",
    "WalletCredit",
    "WriteOff",
    "check_party_id",
]
