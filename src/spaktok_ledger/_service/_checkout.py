"""Creating Checkout Sessions: the first half of :class:`~spaktok_ledger.Payments`.

Every refusal (unknown or expired quote, a quote for someone else, a currency
Stripe cannot charge, an amount under Stripe's minimum, a velocity limit)
happens before any Stripe call; the purchase row is written first, so a
retry after a timeout sends Stripe the same request under the same
idempotency key and gets the same session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._currency import is_stripe_chargeable, to_stripe_amount
from spaktok_ledger._errors import (
    FraudRejected,
    IdempotencyConflict,
    InvalidInput,
    PaymentProviderError,
    UnsupportedCurrency,
)
from spaktok_ledger._pricing import Quote, check_quote_valid, check_stripe_minimum
from spaktok_ledger._service._gateway import CheckoutRequest
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._purchase_rows import (
    _PaymentsCore,
    check_text,
    load_row,
)
from spaktok_ledger._service._purchase_rows import (
    request_hash as hash_request,
)
from spaktok_ledger._store import Ledger

if TYPE_CHECKING:
    from spaktok_ledger._service._payments import CheckoutResult, VelocityLimits


class _Checkout(_PaymentsCore):
    """Checkout Sessions charging exactly a quote."""

    velocity: VelocityLimits
    payment_method_types: tuple[str, ...] | None
    wake: Callable[[Iterable[str | None]], list[Any]]

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
        key = check_text(idempotency_key, "idempotency_key", 200)
        check_text(quote_id, "quote_id", 255)
        for name, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise InvalidInput(f"{name} must be an http(s) URL", field=name)
            check_text(url, name, 2048)
        if customer_email is not None:
            check_text(customer_email, "customer_email", 254)
        purchase_id = "pur_" + hashlib.sha256(f"{user}\x00{key}".encode()).hexdigest()[:24]
        request_hash = hash_request(
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
                return checkout_result(existing, replayed=True)
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
            found = load_row(conn, t, purchase_id)
            assert found is not None
            return found

        opened_row = self.ledger.atomic(opened)
        # Events that beat this answer (a fast payer) were parked: apply them now.
        self.wake([f"purchase:{purchase_id}", f"session:{session.id}"])
        return checkout_result(opened_row)

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
            found = load_row(conn, t, purchase_id)
            if found is not None:  # a concurrent retry got here first
                if found["request_hash"] != request_hash:
                    raise IdempotencyConflict("idempotency key was used for another checkout")
                return found
            conn.execute(t.insert(), values)
            inserted = load_row(conn, t, purchase_id)
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


def checkout_result(row: Mapping[str, Any], *, replayed: bool = False) -> CheckoutResult:
    from spaktok_ledger._service._payments import CheckoutResult

    return CheckoutResult(
        purchase_id=row["id"],
        checkout_session_id=row["checkout_session_id"],
        url=row["checkout_url"],
        currency=row["currency"],
        amount_minor=row["local_amount_minor"],
        replayed=replayed,
    )
