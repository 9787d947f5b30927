"""Buying coins through Stripe Checkout: sessions, verified webhooks, refunds, disputes.

:class:`Payments` is what a host's two payment endpoints call::

    POST /api/payments/create-checkout-session -> payments.create_checkout(...)
    POST /api/payments/webhook                 -> payments.handle_webhook(body, signature)

How a webhook is applied
------------------------

Deliveries are at-least-once and unordered, so no handler trusts the order
or the event's own snapshot. For any event about a purchase, the service
re-fetches the purchase from Stripe (session, payment intent, charge, every
refund, every dispute of the charge, early fraud warnings, balance
transactions) and *converges* the ledger on it, in one transaction that also
records the event id (``_purchase_flow.py``). The parts: checkout creation
(``_checkout.py``), the purchase flow, refunds and disputes
(``_clawbacks.py``), settlement (``_settlement.py``), debts (``_debts.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._clock import Clock
from spaktok_ledger._compliance._audit import AuditAction, write_audit
from spaktok_ledger._currency import to_stripe_amount
from spaktok_ledger._domain import EntryDraft, EntryType, Posting
from spaktok_ledger._errors import InvalidInput, LedgerError, UnknownPurchase
from spaktok_ledger._log import observed, webhook_fields
from spaktok_ledger._service._checkout import _Checkout
from spaktok_ledger._service._debts import ALLOWANCE, REFUND_LOSSES, WriteOff, outstanding_allowance
from spaktok_ledger._service._gateway import PaymentGateway, SessionRef, WebhookEvent
from spaktok_ledger._service._gifts import GiftEconomy, receivable_account
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._purchase_flow import _PurchaseFlow
from spaktok_ledger._service._purchase_rows import (
    EarlyFraudWarningPolicy,
    RefundPolicy,
    _State,
    check_text,
    load_row,
    purchase_of,
)
from spaktok_ledger._service._quotes import Pricing
from spaktok_ledger._service._webhooks import (
    DuplicateDelivery,
    Endpoint,
    WebhookInbox,
    WebhookResult,
    acknowledged,
)
from spaktok_ledger._store import Ledger

__all__ = [
    "PURCHASE_EVENTS",
    "CheckoutResult",
    "EarlyFraudWarningPolicy",
    "FraudDecision",
    "FraudPolicy",
    "Payments",
    "Purchase",
    "RadarPolicy",
    "RefundPolicy",
    "VelocityLimits",
]

CHECKOUT_TTL_DEFAULT = timedelta(hours=1)

PURCHASE_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "charge.refunded",
        "charge.refund.updated",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
        "radar.early_fraud_warning.created",
        "radar.early_fraud_warning.updated",
    }
)
"""The platform endpoint's events (subscribe to these in the Dashboard)."""


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
    """Refunded (or on its way), in Stripe's units; refunds that failed do not count."""
    clawed_coins: int
    risk_level: str | None
    risk_score: int | None
    note: str | None
    created_at: datetime
    refund_due: bool = False
    """A refund the library owes and has not seen at Stripe yet."""
    fraud_warning: str | None = None
    """The Radar early fraud warning on the charge, if any (``issfr_...``)."""

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
            "refund_due": self.refund_due,
            "created_at": self.created_at.isoformat(),
        }


