"""The simulator: Stripe's side of the story, each move returning the event Stripe sends.

The customer pays, the bank returns a payout, a cardholder disputes, a
refund fails: each method changes the fake's state through the same moves
as the API (``_moves.py``) and returns the webhook event, ready to be signed
with :func:`~spaktok_ledger.testing.signed_event`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, Literal

from spaktok_ledger.testing._api import _StripeAPI
from spaktok_ledger.testing._fixtures import convert_minor, fixture, new_id, random_token
from spaktok_ledger.testing._forms import StripeAPIError
from spaktok_ledger.testing._state import (
    _DAY,
    _UNSET,
    JSON,
    _Settlement,
    _Unset,
    same_region,
)

_DEFAULT_DISPUTE_FEE_MINOR: Final = 1500

_RISK_SCORES: Final = {"normal": 12, "elevated": 68, "highest": 87}

_RISK_LEVELS: Final = ("normal", "elevated", "highest", "not_assessed", "unknown")

_PAYOUT_FAILURES: Final = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "bank_account_restricted": "The bank account has restrictions on payouts.",
    "could_not_process": "The bank could not process this payout.",
    "insufficient_funds": "Your Stripe account has insufficient funds to cover the payout.",
    "invalid_account_number": "The bank account number appears to be invalid.",
    "no_account": "The bank account details on file are probably incorrect.",
}


class _Simulator(_StripeAPI):
    """Stripe's side: simulator methods raise ``LookupError`` for unknown ids and
    ``ValueError`` when Stripe could not be in the requested state."""

    def complete_checkout(
        self,
        session_id: str,
        *,
        paid: bool = True,
        settle_currency: str = "usd",
        exchange_rate: Decimal | None = None,
        settle_amount_minor: int | None = None,
        fee_minor: int | None = None,
        risk_level: str = "normal",
        risk_score: int | None = None,
        customer_email: str = "customer@example.com",
        available_now: bool = False,
        presentment_currency: str | None = None,
    ) -> JSON:
        """The customer pays: returns ``checkout.session.completed``.

        Creates the PaymentIntent (metadata from ``payment_intent_data``), its
        Charge (``outcome.risk_level``/``risk_score``, same metadata) and, when
        ``paid``, the BalanceTransaction: the amount in ``settle_currency``
        (converted at ``exchange_rate``, settlement units per presentment unit,
        rounded half up; or exactly ``settle_amount_minor``), ``fee_minor``
        (default 2.9% + 30) and ``net``. ``paid=False`` models a delayed
        method (SEPA, ACH): the session completes with ``payment_status:
        "unpaid"`` and :meth:`async_payment_succeeded` or
        :meth:`async_payment_failed` finishes it.

        The charge's funds are *pending* for ``charge_delay_days`` (2 by
        default, Stripe's US standard) before they can be transferred or paid
        out; ``available_now=True`` puts them in the available balance at once,
        like Stripe's test card 4000000000000077
        (https://docs.stripe.com/testing#available-balance).
        ``presentment_currency`` models Adaptive Pricing: the customer paid in
        their own currency (refused when the session turned it off).

        >>> event = fake.complete_checkout(cs_id, exchange_rate=Decimal("1.0843"))  # doctest: +SKIP
        >>> event["data"]["object"]["payment_status"]  # doctest: +SKIP
        'paid'
        """
        if risk_level not in _RISK_LEVELS:
            raise ValueError(f"risk_level must be one of {_RISK_LEVELS}, got {risk_level!r}")
        if exchange_rate is not None and not isinstance(exchange_rate, Decimal):
            raise TypeError("exchange_rate must be a Decimal (never a float)")
        settle_currency = settle_currency.lower()
        with self._lock:
            session = self._require(session_id, "checkout.session")
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
            currency = session["currency"]
            amount = session["amount_total"]
            if presentment_currency is not None and not session["adaptive_pricing"]["enabled"]:
                raise ValueError(f"checkout session {session_id} has Adaptive Pricing disabled")
            if settle_currency == currency:
                if exchange_rate is not None and exchange_rate != 1:
                    raise ValueError("no exchange_rate applies when settling in the same currency")
                exchange_rate = None
                settled = amount if settle_amount_minor is None else settle_amount_minor
            elif settle_amount_minor is not None:
                settled = settle_amount_minor
            elif exchange_rate is None:
                raise ValueError(
                    f"settling {currency} in {settle_currency} needs an exchange_rate"
                    " or settle_amount_minor"
                )
            else:
                settled = convert_minor(amount, currency, settle_currency, exchange_rate)
            owner = self._owners[session_id]
            extras = self._session_extras[session_id]["payment_intent_data"]
            now = self._now()
            intent_id, charge_id = new_id("pi"), new_id("ch")
            payment_method = new_id("pm")
            method_type = session["payment_method_types"][0]
            intent = fixture("payment_intent")
            intent.update(
                id=intent_id,
                amount=amount,
                amount_capturable=0,
                amount_received=amount if paid else 0,
                automatic_payment_methods=None,
                canceled_at=None,
                client_secret=f"{intent_id}_secret_{random_token(25)}",
                created=now,
                currency=currency,
                description=extras["description"],
                last_payment_error=None,
                latest_charge=charge_id,
                metadata=dict(extras["metadata"]),
                next_action=None,
                payment_method=payment_method,
                payment_method_configuration_details=None,
                payment_method_types=list(session["payment_method_types"]),
                processing=None if paid else {"type": method_type},
                shipping=None,
                statement_descriptor=extras["statement_descriptor"],
                status="succeeded" if paid else "processing",
                transfer_data=None,
                transfer_group=extras["transfer_group"],
            )
            self._put(intent, owner)
            score = risk_score if risk_score is not None else _RISK_SCORES.get(risk_level)
            charge = fixture("charge")
            charge["billing_details"]["email"] = customer_email
            charge.update(
                id=charge_id,
                amount=amount,
                amount_captured=amount,
                amount_refunded=0,
                balance_transaction=None,
                captured=True,
                created=now,
                currency=currency,
                description=extras["description"],
                disputed=False,
                metadata=dict(extras["metadata"]),
                outcome={
                    "advice_code": None,
                    "network_advice_code": None,
                    "network_decline_code": None,
                    "network_status": "approved_by_network",
                    "reason": None,
                    "risk_level": risk_level,
                    "risk_score": score,
                    "seller_message": "Payment complete.",
                    "type": "authorized",
                },
                paid=paid,
                payment_intent=intent_id,
                payment_method=payment_method,
                receipt_email=customer_email,
                refunded=False,
                refunds={
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": f"/v1/charges/{charge_id}/refunds",
                },
                source=None,
                status="succeeded" if paid else "pending",
                transfer_data=None,
                transfer_group=extras["transfer_group"],
            )
            self._put(charge, owner)
            self._settlements[charge_id] = _Settlement(settle_currency, settled, exchange_rate)
            if presentment_currency is not None:
                charge["presentment_details"] = {
                    "presentment_amount": convert_minor(
                        amount,
                        currency,
                        presentment_currency.lower(),
                        self._exchange_rate(currency, presentment_currency.lower()),
                    ),
                    "presentment_currency": presentment_currency.lower(),
                }
            if paid:
                self._settle_charge(charge, fee_minor, instant=available_now)
            else:
                self._pending_fees[charge_id] = fee_minor
            previous = {
                "customer_details": None,
                "payment_intent": None,
                "payment_status": "unpaid",
                "status": "open",
            }
            session.update(
                customer_details={
                    "address": None,
                    "business_name": None,
                    "email": customer_email,
                    "individual_name": None,
                    "name": None,
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
                payment_intent=intent_id,
                payment_status="paid" if paid else "unpaid",
                status="complete",
            )
            return self._event(
                "checkout.session.completed", session, account=owner, previous=previous
            )

    def _async_session(self, session_id: str) -> tuple[JSON, JSON, JSON]:
        session = self._require(session_id, "checkout.session")
        if session["status"] != "complete" or session["payment_status"] != "unpaid":
            raise ValueError(
                f"checkout session {session_id} is not awaiting a delayed payment"
                f" (status={session['status']}, payment_status={session['payment_status']})"
            )
        intent = self._objects[session["payment_intent"]]
        charge = self._objects[intent["latest_charge"]]
        if charge["status"] != "pending":
            raise ValueError(f"the charge of {session_id} is {charge['status']}, not pending")
        return session, intent, charge

    def async_payment_succeeded(self, session_id: str) -> JSON:
        """The delayed payment clears: returns ``checkout.session.async_payment_succeeded``.

        >>> fake.complete_checkout(session.id, paid=False)  # doctest: +SKIP
        >>> fake.async_payment_succeeded(session.id)["type"]  # doctest: +SKIP
        'checkout.session.async_payment_succeeded'
        """
        with self._lock:
            session, intent, charge = self._async_session(session_id)
            charge.update(paid=True, status="succeeded")
            self._settle_charge(charge, self._pending_fees.pop(charge["id"], None))
            intent.update(amount_received=intent["amount"], processing=None, status="succeeded")
            session["payment_status"] = "paid"
            return self._event(
                "checkout.session.async_payment_succeeded",
                session,
                account=self._owners[session_id],
                previous={"payment_status": "unpaid"},
            )

    def async_payment_failed(
        self, session_id: str, *, failure_code: str = "insufficient_funds"
    ) -> JSON:
        """The delayed payment bounces: returns ``checkout.session.async_payment_failed``."""
        with self._lock:
            session, intent, charge = self._async_session(session_id)
            self._pending_fees.pop(charge["id"], None)
            charge.update(
                failure_code=failure_code,
                failure_message="The payment failed (simulated by FakeStripe).",
                paid=False,
                status="failed",
            )
            intent.update(
                last_payment_error={"code": failure_code, "type": "card_error"},
                processing=None,
                status="requires_payment_method",
            )
            return self._event(
                "checkout.session.async_payment_failed", session, account=self._owners[session_id]
            )

    def expire_checkout(self, session_id: str) -> JSON:
        """The session times out unpaid: returns ``checkout.session.expired``.

        >>> fake.expire_checkout(cs_id)["data"]["object"]["status"]  # doctest: +SKIP
        'expired'
        """
        with self._lock:
            session = self._require(session_id, "checkout.session")
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
            return self._expire(session, None)

    def refund(
        self,
        charge_id: str,
        amount_minor: int | None = None,
        *,
        status: Literal["succeeded", "pending"] = "succeeded",
    ) -> JSON:
        """Refund from the Dashboard (all, or ``amount_minor`` of the charge currency).

        Returns ``charge.refunded`` (``refund.created`` is recorded too); the
        charge carries ``amount_refunded`` (its ``refunds`` list only when
        expanded), and the refund a negative balance transaction.
        ``status="pending"`` models a refund that settles later
        (:meth:`settle_refund`) or fails (:meth:`fail_refund`).

        >>> event = fake.refund(charge_id, amount_minor=199)  # doctest: +SKIP
        >>> event["data"]["object"]["amount_refunded"]  # doctest: +SKIP
        199
        """
        with self._lock:
            charge = self._require(charge_id, "charge")
            try:
                _refund, event = self._refund(
                    charge,
                    amount_minor,
                    reason="requested_by_customer",
                    metadata={},
                    call=None,
                    status=status,
                )
            except StripeAPIError as error:
                raise ValueError(error.message) from None
            return event

    def dispute(
        self,
        charge_id: str,
        *,
        amount_minor: int | None = None,
        reason: str = "fraudulent",
    ) -> JSON:
        """The cardholder disputes the charge: returns ``charge.dispute.created``.

        Follow with :meth:`dispute_funds_withdrawn` (Stripe sends it at once),
        then :meth:`dispute_funds_reinstated` if won, and :meth:`close_dispute`.

        >>> dispute_id = fake.dispute(charge_id)["data"]["object"]["id"]  # doctest: +SKIP
        >>> fake.dispute_funds_withdrawn(dispute_id)  # doctest: +SKIP
        >>> fake.close_dispute(dispute_id, status="lost")["type"]  # doctest: +SKIP
        'charge.dispute.closed'
        """
        with self._lock:
            charge = self._require(charge_id, "charge")
            if charge["status"] != "succeeded":
                raise ValueError(f"charge {charge_id} is {charge['status']}: nothing to dispute")
            if charge["disputed"]:
                # One dispute per charge: the charge's ``disputed`` flag, and the card
                # networks do not give a cardholder the same money back twice.
                raise ValueError(f"charge {charge_id} has already been disputed")
            now = self._now()
            dispute = fixture("dispute")
            dispute["evidence_details"].update(due_by=now + 7 * _DAY, past_due=False)
            dispute["payment_method_details"]["card"]["case_type"] = "chargeback"
            dispute.update(
                id=new_id("dp"),
                amount=charge["amount"] if amount_minor is None else amount_minor,
                balance_transactions=[],
                charge=charge_id,
                created=now,
                currency=charge["currency"],
                enhanced_eligibility_types=[],
                is_charge_refundable=False,
                payment_intent=charge["payment_intent"],
                reason=reason,
                status="needs_response",
            )
            self._put(dispute, self._owners[charge_id])
            charge["disputed"] = True
            return self._event("charge.dispute.created", dispute, account=self._owners[charge_id])

    def dispute_funds_withdrawn(
        self, dispute_id: str, *, fee_minor: int = _DEFAULT_DISPUTE_FEE_MINOR
    ) -> JSON:
        """Stripe debits the disputed amount and a fee: ``charge.dispute.funds_withdrawn``.

        The dispute's ``balance_transactions`` gains the debit (settlement
        currency, ``fee`` = ``fee_minor``, 1500 = $15.00 by default).
        """
        return self._dispute_funds(dispute_id, withdrawn=True, fee_minor=fee_minor)

    def dispute_funds_reinstated(self, dispute_id: str, *, fee_returned_minor: int = 0) -> JSON:
        """A won dispute returns the funds: ``charge.dispute.funds_reinstated``.

        ``fee_returned_minor`` is the part of the dispute fee given back (none by default).
        """
        return self._dispute_funds(dispute_id, withdrawn=False, fee_minor=-fee_returned_minor)

    def _dispute_funds(self, dispute_id: str, *, withdrawn: bool, fee_minor: int) -> JSON:
        with self._lock:
            dispute = self._require(dispute_id, "dispute")
            expected = 0 if withdrawn else 1
            if len(dispute["balance_transactions"]) != expected:
                raise ValueError(
                    f"dispute {dispute_id}: funds can be withdrawn once, then reinstated once"
                )
            charge = self._objects[dispute["charge"]]
            settlement = self._settlements[charge["id"]]
            settled = self._settle_part(charge, dispute["amount"])
            txn = self._balance_transaction(
                owner=self._owners[dispute_id],
                amount_minor=-settled if withdrawn else settled,
                currency=settlement.currency,
                txn_type="adjustment",
                source=dispute_id,
                reporting_category="dispute" if withdrawn else "dispute_reversal",
                fee_minor=fee_minor,
                fee_description="Dispute fee",
                exchange_rate=settlement.exchange_rate,
                available_on=self._now(),
                description=(
                    f"Chargeback withdrawal for {charge['id']}"
                    if withdrawn
                    else f"Chargeback reversal for {charge['id']}"
                ),
            )
            previous = {"balance_transactions": copy.deepcopy(dispute["balance_transactions"])}
            dispute["balance_transactions"].append(copy.deepcopy(txn))
            event_type = "funds_withdrawn" if withdrawn else "funds_reinstated"
            return self._event(
                f"charge.dispute.{event_type}",
                dispute,
                account=self._owners[dispute_id],
                previous=previous,
            )

    def close_dispute(self, dispute_id: str, *, status: Literal["won", "lost"]) -> JSON:
        """The dispute is decided: returns ``charge.dispute.closed`` with ``status`` won or lost."""
        if status not in ("won", "lost"):
            raise ValueError("status must be 'won' or 'lost'")
        with self._lock:
            dispute = self._require(dispute_id, "dispute")
            if dispute["status"] in ("won", "lost"):
                raise ValueError(f"dispute {dispute_id} is already closed ({dispute['status']})")
            previous = {"status": dispute["status"]}
            dispute["status"] = status
            return self._event(
                "charge.dispute.closed",
                dispute,
                account=self._owners[dispute_id],
                previous=previous,
            )

    def create_account(
        self,
        *,
        country: str = "US",
        email: str | None = None,
        metadata: Mapping[str, str] | None = None,
        onboarded: bool = False,
        account_type: str = "express",
        service_agreement: Literal["full", "recipient"] | None = None,
    ) -> JSON:
        """Seed a connected account without the API (no event); returns the account.

        ``onboarded=True`` gives an account that can receive transfers and pay out.
        ``service_agreement`` defaults to ``recipient`` for a country outside the
        platform's region (cross-border), ``full`` otherwise.

        >>> acct = fake.create_account(onboarded=True)["id"]  # doctest: +SKIP
        """
        country = country.upper()
        if service_agreement is None:
            domestic = same_region(self.platform_country, country)
            service_agreement = "full" if domestic else "recipient"
        capabilities = ("transfers",) if service_agreement == "recipient" else None
        with self._lock:
            self._check_service_agreement(country, service_agreement, capabilities or ())
            account = self._new_account(
                account_type=account_type,
                country=country,
                email=email,
                metadata=dict(metadata or {}),
                capabilities=capabilities or ("card_payments", "transfers"),
                service_agreement=service_agreement,
            )
            if onboarded:
                self._apply_account_update(account, **_ONBOARDED)
            return copy.deepcopy(account)

    def update_account(
        self,
        account_id: str,
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
        """KYC moves on: returns ``account.updated`` (a Connect event, ``account`` set).

        Only the fields given change; ``previous_attributes`` holds their old values.
        Transfers to the account need ``capabilities={"transfers": "active"}``
        (which :meth:`onboard_account` sets along with everything else).

        >>> fake.update_account(acct, payouts_enabled=False, past_due=["external_account"],
        ...                     disabled_reason="requirements.past_due")  # doctest: +SKIP
        """
        with self._lock:
            account = self._require(account_id, "account")
            previous = self._apply_account_update(
                account,
                charges_enabled=charges_enabled,
                payouts_enabled=payouts_enabled,
                details_submitted=details_submitted,
                currently_due=currently_due,
                eventually_due=eventually_due,
                past_due=past_due,
                disabled_reason=disabled_reason,
                capabilities=capabilities,
            )
            return self._event("account.updated", account, account=account_id, previous=previous)

    def onboard_account(self, account_id: str) -> JSON:
        """Onboarding completes: everything enabled, nothing due. Returns ``account.updated``."""
        return self.update_account(account_id, **_ONBOARDED)

    def reverse_transfer(self, transfer_id: str, amount_minor: int | None = None) -> JSON:
        """Reverse a transfer from the Dashboard: returns ``transfer.reversed``.

        >>> fake.reverse_transfer(transfer.id)["data"]["object"]["reversed"]  # doctest: +SKIP
        True
        """
        with self._lock:
            transfer = self._require(transfer_id, "transfer")
            try:
                _reversal, event = self._reverse(
                    transfer, amount_minor, description=None, metadata={}, call=None
                )
            except StripeAPIError as error:
                raise ValueError(error.message) from None
            return event

    def _require_payout(self, payout_id: str, allowed: Iterable[str]) -> JSON:
        payout = self._require(payout_id, "payout")
        if payout["status"] not in tuple(allowed):
            raise ValueError(f"payout {payout_id} is {payout['status']}")
        return payout

    def pay_payout(self, payout_id: str) -> JSON:
        """The bank accepts the payout: returns ``payout.paid`` (a Connect event).

        >>> fake.pay_payout(payout.id)["account"] == acct  # doctest: +SKIP
        True
        """
        with self._lock:
            payout = self._require_payout(payout_id, ("pending", "in_transit"))
            return self._payout_transition(payout, "paid")

    def fail_payout(
        self,
        payout_id: str,
        failure_code: str = "account_closed",
        failure_message: str | None = None,
    ) -> JSON:
        """The bank returns the payout: ``payout.failed`` (also after ``paid``, as on Stripe).

        >>> fake.fail_payout(payout.id, failure_code="account_closed")["type"]  # doctest: +SKIP
        'payout.failed'
        """
        with self._lock:
            payout = self._require_payout(payout_id, ("pending", "in_transit", "paid"))
            message = failure_message or _PAYOUT_FAILURES.get(
                failure_code, "The payout failed (simulated by FakeStripe)."
            )
            return self._payout_transition(
                payout, "failed", failure_code=failure_code, failure_message=message
            )

    def cancel_payout(self, payout_id: str) -> JSON:
        """The payout is canceled before it leaves: returns ``payout.canceled``."""
        with self._lock:
            payout = self._require_payout(payout_id, ("pending",))
            return self._payout_transition(payout, "canceled")

    def settle_refund(self, refund_id: str) -> JSON:
        """A pending refund reaches the customer: returns ``charge.refund.updated``."""
        with self._lock:
            refund = self._require(refund_id, "refund")
            return self._finish_refund(refund, "succeeded", failure_reason=None)

    def fail_refund(self, refund_id: str, *, reason: str = "expired_or_canceled_card") -> JSON:
        """The refund fails (pending, or after ``succeeded`` for a card): the money comes back.

        Returns ``charge.refund.updated``; ``refund.updated`` and
        ``refund.failed`` are recorded too. The refund gets a
        ``failure_balance_transaction`` crediting the balance back, and the
        charge's ``amount_refunded`` goes down
        (https://docs.stripe.com/refunds#failed-refunds).
        """
        with self._lock:
            refund = self._require(refund_id, "refund")
            return self._finish_refund(refund, "failed", failure_reason=reason)

    def early_fraud_warning(
        self, charge_id: str, *, fraud_type: str = "unauthorized_use_of_card"
    ) -> JSON:
        """The card network reports the charge as likely fraud: returns
        ``radar.early_fraud_warning.created``
        (https://docs.stripe.com/disputes/prevention/early-fraud-warnings)."""
        with self._lock:
            charge = self._require(charge_id, "charge")
            warning = fixture("radar.early_fraud_warning")
            warning.update(
                id=new_id("issfr"),
                actionable=not charge["refunded"] and not charge["disputed"],
                charge=charge_id,
                created=self._now(),
                fraud_type=fraud_type,
                payment_intent=charge["payment_intent"],
            )
            self._put(warning, self._owners[charge_id])
            return self._event(
                "radar.early_fraud_warning.created", warning, account=self._owners[charge_id]
            )

    def top_up(self, amount_minor: int, currency: str = "usd", *, description: str = "") -> JSON:
        """Add funds to the platform's *available* balance (a Top-up); returns the top-up.

        >>> fake.top_up(100_000)["status"]  # doctest: +SKIP
        'succeeded'
        """
        if amount_minor <= 0:
            raise ValueError("a top-up adds a positive amount")
        with self._lock:
            return copy.deepcopy(
                self._top_up(amount_minor, currency.lower(), description or "Top-up (FakeStripe)")
            )

    def balance(self, account: str | None = None) -> dict[str, tuple[int, int]]:
        """``{currency: (available, pending)}`` of the platform or a connected account.

        >>> fake.balance()["usd"]  # doctest: +SKIP
        (0, 541)
        """
        with self._lock:
            return self._balances(account)

    def set_exchange_rate(self, source: str, target: str, rate: Decimal) -> None:
        """The rate Stripe converts ``source`` into ``target`` at (target units per source unit)."""
        if not isinstance(rate, Decimal) or rate <= 0:
            raise TypeError("rate must be a positive Decimal")
        with self._lock:
            self._rates[(source.lower(), target.lower())] = rate

    def add_external_account(self, account_id: str, currency: str) -> None:
        """Give a connected account a bank account in ``currency``: it can then settle
        transfers and pay out in that currency too."""
        with self._lock:
            self._require(account_id, "account")
            self._external_currencies.setdefault(account_id, set()).add(currency.lower())


_ONBOARDED: Final[dict[str, Any]] = {
    "charges_enabled": True,
    "payouts_enabled": True,
    "details_submitted": True,
    "currently_due": [],
    "eventually_due": [],
    "past_due": [],
    "disabled_reason": None,
    "capabilities": {"card_payments": "active", "transfers": "active"},
}
