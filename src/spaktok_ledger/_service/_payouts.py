"""Streamer payouts through Stripe Connect: KYC, thresholds, holds, webhooks, reconciliation.

:class:`Payouts` is built once at start-up next to the :class:`GiftEconomy`;
each payout endpoint of a host is one call::

    POST /api/payouts/request   -> payouts.request_payout(streamer, amount, idempotency_key=...)
    POST /api/payouts/webhook   -> payouts.handle_webhook(request.body, stripe_signature)
    GET  /api/payouts           -> payouts.payouts(streamer)

The accounting (USD minor units; ``A`` the payout, ``R`` a returned part):

======================  ==========================================================  ===========
step                    entries                                                     ledger call
======================  ==========================================================  ===========
request                 Dr ``earnings`` A / Cr ``payouts_in_flight`` A, pending      ``hold``
paid (settled)          the hold posted; Dr ``payouts_in_flight`` A /               ``post_hold``
                        Cr ``platform:stripe_balance`` A                            + ``post``
failed before settled   the hold voided                                             ``void_hold``
failed after settled    both settlement entries reversed                            ``reverse``
partly reversed         Dr ``platform:stripe_balance`` R / Cr ``earnings`` R          ``post``
======================  ==========================================================  ===========

*Settled* means: with manual payouts (``manual_payouts=True``), Stripe says
the connected account's Payout is ``paid``; with Stripe's automatic payout
schedule, the Transfer to the connected account exists (the money is then
the streamer's, and Stripe pays their bank on its own schedule).

Every step is driven by *facts* from Stripe kept on the payout's row (the
transfer, its reversed amount, the bank payout's status), and the ledger is
brought to the state those facts call for (``_converge``). Facts only move
forward (a ``paid`` never overwrites a ``failed``; a reversed amount never
shrinks), so webhooks can arrive twice or in any order, and a retry, a
webhook and :meth:`Payouts.reconcile` can all report the same fact: it is
booked once.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._clock import Clock
from spaktok_ledger._currency import from_stripe_amount, to_major
from spaktok_ledger._domain import EntryDraft, EntryType, Posting
from spaktok_ledger._errors import (
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    PaymentProviderError,
    PayoutBelowMinimum,
    PayoutLimitExceeded,
    PayoutsNotEnabled,
    UnknownPayout,
    UnknownStreamer,
)
from spaktok_ledger._money import check_minor
from spaktok_ledger._service._gateway import (
    ConnectedAccountState,
    PaymentGateway,
    PayoutSnapshot,
    TransferSnapshot,
    WebhookEvent,
)
from spaktok_ledger._service._gifts import GiftEconomy, earnings_account
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._webhooks import DuplicateDelivery, WebhookInbox, WebhookResult
from spaktok_ledger._store import Ledger
from spaktok_ledger._store._units import expected_exponent
from spaktok_ledger._stripe import account_state, payout_snapshot, transfer_snapshot

__all__ = ["ConnectedAccount", "PayoutDiscrepancy", "PayoutRecord", "Payouts"]

STRIPE_BALANCE: Final = "platform:stripe_balance"
DEFAULT_MINIMUM_USD_MINOR: Final = 5000
OPEN_STATUSES: Final = ("pending", "transferred", "in_transit")
MAX_LIST: Final = 500
_ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]{1,250}$")
# How far a bank payout's status has got: a later status never goes back.
_BANK_RANK: Final[Mapping[str | None, int]] = {
    None: 0,
    "pending": 1,
    "in_transit": 2,
    "paid": 3,
    "failed": 4,
    "canceled": 4,
}
_PAYOUT_EVENTS: Final = frozenset(
    {"payout.created", "payout.updated", "payout.paid", "payout.failed", "payout.canceled"}
)
_TRANSFER_EVENTS: Final = frozenset({"transfer.created", "transfer.updated", "transfer.reversed"})

PayoutStatus = Literal[
    "pending", "transferred", "in_transit", "paid", "failed", "canceled", "reversed"
]


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectedAccount:
    """A streamer's Stripe Connect account and its KYC state (``GET /api/payouts/account``)."""

    streamer_id: str
    account_id: str
    """The connected account, ``acct_...``."""
    payouts_enabled: bool
    charges_enabled: bool
    details_submitted: bool
    currently_due: tuple[str, ...]
    """Requirements Stripe needs now (``individual.verification.document``...)."""
    past_due: tuple[str, ...]
    """Requirements whose deadline has passed: they disable the account."""
    disabled_reason: str | None
    """Stripe's ``requirements.disabled_reason`` (``requirements.past_due``...)."""
    default_currency: str | None
    """The currency Stripe pays the streamer's bank in."""
    country: str | None
    updated_at: datetime

    @property
    def kyc_status(self) -> str:
        """``onboarding`` (details not submitted), ``pending_verification`` (submitted,
        Stripe is checking), ``restricted`` (something past due, or disabled for another
        reason) or ``enabled``."""
        if self.payouts_enabled:
            return "enabled"
        if not self.details_submitted:
            return "onboarding"
        if self.past_due or self.disabled_reason not in (None, "requirements.pending_verification"):
            return "restricted"
        return "pending_verification"

    @property
    def requirements_due(self) -> tuple[str, ...]:
        """Past-due requirements first, then the other currently due ones."""
        return tuple(dict.fromkeys((*self.past_due, *self.currently_due)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "streamer_id": self.streamer_id,
            "account_id": self.account_id,
            "kyc_status": self.kyc_status,
            "payouts_enabled": self.payouts_enabled,
            "charges_enabled": self.charges_enabled,
            "details_submitted": self.details_submitted,
            "currently_due": list(self.currently_due),
            "past_due": list(self.past_due),
            "disabled_reason": self.disabled_reason,
            "default_currency": self.default_currency,
            "country": self.country,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    """One payout request and where it stands (the answer to ``POST /api/payouts/request``)."""

    payout_id: str
    streamer_id: str
    account_id: str
    amount_usd_minor: int
    status: PayoutStatus
    """``pending`` (held; the transfer is not confirmed yet), ``transferred`` (the money
    is on the connected account), ``in_transit`` (manual payouts: the bank payout is on
    its way), ``paid``, ``failed``, ``canceled``, ``reversed`` (the transfer was pulled
    back). After ``failed``/``canceled``/``reversed`` the money is back in earnings."""
    mode: Literal["automatic", "manual"]
    ledger_state: Literal["held", "settled", "voided"]
    """The ledger's side: the hold is open, or posted and paid out, or voided."""
    returned_usd_minor: int
    """Returned to earnings after settlement (a reversal or a failure after ``paid``)."""
    transfer_id: str | None
    transfer_reversed_minor: int
    stripe_payout_id: str | None
    """Manual payouts: the Payout on the connected account (``po_...``)."""
    stripe_payout_status: str | None
    payout_currency: str | None
    """What reached the bank, as Stripe reports it (manual payouts)."""
    payout_stripe_amount: int | None
    """In Stripe's units for ``payout_currency``."""
    exchange_rate: Decimal | None
    failure_code: str | None
    failure_message: str | None
    last_error: str | None
    """The last Stripe error met while driving the payout, or a note for review."""
    hold_entry_id: int
    settlement_entry_id: int | None
    created_at: datetime
    updated_at: datetime
    replayed: bool = field(default=False, compare=False)
    """True when this answers a retried request (same idempotency key)."""

    @property
    def transfer_group(self) -> str:
        return f"payout:{self.payout_id}"

    @property
    def is_open(self) -> bool:
        """Still waiting for Stripe (a transfer or a bank payout to confirm)."""
        return self.status in OPEN_STATUSES

    @property
    def paid_out_usd_minor(self) -> int:
        """What has left the platform for good: settled, minus what came back."""
        if self.ledger_state != "settled":
            return 0
        return self.amount_usd_minor - self.returned_usd_minor

    def to_dict(self) -> dict[str, Any]:
        return {
            "payout_id": self.payout_id,
            "streamer_id": self.streamer_id,
            "account_id": self.account_id,
            "amount_usd_minor": self.amount_usd_minor,
            "status": self.status,
            "mode": self.mode,
            "ledger_state": self.ledger_state,
            "returned_usd_minor": self.returned_usd_minor,
            "transfer_id": self.transfer_id,
            "transfer_group": self.transfer_group,
            "transfer_reversed_minor": self.transfer_reversed_minor,
            "stripe_payout_id": self.stripe_payout_id,
            "stripe_payout_status": self.stripe_payout_status,
            "payout_currency": self.payout_currency,
            "payout_stripe_amount": self.payout_stripe_amount,
            "exchange_rate": str(self.exchange_rate) if self.exchange_rate is not None else None,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "last_error": self.last_error,
            "hold_entry_id": self.hold_entry_id,
            "settlement_entry_id": self.settlement_entry_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class PayoutDiscrepancy:
    """A payout whose ledger state and Stripe state disagreed (``reconcile()``)."""

    payout_id: str
    streamer_id: str
    problem: str
    """``transfer_not_recorded``, ``transfer_missing``, ``bank_payout_missing``,
    ``bank_payout_not_recorded``, ``bank_status_changed``, ``transfer_reversed``,
    ``multiple_transfers``, ``transfer_mismatch``, ``needs_review``, ``stripe_error``."""
    detail: str
    status_before: str
    status_after: str
    stripe_status: str | None
    """The bank payout's status (manual payouts) or the transfer's, at Stripe."""
    resolved: bool
    """True when reconcile() brought the ledger in line; False: a person must look."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "payout_id": self.payout_id,
            "streamer_id": self.streamer_id,
            "problem": self.problem,
            "detail": self.detail,
            "status_before": self.status_before,
            "status_after": self.status_after,
            "stripe_status": self.stripe_status,
            "resolved": self.resolved,
        }


@dataclass(frozen=True, slots=True)
class _Facts:
    """What Stripe says about a payout, to merge into its row (only ever forwards)."""

    transfer: TransferSnapshot | None = None
    bank: PayoutSnapshot | None = None


# -- the service -----------------------------------------------------------------------


class Payouts:
    """Streamer payouts through Stripe Connect, over a :class:`GiftEconomy`.

    ``connect_webhook_secret`` is the signing secret of the Connect webhook
    endpoint (not the platform endpoint's). ``minimum_usd_minor`` (default
    USD 50.00) is the smallest payout; ``daily_cap_usd_minor`` and
    ``monthly_cap_usd_minor`` cap what one streamer may request per UTC day or
    calendar month. ``manual_payouts=True`` makes a Stripe Payout on the
    connected account after each Transfer (for accounts on a manual payout
    schedule); otherwise Stripe's automatic schedule pays the bank.

    >>> payouts = Payouts(economy, StripeGateway(api_key=...),  # doctest: +SKIP
    ...                   connect_webhook_secret="whsec_...")
    """

    def __init__(
        self,
        economy: GiftEconomy,
        gateway: PaymentGateway,
        *,
        connect_webhook_secret: str,
        minimum_usd_minor: int = DEFAULT_MINIMUM_USD_MINOR,
        daily_cap_usd_minor: int | None = None,
        monthly_cap_usd_minor: int | None = None,
        manual_payouts: bool = False,
        tolerance_seconds: int = 300,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(economy, GiftEconomy):
            raise InvalidInput("economy must be a GiftEconomy")
        if not isinstance(connect_webhook_secret, str) or not connect_webhook_secret:
            raise InvalidInput("connect_webhook_secret is required (the Connect endpoint's secret)")
        minimum = check_minor(minimum_usd_minor, name="minimum_usd_minor")
        if minimum < 1:
            raise InvalidInput("minimum_usd_minor must be at least 1")
        for name, cap in (("daily", daily_cap_usd_minor), ("monthly", monthly_cap_usd_minor)):
            if cap is not None and check_minor(cap, name=f"{name}_cap_usd_minor") < minimum:
                raise InvalidInput(f"{name}_cap_usd_minor must be at least minimum_usd_minor")
        if not isinstance(manual_payouts, bool):
            raise InvalidInput("manual_payouts must be a bool")
        if (
            isinstance(tolerance_seconds, bool)
            or not isinstance(tolerance_seconds, int)
            or tolerance_seconds < 1
        ):
            raise InvalidInput("tolerance_seconds must be a positive int")
        self.economy = economy
        self.ledger: Ledger = economy.ledger
        self.gateway = gateway
        self.minimum_usd_minor = minimum
        self.daily_cap_usd_minor = daily_cap_usd_minor
        self.monthly_cap_usd_minor = monthly_cap_usd_minor
        self.manual_payouts = manual_payouts
        self.tolerance_seconds = tolerance_seconds
        self.clock: Clock = clock or economy.clock
        self.inbox = WebhookInbox(self.ledger)
        self._secret = connect_webhook_secret
        self._t = self.ledger.tables

    def __repr__(self) -> str:  # never show the secret
        return f"Payouts(manual_payouts={self.manual_payouts}, minimum={self.minimum_usd_minor})"

    # -- connected accounts ------------------------------------------------------------

    def link_account(self, streamer_id: str | int, account_id: str) -> ConnectedAccount:
        """Link a registered streamer to an existing Connect account; fetches its KYC state.

        Linking again to the same account refreshes the state; an account
        already linked to another streamer is a ``Conflict``.
        """
        streamer = self._registered(streamer_id)
        if not isinstance(account_id, str) or not _ACCOUNT_ID.match(account_id):
            raise InvalidInput(
                f"account_id must be a Stripe account id (acct_...), got {account_id!r}"
            )
        state = self.gateway.retrieve_account(account_id)
        return self._store_account(streamer, state)

    def create_express_account(
        self, streamer_id: str | int, *, country: str, email: str | None = None
    ) -> ConnectedAccount:
        """Create an Express account for a streamer (once: later calls return the linked one)."""
        streamer = self._registered(streamer_id)
        if not isinstance(country, str) or not re.fullmatch(r"[A-Za-z]{2}", country):
            raise InvalidInput(f"country must be an ISO 3166 alpha-2 code, got {country!r}")
        existing = self.account_status(streamer)
        if existing is not None:
            return existing
        state = self.gateway.create_express_account(
            country=country.upper(),
            email=email,
            metadata={"streamer_id": streamer},
            idempotency_key=f"{self.ledger.prefix}express:{streamer}",
        )
        return self._store_account(streamer, state)

    def onboarding_link(self, streamer_id: str | int, refresh_url: str, return_url: str) -> str:
        """A one-time Stripe-hosted onboarding URL for the streamer's account (KYC)."""
        account = self.account_status(streamer_id)
        if account is None:
            raise self._no_account(check_party_id(streamer_id, "streamer_id"))
        for name, url in (("refresh_url", refresh_url), ("return_url", return_url)):
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise InvalidInput(f"{name} must be an http(s) URL")
        return self.gateway.create_onboarding_link(account.account_id, refresh_url, return_url)

    def refresh_account(self, streamer_id: str | int) -> ConnectedAccount:
        """Fetch the account's KYC state from Stripe now (when a webhook may have been missed)."""
        account = self.account_status(streamer_id)
        if account is None:
            raise self._no_account(check_party_id(streamer_id, "streamer_id"))
        state = self.gateway.retrieve_account(account.account_id)
        return self._store_account(account.streamer_id, state)

    def account_status(self, streamer_id: str | int) -> ConnectedAccount | None:
        """The streamer's connected account and KYC state (None: none linked yet)."""
        streamer = check_party_id(streamer_id, "streamer_id")
        t = self._t.connected_accounts
        row = self.ledger.read(
            lambda conn: conn.execute(sa.select(t).where(t.c.streamer_id == streamer)).first()
        )
        return None if row is None else _account(row)

    def _registered(self, streamer_id: str | int) -> str:
        return self.economy.streamer(streamer_id).streamer_id

    def _store_account(self, streamer: str, state: ConnectedAccountState) -> ConnectedAccount:
        t = self._t.connected_accounts
        now = self.clock()

        def run(tx: Ledger) -> ConnectedAccount:
            conn = tx.connection()
            owner = conn.execute(
                sa.select(t.c.streamer_id).where(t.c.account_id == state.id)
            ).scalar()
            if owner is not None and owner != streamer:
                raise Conflict(
                    f"Stripe account {state.id} is already linked to streamer {owner}",
                    account_id=state.id,
                    streamer_id=owner,
                )
            values = _state_values(state)
            current = conn.execute(
                sa.select(t.c.streamer_id).where(t.c.streamer_id == streamer).with_for_update()
            ).first()
            if current is None:
                conn.execute(
                    t.insert().values(
                        streamer_id=streamer,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                )
            else:
                conn.execute(
                    t.update().where(t.c.streamer_id == streamer).values(updated_at=now, **values)
                )
            row = conn.execute(sa.select(t).where(t.c.streamer_id == streamer)).one()
            return _account(row)

        return self.ledger.atomic(run)

    @staticmethod
    def _no_account(streamer: str) -> PayoutsNotEnabled:
        return PayoutsNotEnabled(
            f"streamer {streamer} has no Stripe Connect account: create one "
            "(create_express_account) or link one (link_account) first",
            streamer_id=streamer,
            requirement="stripe_account",
        )

    # -- requesting a payout -----------------------------------------------------------

    def request_payout(
        self,
        streamer_id: str | int,
        amount_usd_minor: int | Literal["all"],
        *,
        idempotency_key: str,
    ) -> PayoutRecord:
        """Pay ``amount_usd_minor`` (or ``"all"`` available) of a streamer's earnings out.

        Places a hold (earnings to ``payouts_in_flight``), then, outside any
        database transaction, makes the Stripe Transfer to the connected
        account (and the Payout, with ``manual_payouts``). Idempotent: the same
        key and request returns the same payout (``replayed=True``) and
        finishes what a timeout interrupted; another request under the key is
        an ``IdempotencyConflict``.

        Refusals write nothing: ``PayoutsNotEnabled`` (no account, or KYC not
        done: the error names the requirement due), ``PayoutBelowMinimum``,
        ``InsufficientFunds`` (more than the *available* earnings: matured and
        not already held), ``PayoutLimitExceeded`` (daily/monthly cap).
        ``PaymentProviderError``: Stripe refused the transfer (the hold is
        voided, ``retryable`` false) or could not be reached (``retryable``:
        the payout stays ``pending``; retry with the same key, or let
        :meth:`reconcile` finish it).
        """
        streamer = check_party_id(streamer_id, "streamer_id")
        key = _check_key(idempotency_key)
        amount: int | None
        if amount_usd_minor == "all":
            amount = None
        else:
            amount = check_minor(amount_usd_minor, name="amount_usd_minor")
            if amount <= 0:
                raise InvalidInput("amount_usd_minor must be positive (or 'all')")
        request = {"op": "request_payout", "streamer": streamer, "amount": amount_usd_minor}
        request_hash = hashlib.sha256(
            json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        payout_id = f"pyt_{secrets.token_hex(10)}"
        record = self.ledger.atomic(
            lambda tx: self._place(
                tx,
                streamer=streamer,
                amount=amount,
                key=key,
                request_hash=request_hash,
                payout_id=payout_id,
            )
        )
        if not record.is_open:
            return record
        advanced = self._advance(record)
        return _replace_replayed(advanced, record.replayed)

    def _place(
        self,
        tx: Ledger,
        *,
        streamer: str,
        amount: int | None,
        key: str,
        request_hash: str,
        payout_id: str,
    ) -> PayoutRecord:
        conn = tx.connection()
        accounts, payouts = self._t.connected_accounts, self._t.payouts
        # One streamer's requests queue on their account row (caps and "all" read
        # consistent totals); the ledger's no-overdraft check guards the money itself.
        account = conn.execute(
            sa.select(accounts).where(accounts.c.streamer_id == streamer).with_for_update()
        ).first()
        existing = conn.execute(
            sa.select(payouts).where(
                payouts.c.streamer_id == streamer, payouts.c.idempotency_key == key
            )
        ).first()
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was already used for a different payout request",
                    idempotency_key=key,
                    payout_id=existing.id,
                )
            return _record(existing, replayed=True)
        streamers = self._t.streamers
        found = conn.execute(
            sa.select(streamers.c.status, streamers.c.blocked_reason).where(
                streamers.c.streamer_id == streamer
            )
        ).first()
        if found is None:
            raise UnknownStreamer(f"no streamer {streamer!r}", streamer_id=streamer)
        if found.status == "blocked":
            raise PayoutsNotEnabled(
                f"streamer {streamer} is blocked ({found.blocked_reason}): payouts are frozen",
                streamer_id=streamer,
                requirement="unblock",
            )
        if account is None:
            raise self._no_account(streamer)
        state = _account(account)
        if not state.payouts_enabled:
            due = state.requirements_due
            reason = state.disabled_reason or (
                "details not submitted" if not state.details_submitted else "verification pending"
            )
            raise PayoutsNotEnabled(
                f"Stripe account {state.account_id} of streamer {streamer} cannot receive "
                f"payouts yet ({reason})" + (f"; due: {', '.join(due)}" if due else ""),
                streamer_id=streamer,
                account_id=state.account_id,
                requirement=due[0] if due else reason,
                requirements_due=list(due),
                disabled_reason=state.disabled_reason,
            )
        available = tx.balance(earnings_account(streamer)).available_minor
        wanted = available if amount is None else amount
        if wanted < self.minimum_usd_minor:
            raise PayoutBelowMinimum(
                f"the minimum payout is {self.minimum_usd_minor} US cents; "
                f"{'available' if amount is None else 'requested'}: {wanted}",
                minimum_usd_minor=self.minimum_usd_minor,
                requested_usd_minor=wanted,
                available_usd_minor=available,
            )
        if wanted > available:
            raise InsufficientFunds(
                f"streamer {streamer} has {available} US cents available for payout "
                f"(matured earnings not already held); the request needs {wanted}",
                account=earnings_account(streamer),
                available_minor=available,
                required_minor=wanted,
                currency="USD",
            )
        now = self.clock()
        self._check_caps(conn, streamer, wanted, now)
        hold = tx.hold(
            EntryDraft(
                EntryType.PAYOUT,
                (
                    Posting.debit(earnings_account(streamer), wanted),
                    Posting.credit(earnings_account(streamer, "payouts_in_flight"), wanted),
                ),
                f"payout:{payout_id}:hold",
                description=f"Payout {payout_id} requested: USD {_usd(wanted)}",
                metadata={
                    "payout_id": payout_id,
                    "streamer": streamer,
                    "account": state.account_id,
                    "mode": self._mode,
                    "step": "requested",
                },
                effective_at=now,
            )
        )
        conn.execute(
            payouts.insert().values(
                id=payout_id,
                streamer_id=streamer,
                idempotency_key=key,
                request_hash=request_hash,
                account_id=state.account_id,
                mode=self._mode,
                amount_usd_minor=wanted,
                status="pending",
                ledger_state="held",
                hold_entry_id=hold.id,
                created_at=now,
                updated_at=now,
            )
        )
        record = self._load(conn, payout_id)
        self.economy.outbox.write(
            conn,
            "payout.requested",
            f"payout.requested:{payout_id}",
            record.to_dict(),
            entry_id=hold.id,
            now=now,
        )
        return record

    @property
    def _mode(self) -> Literal["automatic", "manual"]:
        return "manual" if self.manual_payouts else "automatic"

    def _check_caps(self, conn: Connection, streamer: str, wanted: int, now: datetime) -> None:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        for window, cap, since in (
            ("daily", self.daily_cap_usd_minor, day),
            ("monthly", self.monthly_cap_usd_minor, month),
        ):
            if cap is None:
                continue
            used = self._used(conn, streamer, since)
            if used + wanted > cap:
                raise PayoutLimitExceeded(
                    f"the {window} payout cap is {cap} US cents; {used} already paid out or "
                    f"in flight since {since.date().isoformat()}, so at most "
                    f"{max(cap - used, 0)} more",
                    window=window,
                    cap_usd_minor=cap,
                    used_usd_minor=used,
                    remaining_usd_minor=max(cap - used, 0),
                    requested_usd_minor=wanted,
                )

    def _used(self, conn: Connection, streamer: str, since: datetime) -> int:
        p = self._t.payouts
        counted = sa.case(
            (p.c.ledger_state == "voided", 0),
            else_=p.c.amount_usd_minor - p.c.returned_usd_minor,
        )
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(counted), 0)).where(
                p.c.streamer_id == streamer, p.c.created_at >= since
            )
        ).scalar_one()
        return int(total)

    # -- driving Stripe (outside any database transaction) -----------------------------

    def _advance(self, record: PayoutRecord) -> PayoutRecord:
        """Make the Stripe calls a payout still needs; each fact is booked as it arrives."""
        if record.status == "pending" and record.ledger_state == "held":
            transfer = self._create_transfer(record)
            record = self._apply(record.payout_id, _Facts(transfer=transfer))
        if (
            record.mode == "manual"
            and record.status == "transferred"
            and record.stripe_payout_id is None
        ):
            try:
                bank = self.gateway.create_payout(
                    account=record.account_id,
                    stripe_amount=record.amount_usd_minor,
                    currency="USD",
                    metadata={"payout_id": record.payout_id, "streamer_id": record.streamer_id},
                    idempotency_key=f"payout:{record.payout_id}:payout",
                )
            except PaymentProviderError as exc:
                self._note(record.payout_id, f"creating the bank payout: {exc.message}")
                if not _refused(exc):
                    raise PaymentProviderError(
                        f"Stripe could not be reached to create the bank payout of "
                        f"{record.payout_id}: {exc.message}. The transfer is done; retry with "
                        "the same idempotency key, or reconcile() will finish it",
                        retryable=True,
                        payout_id=record.payout_id,
                        status=record.status,
                    ) from exc
                # The money is on the connected account and stays in flight in the
                # ledger; reconcile() tries the payout again (e.g. after KYC is fixed).
                return self.payout(record.payout_id)
            record = self._apply(record.payout_id, _Facts(bank=bank))
        return record

    def _create_transfer(self, record: PayoutRecord) -> TransferSnapshot:
        try:
            return self.gateway.create_transfer(
                amount_usd_minor=record.amount_usd_minor,
                destination=record.account_id,
                transfer_group=record.transfer_group,
                metadata={"payout_id": record.payout_id, "streamer_id": record.streamer_id},
                idempotency_key=f"payout:{record.payout_id}",
            )
        except PaymentProviderError as exc:
            if not _refused(exc):
                self._note(record.payout_id, f"creating the transfer: {exc.message}")
                raise _unknown_outcome(record, exc) from exc
            # Refused: void the hold, but only once Stripe confirms that no
            # transfer exists in the payout's group (an earlier attempt may have made it).
            try:
                found = self.gateway.find_transfers(record.transfer_group)
            except PaymentProviderError as lookup:
                self._note(record.payout_id, f"creating the transfer: {exc.message}")
                raise _unknown_outcome(record, lookup) from exc
            if found:
                return found[0]
            self._refuse(record.payout_id, exc)
            raise PaymentProviderError(
                f"Stripe refused the transfer for payout {record.payout_id}: {exc.message}. "
                "Nothing was paid; the hold is released and the money is available again",
                retryable=False,
                payout_id=record.payout_id,
                status="failed",
                **{k: v for k, v in exc.details.items() if k not in ("payout_id", "status")},
            ) from exc

    def _refuse(self, payout_id: str, exc: PaymentProviderError) -> None:
        now = self.clock()

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            row = self._lock(conn, payout_id)
            if row.ledger_state != "held" or row.transfer_id is not None:
                return
            tx.void_hold(
                row.hold_entry_id,
                idempotency_key=f"payout:{payout_id}:void",
                metadata={"payout_id": payout_id, "step": "refused", "reason": exc.message},
            )
            code = exc.details.get("stripe_code")
            self._update(
                conn,
                payout_id,
                now,
                status="failed",
                ledger_state="voided",
                failure_code=str(code)[:100] if code else "transfer_refused",
                failure_message=exc.message[:1000],
            )
            self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", payout_id, now)

        self.ledger.atomic(run)

    def _note(self, payout_id: str, message: str) -> None:
        now = self.clock()
        self.ledger.atomic(
            lambda tx: self._update(tx.connection(), payout_id, now, last_error=message[:1000])
        )

    # -- applying Stripe facts --------------------------------------------------------

    def _apply(self, payout_id: str, facts: _Facts) -> PayoutRecord:
        now = self.clock()

        def run(tx: Ledger) -> PayoutRecord:
            self._merge_and_converge(tx, self._lock(tx.connection(), payout_id), facts, now)
            return self._load(tx.connection(), payout_id)

        return self.ledger.atomic(run)

    def _merge_and_converge(
        self, tx: Ledger, row: Any, facts: _Facts, now: datetime
    ) -> tuple[str, str]:
        """Merge ``facts`` into the payout's row and book what they call for.

        Returns ``(status, outcome)``: the new status, and what happened
        (``paid``, ``failed``, ``canceled``, ``reversed``, ``returned``,
        ``recorded`` when only facts changed, ``unchanged``).
        """
        p = dict(row._mapping)
        before = dict(p)
        notes: list[str] = []
        transfer, bank = facts.transfer, facts.bank
        if transfer is not None:
            if (
                transfer.destination != p["account_id"]
                or transfer.stripe_amount != p["amount_usd_minor"]
            ):
                notes.append(
                    f"transfer {transfer.id} does not match the payout "
                    f"({transfer.stripe_amount} to {transfer.destination}): review"
                )
            elif p["transfer_id"] in (None, transfer.id):
                p["transfer_id"] = transfer.id
                p["transfer_reversed_minor"] = max(
                    p["transfer_reversed_minor"], transfer.reversed_stripe_amount
                )
            else:
                notes.append(f"a second transfer {transfer.id} exists for the payout: review")
        if bank is not None:
            if p["stripe_payout_id"] in (None, bank.id):
                p["stripe_payout_id"] = bank.id
                if _BANK_RANK.get(bank.status, 0) >= _BANK_RANK[p["stripe_payout_status"]]:
                    p["stripe_payout_status"] = bank.status
                p["payout_currency"] = bank.currency or p["payout_currency"]
                p["payout_stripe_amount"] = bank.stripe_amount
                p["payout_stripe_exponent"] = expected_exponent(p["payout_currency"], "stripe")
                txn = bank.balance_transaction
                if txn is not None and txn.exchange_rate is not None:
                    p["exchange_rate"] = str(txn.exchange_rate)
                if bank.status == "failed":
                    p["failure_code"] = bank.failure_code or p["failure_code"]
                    p["failure_message"] = bank.failure_message or p["failure_message"]
            else:
                notes.append(f"a second bank payout {bank.id} exists for the payout: review")
        outcome = self._converge(tx, p, now, notes)
        if notes:
            p["last_error"] = ("review: " + "; ".join(notes))[:1000]
        elif p["status"] != before["status"] and not str(p["last_error"]).startswith("review:"):
            p["last_error"] = None  # progress: an earlier transient error no longer applies
        changed = {k: v for k, v in p.items() if v != before[k]}
        if changed:
            self._update(tx.connection(), p["id"], now, **changed)
        if outcome == "unchanged" and changed:
            outcome = "recorded"
        return p["status"], outcome

    def _converge(self, tx: Ledger, p: dict[str, Any], now: datetime, notes: list[str]) -> str:
        """Bring the ledger to the state the payout's Stripe facts call for."""
        amount = p["amount_usd_minor"]
        moved = p["transfer_id"] is not None or p["stripe_payout_id"] is not None
        reversed_minor = min(p["transfer_reversed_minor"], amount)
        bank = p["stripe_payout_status"]
        if p["ledger_state"] == "voided" and not moved:
            return "unchanged"  # refused by Stripe before any money moved: final
        status: str
        if p["mode"] == "automatic":
            settle, back = moved, reversed_minor
            status = "reversed" if back >= amount else "transferred" if moved else "pending"
        elif bank in ("failed", "canceled"):
            settle, back, status = False, amount, bank
        else:
            settle, back = bank == "paid", reversed_minor
            if back >= amount:
                status = "reversed"
            elif bank == "paid":
                status = "paid"
            else:
                status = "in_transit" if bank else "transferred" if moved else "pending"
        p["status"] = status
        outcome = "unchanged"
        conn = tx.connection()
        payout_id = p["id"]
        meta = {
            "payout_id": payout_id,
            "streamer": p["streamer_id"],
            "account": p["account_id"],
            "stripe_transfer_id": p["transfer_id"],
            "stripe_payout_id": p["stripe_payout_id"],
        }
        if p["ledger_state"] == "held":
            if back >= amount:
                tx.void_hold(
                    p["hold_entry_id"],
                    idempotency_key=f"payout:{payout_id}:void",
                    metadata={**meta, "step": status, "failure_code": p["failure_code"]},
                )
                p["ledger_state"] = "voided"
                self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", p, now)
                return status
            if settle:
                self._settle(tx, p, meta)
                p["ledger_state"] = "settled"
                self._announce(conn, "payout.paid", f"payout.paid:{payout_id}", p, now)
                outcome = "paid"
        if p["ledger_state"] == "settled" and back > p["returned_usd_minor"]:
            self._return(tx, p, back, status, meta)
            if back >= amount:
                self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", p, now)
                return status
            self._announce(conn, "payout.returned", f"payout.returned:{payout_id}:{back}", p, now)
            return "paid" if outcome == "paid" else "returned"
        if p["ledger_state"] == "voided" and (bank == "paid" or (settle and back < amount)):
            notes.append(
                "Stripe reports the payout paid after the ledger returned its money to earnings"
            )
        return outcome

    def _settle(self, tx: Ledger, p: dict[str, Any], meta: dict[str, Any]) -> None:
        payout_id, amount, streamer = p["id"], p["amount_usd_minor"], p["streamer_id"]
        tx.post_hold(
            p["hold_entry_id"],
            idempotency_key=f"payout:{payout_id}:post",
            description=f"Payout {payout_id} sent: USD {_usd(amount)}",
            metadata={**meta, "step": "posted"},
        )
        bank_minor = _bank_minor(p["payout_stripe_amount"], p["payout_currency"])
        if p["mode"] == "manual":
            description = f"Payout {payout_id} paid to the bank" + (
                f": {to_major(bank_minor, p['payout_currency'])} {p['payout_currency']}"
                if bank_minor is not None
                else ""
            )
        else:
            description = f"Payout {payout_id} transferred to Stripe account {p['account_id']}"
        settlement = tx.post(
            EntryDraft(
                EntryType.PAYOUT,
                (
                    Posting.debit(earnings_account(streamer, "payouts_in_flight"), amount),
                    Posting.credit(STRIPE_BALANCE, amount),
                ),
                f"payout:{payout_id}:settle",
                description=description,
                metadata={
                    **meta,
                    "step": "settled",
                    "mode": p["mode"],
                    "payout_currency": p["payout_currency"],
                    "payout_stripe_amount": p["payout_stripe_amount"],
                    "payout_amount_minor": bank_minor,
                    "exchange_rate": p["exchange_rate"],
                },
            )
        )
        p["settlement_entry_id"] = settlement.id

    def _return(
        self, tx: Ledger, p: dict[str, Any], back: int, status: str, meta: dict[str, Any]
    ) -> None:
        payout_id, amount, streamer = p["id"], p["amount_usd_minor"], p["streamer_id"]
        returned = p["returned_usd_minor"]
        reason = {**meta, "step": "returned", "reason": status, "failure_code": p["failure_code"]}
        why = status + (f": {p['failure_code']}" if p["failure_code"] else "")
        if returned == 0 and back >= amount:
            # Paid, then failed (or fully reversed): undo both settlement entries.
            settlement = p["settlement_entry_id"]
            post = tx.entry_by_key(f"payout:{payout_id}:post")
            tx.reverse(
                settlement,
                idempotency_key=f"payout:{payout_id}:unsettle",
                description=f"Payout {payout_id} came back to Stripe ({why})",
                metadata=reason,
            )
            tx.reverse(
                post.id,
                idempotency_key=f"payout:{payout_id}:unpost",
                description=f"Payout {payout_id}: USD {_usd(amount)} returned to earnings ({why})",
                metadata=reason,
            )
        else:
            part = back - returned
            tx.post(
                EntryDraft(
                    EntryType.PAYOUT,
                    (
                        Posting.debit(STRIPE_BALANCE, part),
                        Posting.credit(earnings_account(streamer), part),
                    ),
                    f"payout:{payout_id}:return:{back}",
                    description=f"Payout {payout_id}: USD {_usd(part)} returned to earnings "
                    f"({why})",
                    metadata={**reason, "returned_usd_minor": part},
                )
            )
        p["returned_usd_minor"] = back

    def _announce(
        self,
        conn: Connection,
        topic: str,
        dedupe_key: str,
        payout: dict[str, Any] | str,
        now: datetime,
    ) -> None:
        if isinstance(payout, str):
            record = self._load(conn, payout)
        else:
            record = _record(_Row({**payout, "updated_at": now}))
        self.economy.outbox.write(conn, topic, dedupe_key, record.to_dict(), entry_id=None, now=now)

    # -- rows --------------------------------------------------------------------------

    def _lock(self, conn: Connection, payout_id: str) -> Any:
        p = self._t.payouts
        row = conn.execute(sa.select(p).where(p.c.id == payout_id).with_for_update()).first()
        if row is None:
            raise UnknownPayout(f"no payout {payout_id!r}", payout_id=payout_id)
        return row

    def _load(self, conn: Connection, payout_id: str) -> PayoutRecord:
        p = self._t.payouts
        row = conn.execute(sa.select(p).where(p.c.id == payout_id)).first()
        if row is None:
            raise UnknownPayout(f"no payout {payout_id!r}", payout_id=payout_id)
        return _record(row)

    def _update(self, conn: Connection, payout_id: str, now: datetime, **values: Any) -> None:
        p = self._t.payouts
        conn.execute(p.update().where(p.c.id == payout_id).values(updated_at=now, **values))

    # -- reading -----------------------------------------------------------------------

    def payout(self, payout_id: str) -> PayoutRecord:
        """One payout by id (``UnknownPayout`` if none)."""
        if not isinstance(payout_id, str):
            raise InvalidInput("payout_id must be a string")
        return self.ledger.read(lambda conn: self._load(conn, payout_id))

    def payouts(
        self, streamer_id: str | int, *, limit: int = 50, status: str | None = None
    ) -> list[PayoutRecord]:
        """A streamer's payouts, newest first (``GET /api/payouts``)."""
        streamer = check_party_id(streamer_id, "streamer_id")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST}")
        p = self._t.payouts
        query = (
            sa.select(p)
            .where(p.c.streamer_id == streamer)
            .order_by(p.c.created_at.desc(), p.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(p.c.status == status)
        return self.ledger.read(lambda conn: [_record(r) for r in conn.execute(query)])

    # -- webhooks ----------------------------------------------------------------------

    def handle_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Verify and apply one delivery to the Connect endpoint (``POST /api/payouts/webhook``).

        ``payload`` is the raw request body, ``signature_header`` the
        ``Stripe-Signature`` header. A forged, tampered or stale delivery raises
        ``WebhookVerificationError`` (answer 400). Otherwise answer 200 with
        the result: duplicates, stale and unknown events are answered too
        (unknown payouts are parked, not lost: :meth:`retry_parked`). A
        ``PaymentProviderError`` while re-fetching from Stripe means: answer
        5xx, Stripe delivers again later.
        """
        event = self.gateway.parse_webhook(
            payload, signature_header, self._secret, self.tolerance_seconds
        )
        return self.handle_event(event)

    def handle_event(self, event: WebhookEvent) -> WebhookResult:
        """Apply an already verified event (e.g. ``transfer.*`` events that arrive at
        the platform endpoint and are handed on). Deduplicated like ``handle_webhook``."""
        if self.inbox.status(event.id) in ("processed", "ignored"):
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
        try:
            if event.type == "account.updated":
                return self._on_account_updated(event)
            if event.type in _PAYOUT_EVENTS:
                return self._on_payout_event(event)
            if event.type in _TRANSFER_EVENTS:
                return self._on_transfer_event(event)
            # Not a payout event: nothing to do, and nothing recorded, so that an
            # event meant for the platform endpoint is never marked as handled here.
            return WebhookResult(event.id, event.type, "ignored")
        except DuplicateDelivery:
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)

    def retry_parked(self, *, limit: int = 100) -> list[WebhookResult]:
        """Handle parked Connect events again (run periodically, or after linking accounts)."""
        return [self.handle_event(event) for event in self.inbox.parked("connect", limit=limit)]

    def _ignore(self, event: WebhookEvent, outcome: str, subject: str | None) -> WebhookResult:
        now = self.clock()
        self.ledger.atomic(
            lambda tx: self.inbox.record(
                tx.connection(),
                event,
                "connect",
                outcome=outcome,
                subject_id=subject,
                now=now,
                ignored=True,
            )
        )
        return WebhookResult(event.id, event.type, outcome, subject)

    def _park(self, event: WebhookEvent, reason: str, subject: str | None) -> WebhookResult:
        self.inbox.park(event, "connect", reason=reason, subject_id=subject, now=self.clock())
        return WebhookResult(event.id, event.type, "parked", subject)

    def _on_account_updated(self, event: WebhookEvent) -> WebhookResult:
        data = event.data_object
        account_id = event.account or str(data.get("id") or "")
        t = self._t.connected_accounts
        row = self.ledger.read(
            lambda conn: conn.execute(sa.select(t).where(t.c.account_id == account_id)).first()
        )
        if row is None:
            return self._park(event, f"no streamer is linked to account {account_id}", account_id)
        # Fetch the current state: it is newer than any event, so the order in which
        # account.updated deliveries arrive cannot matter.
        try:
            state = self.gateway.retrieve_account(account_id)
        except PaymentProviderError:
            if event.created < row.stripe_updated:
                return self._ignore(event, "stale", account_id)
            state = account_state(data)
        now = self.clock()
        streamer = row.streamer_id

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            self.inbox.record(
                conn, event, "connect", outcome="kyc_updated", subject_id=account_id, now=now
            )
            conn.execute(
                t.update()
                .where(t.c.streamer_id == streamer)
                .values(
                    stripe_updated=sa.func.max(t.c.stripe_updated, event.created)
                    if conn.dialect.name == "sqlite"
                    else sa.func.greatest(t.c.stripe_updated, event.created),
                    updated_at=now,
                    **_state_values(state),
                )
            )

        self.ledger.atomic(run)
        return WebhookResult(event.id, event.type, "kyc_updated", account_id)

    def _find(
        self,
        *,
        payout_id: str | None = None,
        transfer_id: str | None = None,
        stripe_payout_id: str | None = None,
    ) -> Any:
        p = self._t.payouts
        conditions = []
        if payout_id:
            conditions.append(p.c.id == payout_id)
        if transfer_id:
            conditions.append(p.c.transfer_id == transfer_id)
        if stripe_payout_id:
            conditions.append(p.c.stripe_payout_id == stripe_payout_id)
        if not conditions:
            return None
        query = sa.select(p).where(sa.or_(*conditions)).limit(1)
        return self.ledger.read(lambda conn: conn.execute(query).first())

    def _on_payout_event(self, event: WebhookEvent) -> WebhookResult:
        snap = payout_snapshot(event.data_object, event.account)
        ours = snap.metadata.get("payout_id")
        row = self._find(payout_id=ours, stripe_payout_id=snap.id)
        if row is None:
            if not ours and event.account and self._known_account(event.account):
                # A payout Stripe made on the account's automatic schedule: it
                # names none of our payouts (their transfers were the settlement).
                return self._ignore(event, "automatic_payout", snap.id)
            return self._park(event, f"no payout matches Stripe payout {snap.id}", snap.id)
        if event.account is not None and event.account != row.account_id:
            return self._ignore(event, "account_mismatch", row.id)
        bank = snap
        if snap.status == "paid":
            # Re-fetch: the balance transaction (the rate) is only on the object,
            # and a later failure may already have happened.
            try:
                bank = self.gateway.retrieve_payout(row.account_id, snap.id)
            except PaymentProviderError:
                bank = snap
        transfer = self._missing_transfer(row)
        return self._apply_event(event, row.id, _Facts(transfer=transfer, bank=bank))

    def _on_transfer_event(self, event: WebhookEvent) -> WebhookResult:
        snap = transfer_snapshot(event.data_object)
        ours = snap.metadata.get("payout_id")
        if not ours and snap.transfer_group and snap.transfer_group.startswith("payout:"):
            ours = snap.transfer_group.removeprefix("payout:")
        row = self._find(payout_id=ours, transfer_id=snap.id)
        if row is None:
            return self._park(event, f"no payout matches transfer {snap.id}", snap.id)
        return self._apply_event(event, row.id, _Facts(transfer=snap))

    def _missing_transfer(self, row: Any) -> TransferSnapshot | None:
        """A bank-payout event for a payout whose transfer we never recorded: fetch it."""
        if row.transfer_id is not None:
            return None
        found = self.gateway.find_transfers(f"payout:{row.id}")
        return found[0] if len(found) == 1 else None

    def _apply_event(self, event: WebhookEvent, payout_id: str, facts: _Facts) -> WebhookResult:
        now = self.clock()

        def run(tx: Ledger) -> str:
            conn = tx.connection()
            row = self._lock(conn, payout_id)
            _status, outcome = self._merge_and_converge(tx, row, facts, now)
            self.inbox.record(
                conn, event, "connect", outcome=outcome, subject_id=payout_id, now=now
            )
            return outcome

        outcome = self.ledger.atomic(run)
        return WebhookResult(event.id, event.type, outcome, payout_id)

    def _known_account(self, account_id: str) -> bool:
        t = self._t.connected_accounts
        return (
            self.ledger.read(
                lambda conn: conn.execute(
                    sa.select(t.c.streamer_id).where(t.c.account_id == account_id)
                ).first()
            )
            is not None
        )

    # -- reconciliation ----------------------------------------------------------------

    def reconcile(
        self, *, limit: int = 100, settled_within_days: int = 14
    ) -> list[PayoutDiscrepancy]:
        """Compare open (and recently settled) payouts with Stripe; fix the safe cases.

        For each payout, Stripe's state is fetched: the transfer (by id, or by
        ``transfer_group`` when none was recorded) and, with manual payouts,
        the bank payout. Facts the ledger missed (a transfer whose response
        timed out, a ``paid``/``failed`` without a webhook, a reversal) are
        booked; a transfer that was never made is made (same idempotency key,
        so never twice); a missing bank payout is created. What cannot be
        decided safely (two transfers in one group, amounts that do not
        match, money paid out after it was returned) is reported with
        ``resolved=False``. Returns only payouts that disagreed.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST}")
        now = self.clock()
        cutoff = now - timedelta(days=settled_within_days)
        p = self._t.payouts
        query = (
            sa.select(p)
            .where(
                sa.or_(
                    p.c.status.in_(OPEN_STATUSES),
                    sa.and_(p.c.ledger_state == "settled", p.c.updated_at >= cutoff),
                    p.c.last_error.startswith("review:"),
                )
            )
            .order_by(p.c.updated_at, p.c.id)
            .limit(limit)
        )
        rows = self.ledger.read(lambda conn: list(conn.execute(query)))
        found = []
        for row in rows:
            item = self._reconcile_one(_record(row))
            if item is not None:
                found.append(item)
        return found

    def _reconcile_one(self, record: PayoutRecord) -> PayoutDiscrepancy | None:
        def item(
            problem: str, detail: str, resolved: bool, stripe: str | None
        ) -> PayoutDiscrepancy:
            after = self.payout(record.payout_id).status if resolved else record.status
            return PayoutDiscrepancy(
                record.payout_id,
                record.streamer_id,
                problem,
                detail,
                record.status,
                after,
                stripe,
                resolved,
            )

        try:
            transfers: Sequence[TransferSnapshot]
            if record.transfer_id is not None:
                transfers = [self.gateway.retrieve_transfer(record.transfer_id)]
            else:
                transfers = self.gateway.find_transfers(record.transfer_group)
            if len(transfers) > 1:
                ids = ", ".join(t.id for t in transfers)
                return item("multiple_transfers", f"transfers {ids} share the group", False, None)
            transfer = transfers[0] if transfers else None
            bank: PayoutSnapshot | None = None
            if record.mode == "manual" and transfer is not None:
                if record.stripe_payout_id is not None:
                    bank = self.gateway.retrieve_payout(record.account_id, record.stripe_payout_id)
                else:
                    bank = next(
                        (
                            b
                            for b in self.gateway.list_payouts(record.account_id)
                            if b.metadata.get("payout_id") == record.payout_id
                        ),
                        None,
                    )
        except PaymentProviderError as exc:
            return item("stripe_error", exc.message, False, None)

        if transfer is not None and (
            transfer.stripe_amount != record.amount_usd_minor
            or transfer.destination != record.account_id
        ):
            detail = f"transfer {transfer.id}: {transfer.stripe_amount} to {transfer.destination}"
            return item("transfer_mismatch", detail, False, "transferred")
        stripe_status = bank.status if bank is not None else "transferred" if transfer else None
        problem: str | None = None
        if record.last_error and record.last_error.startswith("review:"):
            return item("needs_review", record.last_error, False, stripe_status)
        if transfer is None:
            if record.status != "pending":
                return item("needs_review", "Stripe has no transfer for this payout", False, None)
            problem, detail = "transfer_missing", "no transfer at Stripe: made it now"
        elif record.transfer_id is None:
            problem, detail = "transfer_not_recorded", f"transfer {transfer.id} found at Stripe"
        elif transfer.reversed_stripe_amount > record.transfer_reversed_minor:
            problem = "transfer_reversed"
            detail = (
                f"{transfer.reversed_stripe_amount} of transfer {transfer.id} reversed at Stripe"
            )
        elif record.mode == "manual" and bank is None:
            problem, detail = "bank_payout_missing", "no bank payout at Stripe: made it now"
        elif bank is not None and record.stripe_payout_id is None:
            problem, detail = "bank_payout_not_recorded", f"bank payout {bank.id} found at Stripe"
        elif (
            bank is not None
            and _BANK_RANK.get(bank.status, 0) > _BANK_RANK[record.stripe_payout_status]
        ):
            problem = "bank_status_changed"
            detail = f"bank payout {bank.id} is {bank.status} at Stripe"
        if problem is None:
            return None
        try:
            if transfer is not None:
                self._apply(record.payout_id, _Facts(transfer=transfer, bank=bank))
            self._advance(self.payout(record.payout_id))
        except PaymentProviderError as exc:
            detail = f"{detail}; {exc.message}"
        after = self.payout(record.payout_id)
        if _progress(record) == _progress(after):
            return item(
                problem, f"{detail}; {after.last_error or 'no change'}", False, stripe_status
            )
        return item(problem, detail, True, stripe_status)


