"""Buying coins through Stripe Checkout: sessions, verified webhooks, refunds, disputes.

:class:`Payments` is what a host's two payment endpoints call::

    POST /api/payments/create-checkout-session -> payments.create_checkout(...)
    POST /api/payments/webhook                 -> payments.handle_webhook(body, signature)

How a webhook is applied
------------------------

Deliveries are at-least-once and unordered, so no handler trusts the order
or the event's own snapshot. For any event about a purchase, the service
re-fetches the purchase from Stripe (session, payment intent, charge with its
refunds and balance transactions, disputes) and *converges* the ledger on it,
in one transaction that also records the event id:

1. paid and not yet credited -> check amount and currency against the
   quote, ask the fraud policy, then credit the coins (or hold them, or
   refuse);
2. refunded or disputed (funds withdrawn) -> claw back the matching share of
   the coins; a dispute won (funds reinstated) -> restore them;
3. balance transactions known -> book Stripe's fees and the FX difference so
   that ``platform:stripe_clearing`` holds only what Stripe has not settled
   and ``platform:stripe_balance`` what it has.

Cumulative Stripe figures (``amount_refunded``, balance transactions) make
every step idempotent; a stale snapshot never undoes a newer one because
refunds and dispute withdrawals only ever move forward here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._clock import Clock
from spaktok_ledger._currency import is_stripe_chargeable, to_stripe_amount
from spaktok_ledger._domain import EntryDraft, EntryType, Posting
from spaktok_ledger._errors import (
    FraudRejected,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    LedgerError,
    PaymentProviderError,
    UnknownPurchase,
    UnsupportedCurrency,
)
from spaktok_ledger._pricing import Quote, check_quote_valid, check_stripe_minimum
from spaktok_ledger._service._gateway import (
    CheckoutRequest,
    DisputeSnapshot,
    PaymentGateway,
    PurchaseSnapshot,
    WebhookEvent,
)
from spaktok_ledger._service._gifts import (
    CLEARING,
    COIN_PRICING,
    GiftEconomy,
    receivable_account,
    wallet_account,
)
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._quotes import Pricing
from spaktok_ledger._service._webhooks import DuplicateDelivery, WebhookInbox, WebhookResult
from spaktok_ledger._store import Ledger

__all__ = [
    "CheckoutResult",
    "FraudDecision",
    "FraudPolicy",
    "Payments",
    "Purchase",
    "RadarPolicy",
    "RefundPolicy",
    "VelocityLimits",
]

STRIPE_BALANCE = "platform:stripe_balance"
PAYMENT_FEES = "platform:payment_fees"
FX_GAIN_LOSS = "platform:fx_gain_loss"
REFUND_LOSSES = "platform:refund_losses"
CHECKOUT_TTL_DEFAULT = timedelta(hours=1)


class RefundPolicy(StrEnum):
    """What happens to coins already spent when their purchase is refunded or disputed.

    ``WALLET_DEBT`` (the default): the wallet is emptied and the rest becomes
    the user's debt (``user:{id}:receivable``); spending is blocked
    (``SpendingBlocked``) until a later purchase repays it. The platform keeps
    a claim instead of a loss, and a fraudster cannot gift again.

    ``PLATFORM_LOSS``: the wallet is emptied and the rest is booked as the
    platform's loss in ``platform:refund_losses``; the user can buy and
    spend again at once.
    """

    WALLET_DEBT = "wallet_debt"
    PLATFORM_LOSS = "platform_loss"


class FraudDecision(StrEnum):
    CREDIT = "credit"
    """Credit the coins now."""
    HOLD = "hold"
    """Credit them as pending: visible, not spendable, until ``release`` or ``refuse``."""
    REFUSE = "refuse"
    """Credit nothing (and, if configured, refund the payment)."""


EventHandler = Callable[[WebhookEvent], WebhookResult]


class FraudPolicy(Protocol):
    """Decides what a paid purchase gets, from Radar's assessment of the charge."""

    def decide(
        self, purchase: Purchase, risk_level: str | None, risk_score: int | None
    ) -> FraudDecision: ...


@dataclass(frozen=True, slots=True)
class RadarPolicy:
    """The default fraud policy: follow Stripe Radar's risk level (and score, if set).

    ``highest`` is refused, ``elevated`` held for review, the rest credited.
    Optional score thresholds (Radar's 0-99 ``risk_score``) tighten it.
    """

    hold_levels: frozenset[str] = frozenset({"elevated"})
    refuse_levels: frozenset[str] = frozenset({"highest"})
    hold_at_score: int | None = None
    refuse_at_score: int | None = None

    def decide(
        self, purchase: Purchase, risk_level: str | None, risk_score: int | None
    ) -> FraudDecision:
        if risk_level in self.refuse_levels or (
            self.refuse_at_score is not None
            and risk_score is not None
            and risk_score >= self.refuse_at_score
        ):
            return FraudDecision.REFUSE
        if risk_level in self.hold_levels or (
            self.hold_at_score is not None
            and risk_score is not None
            and risk_score >= self.hold_at_score
        ):
            return FraudDecision.HOLD
        return FraudDecision.CREDIT


@dataclass(frozen=True, slots=True)
class VelocityLimits:
    """Per-user limits checked before a checkout session is created (``FraudRejected``).

    ``None`` disables a limit. Purchases that failed or expired do not count.
    """

    max_purchases_per_hour: int | None = 10
    max_usd_minor_per_day: int | None = 50_000


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    """What ``POST /api/payments/create-checkout-session`` returns: where to send the viewer."""

    purchase_id: str
    checkout_session_id: str
    url: str | None
    currency: str
    amount_minor: int
    """The quoted amount, in the currency's minor units (ISO 4217 exponent)."""
    replayed: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "purchase_id": self.purchase_id,
            "checkout_session_id": self.checkout_session_id,
            "url": self.url,
            "currency": self.currency,
            "amount_minor": self.amount_minor,
        }


