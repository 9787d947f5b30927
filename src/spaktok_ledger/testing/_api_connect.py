"""The Connect endpoints: transfers and their reversals, payouts, connected accounts.

Money moves go through :class:`~spaktok_ledger.testing._moves._Moves`, which
holds Stripe's rules (balances, ``source_transaction``, currencies, service
agreements); the handlers here read and validate the params as Stripe does.
"""

from __future__ import annotations

import copy
from typing import Final, cast

from spaktok_ledger.testing._fixtures import fixture, new_id, random_token
from spaktok_ledger.testing._forms import (
    StripeAPIError,
    check_known_params,
    currency_param,
    int_param,
    metadata_param,
    str_param,
)
from spaktok_ledger.testing._moves import _Moves
from spaktok_ledger.testing._state import (
    _DAY,
    JSON,
    _Call,
    _check_amount_for_currency,
    _invalid,
    _not_found,
)

_LIST_PARAMS: Final = frozenset({"limit", "starting_after", "ending_before", "created"})

_PAYOUT_DIVISIBLE_BY_100: Final = frozenset({"huf", "twd"})

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


class _ConnectAPI(_Moves):
    """Handlers for ``/v1/transfers``, ``/v1/payouts``, ``/v1/accounts``, ``/v1/account_links``."""

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
        source = None
        if (source_id := str_param(params, "source_transaction")) is not None:
            source = self._get("charge", source_id, call, param="source_transaction", status=400)
        transfer = self._transfer(
            amount_minor=amount,
            currency=currency,
            destination_id=destination_id,
            source_transaction=source,
            fields={
                "description": str_param(params, "description"),
                "metadata": metadata_param(params) or {},
                "source_type": str_param(params, "source_type") or "card",
                "transfer_group": str_param(params, "transfer_group"),
            },
            call=call,
        )
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
        self._check_payout(call.account, amount, currency)
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
        tos = params.get("tos_acceptance") or {}
        if not isinstance(tos, dict):
            raise _invalid("Invalid hash", param="tos_acceptance")
        service_agreement = (
            str_param(
                tos,
                "service_agreement",
                choices=("full", "recipient"),
                param="tos_acceptance[service_agreement]",
            )
            or "full"
        )
        country = (str_param(params, "country") or self.platform_country).upper()
        self._check_service_agreement(country, service_agreement, requested)
        account = self._new_account(
            account_type=account_type or "none",
            country=country,
            email=str_param(params, "email"),
            metadata=metadata_param(params) or {},
            capabilities=requested,
            business_type=str_param(params, "business_type"),
            default_currency=currency_param(params, "default_currency", required=False),
            service_agreement=service_agreement,
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
