"""The gift-economy use cases host apps call from their endpoints."""

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