# -- helpers ---------------------------------------------------------------------------


class _Row:
    """A dict seen through attribute access, like a SQLAlchemy row."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _record(row: Any, *, replayed: bool = False) -> PayoutRecord:
    return PayoutRecord(
        payout_id=row.id,
        streamer_id=row.streamer_id,
        account_id=row.account_id,
        amount_usd_minor=row.amount_usd_minor,
        status=row.status,
        mode=row.mode,
        ledger_state=row.ledger_state,
        returned_usd_minor=row.returned_usd_minor,
        transfer_id=row.transfer_id,
        transfer_reversed_minor=row.transfer_reversed_minor,
        stripe_payout_id=row.stripe_payout_id,
        stripe_payout_status=row.stripe_payout_status,
        payout_currency=row.payout_currency,
        payout_stripe_amount=row.payout_stripe_amount,
        exchange_rate=Decimal(row.exchange_rate) if row.exchange_rate is not None else None,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        last_error=row.last_error,
        hold_entry_id=row.hold_entry_id,
        settlement_entry_id=row.settlement_entry_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        replayed=replayed,
    )


def _replace_replayed(record: PayoutRecord, replayed: bool) -> PayoutRecord:
    return record if record.replayed == replayed else replace(record, replayed=replayed)


def _progress(record: PayoutRecord) -> tuple[Any, ...]:
    return (
        record.status,
        record.ledger_state,
        record.transfer_id,
        record.transfer_reversed_minor,
        record.stripe_payout_id,
        record.stripe_payout_status,
        record.returned_usd_minor,
    )


def _account(row: Any) -> ConnectedAccount:
    return ConnectedAccount(
        streamer_id=row.streamer_id,
        account_id=row.account_id,
        payouts_enabled=row.payouts_enabled,
        charges_enabled=row.charges_enabled,
        details_submitted=row.details_submitted,
        currently_due=tuple(row.currently_due),
        past_due=tuple(row.past_due),
        disabled_reason=row.disabled_reason,
        default_currency=row.default_currency,
        country=row.country,
        updated_at=row.updated_at,
    )


def _state_values(state: ConnectedAccountState) -> dict[str, Any]:
    return {
        "account_id": state.id,
        "payouts_enabled": state.payouts_enabled,
        "charges_enabled": state.charges_enabled,
        "details_submitted": state.details_submitted,
        "currently_due": list(state.currently_due),
        "past_due": list(state.past_due),
        "disabled_reason": state.disabled_reason[:255] if state.disabled_reason else None,
        "default_currency": state.default_currency,
        "country": state.country,
    }


def _refused(exc: PaymentProviderError) -> bool:
    """Stripe answered and refused the request, so nothing was created under its key.

    Timeouts, connection errors, 5xx, 429 and 409 (the same idempotency key
    still in use by a concurrent request) leave the outcome unknown.
    """
    status = exc.details.get("http_status")
    return (
        not exc.retryable
        and isinstance(status, int)
        and 400 <= status < 500
        and status not in (409, 429)
        and exc.details.get("stripe_error") != "IdempotencyError"
    )


def _unknown_outcome(record: PayoutRecord, exc: PaymentProviderError) -> PaymentProviderError:
    return PaymentProviderError(
        f"Stripe could not be reached to transfer payout {record.payout_id}: {exc.message}. "
        "The payout is pending (its hold stays): retry with the same idempotency key, or "
        "reconcile() will finish it; it is never transferred twice",
        retryable=True,
        payout_id=record.payout_id,
        status="pending",
    )


def _bank_minor(stripe_amount: int | None, currency: str | None) -> int | None:
    """A bank payout's amount in the ledger's minor units of its currency (None: unknown)."""
    if stripe_amount is None or not currency:
        return None
    try:
        return from_stripe_amount(stripe_amount, currency)
    except InvalidInput:
        return None


def _usd(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise InvalidInput("idempotency_key must be a non-empty string of at most 200 characters")
    return key
