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
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spaktok_ledger._errors import (
    InvalidInput,
    PaymentProviderError,
    WebhookPayloadError,
    WebhookVerificationError,
)
from spaktok_ledger._log import observed
from spaktok_ledger._service._gateway import (
    BalanceTxn,
    CheckoutRequest,
    CheckoutSession,
    ConnectedAccountState,
    PayoutSnapshot,
    PurchaseSnapshot,
    SessionRef,
    StripeBalance,
    TransferSnapshot,
    WebhookEvent,
)
from spaktok_ledger._stripe._parse import (
    account_state,
    balance_txn,
    dispute_snapshot,
    event,
    payout_snapshot,
    refund_snapshot,
    transfer_snapshot,
)
from spaktok_ledger._validate import MAX_WEBHOOK_BODY_BYTES, check_int

if TYPE_CHECKING:
    import stripe

__all__ = ["StripeGateway"]

DEFAULT_TOLERANCE_SECONDS = 300


def check_signed_at(signature_header: str, tolerance_seconds: int) -> None:
    """Refuse a signature dated more than ``tolerance_seconds`` in the future.

    The SDK's ``verify_header`` refuses only timestamps older than the
    tolerance; a clock far ahead (or a signature made for later replay) is
    refused here, with the same tolerance.
    """
    stamps = [
        part.split("=", 1)[1]
        for part in signature_header.split(",")
        if part.strip().startswith("t=")
    ]
    try:
        signed_at = int(stamps[0].strip())
    except (IndexError, ValueError) as exc:
        raise WebhookVerificationError("the Stripe-Signature header has no timestamp") from exc
    if signed_at > time.time() + tolerance_seconds:
        raise WebhookVerificationError(
            "webhook signature rejected: timestamp is in the future beyond the tolerance"
        )


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
        max_body_bytes: int = MAX_WEBHOOK_BODY_BYTES,
    ) -> None:
        self.max_body_bytes = check_int(
            max_body_bytes, "max_body_bytes", minimum=1, maximum=64 * MAX_WEBHOOK_BODY_BYTES
        )
        """Webhook bodies larger than this are refused before their signature is checked."""
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

    @observed("stripe", "stripe_call", given=lambda _self, what, *_a, **_k: {"call": what})
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

    # -- webhooks and events -------------------------------------------------------

    def parse_webhook(
        self,
        payload: bytes,
        signature_header: str,
        secret: str,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    ) -> WebhookEvent:
        """Verify the ``Stripe-Signature`` header on the raw body; return the event
        (https://docs.stripe.com/webhooks#verify-events)."""
        stripe = self._stripe
        if not isinstance(payload, bytes | bytearray):
            raise WebhookPayloadError("the webhook body must be the raw request bytes")
        # Before any HMAC: an oversized body costs nothing to refuse.
        if len(payload) > self.max_body_bytes:
            raise WebhookPayloadError(
                f"the webhook body is larger than {self.max_body_bytes} bytes",
                max_body_bytes=self.max_body_bytes,
            )
        if not isinstance(signature_header, str) or len(signature_header) > 4096:
            raise WebhookVerificationError("the Stripe-Signature header is not one Stripe sends")
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
        check_signed_at(signature_header, tolerance_seconds)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise WebhookPayloadError("the webhook body is not JSON") from exc
        if not isinstance(data, dict):
            raise WebhookPayloadError("the webhook body is not a Stripe event")
        return event(data)

    def parse_event(self, data: Mapping[str, Any]) -> WebhookEvent:
        """An event already verified: a parked payload, or one listed from the API."""
        return event(data)

    def list_events(
        self, types: Sequence[str], *, created_gte: int, account: str | None = None
    ) -> Iterator[WebhookEvent]:
        """Events of ``types`` since ``created_gte``, oldest first. Stripe keeps events
        for 30 days (https://docs.stripe.com/api/events/list)."""
        params: dict[str, Any] = {"types": list(types), "created": {"gte": created_gte}}
        found = list(self._pages("list events", self._client.v1.events.list, params, account))
        for data in reversed(found):  # Stripe lists newest first
            yield event(data)

    def _pages(
        self, what: str, fn: Any, params: Mapping[str, Any], account: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list, page after page (``starting_after``), newest first."""
        options = {"stripe_account": account} if account else {}
        query: dict[str, Any] = {**params, "limit": 100}
        while True:
            page = self._call(what, fn, params=query, options=options).to_dict()
            items = page.get("data") or []
            yield from items
            if not page.get("has_more") or not items:
                return
            query = {**query, "starting_after": items[-1]["id"]}

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
            # The quote already is the viewer's price in their currency, and checkout
            # must charge exactly it: no Adaptive Pricing conversion on top
            # (https://docs.stripe.com/payments/checkout/adaptive-pricing).
            "adaptive_pricing": {"enabled": False},
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

    def session_for_payment(self, payment_intent_id: str) -> SessionRef | None:
        """The Checkout Session that created a PaymentIntent (sessions list by
        ``payment_intent``: https://docs.stripe.com/api/checkout/sessions/list)."""
        page = self._call(
            "find a checkout session",
            self._client.v1.checkout.sessions.list,
            params={"payment_intent": payment_intent_id, "limit": 1},
        ).to_dict()
        for session in page.get("data") or []:
            metadata = session.get("metadata") or {}
            return SessionRef(
                id=str(session["id"]),
                metadata={str(k): str(v) for k, v in metadata.items()},
                client_reference_id=session.get("client_reference_id"),
            )
        return None

    def purchase_state(self, session_id: str) -> PurchaseSnapshot:
        """The purchase as Stripe has it now: session, PaymentIntent, charge with its
        balance transaction, every refund (a charge's ``refunds`` are not included
        since API 2022-11-15: they are listed, all pages,
        https://docs.stripe.com/upgrades#2022-11-15), every dispute of the charge
        (listed by charge: https://docs.stripe.com/api/disputes/list) and its
        actionable early fraud warnings."""
        # One request for the session, its PaymentIntent, the charge, the charge's
        # balance transaction and its first refunds (a charge's ``refunds`` only when
        # expanded since API 2022-11-15; expansions go at most four levels deep:
        # https://docs.stripe.com/expand). Lists follow only where the charge says
        # there is something to list, so a paid session with no refund or dispute
        # costs two requests: this one and the early fraud warnings.
        session = self._call(
            "retrieve a checkout session",
            self._client.v1.checkout.sessions.retrieve,
            session_id,
            params={
                "expand": [
                    "payment_intent.latest_charge.balance_transaction",
                    "payment_intent.latest_charge.refunds",
                ]
            },
        ).to_dict()
        intent = session.get("payment_intent")
        intent = intent if isinstance(intent, dict) else None
        charge = intent.get("latest_charge") if intent else None
        charge_id = charge.get("id") if isinstance(charge, dict) else charge
        if charge_id and not isinstance(charge, dict):
            # Not expanded (an API that answered with the id only): fetch it.
            charge = self._call(
                "retrieve a charge",
                self._client.v1.charges.retrieve,
                charge_id,
                params={"expand": ["balance_transaction", "refunds"]},
            ).to_dict()
        charge = charge if isinstance(charge, dict) else None
        txns: list[BalanceTxn] = []
        refunds = []
        disputes = []
        warnings: list[str] = []
        if charge_id and charge is not None:
            if isinstance(charge.get("balance_transaction"), dict):
                txns.append(balance_txn(charge["balance_transaction"]))
            first = charge.get("refunds")
            if not isinstance(first, dict) or first.get("data") or first.get("has_more"):
                # Every refund with its balance transactions (a failed refund has two
                # that cancel out, and still counts for the ledger's settlement).
                refunds = [
                    refund_snapshot(r)
                    for r in self._pages(
                        "list refunds",
                        self._client.v1.refunds.list,
                        {
                            "charge": charge_id,
                            "expand": [
                                "data.balance_transaction",
                                "data.failure_balance_transaction",
                            ],
                        },
                    )
                ]
            for refund in refunds:
                txns.extend(
                    t
                    for t in (refund.balance_transaction, refund.failure_balance_transaction)
                    if t is not None
                )
            if charge.get("disputed") is not False:
                # ``disputed``: whether the charge has been disputed
                # (https://docs.stripe.com/api/charges/object#charge_object-disputed).
                disputes = [
                    dispute_snapshot(d)
                    for d in self._pages(
                        "list disputes", self._client.v1.disputes.list, {"charge": charge_id}
                    )
                ]
            warnings = [
                str(w["id"])
                for w in self._pages(
                    "list early fraud warnings",
                    self._client.v1.radar.early_fraud_warnings.list,
                    {"charge": charge_id},
                )
                if w.get("actionable")
            ]
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
            amount_refunded=sum(r.stripe_amount for r in refunds if r.counts),
            risk_level=outcome.get("risk_level"),
            risk_score=outcome.get("risk_score"),
            balance_transactions=tuple(txns),
            disputes=tuple(disputes),
            refunds=tuple(refunds),
            early_fraud_warnings=tuple(warnings),
        )

    def refund(
        self,
        payment_intent_id: str,
        stripe_amount: int | None,
        idempotency_key: str,
        *,
        reason: str | None = None,
    ) -> str:
        params: dict[str, Any] = {"payment_intent": payment_intent_id}
        if stripe_amount is not None:
            params["amount"] = stripe_amount
        if reason is not None:
            params["reason"] = reason
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
        service_agreement: str = "full",
    ) -> ConnectedAccountState:
        """An Express account that can receive transfers. Accounts abroad take the
        ``recipient`` service agreement, the only one cross-border payouts work with
        (https://docs.stripe.com/connect/service-agreement-types)."""
        params: dict[str, Any] = {
            "type": "express",
            "country": country,
            "metadata": dict(metadata),
            "capabilities": {"transfers": {"requested": True}},
        }
        if service_agreement != "full":
            params["tos_acceptance"] = {"service_agreement": service_agreement}
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
        source_transaction: str | None = None,
    ) -> TransferSnapshot:
        params: dict[str, Any] = {
            "amount": amount_usd_minor,
            "currency": "usd",
            "destination": destination,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
            "expand": ["balance_transaction"],
        }
        if source_transaction is not None:
            params["source_transaction"] = source_transaction
        transfer = self._call(
            "create a transfer",
            self._client.v1.transfers.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        ).to_dict()
        return transfer_snapshot(transfer)

    def find_transfers(self, transfer_group: str) -> Sequence[TransferSnapshot]:
        return [
            transfer_snapshot(t)
            for t in self._pages(
                "list transfers",
                self._client.v1.transfers.list,
                {
                    "transfer_group": transfer_group,
                    "expand": [
                        "data.balance_transaction",
                        "data.reversals.data.balance_transaction",
                    ],
                },
            )
        ]

    def retrieve_transfer(self, transfer_id: str) -> TransferSnapshot:
        transfer = self._call(
            "retrieve a transfer",
            self._client.v1.transfers.retrieve,
            transfer_id,
            params={"expand": ["balance_transaction", "reversals.data.balance_transaction"]},
        ).to_dict()
        return transfer_snapshot(transfer)

    def transfer_arrival(self, transfer: TransferSnapshot) -> BalanceTxn | None:
        """The connected account's side of a transfer: its ``py_`` payment's balance
        transaction, in the currency the account received (Stripe converts into the
        account's default currency: https://docs.stripe.com/connect/currencies)."""
        if not transfer.destination_payment_id:
            return None
        payment = self._call(
            "retrieve a transfer's payment",
            self._client.v1.charges.retrieve,
            transfer.destination_payment_id,
            params={"expand": ["balance_transaction"]},
            options={"stripe_account": transfer.destination},
        ).to_dict()
        txn = payment.get("balance_transaction")
        return balance_txn(txn, transfer.destination) if isinstance(txn, dict) else None

    def reverse_transfer(
        self, transfer_id: str, stripe_amount: int | None, idempotency_key: str
    ) -> TransferSnapshot:
        params: dict[str, Any] = {}
        if stripe_amount is not None:
            params["amount"] = stripe_amount
        self._call(
            "reverse a transfer",
            self._client.v1.transfers.reversals.create,
            transfer_id,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return self.retrieve_transfer(transfer_id)

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
                "expand": ["balance_transaction"],
            },
            options={"idempotency_key": idempotency_key, "stripe_account": account},
        ).to_dict()
        return payout_snapshot(payout, account)

    def retrieve_payout(self, account: str, payout_id: str) -> PayoutSnapshot:
        payout = self._call(
            "retrieve a payout",
            self._client.v1.payouts.retrieve,
            payout_id,
            params={"expand": ["balance_transaction", "failure_balance_transaction"]},
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

    # -- balances ------------------------------------------------------------------

    def balance(self, account: str | None = None) -> Sequence[StripeBalance]:
        """The account's balance per currency (https://docs.stripe.com/api/balance)."""
        options = {"stripe_account": account} if account else {}
        data = self._call(
            "retrieve the balance", self._client.v1.balance.retrieve, options=options
        ).to_dict()
        totals: dict[str, list[int]] = {}
        for index, bucket in enumerate(("available", "pending")):
            for item in data.get(bucket) or []:
                amounts = totals.setdefault(str(item["currency"]).upper(), [0, 0])
                amounts[index] += int(item.get("amount") or 0)
        return [StripeBalance(c, a[0], a[1]) for c, a in sorted(totals.items())]

    def balance_transactions(
        self, *, created_gte: int, account: str | None = None
    ) -> Iterator[BalanceTxn]:
        """Every balance transaction since ``created_gte``, oldest first
        (https://docs.stripe.com/api/balance_transactions/list)."""
        found = list(
            self._pages(
                "list balance transactions",
                self._client.v1.balance_transactions.list,
                # the source says what the money belongs to (a charge, a payout...)
                {"created": {"gte": created_gte}, "expand": ["data.source"]},
                account,
            )
        )
        for data in reversed(found):
            yield balance_txn(data, account)
