"""The fake's memory: Stripe objects, who owns them, the events, and the shared moves.

Everything here runs under :class:`~spaktok_ledger.testing.FakeStripe`'s lock;
both the HTTP endpoints (``_api.py``) and the simulator (``_fake_stripe.py``)
change state only through these methods, so an API refund and a Dashboard
refund are the same refund.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, Final

from spaktok_ledger.testing._fixtures import convert_minor, fixture, new_id, stripe_exponent
from spaktok_ledger.testing._forms import StripeAPIError, int_param, str_list_param, str_param

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


class _StripeState:
    """Objects by id, their owning account (``None`` = the platform), events, settlements."""

    def __init__(self, *, api_version: str, clock: Callable[[], float | datetime]) -> None:
        self.api_version = api_version
        self._clock = clock
        self._lock = threading.RLock()
        self._objects: dict[str, JSON] = {}
        self._owners: dict[str, str | None] = {}
        self._session_extras: dict[str, JSON] = {}
        self._settlements: dict[str, _Settlement] = {}
        # Fees of delayed payments, booked when the payment clears.
        self._pending_fees: dict[str, int | None] = {}
        self._events: list[JSON] = []

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
        """A deep copy of ``obj`` with the call's ``expand`` paths filled in."""
        rendered = copy.deepcopy(obj)
        for path in str_list_param(call.params, "expand"):
            self._expand(rendered, path.split("."), path, call.account, depth=0)
        return rendered

    def _expand(
        self, node: JSON, parts: list[str], path: str, account: str | None, *, depth: int
    ) -> None:
        if depth >= 4:
            raise _invalid(f"You cannot expand more than 4 levels of a property ({path}).")
        name, rest = parts[0], parts[1:]
        if name not in node:
            raise _invalid(f"This property cannot be expanded ({path}).", param="expand")
        value = node[name]
        if isinstance(value, list) and name == "data":
            for item in value:
                if isinstance(item, dict) and rest:
                    self._expand(item, rest, path, account, depth=depth)
            return
        if isinstance(value, str):
            if value not in self._objects or not self._visible(value, account):
                raise _invalid(f"This property cannot be expanded ({path}).", param="expand")
            value = node[name] = copy.deepcopy(self._objects[value])
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
        items = [
            obj
            for object_id, obj in self._objects.items()
            if obj.get("object") == object_type
            and self._visible(object_id, call.account)
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
            "data": {"object": copy.deepcopy(obj)},
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
    ) -> JSON:
        now = self._now()
        txn = fixture("balance_transaction")
        txn.update(
            id=new_id("txn"),
            amount=amount_minor,
            available_on=now + 2 * _DAY,
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
            net=amount_minor - fee_minor,
            reporting_category=reporting_category,
            source=source,
            status="pending",
            type=txn_type,
        )
        return self._put(txn, owner)

    def _settle_charge(self, charge: JSON, fee_minor: int | None) -> JSON:
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

    def _expire(self, session: JSON, call: _Call | None) -> JSON:
        previous = {"status": session["status"]}
        session["status"] = "expired"
        return self._event(
            "checkout.session.expired",
            session,
            account=self._owners[session["id"]],
            previous=previous,
            call=call,
        )

    def _refund(
        self,
        charge: JSON,
        amount_minor: int | None,
        *,
        reason: str | None,
        metadata: dict[str, str],
        call: _Call | None,
    ) -> tuple[JSON, JSON]:
        charge_id = charge["id"]
        if charge["status"] != "succeeded":
            raise _invalid(
                f"Charge {charge_id} has not succeeded and cannot be refunded.",
                code="charge_not_refundable",
                param="charge",
            )
        if charge["disputed"] and self._open_dispute(charge_id) is not None:
            raise _invalid(
                f"Charge {charge_id} has been charged back; you cannot refund a disputed charge.",
                code="charge_disputed",
                param="charge",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise _invalid(
                f"Charge {charge_id} has already been refunded.",
                code="charge_already_refunded",
                param="charge",
            )
        amount_minor = remaining if amount_minor is None else amount_minor
        if amount_minor > remaining:
            raise _invalid(
                f"Refund amount ({amount_minor}) is greater than unrefunded amount on charge"
                f" ({remaining})",
                code="amount_too_large",
                param="amount",
            )
        owner = self._owners[charge_id]
        refund_id = new_id("re")
        settlement = self._settlements[charge_id]
        txn = self._balance_transaction(
            owner=owner,
            amount_minor=-self._settle_part(charge, amount_minor),
            currency=settlement.currency,
            txn_type="refund",
            source=refund_id,
            reporting_category="refund",
            exchange_rate=settlement.exchange_rate,
            description="REFUND FOR CHARGE",
        )
        refund = fixture("refund")
        refund.update(
            id=refund_id,
            amount=amount_minor,
            balance_transaction=txn["id"],
            charge=charge_id,
            created=self._now(),
            currency=charge["currency"],
            metadata=metadata,
            payment_intent=charge["payment_intent"],
            payment_method=charge["payment_method"],
            reason=reason,
            status="succeeded",
        )
        self._put(refund, owner)
        previous = {
            "amount_refunded": charge["amount_refunded"],
            "refunded": charge["refunded"],
            "refunds": copy.deepcopy(charge["refunds"]),
        }
        charge["amount_refunded"] += amount_minor
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
        event = self._event("charge.refunded", charge, account=owner, previous=previous, call=call)
        return refund, event

    def _open_dispute(self, charge_id: str) -> JSON | None:
        for obj in self._objects.values():
            if (
                obj.get("object") == "dispute"
                and obj["charge"] == charge_id
                and obj["status"] not in ("won", "lost", "warning_closed")
            ):
                return obj
        return None

    def _reverse(
        self,
        transfer: JSON,
        amount_minor: int | None,
        *,
        description: str | None,
        metadata: dict[str, str],
        call: _Call | None,
    ) -> tuple[JSON, JSON]:
        remaining = transfer["amount"] - transfer["amount_reversed"]
        if remaining == 0:
            raise _invalid(
                f"Transfer {transfer['id']} has already been fully reversed.", param="amount"
            )
        amount_minor = remaining if amount_minor is None else amount_minor
        if amount_minor > remaining:
            raise _invalid(
                f"You have requested a reversal of {amount_minor}, which exceeds the amount"
                f" left to reverse on transfer {transfer['id']} ({remaining}).",
                code="parameter_invalid_integer",
                param="amount",
            )
        owner = self._owners[transfer["id"]]
        reversal_id = new_id("trr")
        txn = self._balance_transaction(
            owner=owner,
            amount_minor=amount_minor,
            currency=transfer["currency"],
            txn_type="transfer_refund",
            source=reversal_id,
            reporting_category="transfer_reversal",
            description=description,
        )
        reversal = fixture("transfer_reversal")
        reversal.update(
            id=reversal_id,
            amount=amount_minor,
            balance_transaction=txn["id"],
            created=self._now(),
            currency=transfer["currency"],
            destination_payment_refund=new_id("pyr"),
            metadata=metadata,
            transfer=transfer["id"],
        )
        self._put(reversal, owner)
        previous = {
            "amount_reversed": transfer["amount_reversed"],
            "reversals": copy.deepcopy(transfer["reversals"]),
            "reversed": transfer["reversed"],
        }
        transfer["amount_reversed"] += amount_minor
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        transfer["reversals"]["data"].insert(0, copy.deepcopy(reversal))
        transfer["reversals"]["total_count"] = len(transfer["reversals"]["data"])
        event = self._event(
            "transfer.reversed", transfer, account=owner, previous=previous, call=call
        )
        return reversal, event

    def _payout_transition(
        self,
        payout: JSON,
        status: str,
        *,
        failure_code: str | None = None,
        failure_message: str | None = None,
        call: _Call | None = None,
    ) -> JSON:
        owner = self._owners[payout["id"]]
        previous: JSON = {"status": payout["status"]}
        payout["status"] = status
        if status == "paid":
            payout["reconciliation_status"] = "completed"
            payout["trace_id"] = {"status": "supported", "value": new_id("TRACE", 12)}
        if status in ("failed", "canceled"):
            txn = self._balance_transaction(
                owner=owner,
                amount_minor=payout["amount"],
                currency=payout["currency"],
                txn_type="payout_failure" if status == "failed" else "payout_cancel",
                source=payout["id"],
                reporting_category="payout_reversal",
                description="STRIPE PAYOUT",
            )
            previous["failure_balance_transaction"] = payout["failure_balance_transaction"]
            payout["failure_balance_transaction"] = txn["id"]
        if status == "failed":
            previous.update(failure_code=None, failure_message=None)
            payout["failure_code"] = failure_code
            payout["failure_message"] = failure_message
        return self._event(f"payout.{status}", payout, account=owner, previous=previous, call=call)

    def _new_account(
        self,
        *,
        account_type: str,
        country: str,
        email: str | None,
        metadata: dict[str, str],
        capabilities: Iterable[str],
        business_type: str | None = None,
        default_currency: str | None = None,
    ) -> JSON:
        account_id = new_id("acct", 16)
        account = fixture("account")
        due = list(_ONBOARDING_REQUIREMENTS)
        controller: JSON = (
            {
                "type": "application",
                "is_controller": True,
                "fees": {"payer": "application"},
                "losses": {"payments": "application"},
                "requirement_collection": "stripe",
                "stripe_dashboard": {"type": account_type if account_type != "custom" else "none"},
            }
            if account_type != "standard"
            else {"type": "account"}
        )
        account["business_profile"]["product_description"] = None
        account["external_accounts"]["url"] = f"/v1/accounts/{account_id}/external_accounts"
        account["requirements"].update(
            currently_due=due,
            eventually_due=list(due),
            past_due=list(due),
            disabled_reason="requirements.past_due",
        )
        account.update(
            id=account_id,
            business_type=business_type,
            capabilities=dict.fromkeys(capabilities, "inactive"),
            charges_enabled=False,
            controller=controller,
            country=country,
            created=self._now(),
            default_currency=default_currency or _COUNTRY_CURRENCY.get(country, "eur"),
            details_submitted=False,
            email=email,
            metadata=metadata,
            payouts_enabled=False,
            type=account_type,
        )
        return self._put(account, None)

    def _bank_account(self, account: str | None) -> str:
        # One stable external account per connected account, as after onboarding.
        return "ba_" + (account or "acct_platform").removeprefix("acct_").ljust(24, "0")[:24]

    def _apply_account_update(
        self,
        account: JSON,
        *,
        charges_enabled: bool | None = None,
        payouts_enabled: bool | None = None,
        details_submitted: bool | None = None,
        currently_due: Iterable[str] | None = None,
        eventually_due: Iterable[str] | None = None,
        past_due: Iterable[str] | None = None,
        disabled_reason: str | _Unset | None = _UNSET,
        capabilities: Mapping[str, str] | None = None,
    ) -> JSON:
        previous: JSON = {}
        for name, flag in (
            ("charges_enabled", charges_enabled),
            ("payouts_enabled", payouts_enabled),
            ("details_submitted", details_submitted),
        ):
            if flag is not None:
                previous[name] = account[name]
                account[name] = flag
        requirements = account["requirements"]
        old_requirements = copy.deepcopy(requirements)
        for name, values in (
            ("currently_due", currently_due),
            ("eventually_due", eventually_due),
            ("past_due", past_due),
        ):
            if values is not None:
                requirements[name] = list(values)
        if not isinstance(disabled_reason, _Unset):
            requirements["disabled_reason"] = disabled_reason
        if requirements != old_requirements:
            previous["requirements"] = old_requirements
        if capabilities is not None:
            previous["capabilities"] = dict(account["capabilities"])
            account["capabilities"].update(capabilities)
        return previous
