"""The fake's memory: Stripe objects, who owns them, the events, and the balances.

Everything here runs under :class:`~spaktok_ledger.testing.FakeStripe`'s lock.
The moves that change money (``_moves.py``) are shared by the HTTP endpoints
(``_api.py``, ``_api_connect.py``) and the simulator (``_simulator.py``), so an
API refund and a Dashboard refund are the same refund.

Balances are not stored: like Stripe's, they are the sum of the account's
balance transactions, ``available`` once a transaction's ``available_on`` has
passed and ``pending`` before (https://docs.stripe.com/api/balance).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, Final

from spaktok_ledger.testing._fixtures import convert_minor, fixture, new_id, stripe_exponent
from spaktok_ledger.testing._forms import (
    StripeAPIError,
    created_filter,
    in_range,
    int_param,
    str_list_param,
    str_param,
)

JSON = dict[str, Any]

_DAY: Final = 86_400

_ONBOARDING_REQUIREMENTS: Final = (
    "business_profile.mcc",
    "business_profile.url",
    "external_account",
    "individual.dob.day",
    "individual.dob.month",
    "individual.dob.year",
    "individual.email",
    "individual.first_name",
    "individual.last_name",
    "tos_acceptance.date",
    "tos_acceptance.ip",
)

_COUNTRY_CURRENCY: Final = {
    "US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "NZ": "nzd", "JP": "jpy",
    "SG": "sgd", "HK": "hkd", "CH": "chf", "SE": "sek", "NO": "nok", "DK": "dkk",
    "PL": "pln", "CZ": "czk", "HU": "huf", "RO": "ron", "BG": "bgn", "MX": "mxn",
    "BR": "brl", "IN": "inr", "TH": "thb", "MY": "myr", "AE": "aed",
}  # fmt: skip


class _Unset(Enum):
    UNSET = "UNSET"


_UNSET: Final = _Unset.UNSET


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    params: JSON
    account: str | None
    request_id: str
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class _Settlement:
    currency: str
    amount_minor: int
    exchange_rate: Decimal | None


def _not_found(
    object_type: str, object_id: str, *, param: str = "id", status: int = 404
) -> StripeAPIError:
    return StripeAPIError(
        status, f"No such {object_type}: '{object_id}'", code="resource_missing", param=param
    )


def _invalid(message: str, *, code: str | None = None, param: str | None = None) -> StripeAPIError:
    return StripeAPIError(400, message, code=code, param=param)


def _check_amount_for_currency(amount_minor: int, currency: str, param: str) -> None:
    if stripe_exponent(currency) == 3 and amount_minor % 10 != 0:
        raise _invalid(
            f"Invalid amount for {currency.upper()}: the last digit of amounts in three-decimal"
            " currencies must be 0.",
            param=param,
        )
    if currency == "isk" and amount_minor % 100 != 0:
        raise _invalid("Invalid amount for ISK: amounts must be divisible by 100.", param=param)


def _standard_fee(settled_minor: int) -> int:
    """Stripe's standard card fee, 2.9% + 30 minor units, rounded half up."""
    percent = (Decimal(settled_minor) * Decimal("0.029")).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return int(percent) + 30


# Exchange rates the fake converts transfers with (target units per source unit),
# when a test has not set its own with ``FakeStripe.set_exchange_rate``.
_DEFAULT_RATES: Final = {
    ("usd", "eur"): Decimal("0.92"),
    ("usd", "gbp"): Decimal("0.79"),
    ("usd", "cad"): Decimal("1.36"),
    ("usd", "aud"): Decimal("1.52"),
    ("usd", "jpy"): Decimal("151.2"),
    ("usd", "chf"): Decimal("0.88"),
    ("usd", "sek"): Decimal("10.41"),
    ("usd", "pln"): Decimal("3.97"),
    ("usd", "brl"): Decimal("5.05"),
    ("usd", "inr"): Decimal("83.4"),
    ("usd", "mxn"): Decimal("17.1"),
}

# Countries whose accounts share one region for Stripe's cross-border rules: a
# platform in one of them may onboard accounts in the others under the ``full``
# service agreement (https://docs.stripe.com/connect/cross-border-payouts).
_EUROPE: Final = frozenset((
    "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR",
    "HU", "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE",
    "SI", "SK",
))  # fmt: skip