class Payments(_Checkout, _PurchaseFlow):
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
        refund_mismatched: bool = True,
        early_fraud_warnings: EarlyFraudWarningPolicy = EarlyFraudWarningPolicy.REFUND,
        claw_back_gifts: bool = True,
        payment_method_types: Sequence[str] | None = None,
        checkout_ttl: timedelta = CHECKOUT_TTL_DEFAULT,
        tolerance_seconds: int = 300,
        clock: Clock | None = None,
        transfer_events: EventHandler | None = None,
    ) -> None:
        """``transfer_events``: where ``transfer.*`` events go. Stripe sends them to
        the *platform* endpoint (transfers are the platform's objects), but they
        belong to payouts: pass ``payouts.handle_event`` (or set the attribute
        after building the payouts service).

        ``refund_mismatched``: refund a payment Stripe took for another amount or
        currency than the quote (nothing is credited for it).
        ``early_fraud_warnings``: what a Radar early fraud warning does
        (:class:`EarlyFraudWarningPolicy`). ``claw_back_gifts``: a chargeback takes
        back the gift shares still in their hold period (docs/stripe.md).
        """
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
        self.fraud_policy = fraud_policy or RadarPolicy()
        self.velocity = velocity if velocity is not None else VelocityLimits()
        self.refund_refused = refund_refused
        self.refund_mismatched = refund_mismatched
        self.warning_policy = EarlyFraudWarningPolicy(early_fraud_warnings)
        self.claw_back_gifts = claw_back_gifts
        self.payment_method_types = tuple(payment_method_types) if payment_method_types else None
        self.checkout_ttl = checkout_ttl
        self.tolerance_seconds = tolerance_seconds
        self.clock = clock or self.ledger.now
        self.inbox = WebhookInbox(self.ledger, economy.compliance)
        self.transfer_events = transfer_events
        self._t = self.ledger.tables.purchases

    def __repr__(self) -> str:  # never show the secret
        return f"Payments(policy={self.refund_policy.value})"

    # -- reads -------------------------------------------------------------------

    def purchase(self, purchase_id: str) -> Purchase:
        """A purchase and its status (``UnknownPurchase`` if none)."""
        row = self._find(purchase_id)
        if row is None:
            raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
        return purchase_of(row)

    def purchases(self, user_id: str | int, *, limit: int = 50) -> list[Purchase]:
        """A user's purchases, newest first."""
        user = check_party_id(user_id, "user_id")
        t = self._t
        query = sa.select(t.c.id).where(t.c.user_id == user).order_by(t.c.created_at.desc())
        ids = self.ledger.read(lambda conn: list(conn.execute(query.limit(limit)).scalars()))
        return [self.purchase(purchase_id) for purchase_id in ids]

    # -- webhooks ----------------------------------------------------------------

    @observed("payments", "webhook", refusal_level=logging.WARNING)
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

    @observed("payments", "webhook_event", level=logging.INFO, describe=webhook_fields)
    def handle_event(self, event: WebhookEvent) -> WebhookResult:
        """Apply an already verified event (parked and swept events come through here).

        The event is claimed in the inbox before any Stripe call: a copy that
        arrives while another delivery (or the worker) holds the claim is
        answered at once with ``in_progress`` (and ``duplicate`` true).
        """
        if event.type.startswith("transfer.") and self.transfer_events is not None:
            return self.transfer_events(event)
        if self.inbox.status(event.id) in ("processed", "ignored"):
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
        if event.type not in PURCHASE_EVENTS:
            # Not recorded: an event meant for the other endpoint (a misconfigured
            # subscription) must stay free to be applied there.
            return WebhookResult(event.id, event.type, "ignored")
        return self.inbox.handle_claimed(event, "platform", self._handle_claimed, self.clock)

    def accept_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Verify a delivery and store it for the :class:`Worker`; answer 200 at once.

        The fast acknowledgement: no Stripe call and no ledger write happen
        here, only one insert, so Stripe gets its 2xx within milliseconds
        whatever the load. The outcome is ``queued`` (or ``duplicate`` for an
        event already applied, ``ignored`` for a type this endpoint does not
        handle). Bad signatures raise ``WebhookVerificationError`` (400) as in
        :meth:`handle_webhook`, which stays available for inline handling.
        """
        event, endpoint = self._verify_for_inbox(payload, signature_header)
        stored = endpoint and self.inbox.accept(event, endpoint, now=self.clock())
        return acknowledged(event, stored)

    def _verify_for_inbox(
        self, payload: bytes, signature_header: str
    ) -> tuple[WebhookEvent, Endpoint | None]:
        """The first half of :meth:`accept_webhook`, without I/O: the verified event and
        the inbox endpoint to store it under (None: a type this endpoint ignores)."""
        event = self.gateway.parse_webhook(
            payload, signature_header, self._secret, self.tolerance_seconds
        )
        if event.type in PURCHASE_EVENTS or (
            event.type.startswith("transfer.") and self.transfer_events is not None
        ):
            return event, "platform"
        return event, None

    def wake(self, keys: Iterable[str | None]) -> list[WebhookResult]:
        """Apply the parked events waiting for one of ``keys`` (``purchase:{id}``,
        ``session:{id}``, ``payment_intent:{id}``, ``charge:{id}``): called when
        the object is written. Those that fail stay parked for the worker."""
        results = []
        for payload in self.inbox.woken(keys):
            try:
                results.append(self.handle_event(self.gateway.parse_event(payload)))
            except LedgerError:
                continue  # still parked (or queued): the worker retries it after a backoff
        return results

    def _handle_claimed(self, event: WebhookEvent) -> WebhookResult:
        subject = event.subject
        session_id = subject.id if subject.kind == "checkout.session" else None
        row = self._row_for(event)
        if row is None:
            if session_id is not None and not subject.metadata:
                return self._ignore(event, "ignored_foreign_session")
            self.inbox.park(
                event,
                "platform",
                reason="no purchase for this event yet",
                subject_id=subject.metadata.get("purchase_id"),
                now=self.clock(),
                wake_key=_wake_key(event),
            )
            return WebhookResult(
                event.id, event.type, "parked", subject.metadata.get("purchase_id")
            )
        session = row["checkout_session_id"] or session_id
        if session is None:
            self.inbox.park(
                event,
                "platform",
                reason="purchase has no checkout session yet",
                subject_id=row["id"],
                now=self.clock(),
                wake_key=f"purchase:{row['id']}",
            )
            return WebhookResult(event.id, event.type, "parked", row["id"])
        snapshot = self.gateway.purchase_state(session)
        result = self._converge(event, row["id"], snapshot)
        if result.outcome != "duplicate":
            self.wake(_row_keys(self._find(row["id"]) or row))
        return result

    def _row_for(self, event: WebhookEvent) -> dict[str, Any] | None:
        """The purchase an event is about, from its metadata, ids, or Stripe itself.

        An event about a charge (a refund, a dispute, a fraud warning) can beat
        its purchase's ``checkout.session.completed``: the purchase is then found
        from Stripe (the Checkout Session of the PaymentIntent), never parked
        behind a completion that may already have been answered.
        """
        subject = event.subject
        t = self._t
        if subject.kind == "checkout.session":
            purchase_id = subject.metadata.get("purchase_id") or self._by_column(
                t.c.checkout_session_id, subject.id
            )
            row = self._find(purchase_id) if purchase_id else None
            if row is None and subject.client_reference_id:
                row = self._find(subject.client_reference_id)
            return row or self._adopt(
                SessionRef(subject.id, subject.metadata, subject.client_reference_id)
            )
        purchase_id = subject.metadata.get("purchase_id")
        if not purchase_id and subject.charge_id:
            purchase_id = self._by_column(t.c.charge_id, subject.charge_id)
        if not purchase_id and subject.payment_intent_id:
            purchase_id = self._by_column(t.c.payment_intent_id, subject.payment_intent_id)
        row = self._find(purchase_id) if purchase_id else None
        if row is not None and row["checkout_session_id"]:
            return row
        if subject.payment_intent_id:
            ref = self.gateway.session_for_payment(subject.payment_intent_id)
            if ref is not None:
                return row or self._find_session(ref) or self._adopt(ref)
        return row

    def _find_session(self, ref: SessionRef) -> dict[str, Any] | None:
        purchase_id = ref.metadata.get("purchase_id") or self._by_column(
            self._t.c.checkout_session_id, ref.id
        )
        return self._find(purchase_id) if purchase_id else None

    def _by_column(self, column: Any, value: str) -> str | None:
        t = self._t
        return self.ledger.read(
            lambda conn: conn.execute(sa.select(t.c.id).where(column == value)).scalar()
        )

    def _adopt(self, session: SessionRef) -> dict[str, Any] | None:
        """A session we have no row for, but whose metadata names a stored quote:
        record the purchase (the create call's answer was lost) and carry on."""
        try:
            purchase_id = str(session.metadata["purchase_id"])
            user = check_party_id(session.metadata["user_id"], "user_id")
            quote = self.pricing.store.get(str(session.metadata["quote_id"]))
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
            "checkout_session_id": session.id,
            "disputes": {},
            "balance_txns": {},
            "note": "adopted from a webhook: the checkout call's answer was lost",
            "created_at": now,
            "updated_at": now,
        }
        t = self._t

        def insert(tx: Ledger) -> dict[str, Any]:
            conn = tx.connection()
            if load_row(conn, t, purchase_id) is None:
                conn.execute(t.insert(), values)
            found = load_row(conn, t, purchase_id)
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
        for payload in self.inbox.parked("platform", limit=limit):
            event = self.gateway.parse_event(payload)
            if subject_id is not None:
                about = event.subject.metadata.get("purchase_id")
                known = self._row_for_known(event)
                if subject_id not in (about, known):
                    continue
            results.append(self.handle_event(event))
        return results

    def _row_for_known(self, event: WebhookEvent) -> str | None:
        """The purchase a parked event is about, from local ids only (no Stripe call)."""
        subject = event.subject
        t = self._t
        for column, value in (
            (t.c.checkout_session_id, subject.id if subject.kind == "checkout.session" else None),
            (t.c.charge_id, subject.charge_id),
            (t.c.payment_intent_id, subject.payment_intent_id),
        ):
            if value:
                found = self._by_column(column, value)
                if found:
                    return found
        return None

    def sync(self, purchase_id: str) -> Purchase:
        """Re-fetch a purchase from Stripe and converge the ledger on it: refunds and
        disputes nobody told us about are found from the charge."""
        row = self._find(purchase_id)
        if row is None:
            raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
        if row["checkout_session_id"] is None:
            return purchase_of(row)
        snapshot = self.gateway.purchase_state(row["checkout_session_id"])
        self._converge(None, purchase_id, snapshot)
        return self.purchase(purchase_id)

    def retry_refunds(self, *, limit: int = 100) -> list[Purchase]:
        """Send again the refunds the library owes that Stripe has not shown yet."""
        t = self._t
        query = sa.select(t.c.id).where(t.c.refund_due.is_(True)).order_by(t.c.updated_at)
        ids = self.ledger.read(lambda conn: list(conn.execute(query.limit(limit)).scalars()))
        return [self.sync(purchase_id) for purchase_id in ids]

    # -- fraud review -------------------------------------------------------------

    def release(
        self,
        purchase_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> Purchase:
        """Make the coins of a purchase held for fraud review spendable (audited)."""
        now = self.clock()

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            row = load_row(conn, self._t, purchase_id, lock=True)
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
            state = _State(row)
            self._settle(tx, state, (), now)  # the money held for review becomes coins
            self._save(conn, state, now)
            audit = AuditAction.RELEASE_PURCHASE
            self._audit(
                conn, audit, row, actor=actor, reason=reason, request_id=request_id, now=now
            )

        self.ledger.atomic(run)
        return self.purchase(purchase_id)

    def refuse(
        self,
        purchase_id: str,
        *,
        refund: bool = True,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> Purchase:
        """Refuse a purchase held for review: its coins are voided; optionally refund it
        (audited)."""
        now = self.clock()

        def run(tx: Ledger) -> dict[str, Any]:
            conn = tx.connection()
            row = load_row(conn, self._t, purchase_id, lock=True)
            if row is None:
                raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
            if row["status"] != "held":
                raise InvalidInput(f"purchase {purchase_id} is {row['status']}, not held")
            tx.void_hold(row["credit_entry_id"], metadata={"reason": "refused after review"})
            row["version"] += 1
            row["status"], row["held"], row["refund_due"] = "refused", False, refund
            state = _State(row)
            self._settle(tx, state, (), now)
            self._save(conn, state, now)
            audit = AuditAction.REFUSE_PURCHASE
            self._audit(
                conn, audit, row, actor=actor, reason=reason, request_id=request_id, now=now
            )
            return row

        row = self.ledger.atomic(run)
        self._send_due_refund(row)
        return self.purchase(purchase_id)

    def refund(
        self,
        purchase_id: str,
        *,
        local_amount_minor: int | None = None,
        idempotency_key: str,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Ask Stripe to refund a purchase (all of it, or part in its currency's minor
        units). The coins are clawed back when Stripe's ``charge.refunded`` arrives.

        Works as soon as Stripe has the payment, even if its webhook has not
        arrived yet (the purchase is synced from Stripe first). Audited once
        Stripe accepted it (``actor``, ``reason``, ``request_id``).
        """
        row = self._find(purchase_id)
        if row is None:
            raise UnknownPurchase(f"no purchase {purchase_id!r}", purchase_id=purchase_id)
        if not row["payment_intent_id"]:
            self.sync(purchase_id)
            row = self._find(purchase_id)
            assert row is not None
        if not row["payment_intent_id"]:
            raise InvalidInput(f"purchase {purchase_id} has not been paid")
        amount = None
        if local_amount_minor is not None:
            if not 0 < local_amount_minor <= row["local_amount_minor"]:
                raise InvalidInput("refund amount must be positive and at most the price")
            amount = to_stripe_amount(local_amount_minor, row["currency"])
        key = check_text(idempotency_key, "idempotency_key", 200)
        refund_id = str(
            self.gateway.refund(row["payment_intent_id"], amount, f"refund:{purchase_id}:{key}")
        )
        now = self.clock()
        paid = row
        self.ledger.atomic(
            lambda tx: self._audit(
                tx.connection(),
                AuditAction.REFUND,
                paid,
                actor=actor,
                reason=reason,
                request_id=request_id,
                now=now,
                request={"local_amount_minor": local_amount_minor, "idempotency_key": key},
                result={"refund_id": refund_id},
            )
        )
        return refund_id

    def _audit(
        self,
        conn: Connection,
        action: AuditAction,
        row: Mapping[str, Any],
        *,
        actor: str | None,
        reason: str | None,
        request_id: str | None,
        now: datetime,
        request: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        write_audit(
            conn,
            self.ledger.tables,
            action,
            actor=actor,
            subject=f"purchase:{row['id']}",
            reason=reason,
            request={"purchase_id": row["id"], "user_id": row["user_id"], **(request or {})},
            request_id=request_id,
            result=result or {"status": row["status"]},
            now=now,
        )

    # -- debts ---------------------------------------------------------------------

    def debts(self, *, limit: int = 100) -> list[tuple[str, int]]:
        """Viewers who owe money (``(user_id, US cents)``), largest debt first."""
        t = self.ledger.tables
        accounts, balances = t.accounts, t.balances
        owed = sa.func.sum(balances.c.posted)
        query = (
            sa.select(accounts.c.code, owed)
            .join(balances, balances.c.account_id == accounts.c.id)
            .where(accounts.c.code.like("user:%:receivable"))
            .group_by(accounts.c.code)
            .having(owed > 0)
            .order_by(owed.desc(), accounts.c.code)
            .limit(limit)
        )
        rows = self.ledger.read(lambda conn: list(conn.execute(query)))
        return [(code.split(":")[1], int(amount)) for code, amount in rows]

    def write_off(
        self,
        user_id: str | int,
        *,
        reason: str,
        idempotency_key: str,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> WriteOff:
        """Give up a viewer's debt (``user:{id}:receivable``): the loss was booked when
        Stripe took the money back, so this only removes the claim and its allowance
        (Dr ``platform:receivables_allowance`` / Cr receivable). Spending is no
        longer blocked. Idempotent by key; audited with ``actor`` and ``request_id``."""
        user = check_party_id(user_id, "user_id")
        reason = check_text(reason, "reason", 500)
        key = check_text(idempotency_key, "idempotency_key", 200)
        now = self.clock()

        def run(tx: Ledger) -> WriteOff:
            ledger_key = f"write_off:{user}:{key}"
            request = {"op": "write_off", "user": user, "reason": reason}
            try:
                debt = tx.balance(receivable_account(user)).posted_minor
            except LedgerError:
                debt = 0
            if debt <= 0:
                try:
                    done = tx.entry_by_key(ledger_key)
                except LedgerError:
                    return WriteOff(user, 0, None, reason)
                amount = sum(-p.amount_minor for p in done.postings if p.amount_minor < 0)
                return WriteOff(user, amount, done.id, reason, replayed=True)
            covered = min(debt, outstanding_allowance(tx))
            legs = [Posting.credit(receivable_account(user), debt)]
            if covered:
                legs.append(Posting.debit(ALLOWANCE, covered))
            if debt - covered:  # a debt from before the allowance existed
                legs.append(Posting.debit(REFUND_LOSSES, debt - covered))
            entry = tx.post(
                EntryDraft(
                    EntryType.ADJUSTMENT,
                    tuple(legs),
                    ledger_key,
                    description=f"debt of {user} written off: {reason}",
                    metadata={"user": user, "reason": reason, "write_off_usd_minor": debt},
                    effective_at=now,
                ),
                request=request,
            )
            amount = sum(-p.amount_minor for p in entry.postings if p.amount_minor < 0)
            if not entry.replayed:
                self.economy.outbox.write(
                    tx.connection(),
                    "wallet.debt_written_off",
                    f"wallet.debt_written_off:{entry.id}",
                    {"user_id": user, "amount_usd_minor": amount, "reason": reason},
                    entry_id=entry.id,
                    now=now,
                )
                write_audit(
                    tx.connection(),
                    self.ledger.tables,
                    AuditAction.WRITE_OFF,
                    actor=actor,
                    subject=f"user:{user}",
                    reason=reason,
                    request={"user_id": user, "idempotency_key": key},
                    request_id=request_id,
                    result={"entry_id": entry.id, "amount_usd_minor": amount},
                    now=now,
                )
            return WriteOff(user, amount, entry.id, reason, replayed=entry.replayed)

        return self.ledger.atomic(run)


def _wake_key(event: WebhookEvent) -> str | None:
    """What a parked platform event waits for: its purchase, else its Stripe objects."""
    subject = event.subject
    purchase_id = subject.metadata.get("purchase_id")
    if purchase_id:
        return f"purchase:{purchase_id}"
    if subject.kind == "checkout.session":
        return f"session:{subject.id}"
    if subject.payment_intent_id:
        return f"payment_intent:{subject.payment_intent_id}"
    if subject.charge_id:
        return f"charge:{subject.charge_id}"
    return None


def _row_keys(row: Mapping[str, Any]) -> list[str | None]:
    """The wake keys a purchase row answers to."""
    return [
        f"purchase:{row['id']}",
        f"session:{row['checkout_session_id']}" if row.get("checkout_session_id") else None,
        f"payment_intent:{row['payment_intent_id']}" if row.get("payment_intent_id") else None,
        f"charge:{row['charge_id']}" if row.get("charge_id") else None,
    ]