@dataclass(frozen=True, slots=True)
class Purchase:
    """A coin purchase and where it stands."""

    id: str
    user_id: str
    pack_id: str
    quote_id: str
    coins: int
    face_value_usd_minor: int
    price_usd_minor: int
    currency: str
    local_amount_minor: int
    stripe_amount: int
    status: str
    """``creating``, ``open``, ``waiting`` (delayed method), ``credited``, ``held``
    (fraud review), ``refused``, ``mismatch``, ``expired``, ``failed``, ``error``."""
    checkout_session_id: str | None
    checkout_url: str | None
    payment_intent_id: str | None
    charge_id: str | None
    credit_entry_id: int | None
    refunded_stripe_amount: int
    clawed_coins: int
    risk_level: str | None
    risk_score: int | None
    note: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "pack_id": self.pack_id,
            "coins": self.coins,
            "price_usd_minor": self.price_usd_minor,
            "currency": self.currency,
            "local_amount_minor": self.local_amount_minor,
            "status": self.status,
            "checkout_session_id": self.checkout_session_id,
            "clawed_coins": self.clawed_coins,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(slots=True)
class _State:
    """A purchase row being converged, plus what the transaction decided."""

    row: dict[str, Any]
    outcomes: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


_REFUNDED_ENTRY = {True: EntryType.DISPUTE, False: EntryType.REFUND}
_PURCHASE_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "charge.refunded",
        "charge.refund.updated",
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    }
)