def same_region(platform_country: str, account_country: str) -> bool:
    """Whether an account in ``account_country`` is domestic for the platform."""
    if platform_country == account_country:
        return True
    return platform_country in _EUROPE and account_country in _EUROPE


class _StripeState:
    """Objects by id, their owning account (``None`` = the platform), events, settlements."""

    def __init__(
        self,
        *,
        api_version: str,
        clock: Callable[[], float | datetime],
        platform_country: str = "US",
        charge_delay_days: int = 2,
    ) -> None:
        self.api_version = api_version
        self.platform_country = platform_country.upper()
        self.charge_delay_days = charge_delay_days
        self._clock = clock
        self._lock = threading.RLock()
        self._objects: dict[str, JSON] = {}
        self._owners: dict[str, str | None] = {}
        self._session_extras: dict[str, JSON] = {}
        self._settlements: dict[str, _Settlement] = {}
        # Fees of delayed payments, booked when the payment clears.
        self._pending_fees: dict[str, int | None] = {}
        self._events: list[JSON] = []
        self._rates: dict[tuple[str, str], Decimal] = dict(_DEFAULT_RATES)
        # Currencies each connected account has a bank account in (its payout currencies).
        self._external_currencies: dict[str, set[str]] = {}
        # How much of each charge's settled amount transfers have used as their
        # ``source_transaction``.
        self._source_used: dict[str, int] = {}
        # Refund ids per charge, newest first (the charge's ``refunds`` list).
        self._charge_refunds: dict[str, list[str]] = {}
        self.adaptive_pricing_default = True

    def _now(self) -> int:
        now = self._clock()
        return int(now.timestamp() if isinstance(now, datetime) else now)

    def _put(self, obj: JSON, owner: str | None) -> JSON:
        self._objects[obj["id"]] = obj
        self._owners[obj["id"]] = owner
        return obj

    def _is_type(self, object_id: str, object_type: str) -> bool:
        obj = self._objects.get(object_id)
        return obj is not None and obj.get("object") == object_type

    def _require(self, object_id: str, object_type: str | None = None) -> JSON:
        """Look an object up for the simulator: ``LookupError`` if it is not there."""
        obj = self._objects.get(object_id)
        if obj is None or (object_type is not None and obj.get("object") != object_type):
            raise LookupError(f"FakeStripe has no {object_type or 'object'} {object_id!r}")
        return obj

    def _visible(self, object_id: str, account: str | None) -> bool:
        obj = self._objects[object_id]
        if obj.get("object") == "account":
            return account is None or account == object_id
        return self._owners.get(object_id) == account

    def _get(
        self,
        object_type: str,
        object_id: str,
        call: _Call,
        *,
        param: str = "id",
        status: int = 404,
    ) -> JSON:
        """Look an object up for the API: Stripe's ``resource_missing`` if not visible."""
        obj = self._objects.get(object_id)
        if (
            obj is None
            or obj.get("object") != object_type
            or not self._visible(object_id, call.account)
        ):
            raise _not_found(object_type, object_id, param=param, status=status)
        return obj

    def _render(self, obj: JSON, call: _Call) -> JSON:
        """A deep copy of ``obj`` as the API shows it, with the call's ``expand`` paths.

        Since API version 2022-11-15 a charge's ``refunds`` list is left out
        unless expanded (https://docs.stripe.com/upgrades#2022-11-15); the
        list then carries the first ten refunds and ``has_more``.
        """
        expand = str_list_param(call.params, "expand")
        rendered = self._public(obj, with_refunds=any("refunds" in p.split(".") for p in expand))
        for path in expand:
            self._expand(rendered, path.split("."), path, call.account, depth=0)
        self._refresh(rendered)
        return rendered

    def _public(self, obj: JSON, *, with_refunds: bool = False) -> JSON:
        """A deep copy without what the API hides by default."""
        shown = copy.deepcopy(obj)
        if shown.get("object") == "charge":
            if with_refunds:
                ids = self._charge_refunds.get(shown["id"], [])
                shown["refunds"].update(
                    data=[copy.deepcopy(self._objects[i]) for i in ids[:10]],
                    has_more=len(ids) > 10,
                    total_count=len(ids),
                )
            else:
                shown.pop("refunds", None)
        return shown

    def _refresh(self, node: Any) -> None:
        """Balance transactions say ``available`` once their ``available_on`` has passed."""
        if isinstance(node, dict):
            if node.get("object") == "balance_transaction" and "available_on" in node:
                node["status"] = "available" if node["available_on"] <= self._now() else "pending"
            for value in node.values():
                self._refresh(value)
        elif isinstance(node, list):
            for value in node:
                self._refresh(value)

    def _expand(
        self, node: JSON, parts: list[str], path: str, account: str | None, *, depth: int
    ) -> None:
        if depth >= 4:
            raise _invalid(f"You cannot expand more than 4 levels of a property ({path}).")
        name, rest = parts[0], parts[1:]
        if name == "refunds" and node.get("object") == "charge" and name not in node:
            # A charge expanded for another path first (``...latest_charge.
            # balance_transaction``) left its refunds out; this path asks for them.
            node[name] = self._public(self._objects[node["id"]], with_refunds=True)[name]
        if name not in node:
            raise _invalid(f"This property cannot be expanded ({path}).", param="expand")
        value = node[name]
        if isinstance(value, list) and name == "data":
            # A list's ``data`` is a level of its own: "data.payment_intent.customer.
            # default_source is the deepest allowed" (https://docs.stripe.com/expand).
            for item in value:
                if isinstance(item, dict) and rest:
                    self._expand(item, rest, path, account, depth=depth + 1)
            return
        if isinstance(value, str):
            if value not in self._objects or not self._visible(value, account):
                raise _invalid(f"This property cannot be expanded ({path}).", param="expand")
            value = node[name] = self._public(
                self._objects[value], with_refunds="refunds" in path.split(".")
            )
        if isinstance(value, dict) and rest:
            self._expand(value, rest, path, account, depth=depth + 1)
        elif value is not None and not isinstance(value, dict):
            raise _invalid(f"This property cannot be expanded ({path}).", param="expand")

    def _list(
        self,
        call: _Call,
        object_type: str,
        url: str,
        predicate: Callable[[JSON], bool] = lambda _obj: True,
    ) -> JSON:
        limit = int_param(call.params, "limit", minimum=1)
        if limit is not None and limit > 100:
            raise _invalid("This value must be less than or equal to 100.", param="limit")
        limit = limit or 10
        created = created_filter(call.params)
        items = [
            obj
            for object_id, obj in self._objects.items()
            if obj.get("object") == object_type
            and self._visible(object_id, call.account)
            and in_range(int(obj.get("created") or 0), created)
            and predicate(obj)
        ]
        items.reverse()  # newest first, as Stripe lists
        starting_after = str_param(call.params, "starting_after")
        ending_before = str_param(call.params, "ending_before")
        ids = [obj["id"] for obj in items]
        if starting_after is not None:
            if starting_after not in ids:
                raise _not_found(object_type, starting_after, param="starting_after", status=400)
            items = items[ids.index(starting_after) + 1 :]
        elif ending_before is not None:
            if ending_before not in ids:
                raise _not_found(object_type, ending_before, param="ending_before", status=400)
            items = items[: ids.index(ending_before)][-limit:]
        page = items[:limit]
        listing: JSON = {
            "object": "list",
            "data": page,
            "has_more": len(items) > limit,
            "url": url,
        }
        return self._render(listing, call)

    def _event(
        self,
        event_type: str,
        obj: JSON,
        *,
        account: str | None = None,
        previous: JSON | None = None,
        call: _Call | None = None,
    ) -> JSON:
        event: JSON = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": self.api_version,
            "created": self._now(),
            "data": {"object": self._public(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {
                "id": call.request_id if call else None,
                "idempotency_key": call.idempotency_key if call else None,
            },
            "type": event_type,
        }
        if previous:
            event["data"]["previous_attributes"] = copy.deepcopy(previous)
        if account is not None:
            event["account"] = account
        self._put(event, account)
        self._events.append(event)
        return copy.deepcopy(event)

    # -- balances -------------------------------------------------------------------

    def _balance_transaction(
        self,
        *,
        owner: str | None,
        amount_minor: int,
        currency: str,
        txn_type: str,
        source: str,
        reporting_category: str,
        fee_minor: int = 0,
        fee_description: str = "Stripe processing fees",
        exchange_rate: Decimal | None = None,
        description: str | None = None,
        available_on: int | None = None,
    ) -> JSON:
        """Record one movement of ``owner``'s balance (``None``: the platform).

        Funds coming in wait until ``available_on`` (default: now for debits,
        the charge delay for credits); debits count against the available
        balance at once, as on Stripe (https://docs.stripe.com/payments/balances).
        """
        now = self._now()
        net = amount_minor - fee_minor
        if available_on is None:
            available_on = now + self.charge_delay_days * _DAY if net > 0 else now
        txn = fixture("balance_transaction")
        txn.update(
            id=new_id("txn"),
            amount=amount_minor,
            available_on=available_on,
            created=now,
            currency=currency,
            description=description,
            # Stripe sends the rate as a JSON number; floats print their shortest repr.
            exchange_rate=float(exchange_rate) if exchange_rate is not None else None,
            fee=fee_minor,
            fee_details=(
                [
                    {
                        "amount": fee_minor,
                        "application": None,
                        "currency": currency,
                        "description": fee_description,
                        "type": "stripe_fee",
                    }
                ]
                if fee_minor
                else []
            ),
            net=net,
            reporting_category=reporting_category,
            source=source,
            status="available" if available_on <= now else "pending",
            type=txn_type,
        )
        return self._put(txn, owner)

    def _balance_transactions(self, owner: str | None) -> list[JSON]:
        return [
            obj
            for object_id, obj in self._objects.items()
            if obj.get("object") == "balance_transaction" and self._owners[object_id] == owner
        ]

    def _balances(self, owner: str | None) -> dict[str, tuple[int, int]]:
        """``{currency: (available, pending)}`` of an account, from its balance transactions."""
        now = self._now()
        sums: dict[str, list[int]] = {}
        for txn in self._balance_transactions(owner):
            bucket = sums.setdefault(txn["currency"], [0, 0])
            bucket[0 if txn["available_on"] <= now else 1] += txn["net"]
        return {currency: (amounts[0], amounts[1]) for currency, amounts in sums.items()}

    def _available(self, owner: str | None, currency: str) -> int:
        return self._balances(owner).get(currency, (0, 0))[0]

    def _exchange_rate(self, source: str, target: str) -> Decimal:
        """Target units per source unit (Stripe's rate for a conversion)."""
        if source == target:
            return Decimal(1)
        if (source, target) in self._rates:
            return self._rates[(source, target)]
        if (target, source) in self._rates:
            return (Decimal(1) / self._rates[(target, source)]).quantize(Decimal("0.000001"))
        if "usd" not in (source, target):  # a cross rate through USD
            rate = self._exchange_rate(source, "usd") * self._exchange_rate("usd", target)
            return rate.quantize(Decimal("0.000001"))
        raise _invalid(f"FakeStripe has no exchange rate from {source} to {target}.")

    def _settle_charge(self, charge: JSON, fee_minor: int | None, *, instant: bool = False) -> JSON:
        settlement = self._settlements[charge["id"]]
        fee = _standard_fee(settlement.amount_minor) if fee_minor is None else fee_minor
        txn = self._balance_transaction(
            owner=self._owners[charge["id"]],
            amount_minor=settlement.amount_minor,
            currency=settlement.currency,
            txn_type="charge",
            source=charge["id"],
            reporting_category="charge",
            fee_minor=fee,
            exchange_rate=settlement.exchange_rate,
            description=charge["description"],
            available_on=self._now() if instant else None,
        )
        charge["balance_transaction"] = txn["id"]
        return txn

    def _settle_part(self, charge: JSON, amount_minor: int) -> int:
        """``amount_minor`` of the charge's currency in its settlement currency."""
        settlement = self._settlements[charge["id"]]
        if amount_minor == charge["amount"]:
            return settlement.amount_minor
        if settlement.exchange_rate is None:
            return amount_minor
        return convert_minor(
            amount_minor, charge["currency"], settlement.currency, settlement.exchange_rate
        )
