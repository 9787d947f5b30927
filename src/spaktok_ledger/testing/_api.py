"""The HTTP endpoints: Stripe API v1 requests in, Stripe objects (or errors) out.

Each handler validates its params as Stripe does (unknown, missing and
malformed params are 400s with Stripe's ``code`` and ``param``), then moves
state through the shared moves (``_moves.py``). Checkout, payments, refunds,
disputes, Radar, events and balances are here; Connect is in ``_api_connect.py``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, Final, cast

from spaktok_ledger.testing._api_connect import _ConnectAPI
from spaktok_ledger.testing._fixtures import fixture, new_id, random_token
from spaktok_ledger.testing._forms import (
    StripeAPIError,
    bool_param,
    check_known_params,
    currency_param,
    int_param,
    metadata_param,
    str_list_param,
    str_param,
)
from spaktok_ledger.testing._state import (
    _DAY,
    JSON,
    _Call,
    _check_amount_for_currency,
    _invalid,
    _not_found,
)

_MAX_AMOUNT: Final = 99_999_999

_PAYOUT_DIVISIBLE_BY_100: Final = frozenset({"huf", "twd"})

# Stripe's top-level params for each endpoint (from stripe-python's *Params types).
_CHECKOUT_CREATE_PARAMS: Final = frozenset((
    "adaptive_pricing", "after_expiration", "allow_promotion_codes",
    "allowed_payment_method_types", "automatic_tax", "billing_address_collection",
    "branding_settings", "cancel_url", "client_reference_id", "consent_collection", "currency",
    "custom_fields", "custom_text", "customer", "customer_account", "customer_creation",
    "customer_email", "customer_update", "discounts", "excluded_payment_method_types",
    "expires_at", "integration_identifier", "invoice_creation", "line_items", "locale",
    "managed_payments", "metadata", "mode", "name_collection", "optional_items", "origin_context",
    "payment_intent_data", "payment_method_collection", "payment_method_configuration",
    "payment_method_data", "payment_method_options", "payment_method_types", "permissions",
    "phone_number_collection", "redirect_on_completion", "return_url",
    "saved_payment_method_options", "setup_intent_data", "shipping_address_collection",
    "shipping_options", "submit_type", "subscription_data", "success_url", "tax_id_collection",
    "ui_mode", "wallet_options",
))  # fmt: skip

_LIST_PARAMS: Final = frozenset({"limit", "starting_after", "ending_before", "created"})

_REFUND_CREATE_PARAMS: Final = frozenset((
    "amount", "charge", "currency", "customer", "instructions_email", "metadata", "origin",
    "payment_intent", "reason", "refund_application_fee", "reverse_transfer",
))  # fmt: skip


class _StripeAPI(_ConnectAPI):
    """Routes ``(method, path)`` to the endpoint handlers."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._routes = self._build_routes()

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., JSON]]]:
        table: list[tuple[str, str, Callable[..., JSON]]] = [
            ("POST", r"/v1/checkout/sessions", self._create_checkout_session),
            ("GET", r"/v1/checkout/sessions", self._list_checkout_sessions),
            ("GET", r"/v1/checkout/sessions/([^/]+)", self._retrieve_checkout_session),
            ("GET", r"/v1/checkout/sessions/([^/]+)/line_items", self._list_line_items),
            ("POST", r"/v1/checkout/sessions/([^/]+)/expire", self._expire_checkout_session),
            ("GET", r"/v1/payment_intents/([^/]+)", self._retrieve_simple("payment_intent")),
            ("GET", r"/v1/charges/([^/]+)", self._retrieve_simple("charge")),
            ("GET", r"/v1/balance", self._retrieve_balance),
            ("GET", r"/v1/balance_transactions", self._list_balance_transactions),
            (
                "GET",
                r"/v1/balance_transactions/([^/]+)",
                self._retrieve_simple("balance_transaction"),
            ),
            ("POST", r"/v1/refunds", self._create_refund),
            ("GET", r"/v1/refunds", self._list_of_a_payment("refund", "/v1/refunds")),
            ("GET", r"/v1/refunds/([^/]+)", self._retrieve_simple("refund")),
            ("GET", r"/v1/disputes", self._list_of_a_payment("dispute", "/v1/disputes")),
            ("GET", r"/v1/disputes/([^/]+)", self._retrieve_simple("dispute")),
            (
                "GET",
                r"/v1/radar/early_fraud_warnings",
                self._list_of_a_payment(
                    "radar.early_fraud_warning", "/v1/radar/early_fraud_warnings"
                ),
            ),
            (
                "GET",
                r"/v1/radar/early_fraud_warnings/([^/]+)",
                self._retrieve_simple("radar.early_fraud_warning"),
            ),
            ("GET", r"/v1/topups/([^/]+)", self._retrieve_simple("topup")),
            ("POST", r"/v1/transfers", self._create_transfer),
            ("GET", r"/v1/transfers", self._list_transfers),
            ("GET", r"/v1/transfers/([^/]+)", self._retrieve_simple("transfer")),
            ("POST", r"/v1/transfers/([^/]+)/reversals", self._create_transfer_reversal),
            ("POST", r"/v1/payouts", self._create_payout),
            ("GET", r"/v1/payouts", self._list_payouts),
            ("GET", r"/v1/payouts/([^/]+)", self._retrieve_simple("payout")),
            ("POST", r"/v1/payouts/([^/]+)/cancel", self._cancel_payout_api),
            ("POST", r"/v1/accounts", self._create_account_api),
            ("GET", r"/v1/accounts/([^/]+)", self._retrieve_account),
            ("POST", r"/v1/accounts/([^/]+)", self._update_account_api),
            ("POST", r"/v1/account_links", self._create_account_link),
            ("GET", r"/v1/events", self._list_events),
            ("GET", r"/v1/events/([^/]+)", self._retrieve_simple("event")),
        ]
        return [(method, re.compile(pattern + "$"), handler) for method, pattern, handler in table]

    def _route(self, call: _Call) -> JSON:
        if call.account is not None and not self._is_type(call.account, "account"):
            raise StripeAPIError(
                403,
                "The provided key does not have access to account"
                f" '{call.account}' (or that account does not exist). Application access may"
                " have been revoked.",
                code="account_invalid",
            )
        for method, pattern, handler in self._routes:
            match = pattern.match(call.path)
            if method == call.method and match is not None:
                return handler(call, *match.groups())
        raise StripeAPIError(
            404,
            f"Unrecognized request URL ({call.method}: {call.path}). Please see"
            " https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )

    def _create_checkout_session(self, call: _Call) -> JSON:
        params = call.params
        check_known_params(params, _CHECKOUT_CREATE_PARAMS)
        mode = str_param(
            params, "mode", required=True, choices=("payment", "setup", "subscription")
        )
        if mode != "payment":
            raise _invalid("FakeStripe supports Checkout in mode=payment only.", param="mode")
        ui_mode = str_param(params, "ui_mode", choices=("hosted", "embedded", "custom")) or "hosted"
        currency, total, items = self._parse_line_items(params)
        if total > _MAX_AMOUNT:
            raise _invalid(
                f"Amount must be no more than {_MAX_AMOUNT}",
                code="amount_too_large",
                param="amount",
            )
        now = self._now()
        expires_at = int_param(params, "expires_at")
        if expires_at is None:
            expires_at = now + _DAY
        elif not now + 1800 <= expires_at <= now + _DAY:
            raise _invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from"
                " Checkout Session creation.",
                param="expires_at",
            )
        payment_intent_data = params.get("payment_intent_data") or {}
        if not isinstance(payment_intent_data, dict):
            raise _invalid("Invalid hash", param="payment_intent_data")
        pi_metadata = (
            metadata_param(payment_intent_data, param="payment_intent_data[metadata]") or {}
        )
        payment_method_types = str_list_param(params, "payment_method_types") or ["card"]
        adaptive = params.get("adaptive_pricing") or {}
        if not isinstance(adaptive, dict):
            raise _invalid("Invalid hash", param="adaptive_pricing")
        # Adaptive Pricing (the customer pays in their own currency, converted by
        # Stripe) applies unless the session turns it off
        # (https://docs.stripe.com/payments/checkout/adaptive-pricing).
        adaptive_enabled = bool_param(adaptive, "enabled", param="adaptive_pricing[enabled]")
        if adaptive_enabled is None:
            adaptive_enabled = self.adaptive_pricing_default
        session_id = f"cs_test_{random_token(58)}"
        session = fixture("checkout.session")
        session.update(
            id=session_id,
            adaptive_pricing={"enabled": adaptive_enabled},
            after_expiration=None,
            allow_promotion_codes=None,
            amount_subtotal=total,
            amount_total=total,
            automatic_tax={"enabled": False, "liability": None, "provider": None, "status": None},
            cancel_url=str_param(params, "cancel_url"),
            client_reference_id=str_param(params, "client_reference_id"),
            client_secret=(
                None if ui_mode == "hosted" else f"{session_id}_secret_{random_token(24)}"
            ),
            collected_information=None,
            consent=None,
            consent_collection=None,
            created=now,
            currency=currency,
            currency_conversion=None,
            custom_text={
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            customer=None,
            customer_creation="if_required",
            customer_details=None,
            customer_email=str_param(params, "customer_email"),
            discounts=[],
            expires_at=expires_at,
            invoice_creation={
                "enabled": False,
                "invoice_data": session["invoice_creation"]["invoice_data"],
            },
            locale=str_param(params, "locale"),
            managed_payments=None,
            metadata=metadata_param(params) or {},
            mode="payment",
            payment_intent=None,
            payment_method_configuration_details=None,
            payment_method_types=payment_method_types,
            payment_status="unpaid",
            permissions=None,
            saved_payment_method_options=None,
            shipping_address_collection=None,
            shipping_cost=None,
            shipping_options=[],
            status="open",
            success_url=str_param(params, "success_url"),
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            ui_mode=ui_mode,
            url=(
                f"https://checkout.stripe.com/c/pay/{session_id}" if ui_mode == "hosted" else None
            ),
            wallet_options=None,
        )
        if (return_url := str_param(params, "return_url")) is not None:
            session["return_url"] = return_url
        self._session_extras[session_id] = {
            "line_items": items,
            "payment_intent_data": {
                "description": str_param(payment_intent_data, "description"),
                "metadata": pi_metadata,
                "statement_descriptor": str_param(payment_intent_data, "statement_descriptor"),
                "transfer_group": str_param(payment_intent_data, "transfer_group"),
            },
        }
        self._put(session, call.account)
        return self._render(session, call)

    @staticmethod
    def _parse_line_items(params: JSON) -> tuple[str, int, list[JSON]]:
        """Read ``line_items`` (``price_data`` only): the currency, the total and the items."""
        currency = currency_param(params, required=False)
        line_items = params.get("line_items")
        if not line_items:
            raise _invalid(
                "Missing required param: line_items.", code="parameter_missing", param="line_items"
            )
        if not isinstance(line_items, list):
            raise _invalid("Invalid array", code="parameter_invalid_string", param="line_items")
        total = 0
        items: list[JSON] = []
        for index, item in enumerate(line_items):
            prefix = f"line_items[{index}]"
            if not isinstance(item, dict):
                raise _invalid("Invalid hash", code="parameter_invalid_string", param=prefix)
            if "price" in item:
                raise _not_found("price", str(item["price"]), param=f"{prefix}[price]", status=400)
            quantity = cast(
                int,
                int_param(item, "quantity", required=True, minimum=1, param=f"{prefix}[quantity]"),
            )
            price_data = item.get("price_data")
            if not isinstance(price_data, dict):
                raise _invalid(
                    f"Missing required param: {prefix}[price_data].",
                    code="parameter_missing",
                    param=f"{prefix}[price_data]",
                )
            item_currency = cast(
                str, currency_param(price_data, param=f"{prefix}[price_data][currency]")
            )
            unit_amount = int_param(
                price_data, "unit_amount", minimum=0, param=f"{prefix}[price_data][unit_amount]"
            )
            if unit_amount is None:
                raise _invalid(
                    f"Missing required param: {prefix}[price_data][unit_amount].",
                    code="parameter_missing",
                    param=f"{prefix}[price_data][unit_amount]",
                )
            _check_amount_for_currency(
                unit_amount, item_currency, f"{prefix}[price_data][unit_amount]"
            )
            product_data = price_data.get("product_data")
            product = price_data.get("product")
            if not isinstance(product_data, dict) and not product:
                raise _invalid(
                    f"Missing required param: {prefix}[price_data][product_data].",
                    code="parameter_missing",
                    param=f"{prefix}[price_data][product_data]",
                )
            name = (
                str_param(
                    product_data,
                    "name",
                    required=True,
                    param=f"{prefix}[price_data][product_data][name]",
                )
                if isinstance(product_data, dict)
                else str(product)
            )
            if currency is None:
                currency = item_currency
            elif item_currency != currency:
                raise _invalid(
                    "All line items must use the same currency as the Checkout Session.",
                    param=f"{prefix}[price_data][currency]",
                )
            total += unit_amount * quantity
            items.append(
                {
                    "id": new_id("li"),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": unit_amount * quantity,
                    "amount_tax": 0,
                    "amount_total": unit_amount * quantity,
                    "currency": item_currency,
                    "description": name,
                    "price": {
                        "id": new_id("price"),
                        "object": "price",
                        "active": False,
                        "currency": item_currency,
                        "product": product if isinstance(product, str) else new_id("prod", 14),
                        "type": "one_time",
                        "unit_amount": unit_amount,
                        "unit_amount_decimal": str(unit_amount),
                    },
                    "quantity": quantity,
                }
            )
        return cast(str, currency), total, items

    def _list_checkout_sessions(self, call: _Call) -> JSON:
        check_known_params(
            call.params,
            _LIST_PARAMS
            | {"customer", "customer_account", "customer_details", "payment_intent"}
            | {"payment_link", "status", "subscription"},
        )
        payment_intent = str_param(call.params, "payment_intent")
        status = str_param(call.params, "status", choices=("open", "complete", "expired"))
        return self._list(
            call,
            "checkout.session",
            "/v1/checkout/sessions",
            lambda obj: (
                (payment_intent is None or obj["payment_intent"] == payment_intent)
                and (status is None or obj["status"] == status)
            ),
        )

    def _retrieve_checkout_session(self, call: _Call, session_id: str) -> JSON:
        check_known_params(call.params, ())
        return self._render(self._get("checkout.session", session_id, call, param="session"), call)

    def _list_line_items(self, call: _Call, session_id: str) -> JSON:
        check_known_params(call.params, _LIST_PARAMS - {"created"})
        self._get("checkout.session", session_id, call, param="session")
        items = copy.deepcopy(self._session_extras[session_id]["line_items"])
        listing: JSON = {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        }
        return self._render(listing, call)

    def _expire_checkout_session(self, call: _Call, session_id: str) -> JSON:
        check_known_params(call.params, ())
        session = self._get("checkout.session", session_id, call, param="session")
        if session["status"] != "open":
            raise _invalid(
                f'Only Checkout Sessions with a status in ["open"] can be expired; this one is'
                f" {session['status']}.",
                param="session",
            )
        self._expire(session, call)
        return self._render(session, call)

    def _retrieve_simple(self, object_type: str) -> Callable[[_Call, str], JSON]:
        def retrieve(call: _Call, object_id: str) -> JSON:
            check_known_params(call.params, ())
            return self._render(self._get(object_type, object_id, call), call)

        return retrieve

    def _list_events(self, call: _Call) -> JSON:
        check_known_params(call.params, _LIST_PARAMS | {"delivery_success", "type", "types"})
        wanted = set(str_list_param(call.params, "types"))
        if (single := str_param(call.params, "type")) is not None:
            wanted.add(single)
        return self._list(
            call, "event", "/v1/events", lambda obj: not wanted or obj["type"] in wanted
        )

    def _create_refund(self, call: _Call) -> JSON:
        params = call.params
        check_known_params(params, _REFUND_CREATE_PARAMS)
        charge_id = str_param(params, "charge")
        intent_id = str_param(params, "payment_intent")
        if charge_id is None and intent_id is None:
            raise _invalid(
                "One of `charge` or `payment_intent` is required.",
                code="parameter_missing",
                param="charge",
            )
        if charge_id is None:
            intent = self._get(
                "payment_intent", cast(str, intent_id), call, param="payment_intent", status=400
            )
            charge_id = intent["latest_charge"]
            if charge_id is None:
                raise _invalid(
                    f"PaymentIntent {intent_id} does not have a successful charge to refund.",
                    code="charge_not_refundable",
                    param="payment_intent",
                )
        charge = self._get("charge", charge_id, call, param="charge", status=400)
        if intent_id is not None and charge["payment_intent"] != intent_id:
            raise _invalid(
                f"Charge {charge_id} does not belong to PaymentIntent {intent_id}.",
                param="payment_intent",
            )
        amount = int_param(params, "amount", minimum=1)
        reason = str_param(
            params, "reason", choices=("duplicate", "fraudulent", "requested_by_customer")
        )
        refund, _event = self._refund(
            charge, amount, reason=reason, metadata=metadata_param(params) or {}, call=call
        )
        return self._render(refund, call)

    def _list_of_a_payment(self, object_type: str, url: str) -> Callable[[_Call], JSON]:
        """A list filtered by ``charge`` or ``payment_intent``: refunds, disputes
        (https://docs.stripe.com/api/disputes/list), early fraud warnings."""

        def listing(call: _Call) -> JSON:
            check_known_params(call.params, _LIST_PARAMS | {"charge", "payment_intent"})
            wanted = {
                name: value
                for name in ("charge", "payment_intent")
                if (value := str_param(call.params, name)) is not None
            }
            return self._list(
                call,
                object_type,
                url,
                lambda obj: all(obj.get(name) == value for name, value in wanted.items()),
            )

        return listing

    def _retrieve_balance(self, call: _Call) -> JSON:
        """The account's balance per currency, available and pending
        (https://docs.stripe.com/api/balance/balance_object)."""
        check_known_params(call.params, ())
        balances = self._balances(call.account) or {"usd": (0, 0)}
        balance = fixture("balance")
        balance.update(
            available=[
                {"amount": amounts[0], "currency": currency, "source_types": {"card": amounts[0]}}
                for currency, amounts in sorted(balances.items())
            ],
            pending=[
                {"amount": amounts[1], "currency": currency, "source_types": {"card": amounts[1]}}
                for currency, amounts in sorted(balances.items())
            ],
            connect_reserved=[{"amount": 0, "currency": c} for c in sorted(balances)],
        )
        return self._render(balance, call)

    def _list_balance_transactions(self, call: _Call) -> JSON:
        """Newest first, filtered as Stripe filters them
        (https://docs.stripe.com/api/balance_transactions/list)."""
        check_known_params(call.params, _LIST_PARAMS | {"currency", "payout", "source", "type"})
        currency = currency_param(call.params, required=False)
        source = str_param(call.params, "source")
        kind = str_param(call.params, "type")
        return self._list(
            call,
            "balance_transaction",
            "/v1/balance_transactions",
            lambda obj: (
                (currency is None or obj["currency"] == currency)
                and (source is None or obj["source"] == source)
                and (kind is None or obj["type"] == kind)
            ),
        )
