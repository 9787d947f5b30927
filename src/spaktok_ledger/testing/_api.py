"""The HTTP endpoints: Stripe API v1 requests in, Stripe objects (or errors) out.

Each handler validates its params as Stripe does (unknown, missing and
malformed params are 400s with Stripe's ``code`` and ``param``), then moves
state through :class:`_StripeState`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, Final, cast

from spaktok_ledger.testing._fixtures import fixture, new_id, random_token
from spaktok_ledger.testing._forms import (
    StripeAPIError,
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
    _StripeState,
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

_TRANSFER_CREATE_PARAMS: Final = frozenset((
    "amount", "currency", "description", "destination", "metadata", "source_transaction",
    "source_type", "transfer_group",
))  # fmt: skip

_REVERSAL_CREATE_PARAMS: Final = frozenset(
    {"amount", "description", "metadata", "refund_application_fee"}
)

_PAYOUT_CREATE_PARAMS: Final = frozenset((
    "amount", "currency", "description", "destination", "metadata", "method", "payout_method",
    "source_type", "statement_descriptor",
))  # fmt: skip

_ACCOUNT_UPDATE_PARAMS: Final = frozenset((
    "account_token", "business_profile", "business_type", "capabilities", "company",
    "default_currency", "documents", "email", "external_account", "groups", "individual",
    "metadata", "settings", "tos_acceptance",
))  # fmt: skip

_ACCOUNT_CREATE_PARAMS: Final = _ACCOUNT_UPDATE_PARAMS | {"controller", "country", "type"}

_ACCOUNT_LINK_PARAMS: Final = frozenset(
    {"account", "collect", "collection_options", "refresh_url", "return_url", "type"}
)


class _StripeAPI(_StripeState):
    """Routes ``(method, path)`` to the endpoint handlers."""

    def __init__(self, *, api_version: str, clock: Callable[[], Any]) -> None:
        super().__init__(api_version=api_version, clock=clock)
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
            (
                "GET",
                r"/v1/balance_transactions/([^/]+)",
                self._retrieve_simple("balance_transaction"),
            ),
            ("POST", r"/v1/refunds", self._create_refund),
            ("GET", r"/v1/refunds/([^/]+)", self._retrieve_simple("refund")),
            ("GET", r"/v1/disputes/([^/]+)", self._retrieve_simple("dispute")),
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
        session_id = f"cs_test_{random_token(58)}"
        session = fixture("checkout.session")
        session.update(
            id=session_id,
            adaptive_pricing={"enabled": False},
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

    def _create_transfer(self, call: _Call) -> JSON:
        params = call.params
        check_known_params(params, _TRANSFER_CREATE_PARAMS)
        amount = cast(int, int_param(params, "amount", required=True, minimum=1))
        currency = cast(str, currency_param(params))
        _check_amount_for_currency(amount, currency, "amount")
        destination_id = cast(str, str_param(params, "destination", required=True))
        destination = self._objects.get(destination_id)
        if destination is None or destination.get("object") != "account":
            raise _not_found("destination", destination_id, param="destination", status=400)
        if destination["capabilities"].get("transfers") != "active":
            raise _invalid(
                "Your destination account needs to have at least one of the following"
                " capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="destination",
            )
        source_transaction = str_param(params, "source_transaction")
        if source_transaction is not None:
            self._get("charge", source_transaction, call, param="source_transaction", status=400)
        transfer_id = new_id("tr")
        txn = self._balance_transaction(
            owner=call.account,
            amount_minor=-amount,
            currency=currency,
            txn_type="transfer",
            source=transfer_id,
            reporting_category="transfer",
        )
        transfer = fixture("transfer")
        transfer.update(
            id=transfer_id,
            amount=amount,
            amount_reversed=0,
            balance_transaction=txn["id"],
            created=self._now(),
            currency=currency,
            description=str_param(params, "description"),
            destination=destination_id,
            destination_payment=new_id("py"),
            metadata=metadata_param(params) or {},
            reversals={
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            reversed=False,
            source_transaction=source_transaction,
            source_type=str_param(params, "source_type") or "card",
            transfer_group=str_param(params, "transfer_group"),
        )
        self._put(transfer, call.account)
        self._event("transfer.created", transfer, account=call.account, call=call)
        return self._render(transfer, call)

    def _list_transfers(self, call: _Call) -> JSON:
        check_known_params(call.params, _LIST_PARAMS | {"destination", "transfer_group"})
        group = str_param(call.params, "transfer_group")
        destination = str_param(call.params, "destination")
        return self._list(
            call,
            "transfer",
            "/v1/transfers",
            lambda obj: (
                (group is None or obj["transfer_group"] == group)
                and (destination is None or obj["destination"] == destination)
            ),
        )

    def _create_transfer_reversal(self, call: _Call, transfer_id: str) -> JSON:
        check_known_params(call.params, _REVERSAL_CREATE_PARAMS)
        transfer = self._get("transfer", transfer_id, call)
        amount = int_param(call.params, "amount", minimum=1)
        reversal, _event = self._reverse(
            transfer,
            amount,
            description=str_param(call.params, "description"),
            metadata=metadata_param(call.params) or {},
            call=call,
        )
        return self._render(reversal, call)

    def _create_payout(self, call: _Call) -> JSON:
        params = call.params
        check_known_params(params, _PAYOUT_CREATE_PARAMS)
        amount = cast(int, int_param(params, "amount", required=True, minimum=1))
        currency = cast(str, currency_param(params))
        _check_amount_for_currency(amount, currency, "amount")
        if currency in _PAYOUT_DIVISIBLE_BY_100 and amount % 100 != 0:
            raise _invalid(
                f"Payouts in {currency.upper()} must be whole units (amounts divisible by 100).",
                param="amount",
            )
        method = str_param(params, "method", choices=("standard", "instant")) or "standard"
        if call.account is not None and not self._objects[call.account]["payouts_enabled"]:
            raise _invalid(
                "Payouts are not enabled on this account: its requirements are not complete.",
                code="payouts_not_allowed",
            )
        now = self._now()
        payout_id = new_id("po")
        txn = self._balance_transaction(
            owner=call.account,
            amount_minor=-amount,
            currency=currency,
            txn_type="payout",
            source=payout_id,
            reporting_category="payout",
            description="STRIPE PAYOUT",
        )
        payout = fixture("payout")
        payout.update(
            id=payout_id,
            amount=amount,
            arrival_date=now if method == "instant" else now + 2 * _DAY,
            automatic=False,
            balance_transaction=txn["id"],
            created=now,
            currency=currency,
            description=str_param(params, "description") or "STRIPE PAYOUT",
            destination=str_param(params, "destination") or self._bank_account(call.account),
            metadata=metadata_param(params) or {},
            method=method,
            reconciliation_status="not_applicable",
            statement_descriptor=str_param(params, "statement_descriptor"),
            status="pending",
            trace_id={"status": "pending", "value": None},
        )
        self._put(payout, call.account)
        self._event("payout.created", payout, account=call.account, call=call)
        return self._render(payout, call)

    def _list_payouts(self, call: _Call) -> JSON:
        check_known_params(call.params, _LIST_PARAMS | {"arrival_date", "destination", "status"})
        status = str_param(call.params, "status", choices=("pending", "paid", "failed", "canceled"))
        return self._list(
            call, "payout", "/v1/payouts", lambda obj: status is None or obj["status"] == status
        )

    def _cancel_payout_api(self, call: _Call, payout_id: str) -> JSON:
        check_known_params(call.params, ())
        payout = self._get("payout", payout_id, call)
        if payout["status"] != "pending":
            raise _invalid(
                f"Payout {payout_id} cannot be canceled: only pending payouts can be canceled.",
                param="payout",
            )
        self._payout_transition(payout, "canceled", call=call)
        return self._render(payout, call)

    def _create_account_api(self, call: _Call) -> JSON:
        params = call.params
        check_known_params(params, _ACCOUNT_CREATE_PARAMS)
        account_type = str_param(params, "type", choices=("express", "standard", "custom"))
        if account_type is None and not isinstance(params.get("controller"), dict):
            raise _invalid("Missing required param: type.", code="parameter_missing", param="type")
        capabilities = params.get("capabilities") or {}
        if not isinstance(capabilities, dict):
            raise _invalid("Invalid hash", param="capabilities")
        requested = [
            name
            for name, value in capabilities.items()
            if isinstance(value, dict) and value.get("requested") == "true"
        ]
        account = self._new_account(
            account_type=account_type or "none",
            country=(str_param(params, "country") or "US").upper(),
            email=str_param(params, "email"),
            metadata=metadata_param(params) or {},
            capabilities=requested,
            business_type=str_param(params, "business_type"),
            default_currency=currency_param(params, "default_currency", required=False),
        )
        return self._render(account, call)

    def _retrieve_account(self, call: _Call, account_id: str) -> JSON:
        check_known_params(call.params, ())
        return self._render(self._account_for_api(account_id, call), call)

    def _account_for_api(self, account_id: str, call: _Call) -> JSON:
        obj = self._objects.get(account_id)
        if (
            obj is None
            or obj.get("object") != "account"
            or not self._visible(account_id, call.account)
        ):
            raise StripeAPIError(
                403,
                f"The provided key does not have access to account '{account_id}' (or that"
                " account does not exist). Application access may have been revoked.",
                code="account_invalid",
            )
        return obj

    def _update_account_api(self, call: _Call, account_id: str) -> JSON:
        params = call.params
        check_known_params(params, _ACCOUNT_UPDATE_PARAMS)
        account = self._account_for_api(account_id, call)
        previous: JSON = {}
        if (metadata := metadata_param(params)) is not None:
            previous["metadata"] = dict(account["metadata"])
            merged = {**account["metadata"], **metadata}
            account["metadata"] = {k: v for k, v in merged.items() if v != ""} if metadata else {}
        if (email := str_param(params, "email")) is not None:
            previous["email"] = account["email"]
            account["email"] = email
        if (business_type := str_param(params, "business_type")) is not None:
            previous["business_type"] = account["business_type"]
            account["business_type"] = business_type
        profile = params.get("business_profile")
        if isinstance(profile, dict):
            previous["business_profile"] = copy.deepcopy(account["business_profile"])
            account["business_profile"].update(
                {k: v for k, v in profile.items() if isinstance(v, str)}
            )
        capabilities = params.get("capabilities")
        if isinstance(capabilities, dict):
            previous["capabilities"] = dict(account["capabilities"])
            for name, value in capabilities.items():
                if isinstance(value, dict) and value.get("requested") == "true":
                    account["capabilities"].setdefault(name, "inactive")
        if previous:
            self._event(
                "account.updated", account, account=account_id, previous=previous, call=call
            )
        return self._render(account, call)

    def _create_account_link(self, call: _Call) -> JSON:
        params = call.params
        check_known_params(params, _ACCOUNT_LINK_PARAMS)
        account_id = cast(str, str_param(params, "account", required=True))
        if not self._is_type(account_id, "account"):
            raise _not_found("account", account_id, param="account", status=400)
        link_type = str_param(
            params, "type", required=True, choices=("account_onboarding", "account_update")
        )
        if link_type == "account_update" and self._objects[account_id]["type"] == "express":
            raise _invalid(
                "You cannot create `account_update` type Account Links for Express accounts.",
                param="type",
            )
        str_param(params, "return_url", required=True)
        str_param(params, "refresh_url", required=True)
        now = self._now()
        link: JSON = fixture("account_link")
        link.update(
            created=now,
            expires_at=now + 300,
            url=f"https://connect.stripe.com/setup/e/{account_id}/{random_token(12)}",
        )
        return self._render(link, call)
