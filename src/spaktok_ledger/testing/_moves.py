"""Stripe's money moves, shared by the API endpoints and the simulator.

Each move follows Stripe's documented behaviour where money is concerned,
with the doc page next to the rule: every movement writes a balance
transaction on the account it touches, transfers and payouts need the funds
to be *available*, a charge can fund a transfer early through
``source_transaction``, transfers convert into the connected account's
currency, refunds can fail and give the money back, a charged-back payment
cannot be refunded again.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Final

from spaktok_ledger.testing._fixtures import convert_minor, fixture, new_id
from spaktok_ledger.testing._forms import StripeAPIError
from spaktok_ledger.testing._state import (
    _COUNTRY_CURRENCY,
    _DAY,
    _ONBOARDING_REQUIREMENTS,
    _UNSET,
    JSON,
    _Call,
    _invalid,
    _StripeState,
    _Unset,
    same_region,
)

_REFUND_RANK: Final = {
    "pending": 0,
    "requires_action": 0,
    "succeeded": 1,
    "failed": 2,
    "canceled": 2,
}


def _refused(message: str, *, code: str | None = None, param: str | None = None) -> StripeAPIError:
    """A business refusal: the endpoint ran, so Stripe stores it under the idempotency key."""
    return StripeAPIError(400, message, code=code, param=param, stored=True)


class _Moves(_StripeState):
    """The moves; callers hold the lock."""

    # -- checkout --------------------------------------------------------------------

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

    # -- refunds ---------------------------------------------------------------------

    def _disputes_of(self, charge_id: str) -> list[JSON]:
        return [
            obj
            for obj in self._objects.values()
            if obj.get("object") == "dispute" and obj["charge"] == charge_id
        ]

    def _open_dispute(self, charge_id: str) -> JSON | None:
        for dispute in self._disputes_of(charge_id):
            if dispute["status"] not in ("won", "lost", "warning_closed"):
                return dispute
        return None

    def _refund(
        self,
        charge: JSON,
        amount_minor: int | None,
        *,
        reason: str | None,
        metadata: dict[str, str],
        call: _Call | None,
        status: str = "succeeded",
    ) -> tuple[JSON, JSON]:
        """Refund part or all of a charge: ``charge.refunded`` (returned) and ``refund.created``.

        A charged-back payment cannot be refunded: the cardholder already has
        the money (https://docs.stripe.com/error-codes#charge-disputed); only a
        dispute that was won gives it back to the merchant.
        """
        charge_id = charge["id"]
        if charge["status"] != "succeeded":
            raise _refused(
                f"Charge {charge_id} has not succeeded and cannot be refunded.",
                code="charge_not_refundable",
                param="charge",
            )
        if any(d["status"] not in ("won", "warning_closed") for d in self._disputes_of(charge_id)):
            raise _refused(
                f"Charge {charge_id} has been charged back; you cannot refund a disputed charge.",
                code="charge_disputed",
                param="charge",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise _refused(
                f"Charge {charge_id} has already been refunded.",
                code="charge_already_refunded",
                param="charge",
            )
        amount_minor = remaining if amount_minor is None else amount_minor
        if amount_minor > remaining:
            raise _refused(
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
            status=status,
            failure_balance_transaction=None,
            failure_reason=None,
        )
        if status == "pending":
            refund["pending_reason"] = "processing"
        self._put(refund, owner)
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount_minor
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._charge_refunds.setdefault(charge_id, []).insert(0, refund_id)
        event = self._event("charge.refunded", charge, account=owner, previous=previous, call=call)
        self._event("refund.created", refund, account=owner, call=call)
        return refund, event

    def _finish_refund(self, refund: JSON, status: str, *, failure_reason: str | None) -> JSON:
        """A refund leaves ``pending`` (or a card refund fails after ``succeeded``).

        A failed refund gives the money back: a ``refund_failure`` balance
        transaction (the refund's ``failure_balance_transaction``) and the
        charge's ``amount_refunded`` goes down. Stripe sends
        ``charge.refund.updated`` (returned), ``refund.updated`` and, on failure,
        ``refund.failed`` (https://docs.stripe.com/refunds#failed-refunds).
        """
        if _REFUND_RANK[status] <= _REFUND_RANK[refund["status"]]:
            raise ValueError(f"refund {refund['id']} is {refund['status']}, it cannot be {status}")
        owner = self._owners[refund["id"]]
        previous: JSON = {"status": refund["status"]}
        refund["status"] = status
        refund.pop("pending_reason", None)
        if status == "failed":
            original = self._objects[refund["balance_transaction"]]
            txn = self._balance_transaction(
                owner=owner,
                amount_minor=-original["amount"],
                currency=original["currency"],
                txn_type="refund_failure",
                source=refund["id"],
                reporting_category="refund_failure",
                description="REFUND FAILURE",
                available_on=self._now(),
            )
            previous.update(failure_balance_transaction=None, failure_reason=None)
            refund.update(failure_balance_transaction=txn["id"], failure_reason=failure_reason)
            charge = self._objects[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = False
        event = self._event("charge.refund.updated", refund, account=owner, previous=previous)
        self._event("refund.updated", refund, account=owner, previous=previous)
        if status == "failed":
            self._event("refund.failed", refund, account=owner, previous=previous)
        return event

    # -- transfers -------------------------------------------------------------------

    def _settlement_currencies(self, account_id: str) -> set[str]:
        account = self._objects[account_id]
        return {account["default_currency"], *self._external_currencies.get(account_id, ())}

    def _transfer(
        self,
        *,
        amount_minor: int,
        currency: str,
        destination_id: str,
        source_transaction: JSON | None,
        fields: Mapping[str, object],
        call: _Call,
    ) -> JSON:
        """Move platform funds to a connected account (separate charges and transfers).

        Without ``source_transaction`` the platform's *available* balance must
        cover the amount, else ``balance_insufficient``
        (https://docs.stripe.com/error-codes#balance-insufficient). With it, the
        transfer draws on that charge's funds even while they are pending, up to
        the charge's amount, and reaches the destination when the charge's funds
        become available (https://docs.stripe.com/connect/separate-charges-and-transfers#transfer-availability).
        The connected account receives the funds in a currency it can settle in,
        converted into its default currency otherwise
        (https://docs.stripe.com/connect/currencies); transfers to accounts under
        the ``recipient`` service agreement become available 24 hours later
        (https://docs.stripe.com/connect/service-agreement-types#recipient).
        """
        destination = self._objects[destination_id]
        if destination["capabilities"].get("transfers") != "active":
            raise _refused(
                "Your destination account needs to have at least one of the following"
                " capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="destination",
            )
        now = self._now()
        funds_on = now
        if source_transaction is not None:
            charge_txn = self._objects.get(source_transaction.get("balance_transaction") or "")
            if charge_txn is None or source_transaction["status"] != "succeeded":
                raise _refused(
                    f"The source transaction {source_transaction['id']} has not succeeded.",
                    param="source_transaction",
                )
            if charge_txn["currency"] != currency:
                raise _refused(
                    f"The currency of the transfer ({currency}) must match the currency of the"
                    f" source transaction's balance transaction ({charge_txn['currency']}).",
                    param="currency",
                )
            left = charge_txn["amount"] - self._source_used.get(source_transaction["id"], 0)
            if amount_minor > left:
                raise _refused(
                    f"The transfer amount ({amount_minor}) exceeds the amount left to transfer"
                    f" from the source transaction ({left}).",
                    code="balance_insufficient",
                    param="amount",
                )
            funds_on = max(now, charge_txn["available_on"])
            self._source_used[source_transaction["id"]] = (
                self._source_used.get(source_transaction["id"], 0) + amount_minor
            )
        elif self._available(call.account, currency) < amount_minor:
            raise _refused(
                "You have insufficient available funds in your Stripe account. Try adding funds"
                " directly to your available balance by creating Charges using the"
                " 4000000000000077 test card. See: https://stripe.com/docs/testing#available-balance",
                code="balance_insufficient",
            )
        transfer_id = new_id("tr")
        txn = self._balance_transaction(
            owner=call.account,
            amount_minor=-amount_minor,
            currency=currency,
            txn_type="transfer",
            source=transfer_id,
            reporting_category="transfer",
            available_on=funds_on,
        )
        arrives = currency
        if currency not in self._settlement_currencies(destination_id):
            arrives = destination["default_currency"]
        rate = self._exchange_rate(currency, arrives)
        recipient = destination["tos_acceptance"].get("service_agreement") == "recipient"
        payment = self._destination_payment(
            destination_id,
            amount_minor=convert_minor(amount_minor, currency, arrives, rate),
            currency=arrives,
            exchange_rate=rate if arrives != currency else None,
            available_on=funds_on + (_DAY if recipient else 0),
            transfer_id=transfer_id,
        )
        transfer = fixture("transfer")
        transfer.update(
            id=transfer_id,
            amount=amount_minor,
            amount_reversed=0,
            balance_transaction=txn["id"],
            created=now,
            currency=currency,
            destination=destination_id,
            destination_payment=payment["id"],
            reversals={
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            reversed=False,
            source_transaction=source_transaction["id"] if source_transaction else None,
            **fields,
        )
        self._put(transfer, call.account)
        self._event("transfer.created", transfer, account=call.account, call=call)
        return transfer

    def _destination_payment(
        self,
        account_id: str,
        *,
        amount_minor: int,
        currency: str,
        exchange_rate: object,
        available_on: int,
        transfer_id: str,
    ) -> JSON:
        """The ``py_`` payment a transfer creates on the destination account."""
        payment_id = new_id("py")
        txn = self._balance_transaction(
            owner=account_id,
            amount_minor=amount_minor,
            currency=currency,
            txn_type="payment",
            source=payment_id,
            reporting_category="charge",
            exchange_rate=exchange_rate,  # type: ignore[arg-type]
            available_on=available_on,
        )
        payment = fixture("charge")
        payment.update(
            id=payment_id,
            amount=amount_minor,
            amount_captured=amount_minor,
            amount_refunded=0,
            balance_transaction=txn["id"],
            created=self._now(),
            currency=currency,
            description=None,
            disputed=False,
            metadata={},
            outcome=None,
            paid=True,
            payment_intent=None,
            payment_method=None,
            refunded=False,
            refunds={
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/charges/{payment_id}/refunds",
            },
            source_transfer=transfer_id,
            status="succeeded",
        )
        return self._put(payment, account_id)

    def _reverse(
        self,
        transfer: JSON,
        amount_minor: int | None,
        *,
        description: str | None,
        metadata: dict[str, str],
        call: _Call | None,
    ) -> tuple[JSON, JSON]:
        """Pull (part of) a transfer back from the connected account.

        The destination's balance must cover the reversed share of its
        payment, else ``balance_insufficient``
        (https://docs.stripe.com/connect/separate-charges-and-transfers#reverse-transfers).
        """
        remaining = transfer["amount"] - transfer["amount_reversed"]
        if remaining == 0:
            raise _refused(
                f"Transfer {transfer['id']} has already been fully reversed.", param="amount"
            )
        amount_minor = remaining if amount_minor is None else amount_minor
        if amount_minor > remaining:
            raise _refused(
                f"You have requested a reversal of {amount_minor}, which exceeds the amount"
                f" left to reverse on transfer {transfer['id']} ({remaining}).",
                code="parameter_invalid_integer",
                param="amount",
            )
        payment = self._objects[transfer["destination_payment"]]
        taken_back = sum(
            self._objects[i]["amount"] for i in self._charge_refunds.get(payment["id"], [])
        )
        if amount_minor == remaining:
            back = payment["amount"] - taken_back
        else:
            back = convert_minor(
                amount_minor,
                transfer["currency"],
                payment["currency"],
                self._exchange_rate(transfer["currency"], payment["currency"]),
            )
        if self._available(transfer["destination"], payment["currency"]) < back:
            raise _refused(
                "Insufficient funds in the destination account to reverse this transfer.",
                code="balance_insufficient",
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
            available_on=self._now(),
        )
        refund_id = new_id("pyr")
        refund_txn = self._balance_transaction(
            owner=transfer["destination"],
            amount_minor=-back,
            currency=payment["currency"],
            txn_type="payment_refund",
            source=refund_id,
            reporting_category="refund",
        )
        payment_refund = fixture("refund")
        payment_refund.update(
            id=refund_id,
            amount=back,
            balance_transaction=refund_txn["id"],
            charge=payment["id"],
            created=self._now(),
            currency=payment["currency"],
            metadata={},
            payment_intent=None,
            status="succeeded",
        )
        self._put(payment_refund, transfer["destination"])
        self._charge_refunds.setdefault(payment["id"], []).insert(0, refund_id)
        payment["amount_refunded"] += back
        payment["refunded"] = payment["amount_refunded"] == payment["amount"]
        reversal = fixture("transfer_reversal")
        reversal.update(
            id=reversal_id,
            amount=amount_minor,
            balance_transaction=txn["id"],
            created=self._now(),
            currency=transfer["currency"],
            destination_payment_refund=refund_id,
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

    # -- payouts ---------------------------------------------------------------------

    def _check_payout(self, account: str | None, amount_minor: int, currency: str) -> None:
        """What Stripe checks before paying a balance out to a bank.

        Payouts go to an external account in their currency: a connected
        account pays out only in currencies it has a bank account in
        (https://docs.stripe.com/connect/payouts-connected-accounts#supported-settlement);
        and the available balance in that currency must cover the amount
        (https://docs.stripe.com/error-codes#balance-insufficient).
        """
        if account is not None:
            if not self._objects[account]["payouts_enabled"]:
                raise _refused(
                    "Payouts are not enabled on this account: its requirements are not complete.",
                    code="payouts_not_allowed",
                )
            if currency not in self._settlement_currencies(account):
                raise _refused(
                    f"You do not have any external accounts in that currency ({currency}).",
                    param="currency",
                )
        if self._available(account, currency) < amount_minor:
            raise _refused(
                "You have insufficient funds in your Stripe account for this transfer. Your card"
                " balance is too low. You can use the /v1/balance endpoint to view your Stripe"
                " balance (for more details, see stripe.com/docs/api#balance).",
                code="balance_insufficient",
            )

    def _payout_transition(
        self,
        payout: JSON,
        status: str,
        *,
        failure_code: str | None = None,
        failure_message: str | None = None,
        call: _Call | None = None,
    ) -> JSON:
        """``paid``, ``failed`` (also after ``paid``) or ``canceled``.

        A failed or canceled payout returns the money to the balance it left:
        the payout's ``failure_balance_transaction``, on the account that made
        it (https://docs.stripe.com/api/payouts/object#payout_object-failure_balance_transaction).
        """
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
                available_on=self._now(),
            )
            previous["failure_balance_transaction"] = payout["failure_balance_transaction"]
            payout["failure_balance_transaction"] = txn["id"]
        if status == "failed":
            previous.update(failure_code=None, failure_message=None)
            payout["failure_code"] = failure_code
            payout["failure_message"] = failure_message
        return self._event(f"payout.{status}", payout, account=owner, previous=previous, call=call)

    def _top_up(self, amount_minor: int, currency: str, description: str | None) -> JSON:
        """Funds added to the platform's available balance (a Top-up)."""
        topup_id = new_id("tu")
        txn = self._balance_transaction(
            owner=None,
            amount_minor=amount_minor,
            currency=currency,
            txn_type="topup",
            source=topup_id,
            reporting_category="topup",
            description=description,
            available_on=self._now(),
        )
        topup: JSON = {
            "id": topup_id,
            "object": "topup",
            "amount": amount_minor,
            "balance_transaction": txn["id"],
            "created": self._now(),
            "currency": currency,
            "description": description,
            "expected_availability_date": self._now(),
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": {},
            "source": None,
            "statement_descriptor": None,
            "status": "succeeded",
            "transfer_group": None,
        }
        self._put(topup, None)
        self._event("topup.succeeded", topup)
        return topup

    # -- connected accounts ----------------------------------------------------------

    def _check_service_agreement(
        self, country: str, service_agreement: str, capabilities: Iterable[str]
    ) -> None:
        """Stripe's country rules for a platform's connected accounts.

        Cross-border payouts only work with accounts under the ``recipient``
        service agreement, and those accounts cannot request ``card_payments``
        (https://docs.stripe.com/connect/service-agreement-types,
        https://docs.stripe.com/connect/cross-border-payouts).
        """
        if service_agreement == "recipient" and "card_payments" in capabilities:
            raise _invalid(
                "Accounts under the recipient service agreement cannot request the"
                " card_payments capability.",
                param="capabilities[card_payments]",
            )
        if service_agreement != "recipient" and not same_region(self.platform_country, country):
            raise _invalid(
                f"Connected accounts in {country} cannot be created by platforms in"
                f" {self.platform_country} under the `full` service agreement: cross-border"
                " payouts need tos_acceptance[service_agreement]=recipient.",
                param="tos_acceptance[service_agreement]",
            )

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
        service_agreement: str = "full",
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
        account["tos_acceptance"]["service_agreement"] = service_agreement
        currency = default_currency or _COUNTRY_CURRENCY.get(country, "eur")
        account.update(
            id=account_id,
            business_type=business_type,
            capabilities=dict.fromkeys(capabilities, "inactive"),
            charges_enabled=False,
            controller=controller,
            country=country,
            created=self._now(),
            default_currency=currency,
            details_submitted=False,
            email=email,
            metadata=metadata,
            payouts_enabled=False,
            type=account_type,
        )
        self._external_currencies[account_id] = {currency}
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
