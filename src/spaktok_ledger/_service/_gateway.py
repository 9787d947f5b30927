"""The payment-gateway port: what the services need from Stripe, in our own types.

A small ``typing.Protocol`` (the services never see ``stripe.*`` nor Stripe's
JSON); the adapter is :class:`spaktok_ledger.StripeGateway` (the official SDK),
which also turns webhook payloads into these types. Amounts here are in
**Stripe's units** for the currency (``stripe_amount``: ISK x100,
three-decimal currencies as Stripe counts them), as Stripe reports them; the
services convert with :func:`spaktok_ledger.from_stripe_amount`. Currencies
are upper-case ISO codes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

__all__ = [
    "BalanceTxn",
    "CheckoutRequest",
    "CheckoutSession",
    "ConnectedAccountState",
    "DisputeSnapshot",
    "EventSubject",
    "PaymentGateway",
    "PayoutSnapshot",
    "PurchaseSnapshot",
    "RefundSnapshot",
    "SessionRef",
    "StripeBalance",
    "TransferSnapshot",
    "WebhookEvent",
]


@dataclass(frozen=True, slots=True)
class BalanceTxn:
    """A Stripe balance transaction: one movement of one Stripe balance.

    Amounts are Stripe's integers for ``currency`` (for USD: cents).
    """

    id: str
    type: str
    """``charge``, ``refund``, ``refund_failure``, ``adjustment`` (disputes), ``transfer``,
    ``transfer_refund``, ``payment``, ``payment_refund``, ``payout``, ``payout_failure``,
    ``payout_cancel``, ``topup``..."""
    currency: str
    amount_minor: int
    """Gross: positive money in, negative money out."""
    fee_minor: int
    net_minor: int
    """``amount_minor - fee_minor``: what the balance changed by."""
    exchange_rate: Decimal | None
    source_id: str | None = None
    """The object that moved the money (``ch_``, ``re_``, ``du_``, ``tr_``, ``po_``...)."""
    status: str = "pending"
    """``pending`` or ``available``."""
    available_on: int = 0
    created: int = 0
    account: str | None = None
    """The connected account whose balance it is (``None``: the platform's)."""
    charge_id: str | None = None
    """For a charge, refund, refund failure or dispute: the charge it belongs to."""
    transfer_id: str | None = None
    """For a transfer, its reversal, or the payment it made on a connected account."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The source object's metadata (a payout's ``payout_id``, a charge's ``purchase_id``)."""


@dataclass(frozen=True, slots=True)
class StripeBalance:
    """One currency of an account's Stripe balance."""

    currency: str
    available_minor: int
    pending_minor: int

    @property
    def total_minor(self) -> int:
        return self.available_minor + self.pending_minor


@dataclass(frozen=True, slots=True)
class EventSubject:
    """What a webhook event is about, read from its object by the adapter."""

    kind: str
    """The object's type: ``checkout.session``, ``charge``, ``refund``, ``dispute``,
    ``radar.early_fraud_warning``, ``payout``, ``transfer``, ``account``..."""
    id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    client_reference_id: str | None = None
    charge_id: str | None = None
    payment_intent_id: str | None = None
    payout: PayoutSnapshot | None = None
    transfer: TransferSnapshot | None = None
    account: ConnectedAccountState | None = None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified Stripe event."""

    id: str
    type: str
    created: int
    """Seconds since the epoch, when Stripe created the event."""
    subject: EventSubject
    account: str | None = None
    """The connected account (``acct_...``) for Connect events."""
    livemode: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The event as Stripe sent it (kept when an event is parked)."""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """A one-time ``payment`` Checkout Session for exactly one line item."""

    purchase_id: str
    user_id: str
    pack_id: str
    quote_id: str
    product_name: str
    currency: str
    stripe_amount: int
    """The unit amount in Stripe's units for ``currency``."""
    success_url: str
    cancel_url: str
    payment_method_types: tuple[str, ...] | None
    """None lets Stripe pick the methods enabled in the Dashboard."""
    idempotency_key: str
    expires_at: int | None = None
    """Seconds since the epoch; Stripe accepts 30 minutes to 24 hours ahead."""
    customer_email: str | None = None


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str | None
    currency: str
    stripe_amount: int
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class SessionRef:
    """The Checkout Session a payment came from (found from its PaymentIntent)."""

    id: str
    metadata: Mapping[str, str]
    client_reference_id: str | None


@dataclass(frozen=True, slots=True)
class RefundSnapshot:
    id: str
    stripe_amount: int
    currency: str
    status: str
    """``pending``, ``requires_action``, ``succeeded``, ``failed`` or ``canceled``."""
    failure_reason: str | None = None
    balance_transaction: BalanceTxn | None = None
    failure_balance_transaction: BalanceTxn | None = None

    @property
    def counts(self) -> bool:
        """Whether the money is (or is on its way) back with the customer."""
        return self.status not in ("failed", "canceled")


@dataclass(frozen=True, slots=True)
class DisputeSnapshot:
    id: str
    status: str
    """``warning_needs_response``, ``needs_response``, ``under_review``, ``won``, ``lost``..."""
    stripe_amount: int
    currency: str
    balance_transactions: tuple[BalanceTxn, ...]

    @property
    def funds_withdrawn(self) -> bool:
        return any(t.amount_minor < 0 for t in self.balance_transactions)

    @property
    def funds_reinstated(self) -> bool:
        return any(t.amount_minor > 0 for t in self.balance_transactions)


@dataclass(frozen=True, slots=True)
class PurchaseSnapshot:
    """Everything the ledger needs to know about one Checkout purchase, fetched fresh."""

    session_id: str
    session_status: str
    """``open``, ``complete`` or ``expired``."""
    payment_status: str
    """``paid``, ``unpaid`` or ``no_payment_required``."""
    currency: str
    stripe_amount: int
    metadata: Mapping[str, str]
    client_reference_id: str | None
    payment_intent_id: str | None = None
    payment_intent_status: str | None = None
    charge_id: str | None = None
    charge_status: str | None = None
    amount_refunded: int = 0
    """Cumulative, in Stripe's units for ``currency`` (failed refunds excluded)."""
    risk_level: str | None = None
    risk_score: int | None = None
    balance_transactions: tuple[BalanceTxn, ...] = ()
    """The charge's, its refunds' and refund failures' balance transactions (disputes
    carry their own)."""
    disputes: tuple[DisputeSnapshot, ...] = ()
    """Every dispute of the charge, listed at Stripe."""
    refunds: tuple[RefundSnapshot, ...] = ()
    """Every refund of the charge (all pages)."""
    early_fraud_warnings: tuple[str, ...] = ()
    """Ids of the charge's actionable Radar early fraud warnings."""

    @property
    def paid(self) -> bool:
        return self.payment_status == "paid"


@dataclass(frozen=True, slots=True)
class ConnectedAccountState:
    """KYC state of a Connect account, from ``account.updated`` or a fetch."""

    id: str
    payouts_enabled: bool
    charges_enabled: bool
    details_submitted: bool
    currently_due: tuple[str, ...] = ()
    past_due: tuple[str, ...] = ()
    disabled_reason: str | None = None
    default_currency: str | None = None
    country: str | None = None
    service_agreement: str | None = None
    """``full`` or ``recipient`` (cross-border accounts)."""


@dataclass(frozen=True, slots=True)
class TransferSnapshot:
    id: str
    stripe_amount: int
    """In Stripe's units for ``currency`` (transfers are USD here: cents)."""
    currency: str
    destination: str
    transfer_group: str | None
    reversed_stripe_amount: int
    reversed: bool
    metadata: Mapping[str, str] = field(default_factory=dict)
    balance_transaction: BalanceTxn | None = None
    """The platform's side (``type=transfer``), when Stripe's answer included it."""
    destination_payment_id: str | None = None
    """The ``py_`` payment the transfer created on the connected account."""
    source_transaction: str | None = None
    reversal_transactions: tuple[BalanceTxn, ...] = ()
    """The platform's ``transfer_refund`` transactions of its reversals."""


@dataclass(frozen=True, slots=True)
class PayoutSnapshot:
    id: str
    account: str | None
    stripe_amount: int
    """In Stripe's units for ``currency``."""
    currency: str
    status: str
    """``pending``, ``in_transit``, ``paid``, ``failed``, ``canceled``."""
    failure_code: str | None = None
    failure_message: str | None = None
    arrival_date: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    balance_transaction: BalanceTxn | None = None
    failure_balance_transaction: BalanceTxn | None = None
    """Where a failed or canceled payout's money came back (the same account's balance)."""


class PaymentGateway(Protocol):
    """What the gift economy needs from a payment provider (Stripe)."""

    def parse_webhook(
        self, payload: bytes, signature_header: str, secret: str, tolerance_seconds: int
    ) -> WebhookEvent:
        """Verify the signature on the raw body and return the event
        (``WebhookVerificationError`` / ``WebhookPayloadError``)."""
        ...

    def parse_event(self, data: Mapping[str, Any]) -> WebhookEvent:
        """An event already verified (a parked payload, or one listed from the API)."""
        ...

    def list_events(
        self, types: Sequence[str], *, created_gte: int, account: str | None = None
    ) -> Iterator[WebhookEvent]:
        """Events of ``types`` created at or after ``created_gte``, oldest first."""
        ...

    def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSession: ...

    def expire_checkout_session(self, session_id: str) -> None: ...

    def purchase_state(self, session_id: str) -> PurchaseSnapshot: ...

    def session_for_payment(self, payment_intent_id: str) -> SessionRef | None: ...

    def refund(
        self,
        payment_intent_id: str,
        stripe_amount: int | None,
        idempotency_key: str,
        *,
        reason: str | None = None,
    ) -> str: ...

    def create_express_account(
        self,
        *,
        country: str,
        email: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
        service_agreement: str = "full",
    ) -> ConnectedAccountState: ...

    def create_onboarding_link(self, account_id: str, refresh_url: str, return_url: str) -> str: ...

    def retrieve_account(self, account_id: str) -> ConnectedAccountState: ...

    def create_transfer(
        self,
        *,
        amount_usd_minor: int,
        destination: str,
        transfer_group: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        source_transaction: str | None = None,
    ) -> TransferSnapshot: ...

    def find_transfers(self, transfer_group: str) -> Sequence[TransferSnapshot]: ...

    def retrieve_transfer(self, transfer_id: str) -> TransferSnapshot: ...

    def transfer_arrival(self, transfer: TransferSnapshot) -> BalanceTxn | None:
        """The destination's side of a transfer: what arrived, in which currency."""
        ...

    def reverse_transfer(
        self, transfer_id: str, stripe_amount: int | None, idempotency_key: str
    ) -> TransferSnapshot: ...

    def create_payout(
        self,
        *,
        account: str,
        stripe_amount: int,
        currency: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> PayoutSnapshot: ...

    def retrieve_payout(self, account: str, payout_id: str) -> PayoutSnapshot: ...

    def list_payouts(self, account: str, *, limit: int = 100) -> Sequence[PayoutSnapshot]: ...

    def balance(self, account: str | None = None) -> Sequence[StripeBalance]: ...

    def balance_transactions(
        self, *, created_gte: int, account: str | None = None
    ) -> Iterator[BalanceTxn]:
        """Every balance transaction created at or after ``created_gte``, oldest first."""
        ...
