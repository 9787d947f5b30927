"""The Stripe adapter: :class:`StripeGateway` implements the payment-gateway port
with the official ``stripe`` SDK (``StripeClient``, pinned ``~=16.1``).

This is the only module that imports ``stripe`` (inside the class, so the
extra stays optional) and the only place that catches ``stripe.*`` errors:
they leave as :class:`PaymentProviderError` (``retryable`` for timeouts,
connection errors, rate limits and 5xx), :class:`WebhookVerificationError`
or :class:`WebhookPayloadError`. Card data never passes through here: the
library only creates hosted Checkout Sessions and reads ids and amounts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spaktok_ledger._errors import (
    InvalidInput,
    PaymentProviderError,
    WebhookPayloadError,
    WebhookVerificationError,
)
from spaktok_ledger._service._gateway import (
    BalanceTxn,
    CheckoutRequest,
    CheckoutSession,
    ConnectedAccountState,
    DisputeSnapshot,
    PayoutSnapshot,
    PurchaseSnapshot,
    TransferSnapshot,
    WebhookEvent,
)

if TYPE_CHECKING:
    import stripe

__all__ = ["StripeGateway"]

DEFAULT_TOLERANCE_SECONDS = 300


class StripeGateway:
    """The payment gateway on Stripe.

    Pass a configured ``stripe.StripeClient`` (production: your secret key;
    tests: :func:`spaktok_ledger.testing.stripe_client`), or just ``api_key``::

        gateway = StripeGateway(api_key=os.environ["STRIPE_SECRET_KEY"])
    """

    def __init__(
        self,
        client: stripe.StripeClient | None = None,
        *,
        api_key: str | None = None,
        max_network_retries: int = 2,
    ) -> None:
        try:
            import stripe
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InvalidInput(
                "StripeGateway needs the stripe extra: pip install 'spaktok-ledger[stripe]'"
            ) from exc
        if client is None:
            if not api_key:
                raise InvalidInput("StripeGateway needs a StripeClient or an api_key")
            client = stripe.StripeClient(api_key, max_network_retries=max_network_retries)
        self._client = client
        self._stripe = stripe

    def __repr__(self) -> str:  # never show the key
        return "StripeGateway(<client>)"

    # -- error translation --------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        stripe = self._stripe
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            retryable = isinstance(
                exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError
            ) or (exc.http_status is not None and exc.http_status >= 500)
            code = getattr(exc, "code", None)
            message = exc.user_message or (
                str(exc).split("\n")[0] if str(exc) else type(exc).__name__
            )
            raise PaymentProviderError(
                f"Stripe refused to {what}: {message}",
                retryable=retryable,
                stripe_error=type(exc).__name__,
                stripe_code=code,
                http_status=exc.http_status,
                request_id=exc.request_id,
            ) from exc

    # -- webhooks ------------------------------------------------------------------

    def parse_webhook(
        self,
        payload: bytes,
        signature_header: str,
        secret: str,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    ) -> WebhookEvent:
        """Verify the ``Stripe-Signature`` header on the raw body; return the event."""
        stripe = self._stripe
        if not isinstance(payload, bytes | bytearray):
            raise WebhookPayloadError("the webhook body must be the raw request bytes")
        if not secret:
            raise InvalidInput("a webhook endpoint secret is required")
        if not signature_header:
            raise WebhookVerificationError("missing Stripe-Signature header")
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WebhookVerificationError("the webhook body is not UTF-8") from exc
        try:
            stripe.WebhookSignature.verify_header(text, signature_header, secret, tolerance_seconds)
        except stripe.SignatureVerificationError as exc:
            reason = str(exc).split("\n")[0]
            raise WebhookVerificationError(f"webhook signature rejected: {reason}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise WebhookPayloadError("the webhook body is not JSON") from exc
        if (
            not isinstance(data, dict)
            or data.get("object") != "event"
            or not isinstance(data.get("id"), str)
            or not isinstance(data.get("type"), str)
            or not isinstance(data.get("data"), dict)
            or not isinstance(data["data"].get("object"), dict)
        ):
            raise WebhookPayloadError("the webhook body is not a Stripe event")
        created = data.get("created")
        return WebhookEvent(
            id=data["id"],
            type=data["type"],
            created=created if isinstance(created, int) else 0,
            data_object=data["data"]["object"],
            account=data.get("account") if isinstance(data.get("account"), str) else None,
            livemode=bool(data.get("livemode", False)),
            raw=data,
        )

    # -- checkout ------------------------------------------------------------------

    def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSession:
        metadata = {
            "purchase_id": request.purchase_id,
            "user_id": request.user_id,
            "pack_id": request.pack_id,
            "quote_id": request.quote_id,
        }
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.stripe_amount,
                        "product_data": {"name": request.product_name},
                    },
                }
            ],
            "client_reference_id": request.purchase_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
        }
        if request.payment_method_types:
            params["payment_method_types"] = list(request.payment_method_types)
        if request.expires_at is not None:
            params["expires_at"] = request.expires_at
        if request.customer_email:
            params["customer_email"] = request.customer_email
        session = self._call(
            "create a checkout session",
            self._client.v1.checkout.sessions.create,
            params=params,
            options={"idempotency_key": request.idempotency_key},
        )
        return CheckoutSession(
            id=session.id,
            url=session.url,
            currency=str(session.currency).upper(),
            stripe_amount=int(session.amount_total),
            expires_at=session.expires_at,
        )

    def expire_checkout_session(self, session_id: str) -> None:
        self._call(
            "expire a checkout session", self._client.v1.checkout.sessions.expire, session_id
        )

    def purchase_state(self, session_id: str, dispute_ids: Sequence[str] = ()) -> PurchaseSnapshot:
        session = self._call(
            "retrieve a checkout session",
            self._client.v1.checkout.sessions.retrieve,
            session_id,
            params={"expand": ["payment_intent"]},
        ).to_dict()
        intent = session.get("payment_intent")
        intent = intent if isinstance(intent, dict) else None
        charge = None
        charge_id = intent.get("latest_charge") if intent else None
        if isinstance(charge_id, dict):
            charge_id = charge_id.get("id")
        if charge_id:
            charge = self._call(
                "retrieve a charge",
                self._client.v1.charges.retrieve,
                charge_id,
                params={"expand": ["balance_transaction", "refunds.data.balance_transaction"]},
            ).to_dict()
        txns: list[BalanceTxn] = []
        if charge is not None:
            if isinstance(charge.get("balance_transaction"), dict):
                txns.append(_balance_txn(charge["balance_transaction"]))
            for refund in (charge.get("refunds") or {}).get("data") or []:
                if isinstance(refund.get("balance_transaction"), dict):
                    txns.append(_balance_txn(refund["balance_transaction"]))
        disputes = tuple(self._dispute(d) for d in dict.fromkeys(dispute_ids))
        outcome = (charge or {}).get("outcome") or {}
        metadata = session.get("metadata") or {}
        return PurchaseSnapshot(
            session_id=session["id"],
            session_status=session.get("status") or "open",
            payment_status=session.get("payment_status") or "unpaid",
            currency=str(session.get("currency") or "").upper(),
            stripe_amount=int(session.get("amount_total") or 0),
            metadata={str(k): str(v) for k, v in metadata.items()},
            client_reference_id=session.get("client_reference_id"),
            payment_intent_id=intent.get("id") if intent else None,
            payment_intent_status=intent.get("status") if intent else None,
            charge_id=charge.get("id") if charge else None,
            charge_status=charge.get("status") if charge else None,
            amount_refunded=int((charge or {}).get("amount_refunded") or 0),
            risk_level=outcome.get("risk_level"),
            risk_score=outcome.get("risk_score"),
            balance_transactions=tuple(txns),
            disputes=disputes,
        )

    def _dispute(self, dispute_id: str) -> DisputeSnapshot:
        dispute = self._call(
            "retrieve a dispute", self._client.v1.disputes.retrieve, dispute_id
        ).to_dict()
        return dispute_snapshot(dispute)

    def refund(
        self, payment_intent_id: str, stripe_amount: int | None, idempotency_key: str
    ) -> str:
        params: dict[str, Any] = {"payment_intent": payment_intent_id}
        if stripe_amount is not None:
            params["amount"] = stripe_amount
        refund = self._call(
            "refund a payment",
            self._client.v1.refunds.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return str(refund.id)

    # -- Connect -------------------------------------------------------------------

    def create_express_account(
        self,
        *,
        country: str,
        email: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ConnectedAccountState:
        params: dict[str, Any] = {
            "type": "express",
            "country": country,
            "metadata": dict(metadata),
            "capabilities": {"transfers": {"requested": True}},
        }
        if email:
            params["email"] = email
        account = self._call(
            "create a connected account",
            self._client.v1.accounts.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        ).to_dict()
        return account_state(account)

    def create_onboarding_link(self, account_id: str, refresh_url: str, return_url: str) -> str:
        link = self._call(
            "create an onboarding link",
            self._client.v1.account_links.create,
            params={
                "account": account_id,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "type": "account_onboarding",
            },
        )
        return str(link.url)

    def retrieve_account(self, account_id: str) -> ConnectedAccountState:
        account = self._call(
            "retrieve a connected account", self._client.v1.accounts.retrieve, account_id
        ).to_dict()
        return account_state(account)

    def create_transfer(
        self,
        *,
        amount_usd_minor: int,
        destination: str,
        transfer_group: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> TransferSnapshot:
        transfer = self._call(
            "create a transfer",
            self._client.v1.transfers.create,
            params={
                "amount": amount_usd_minor,
                "currency": "usd",
                "destination": destination,
                "transfer_group": transfer_group,
                "metadata": dict(metadata),
            },
            options={"idempotency_key": idempotency_key},
        ).to_dict()
        return transfer_snapshot(transfer)

    def find_transfers(self, transfer_group: str) -> Sequence[TransferSnapshot]:
        page = self._call(
            "list transfers",
            self._client.v1.transfers.list,
            params={"transfer_group": transfer_group, "limit": 100},
        ).to_dict()
        return [transfer_snapshot(t) for t in page.get("data") or []]

    def retrieve_transfer(self, transfer_id: str) -> TransferSnapshot:
        transfer = self._call(
            "retrieve a transfer", self._client.v1.transfers.retrieve, transfer_id
        ).to_dict()
        return transfer_snapshot(transfer)

    def create_payout(
        self,
        *,
        account: str,
        stripe_amount: int,
        currency: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> PayoutSnapshot:
        payout = self._call(
            "create a payout",
            self._client.v1.payouts.create,
            params={
                "amount": stripe_amount,
                "currency": currency.lower(),
                "metadata": dict(metadata),
            },
            options={"idempotency_key": idempotency_key, "stripe_account": account},
        ).to_dict()
        return payout_snapshot(payout, account)

    def retrieve_payout(self, account: str, payout_id: str) -> PayoutSnapshot:
        payout = self._call(
            "retrieve a payout",
            self._client.v1.payouts.retrieve,
            payout_id,
            params={"expand": ["balance_transaction"]},
            options={"stripe_account": account},
        ).to_dict()
        return payout_snapshot(payout, account)

    def list_payouts(self, account: str, *, limit: int = 100) -> Sequence[PayoutSnapshot]:
        page = self._call(
            "list payouts",
            self._client.v1.payouts.list,
            params={"limit": limit},
            options={"stripe_account": account},
        ).to_dict()
        return [payout_snapshot(p, account) for p in page.get("data") or []]


# -- translating Stripe's JSON into our types (also used on webhook payloads) --------


def _balance_txn(data: Mapping[str, Any]) -> BalanceTxn:
    rate = data.get("exchange_rate")
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
    )


def dispute_snapshot(data: Mapping[str, Any]) -> DisputeSnapshot:
    """A dispute object (API or webhook) in our terms."""
    return DisputeSnapshot(
        id=str(data.get("id")),
        status=str(data.get("status") or ""),
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        balance_transactions=tuple(
            _balance_txn(t) for t in data.get("balance_transactions") or [] if isinstance(t, dict)
        ),
    )


def account_state(data: Mapping[str, Any]) -> ConnectedAccountState:
    """An account object (API or ``account.updated``) in our terms."""
    requirements = data.get("requirements") or {}
    return ConnectedAccountState(
        id=str(data.get("id")),
        payouts_enabled=bool(data.get("payouts_enabled")),
        charges_enabled=bool(data.get("charges_enabled")),
        details_submitted=bool(data.get("details_submitted")),
        currently_due=tuple(requirements.get("currently_due") or ()),
        past_due=tuple(requirements.get("past_due") or ()),
        disabled_reason=requirements.get("disabled_reason"),
        default_currency=(data.get("default_currency") or None)
        and str(data["default_currency"]).upper(),
        country=data.get("country"),
    )


def transfer_snapshot(data: Mapping[str, Any]) -> TransferSnapshot:
    destination = data.get("destination")
    if isinstance(destination, dict):
        destination = destination.get("id")
    return TransferSnapshot(
        id=str(data.get("id")),
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        destination=str(destination or ""),
        transfer_group=data.get("transfer_group"),
        reversed_stripe_amount=int(data.get("amount_reversed") or 0),
        reversed=bool(data.get("reversed")),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def payout_snapshot(data: Mapping[str, Any], account: str | None = None) -> PayoutSnapshot:
    txn = data.get("balance_transaction")
    return PayoutSnapshot(
        id=str(data.get("id")),
        account=account,
        stripe_amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        status=str(data.get("status") or ""),
        failure_code=data.get("failure_code"),
        failure_message=data.get("failure_message"),
        arrival_date=data.get("arrival_date"),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        balance_transaction=_balance_txn(txn) if isinstance(txn, dict) else None,
    )