class Payments:
    """Coin purchases through Stripe Checkout.

    ``webhook_secret`` is the platform endpoint's signing secret
    (``whsec_...``); Connect payouts have their own endpoint and secret.
    """

    def __init__(
        self,
        economy: GiftEconomy,
        pricing: Pricing,
        gateway: PaymentGateway,
        *,
        webhook_secret: str,
        refund_policy: RefundPolicy = RefundPolicy.WALLET_DEBT,
        fraud_policy: FraudPolicy | None = None,
        velocity: VelocityLimits | None = None,
        refund_refused: bool = True,
        payment_method_types: Sequence[str] | None = None,
        checkout_ttl: timedelta = CHECKOUT_TTL_DEFAULT,
        tolerance_seconds: int = 300,
        clock: Clock | None = None,
        transfer_events: EventHandler | None = None,
    ) -> None:
        """``transfer_events``: where ``transfer.*`` events go. Stripe sends them to
        the *platform* endpoint (transfers are the platform's objects), but they
        belong to payouts: pass ``payouts.handle_event`` (or set the attribute
        after building the payouts service)."""
        if not isinstance(webhook_secret, str) or not webhook_secret:
            raise InvalidInput("webhook_secret is required (the endpoint's whsec_... secret)")
        if not timedelta(minutes=30) <= checkout_ttl <= timedelta(hours=24):
            raise InvalidInput("checkout_ttl must be between 30 minutes and 24 hours (Stripe)")
        self.economy = economy
        self.pricing = pricing
        self.gateway = gateway
        self.ledger = economy.ledger
        self._secret = webhook_secret
        self.refund_policy = RefundPolicy(refund_policy)
        self.fraud_policy: FraudPolicy = fraud_policy or RadarPolicy()
        self.velocity = velocity if velocity is not None else VelocityLimits()
        self.refund_refused = refund_refused
        self.payment_method_types = tuple(payment_method_types) if payment_method_types else None
        self.checkout_ttl = checkout_ttl
        self.tolerance_seconds = tolerance_seconds
        self.clock: Clock = clock or self.ledger.now
        self.inbox = WebhookInbox(self.ledger)
        self.transfer_events = transfer_events
        self._t = self.ledger.tables.purchases

    def __repr__(self) -> str:  # never show the secret
        return f"Payments(policy={self.refund_policy.value})"

    # -- checkout ----------------------------------------------------------------

    def create_checkout(
        self,
        user_id: str | int,
        quote_id: str,
        *,
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
        customer_email: str | None = None,
    ) -> CheckoutResult:
        """Create a hosted Checkout Session charging exactly the quoted amount.

        Records the pending purchase first; every refusal (unknown or expired
        quote, a quote for someone else, a currency Stripe cannot charge, an
        amount under Stripe's minimum, a velocity limit) happens before any
        Stripe call. Idempotent by key: a retry returns the same session
        (Stripe is called with a key derived from the purchase, so even a
        retry after a timeout never creates a second session).
        """
        user = check_party_id(user_id, "user_id")
        key = _check_text(idempotency_key, "idempotency_key", 200)
        for name, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise InvalidInput(f"{name} must be an http(s) URL")
        purchase_id = "pur_" + hashlib.sha256(f"{user}\x00{key}".encode()).hexdigest()[:24]
        request_hash = _hash(
            {"user": user, "quote": quote_id, "success": success_url, "cancel": cancel_url}
        )
        existing = self._find(purchase_id)
        if existing is not None:
            if existing["request_hash"] != request_hash:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was used for another checkout",
                    purchase_id=purchase_id,
                )
            if existing["checkout_session_id"]:
                return _result(existing, replayed=True)
            row = existing
        else:
            row = self._new_purchase(purchase_id, user, quote_id, request_hash)
        quote = self.pricing.store.get(row["quote_id"])
        pack = self.pricing.catalogue.get(quote.pack_id)
        session = self.gateway_call(
            row,
            lambda: self.gateway.create_checkout_session(
                CheckoutRequest(
                    purchase_id=purchase_id,
                    user_id=user,
                    pack_id=pack.id,
                    quote_id=quote.id,
                    product_name=f"{pack.name}: {quote.total_coins} coins",
                    currency=quote.currency,
                    stripe_amount=row["stripe_amount"],
                    success_url=success_url,
                    cancel_url=cancel_url,
                    payment_method_types=self.payment_method_types,
                    idempotency_key=f"checkout:{purchase_id}",
                    expires_at=int(
                        (row["checkout_expires_at"] or self.clock() + self.checkout_ttl).timestamp()
                    ),
                    customer_email=customer_email,
                )
            ),
        )
        if session.stripe_amount != row["stripe_amount"] or session.currency != row["currency"]:
            raise PaymentProviderError(
                "Stripe created a session for another amount than the quote",
                purchase_id=purchase_id,
            )
        now = self.clock()
        t = self._t

        def opened(tx: Ledger) -> dict[str, Any]:
            conn = tx.connection()
            conn.execute(
                t.update()
                .where(t.c.id == purchase_id, t.c.status.in_(["creating", "error"]))
                .values(
                    checkout_session_id=session.id,
                    checkout_url=session.url,
                    status="open",
                    note=None,
                    updated_at=now,
                )
            )
            found = _row(conn, t, purchase_id)
            assert found is not None
            return found

        return _result(self.ledger.atomic(opened))

    def gateway_call(self, row: Mapping[str, Any], call: Callable[[], Any]) -> Any:
        """Call Stripe for a purchase; on failure record it on the purchase and re-raise."""
        try:
            return call()
        except PaymentProviderError as exc:
            t = self._t
            now = self.clock()
            note = str(exc)[:1000]

            def failed(tx: Ledger) -> None:
                tx.connection().execute(
                    t.update()
                    .where(t.c.id == row["id"], t.c.status.in_(["creating", "error"]))
                    .values(status="error", note=note, updated_at=now)
                )

            self.ledger.atomic(failed)
            raise

    def _new_purchase(
        self, purchase_id: str, user: str, quote_id: str, request_hash: str
    ) -> dict[str, Any]:
        now = self.clock()
        quote = self.pricing.store.get(quote_id)
        owner = self._quote_owner(quote_id)
        if owner is not None and owner != user:
            raise InvalidInput("this quote was made for another user", quote_id=quote_id)
        check_quote_valid(quote, now)
        pack = self.pricing.catalogue.get(quote.pack_id)
        if (pack.usd_price_minor, pack.total_coins) != (quote.usd_price_minor, quote.total_coins):
            raise InvalidInput(
                f"pack {pack.id} changed since quote {quote.id}: ask for a new quote",
                quote_id=quote.id,
            )
        if not is_stripe_chargeable(quote.currency):
            raise UnsupportedCurrency(
                f"Stripe cannot charge {quote.currency}", currency=quote.currency
            )
        check_stripe_minimum(quote.local_amount_minor, quote.currency, quote.rate)
        stripe_amount = to_stripe_amount(quote.local_amount_minor, quote.currency)
        self._check_velocity(user, quote, now)
        self.economy.open_user(user)
        values = {
            "id": purchase_id,
            "user_id": user,
            "pack_id": pack.id,
            "quote_id": quote.id,
            "request_hash": request_hash,
            "coins": quote.total_coins,
            "face_value_usd_minor": quote.face_value_usd_minor,
            "price_usd_minor": quote.usd_price_minor,
            "currency": quote.currency,
            "local_amount_minor": quote.local_amount_minor,
            "stripe_amount": stripe_amount,
            "status": "creating",
            "disputes": {},
            "balance_txns": {},
            # Fixed once: a retried create must send Stripe the same parameters.
            "checkout_expires_at": now + self.checkout_ttl,
            "created_at": now,
            "updated_at": now,
        }
        t = self._t

        def insert(tx: Ledger) -> dict[str, Any]:
            conn = tx.connection()
            found = _row(conn, t, purchase_id)
            if found is not None:  # a concurrent retry got here first
                if found["request_hash"] != request_hash:
                    raise IdempotencyConflict("idempotency key was used for another checkout")
                return found
            conn.execute(t.insert(), values)
            inserted = _row(conn, t, purchase_id)
            assert inserted is not None
            return inserted

        return self.ledger.atomic(insert)

    def _quote_owner(self, quote_id: str) -> str | None:
        q = self.ledger.tables.quotes
        return self.ledger.read(
            lambda conn: conn.execute(sa.select(q.c.user_id).where(q.c.id == quote_id)).scalar()
        )

    def _check_velocity(self, user: str, quote: Quote, now: datetime) -> None:
        limits = self.velocity
        if limits.max_purchases_per_hour is None and limits.max_usd_minor_per_day is None:
            return
        t = self._t
        live = ~t.c.status.in_(["failed", "expired", "error", "refused"])

        def counts(conn: Connection) -> tuple[int, int]:
            hour = conn.execute(
                sa.select(sa.func.count()).where(
                    t.c.user_id == user, live, t.c.created_at > now - timedelta(hours=1)
                )
            ).scalar_one()
            day = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(t.c.price_usd_minor), 0)).where(
                    t.c.user_id == user, live, t.c.created_at > now - timedelta(days=1)
                )
            ).scalar_one()
            return int(hour), int(day)

        hour, day = self.ledger.read(counts)
        if limits.max_purchases_per_hour is not None and hour >= limits.max_purchases_per_hour:
            raise FraudRejected(
                f"user {user} reached {limits.max_purchases_per_hour} purchases in an hour",
                user_id=user,
                limit="purchases_per_hour",
            )
        if (
            limits.max_usd_minor_per_day is not None
            and day + quote.usd_price_minor > limits.max_usd_minor_per_day
        ):
            raise FraudRejected(
                f"user {user} would exceed {limits.max_usd_minor_per_day} US cents "
                "of purchases in a day",
                user_id=user,
                limit="usd_per_day",
            )

    # -- reads -------------------------------------------------------------------

    def _find(self, purchase_id: str) -> dict[str, Any] | None:
        return self.ledger.read(lambda conn: _row(conn, self._t, purchase_id))

    def purchase(self, purchase_id: str) -> Purchase:
        """A purchase and its status (``UnknownPurchase`` if none)."""
        row = self._find(purchase_id)
        if row is None:
            raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
        return _purchase(row)

    def purchases(self, user_id: str | int, *, limit: int = 50) -> list[Purchase]:
        """A user's purchases, newest first."""
        user = check_party_id(user_id, "user_id")
        t = self._t
        query = sa.select(t).where(t.c.user_id == user).order_by(t.c.created_at.desc()).limit(limit)
        return self.ledger.read(
            lambda conn: [_purchase(dict(r._mapping)) for r in conn.execute(query)]
        )

    # -- webhooks ----------------------------------------------------------------

    def handle_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Verify and apply one delivery to the platform endpoint.

        Pass the raw request body, untouched, and the ``Stripe-Signature``
        header. ``WebhookVerificationError`` (forged, tampered, stale) and
        ``WebhookPayloadError`` mean HTTP 400; a ``PaymentProviderError`` while
        re-fetching from Stripe means 500 (Stripe will deliver again); any
        returned result means 200, duplicates included.
        """
        event = self.gateway.parse_webhook(
            payload, signature_header, self._secret, self.tolerance_seconds
        )
        return self.handle_event(event)

    def handle_event(self, event: WebhookEvent) -> WebhookResult:
        """Apply an already verified event (parked events are retried through this)."""
        if event.type.startswith("transfer.") and self.transfer_events is not None:
            return self.transfer_events(event)
        if self.inbox.status(event.id) in ("processed", "ignored"):
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
        if event.type not in _PURCHASE_EVENTS:
            # Not recorded: an event meant for the other endpoint (a misconfigured
            # subscription) must stay free to be applied there.
            return WebhookResult(event.id, event.type, "ignored")
        obj = event.data_object
        dispute_id = str(obj["id"]) if event.type.startswith("charge.dispute.") else None
        session_id = str(obj["id"]) if event.type.startswith("checkout.session.") else None
        purchase_id = self._purchase_id_for(obj, session_id)
        row = self._find(purchase_id) if purchase_id else None
        if row is None and session_id is not None:
            row = self._adopt(obj)
        if row is None:
            if event.type.startswith("checkout.session.") and not obj.get("metadata"):
                return self._ignore(event, "ignored_foreign_session")
            self.inbox.park(
                event,
                "platform",
                reason="no purchase for this event yet",
                subject_id=purchase_id,
                now=self.clock(),
            )
            return WebhookResult(event.id, event.type, "parked", purchase_id)
        session = row["checkout_session_id"] or session_id
        if session is None:
            self.inbox.park(
                event,
                "platform",
                reason="purchase has no checkout session yet",
                subject_id=row["id"],
                now=self.clock(),
            )
            return WebhookResult(event.id, event.type, "parked", row["id"])
        disputes = sorted({*row["disputes"], *([dispute_id] if dispute_id else [])})
        snapshot = self.gateway.purchase_state(session, disputes)
        result = self._converge(event, row["id"], snapshot)
        if session_id is not None and result.outcome != "duplicate":
            self.retry_parked(subject_id=row["id"])
        return result

    def _purchase_id_for(self, obj: Mapping[str, Any], session_id: str | None) -> str | None:
        metadata = obj.get("metadata") or {}
        if isinstance(metadata, Mapping) and metadata.get("purchase_id"):
            return str(metadata["purchase_id"])
        if session_id is not None:
            found = self._by_column(self._t.c.checkout_session_id, session_id)
            if found is None and obj.get("client_reference_id"):
                return str(obj["client_reference_id"])
            return found
        charge = obj.get("charge") if obj.get("object") == "dispute" else obj.get("id")
        intent = obj.get("payment_intent")
        if isinstance(charge, str):
            found = self._by_column(self._t.c.charge_id, charge)
            if found is not None:
                return found
        if isinstance(intent, str):
            return self._by_column(self._t.c.payment_intent_id, intent)
        return None

    def _by_column(self, column: Any, value: str) -> str | None:
        t = self._t
        return self.ledger.read(
            lambda conn: conn.execute(sa.select(t.c.id).where(column == value)).scalar()
        )

    def _adopt(self, session: Mapping[str, Any]) -> dict[str, Any] | None:
        """A session we have no row for, but whose metadata names a stored quote:
        record the purchase (the create call's answer was lost) and carry on."""
        metadata = session.get("metadata") or {}
        try:
            purchase_id = str(metadata["purchase_id"])
            user = check_party_id(metadata["user_id"], "user_id")
            quote = self.pricing.store.get(str(metadata["quote_id"]))
        except (KeyError, LedgerError):
            return None
        self.economy.open_user(user)
        now = self.clock()
        values = {
            "id": purchase_id,
            "user_id": user,
            "pack_id": quote.pack_id,
            "quote_id": quote.id,
            "request_hash": "adopted",
            "coins": quote.total_coins,
            "face_value_usd_minor": quote.face_value_usd_minor,
            "price_usd_minor": quote.usd_price_minor,
            "currency": quote.currency,
            "local_amount_minor": quote.local_amount_minor,
            "stripe_amount": to_stripe_amount(quote.local_amount_minor, quote.currency),
            "status": "open",
            "checkout_session_id": str(session["id"]),
            "disputes": {},
            "balance_txns": {},
            "note": "adopted from a webhook: the checkout call's answer was lost",
            "created_at": now,
            "updated_at": now,
        }
        t = self._t

        def insert(tx: Ledger) -> dict[str, Any]:
            conn = tx.connection()
            if _row(conn, t, purchase_id) is None:
                conn.execute(t.insert(), values)
            found = _row(conn, t, purchase_id)
            assert found is not None
            return found

        return self.ledger.atomic(insert)

    def _ignore(self, event: WebhookEvent, outcome: str) -> WebhookResult:
        now = self.clock()
        try:
            self.ledger.atomic(
                lambda tx: self.inbox.record(
                    tx.connection(),
                    event,
                    "platform",
                    outcome=outcome,
                    subject_id=None,
                    now=now,
                    ignored=True,
                )
            )
        except DuplicateDelivery:
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
        return WebhookResult(event.id, event.type, outcome)

    def retry_parked(
        self, *, limit: int = 100, subject_id: str | None = None
    ) -> list[WebhookResult]:
        """Apply parked events again (oldest first); those still unknown stay parked."""
        results = []
        for event in self.inbox.parked("platform", limit=limit):
            if subject_id is not None:
                about = self._purchase_id_for(event.data_object, None)
                if about != subject_id:
                    continue
            results.append(self.handle_event(event))
        return results

    def sync(self, purchase_id: str) -> Purchase:
        """Re-fetch a purchase from Stripe and converge the ledger on it (reconciliation)."""
        row = self._find(purchase_id)
        if row is None:
            raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
        if row["checkout_session_id"] is None:
            return _purchase(row)
        snapshot = self.gateway.purchase_state(row["checkout_session_id"], sorted(row["disputes"]))
        self._converge(None, purchase_id, snapshot)
        return self.purchase(purchase_id)

    # -- converging on Stripe's state -------------------------------------------

    def _converge(
        self, event: WebhookEvent | None, purchase_id: str, snapshot: PurchaseSnapshot
    ) -> WebhookResult:
        now = self.clock()
        event_id = event.id if event else "sync"
        event_type = event.type if event else "sync"

        def run(tx: Ledger) -> _State:
            conn = tx.connection()
            row = _row(conn, self._t, purchase_id, lock=True)
            assert row is not None
            if event is not None:
                self.inbox.record(
                    conn, event, "platform", outcome="applied", subject_id=purchase_id, now=now
                )
            row["version"] += 1
            state = _State(row)
            self._apply(tx, state, snapshot, event_type, now)
            self._save(conn, state, now)
            self._write_events(conn, state, now)
            outcome = state.outcomes[0] if state.outcomes else "no_change"
            if event is not None:
                wt = self.inbox._t  # the outcome is known only now
                conn.execute(wt.update().where(wt.c.event_id == event.id).values(outcome=outcome))
            return state

        for attempt in range(3):
            try:
                state = self.ledger.atomic(run)
                break
            except DuplicateDelivery:
                return WebhookResult(event_id, event_type, "duplicate", purchase_id, duplicate=True)
            except InsufficientFunds:
                # A gift or a credit moved the wallet between our read and our
                # write (the ledger's own guard caught it): converge again.
                if attempt == 2:
                    raise
        self._send_due_refund(state.row, snapshot)
        outcome = state.outcomes[0] if state.outcomes else "no_change"
        return WebhookResult(event_id, event_type, outcome, purchase_id)

    def _write_events(self, conn: Connection, state: _State, now: datetime) -> None:
        row = state.row
        for index, (topic, payload) in enumerate(state.events):
            self.economy.outbox.write(
                conn,
                topic,
                f"{topic}:{row['id']}:{row['version']}:{index}",
                payload,
                entry_id=payload.get("entry_id"),
                now=now,
            )

    def _send_due_refund(self, row: Mapping[str, Any], snapshot: PurchaseSnapshot | None) -> None:
        """A refused purchase's refund, after commit; kept due until Stripe shows it.

        A failure here is not fatal: ``refund_due`` stays set, and the next
        event about the purchase, ``sync()`` or ``retry_refunds()`` sends it
        again (same idempotency key, so Stripe refunds once).
        """
        if not row["refund_due"] or not row["payment_intent_id"]:
            return
        if snapshot is not None and snapshot.amount_refunded >= row["stripe_amount"]:
            return
        try:
            self.gateway.refund(
                row["payment_intent_id"], None, idempotency_key=f"refund:{row['id']}:refused"
            )
        except PaymentProviderError as exc:
            t = self._t
            note = f"refund due, Stripe refused for now: {exc}"[:1000]
            self.ledger.atomic(
                lambda tx: tx.connection().execute(
                    t.update().where(t.c.id == row["id"]).values(note=note)
                )
            )

    def retry_refunds(self, *, limit: int = 100) -> list[Purchase]:
        """Send again the refunds of refused purchases that Stripe has not shown yet."""
        t = self._t
        query = sa.select(t.c.id).where(t.c.refund_due.is_(True)).order_by(t.c.updated_at)
        ids = self.ledger.read(lambda conn: list(conn.execute(query.limit(limit)).scalars()))
        return [self.sync(purchase_id) for purchase_id in ids]

    def _apply(
        self, tx: Ledger, s: _State, snap: PurchaseSnapshot, event_type: str, now: datetime
    ) -> None:
        row = s.row
        row["payment_intent_id"] = snap.payment_intent_id or row["payment_intent_id"]
        row["charge_id"] = snap.charge_id or row["charge_id"]
        if snap.risk_level is not None:
            row["risk_level"], row["risk_score"] = snap.risk_level, snap.risk_score
        status = row["status"]
        if row["refund_due"] and snap.amount_refunded >= row["stripe_amount"]:
            row["refund_due"] = False
        settled = status in ("credited", "held", "refused", "mismatch")
        if not snap.paid and status in ("failed", "expired"):
            return  # final: an older snapshot must not reopen it
        if not snap.paid and not settled:
            if snap.session_status == "expired":
                row["status"] = "expired"
                s.outcomes.append("expired")
            elif event_type == "checkout.session.async_payment_failed" or (
                snap.payment_intent_status in ("requires_payment_method", "canceled")
                and snap.session_status == "complete"
            ):
                row["status"] = "failed"
                s.outcomes.append("failed")
                s.events.append(("purchase.failed", {"purchase_id": row["id"]}))
            elif snap.session_status == "complete":
                row["status"] = "waiting"
                s.outcomes.append("waiting")
            return
        if snap.paid and not settled:
            self._credit(tx, s, snap, now)
        self._converge_clawback(tx, s, snap, now)
        self._settle(tx, s, snap, now)

    def _credit(self, tx: Ledger, s: _State, snap: PurchaseSnapshot, now: datetime) -> None:
        row = s.row
        if snap.currency != row["currency"] or snap.stripe_amount != row["stripe_amount"]:
            row["status"] = "mismatch"
            row["note"] = (
                f"Stripe charged {snap.stripe_amount} {snap.currency}, the quote was "
                f"{row['stripe_amount']} {row['currency']}: nothing credited"
            )[:1000]
            s.outcomes.append("amount_mismatch")
            s.events.append(
                (
                    "purchase.amount_mismatch",
                    {
                        "purchase_id": row["id"],
                        "charged": [snap.stripe_amount, snap.currency],
                        "quoted": [row["stripe_amount"], row["currency"]],
                    },
                )
            )
            return
        decision = self.fraud_policy.decide(_purchase(row), snap.risk_level, snap.risk_score)
        if decision is FraudDecision.REFUSE:
            row["status"] = "refused"
            row["note"] = f"refused by the fraud policy (Radar: {snap.risk_level})"
            s.outcomes.append("refused")
            s.events.append(("purchase.refused", {"purchase_id": row["id"]}))
            row["refund_due"] = self.refund_refused
            return
        held = decision is FraudDecision.HOLD
        credit = self.economy.using(tx).credit_purchase(
            row["user_id"],
            coins=row["coins"],
            price_usd_minor=row["price_usd_minor"],
            idempotency_key=f"purchase:{row['id']}:credit",
            description=f"{row['coins']} coins ({row['pack_id']}), Stripe checkout",
            metadata=self._entry_metadata(row, snap),
            hold=held,
        )
        row["credit_entry_id"] = credit.entry_id
        row["held"] = held
        row["status"] = "held" if held else "credited"
        if not held:
            row["clearing_usd_minor"] += row["price_usd_minor"]
        s.outcomes.append("held" if held else "credited")
        s.events.append(
            (
                "purchase.held" if held else "purchase.credited",
                {
                    "purchase_id": row["id"],
                    "user_id": row["user_id"],
                    "coins": row["coins"],
                    "entry_id": credit.entry_id,
                },
            )
        )

    def _entry_metadata(self, row: Mapping[str, Any], snap: PurchaseSnapshot) -> dict[str, Any]:
        return {
            "purchase_id": row["id"],
            "pack_id": row["pack_id"],
            "quote_id": row["quote_id"],
            "currency": row["currency"],
            "local_amount_minor": row["local_amount_minor"],
            "stripe": {
                "checkout_session": snap.session_id,
                "payment_intent": snap.payment_intent_id,
                "charge": snap.charge_id,
            },
            "counterparty": "stripe",
        }

    # -- refunds and disputes -----------------------------------------------------

    def _converge_clawback(
        self, tx: Ledger, s: _State, snap: PurchaseSnapshot, now: datetime
    ) -> None:
        row = s.row
        if row["status"] not in ("credited", "held"):
            row["refunded_stripe_amount"] = max(row["refunded_stripe_amount"], snap.amount_refunded)
            return
        row["refunded_stripe_amount"] = max(row["refunded_stripe_amount"], snap.amount_refunded)
        disputes = _merge_disputes(row["disputes"], snap.disputes)
        row["disputes"] = disputes
        disputed = sum(
            d["amount"] for d in disputes.values() if d["withdrawn"] and not d["reinstated"]
        )
        target_local = min(row["refunded_stripe_amount"] + disputed, row["stripe_amount"])
        target = _share(row["coins"], target_local, row["stripe_amount"])
        if target == row["clawed_coins"]:
            return
        by_dispute = disputed > 0 and row["refunded_stripe_amount"] < target_local
        if row["status"] == "held":
            self._release_held_after_refund(tx, s, target, now)
            return
        if target > row["clawed_coins"]:
            self._claw_back(tx, s, target, by_dispute, now)
        else:
            self._restore(tx, s, target, now)

    def _list_price(self, row: Mapping[str, Any], coins: int) -> int:
        """The share of the USD list price that ``coins`` of this purchase stand for."""
        return _share(row["price_usd_minor"], coins, row["coins"])

    def _claw_back(
        self, tx: Ledger, s: _State, target: int, by_dispute: bool, now: datetime
    ) -> None:
        row = s.row
        user = row["user_id"]
        coins = target - row["clawed_coins"]
        value = coins * self.economy.coin_value_usd_minor
        list_price = self._list_price(row, target) - self._list_price(row, row["clawed_coins"])
        available = tx.balance(wallet_account(user)).available_minor
        from_wallet = min(value, available)
        rest = value - from_wallet
        legs = []
        if from_wallet:
            legs.append(Posting.debit(wallet_account(user), from_wallet))
        if rest:
            spent_to = (
                receivable_account(user)
                if self.refund_policy is RefundPolicy.WALLET_DEBT
                else REFUND_LOSSES
            )
            legs.append(Posting.debit(spent_to, rest))
            if self.refund_policy is RefundPolicy.PLATFORM_LOSS:
                row["loss_usd_minor"] += rest
        if list_price != value:
            legs.append(Posting(COIN_PRICING, list_price - value))
        if list_price:
            legs.append(Posting.credit(CLEARING, list_price))
        entry = tx.post(
            EntryDraft(
                _REFUNDED_ENTRY[by_dispute],
                tuple(legs),
                f"purchase:{row['id']}:{row['version']}:clawback",
                description=(
                    f"{'chargeback' if by_dispute else 'refund'}: {coins} coins of "
                    f"purchase {row['id']} clawed back"
                ),
                metadata={
                    "purchase_id": row["id"],
                    "coins": coins,
                    "from_wallet_usd_minor": from_wallet,
                    "spent_usd_minor": rest,
                    "policy": self.refund_policy.value,
                    "counterparty": "stripe",
                },
                effective_at=now,
            )
        )
        row["clawed_coins"] = target
        row["clearing_usd_minor"] -= list_price
        s.outcomes.append("clawed_back")
        s.events.append(
            (
                "wallet.debited",
                {
                    "purchase_id": row["id"],
                    "user_id": user,
                    "coins": coins,
                    "debt_usd_minor": rest if self.refund_policy is RefundPolicy.WALLET_DEBT else 0,
                    "entry_id": entry.id,
                },
            )
        )

    def _restore(self, tx: Ledger, s: _State, target: int, now: datetime) -> None:
        """Funds reinstated (a dispute won): give back what the clawback took."""
        row = s.row
        user = row["user_id"]
        coins = row["clawed_coins"] - target
        value = coins * self.economy.coin_value_usd_minor
        list_price = self._list_price(row, row["clawed_coins"]) - self._list_price(row, target)
        loss_back = min(row["loss_usd_minor"], value)
        debt = tx.balance(receivable_account(user)).posted_minor
        repay = min(debt, value - loss_back)
        to_wallet = value - loss_back - repay
        legs = [Posting.debit(CLEARING, list_price)] if list_price else []
        if loss_back:
            legs.append(Posting.credit(REFUND_LOSSES, loss_back))
        if repay:
            legs.append(Posting.credit(receivable_account(user), repay))
        if to_wallet:
            legs.append(Posting.credit(wallet_account(user), to_wallet))
        if list_price != value:
            legs.append(Posting(COIN_PRICING, value - list_price))
        entry = tx.post(
            EntryDraft(
                EntryType.DISPUTE,
                tuple(legs),
                f"purchase:{row['id']}:{row['version']}:restore",
                description=f"dispute won: {coins} coins of purchase {row['id']} restored",
                metadata={"purchase_id": row["id"], "coins": coins, "counterparty": "stripe"},
                effective_at=now,
            )
        )
        row["clawed_coins"] = target
        row["loss_usd_minor"] -= loss_back
        row["clearing_usd_minor"] += list_price
        s.outcomes.append("restored")
        s.events.append(
            (
                "wallet.credited",
                {"purchase_id": row["id"], "user_id": user, "coins": coins, "entry_id": entry.id},
            )
        )

    def _release_held_after_refund(self, tx: Ledger, s: _State, target: int, now: datetime) -> None:
        """A refund or chargeback on coins still held for review: void the hold and
        credit only what remains (the refunded coins were never spendable)."""
        row = s.row
        tx.void_hold(row["credit_entry_id"], metadata={"reason": "refunded while held"})
        remaining = row["coins"] - target
        row["held"] = False
        row["clawed_coins"] = target
        if remaining:
            credit = self.economy.using(tx).credit_purchase(
                row["user_id"],
                coins=remaining,
                price_usd_minor=self._list_price(row, remaining),
                idempotency_key=f"purchase:{row['id']}:{row['version']}:credit-rest",
                description=f"{remaining} coins of purchase {row['id']} (rest after a refund)",
                metadata={"purchase_id": row["id"], "counterparty": "stripe"},
            )
            row["credit_entry_id"] = credit.entry_id
            row["clearing_usd_minor"] += self._list_price(row, remaining)
            row["status"] = "credited"
        else:
            row["status"] = "refused"
        s.outcomes.append("clawed_back")

    # -- fraud review -------------------------------------------------------------

    def release(self, purchase_id: str) -> Purchase:
        """Make the coins of a purchase held for fraud review spendable."""
        now = self.clock()

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            row = _row(conn, self._t, purchase_id, lock=True)
            if row is None:
                raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
            if row["status"] != "held":
                raise InvalidInput(f"purchase {purchase_id} is {row['status']}, not held")
            tx.post_hold(row["credit_entry_id"])
            row["version"] += 1
            row["status"], row["held"] = "credited", False
            row["clearing_usd_minor"] += row["price_usd_minor"]
            # Held coins skipped the debt repayment a plain credit makes first.
            self.economy.using(tx).repay_debt(row["user_id"], f"purchase:{row['id']}:release")
            self._save(conn, _State(row), now)

        self.ledger.atomic(run)
        return self.purchase(purchase_id)

    def refuse(self, purchase_id: str, *, refund: bool = True) -> Purchase:
        """Refuse a purchase held for review: its coins are voided; optionally refund it."""
        now = self.clock()

        def run(tx: Ledger) -> dict[str, Any]:
            conn = tx.connection()
            row = _row(conn, self._t, purchase_id, lock=True)
            if row is None:
                raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
            if row["status"] != "held":
                raise InvalidInput(f"purchase {purchase_id} is {row['status']}, not held")
            tx.void_hold(row["credit_entry_id"], metadata={"reason": "refused after review"})
            row["version"] += 1
            row["status"], row["held"], row["refund_due"] = "refused", False, refund
            self._save(conn, _State(row), now)
            return row

        row = self.ledger.atomic(run)
        self._send_due_refund(row, None)
        return self.purchase(purchase_id)

    def refund(
        self, purchase_id: str, *, local_amount_minor: int | None = None, idempotency_key: str
    ) -> str:
        """Ask Stripe to refund a purchase (all of it, or part in its currency's minor
        units). The coins are clawed back when Stripe's ``charge.refunded`` arrives."""
        row = self._find(purchase_id)
        if row is None:
            raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
        if not row["payment_intent_id"]:
            raise InvalidInput(f"purchase {purchase_id} has not been paid")
        amount = None
        if local_amount_minor is not None:
            if not 0 < local_amount_minor <= row["local_amount_minor"]:
                raise InvalidInput("refund amount must be positive and at most the price")
            amount = to_stripe_amount(local_amount_minor, row["currency"])
        key = _check_text(idempotency_key, "idempotency_key", 200)
        return str(
            self.gateway.refund(row["payment_intent_id"], amount, f"refund:{purchase_id}:{key}")
        )

    # -- fees and FX ---------------------------------------------------------------

    def _settle(self, tx: Ledger, s: _State, snap: PurchaseSnapshot, now: datetime) -> None:
        """Book Stripe's fees and the FX difference once its figures are known.

        Target: ``stripe_balance`` holds the net Stripe reported (charge,
        refunds, dispute withdrawals and reinstatements), ``payment_fees`` the
        fees, ``stripe_clearing`` nothing for this purchase, and the rest (list
        price in USD vs what Stripe settled) goes to ``fx_gain_loss``.
        """
        row = s.row
        fresh = [
            *snap.balance_transactions,
            *(t for d in snap.disputes for t in d.balance_transactions),
        ]
        if any(t.currency != "USD" for t in fresh):
            row["note"] = "settlement skipped: Stripe settles this account in another currency"
            return
        # Balance transactions only ever accumulate at Stripe: merging what this
        # snapshot shows into what earlier ones showed means a snapshot taken
        # before a concurrent event's can never take settlement back.
        seen = row["balance_txns"]
        for t in fresh:
            seen[t.id] = [t.net_minor, t.fee_minor, t.type]
        if not any(kind == "charge" for _, _, kind in seen.values()):
            return
        if row["status"] not in ("credited", "refused"):
            return
        if row["status"] == "refused" and row["refunded_stripe_amount"] < row["stripe_amount"]:
            return  # the money is still ours to refund: settle once it has gone back
        net = sum(n for n, _, _ in seen.values())
        fee = sum(f for _, f, _ in seen.values())
        d_net = net - row["settled_net_usd_minor"]
        d_fee = fee - row["settled_fee_usd_minor"]
        d_clear = row["clearing_usd_minor"] - row["settled_clearing_usd_minor"]
        fx = d_clear - d_net - d_fee
        if not (d_net or d_fee or d_clear):
            return
        legs = [
            Posting(code, amount)
            for code, amount in (
                (STRIPE_BALANCE, d_net),
                (PAYMENT_FEES, d_fee),
                (CLEARING, -d_clear),
                (FX_GAIN_LOSS, fx),
            )
            if amount
        ]
        tx.post(
            EntryDraft(
                EntryType.FEE,
                tuple(legs),
                f"purchase:{row['id']}:{row['version']}:settle",
                description=f"Stripe settlement of purchase {row['id']}: fees and FX",
                metadata={
                    "purchase_id": row["id"],
                    "net_usd_minor": d_net,
                    "fee_usd_minor": d_fee,
                    "fx_usd_minor": -fx,
                    "balance_transactions": sorted(seen),
                    "counterparty": "stripe",
                },
                effective_at=now,
            )
        )
        row["settled_net_usd_minor"] = net
        row["settled_fee_usd_minor"] = fee
        row["settled_clearing_usd_minor"] = row["clearing_usd_minor"]
        s.outcomes.append("settled")

    def _save(self, conn: Connection, s: _State, now: datetime) -> None:
        row = s.row
        t = self._t
        values = {k: v for k, v in row.items() if k not in ("id", "created_at")}
        values["updated_at"] = now
        conn.execute(t.update().where(t.c.id == row["id"]).values(**values))


# -- helpers -------------------------------------------------------------------------


def _row(
    conn: Connection, t: sa.Table, purchase_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    query = sa.select(t).where(t.c.id == purchase_id)
    if lock:
        query = query.with_for_update()
    found = conn.execute(query).first()
    if found is None:
        return None
    row = dict(found._mapping)
    row["disputes"] = dict(row["disputes"] or {})
    row["balance_txns"] = dict(row["balance_txns"] or {})
    return row


def _purchase(row: Mapping[str, Any]) -> Purchase:
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
    )


def _result(row: Mapping[str, Any], *, replayed: bool = False) -> CheckoutResult:
    return CheckoutResult(
        purchase_id=row["id"],
        checkout_session_id=row["checkout_session_id"],
        url=row["checkout_url"],
        currency=row["currency"],
        amount_minor=row["local_amount_minor"],
        replayed=replayed,
    )


def _merge_disputes(stored: Mapping[str, Any], fresh: Sequence[DisputeSnapshot]) -> dict[str, Any]:
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


def _share(total: int, part: int, whole: int) -> int:
    """``total x part / whole`` rounded half up (exact at the ends: 0 and ``total``)."""
    if whole <= 0:
        return 0
    value = Fraction(total * part, whole)
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def _hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _check_text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{name} must be a non-empty string of at most {limit} characters")
    return value
