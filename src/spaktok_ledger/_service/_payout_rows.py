"""Payout results, the payout row, and what the parts of :class:`Payouts` share.

The payout service is split by responsibility: requesting payouts and
connected accounts (``_payouts.py``), driving Stripe (``_payout_driver.py``),
booking Stripe's facts (``_payout_facts.py``), Connect webhooks
(``_payout_events.py``) and reconciliation (``_payout_reconcile.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._clock import Clock
from spaktok_ledger._compliance._core import open_account_values
from spaktok_ledger._currency import from_stripe_amount
from spaktok_ledger._errors import InvalidInput, PaymentProviderError, UnknownPayout
from spaktok_ledger._log import log_payout_status
from spaktok_ledger._service._gateway import (
    BalanceTxn,
    ConnectedAccountState,
    PaymentGateway,
    PayoutSnapshot,
    TransferSnapshot,
)
from spaktok_ledger._service._gifts import GiftEconomy
from spaktok_ledger._service._webhooks import WebhookInbox
from spaktok_ledger._store import Ledger
from spaktok_ledger._store._schema import LedgerTables
from spaktok_ledger._validate import check_text

__all__ = ["ConnectedAccount", "PayoutDiscrepancy", "PayoutRecord"]

STRIPE_BALANCE: Final = "platform:stripe_balance"
DEFAULT_MINIMUM_USD_MINOR: Final = 5000
OPEN_STATUSES: Final = ("pending", "transferred", "in_transit")
MAX_LIST: Final = 500
_ACCOUNT_ID: Final = re.compile(r"^acct_[A-Za-z0-9]{1,250}$")
# How far a bank payout's status has got: a later status never goes back.
BANK_RANK: Final[Mapping[str | None, int]] = {
    None: 0,
    "pending": 1,
    "in_transit": 2,
    "paid": 3,
    "failed": 4,
    "canceled": 4,
}

PayoutStatus = Literal[
    "pending",
    "transferred",
    "in_transit",
    "paid",
    "failed",
    "canceled",
    "reversed",
    "review",
    "refused",
]

# Countries whose accounts a platform in another of them onboards under the
# ``full`` service agreement; any other pair is cross-border and needs the
# ``recipient`` agreement (https://docs.stripe.com/connect/cross-border-payouts).
_EUROPE: Final = frozenset((
    "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR",
    "HU", "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE",
    "SI", "SK",
))  # fmt: skip


def cross_border(platform_country: str, country: str) -> bool:
    """Whether an account in ``country`` is abroad for a platform in ``platform_country``."""
    if platform_country == country:
        return False
    return not (platform_country in _EUROPE and country in _EUROPE)


def connected_balance_account(
    streamer_id: str, currency: str, bucket: str = "stripe_balance"
) -> str:
    """Manual payouts: the streamer's connected account at Stripe, in ``currency``
    (``stripe_balance``: its balance; ``bank_transit``: payouts on their way to the bank)."""
    return f"streamer:{streamer_id}:{bucket}:{currency}"


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
    service_agreement: str | None = None
    """``full``, or ``recipient`` for an account abroad (cross-border payouts)."""

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
            "service_agreement": self.service_agreement,
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
    back). A refused transfer (``failed``, ``ledger_state="voided"``) or a reversal
    puts the money back in earnings; a failed or canceled *bank* payout (manual
    payouts, ``ledger_state="held"``) leaves it on the connected account, where
    Stripe returned it, until :meth:`Payouts.repay` pays it out again. ``review``:
    held while a compliance case about the streamer is open (nothing has moved at
    Stripe); ``refused``: refused by monitoring or after review, its hold voided
    (the money is back in earnings)."""
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
    source_transaction: str | None = None
    """The charge that funded the transfer while the platform's funds were pending."""
    transfer_attempts: int = 0
    """Transfers refused for lack of available funds so far (each retry: a new key)."""
    bank_attempts: int = 0
    """Manual payouts: bank payouts made again (or refused) so far."""
    arrival_currency: str | None = None
    """What the connected account received: Stripe converts into its currency."""
    arrival_stripe_amount: int | None = None
    on_account_minor: int = 0
    """Manual payouts: money of this payout on the connected account (``arrival_currency``
    minor units), not yet paid to the bank."""

    @property
    def transfer_group(self) -> str:
        return f"payout:{self.payout_id}"

    @property
    def is_open(self) -> bool:
        """Still waiting for Stripe (a transfer or a bank payout to confirm)."""
        return self.status in OPEN_STATUSES

    @property
    def awaiting_repayment(self) -> bool:
        """A bank payout failed or was canceled: the money is on the connected account."""
        return self.status in ("failed", "canceled") and self.ledger_state == "held"

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
            "source_transaction": self.source_transaction,
            "arrival_currency": self.arrival_currency,
            "arrival_stripe_amount": self.arrival_stripe_amount,
            "on_account_minor": self.on_account_minor,
        }


@dataclass(frozen=True, slots=True)
class PayoutDiscrepancy:
    """A payout whose ledger state and Stripe state disagreed (``reconcile()``)."""

    payout_id: str
    streamer_id: str
    problem: str
    """``transfer_not_recorded``, ``transfer_missing``, ``transfer_waiting_for_funds``,
    ``bank_payout_missing``, ``bank_payout_not_recorded``, ``bank_status_changed``,
    ``transfer_reversed``, ``awaiting_repayment``, ``multiple_transfers``,
    ``transfer_mismatch``, ``needs_review``, ``stripe_error``."""
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
class Facts:
    """What Stripe says about a payout, to merge into its row (only ever forwards)."""

    transfer: TransferSnapshot | None = None
    bank: PayoutSnapshot | None = None
    arrival: BalanceTxn | None = None
    """Manual payouts: the transfer's payment on the connected account."""


class _PayoutsCore:
    """What every part of :class:`Payouts` uses (set in its constructor)."""

    economy: GiftEconomy
    ledger: Ledger
    gateway: PaymentGateway
    manual_payouts: bool
    platform_country: str
    clock: Clock
    inbox: WebhookInbox
    _t: LedgerTables

    @property
    def _mode(self) -> Literal["automatic", "manual"]:
        return "manual" if self.manual_payouts else "automatic"

    def _lock(self, conn: Connection, payout_id: str) -> Any:
        p = self._t.payouts
        check_text(payout_id, "payout_id", max_length=255)
        row = conn.execute(sa.select(p).where(p.c.id == payout_id).with_for_update()).first()
        if row is None:
            raise UnknownPayout(f"no payout {payout_id!r}", payout_id=payout_id)
        return row

    def _load(self, conn: Connection, payout_id: str) -> PayoutRecord:
        p = self._t.payouts
        check_text(payout_id, "payout_id", max_length=255)
        row = conn.execute(sa.select(p).where(p.c.id == payout_id)).first()
        if row is None:
            raise UnknownPayout(f"no payout {payout_id!r}", payout_id=payout_id)
        return record_of(row)

    def _update(self, conn: Connection, payout_id: str, now: datetime, **values: Any) -> None:
        p = self._t.payouts
        conn.execute(p.update().where(p.c.id == payout_id).values(updated_at=now, **values))
        log_payout_status(payout_id, values)

    def _note(self, payout_id: str, message: str) -> None:
        now = self.clock()
        self.ledger.atomic(
            lambda tx: self._update(tx.connection(), payout_id, now, last_error=message[:1000])
        )

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
            record = record_of(Row({**payout, "updated_at": now}))
        self.economy.outbox.write(conn, topic, dedupe_key, record.to_dict(), entry_id=None, now=now)

    def payout(self, payout_id: str) -> PayoutRecord:
        """One payout by id (``UnknownPayout`` if none)."""
        if not isinstance(payout_id, str):
            raise InvalidInput("payout_id must be a string")
        return self.ledger.read(lambda conn: self._load(conn, payout_id))

    def _account_row(self, conn: Connection, row: Any) -> ConnectedAccount | None:
        """A connected account from its row (its sealed details opened)."""
        if row is None:
            return None
        return account_of(Row(open_account_values(self.economy.compliance, conn, row)))

    def _account_values(
        self, conn: Connection, streamer: str, state: ConnectedAccountState, now: datetime
    ) -> dict[str, Any]:
        """What to store of Stripe's account state (its details sealed, with a keyring)."""
        values = state_values(state)
        compliance = self.economy.compliance
        return compliance.seal_account(conn, streamer, values, now=now) if compliance else values


class Row:
    """A dict seen through attribute access, like a SQLAlchemy row."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def record_of(row: Any, *, replayed: bool = False) -> PayoutRecord:
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
        source_transaction=row.source_transaction,
        transfer_attempts=row.transfer_attempts,
        bank_attempts=row.bank_attempts,
        arrival_currency=row.arrival_currency,
        arrival_stripe_amount=row.arrival_stripe_amount,
        on_account_minor=row.on_account_minor,
    )


def replace_replayed(record: PayoutRecord, replayed: bool) -> PayoutRecord:
    return record if record.replayed == replayed else replace(record, replayed=replayed)


def progress(record: PayoutRecord) -> tuple[Any, ...]:
    return (
        record.status,
        record.ledger_state,
        record.transfer_id,
        record.transfer_reversed_minor,
        record.stripe_payout_id,
        record.stripe_payout_status,
        record.returned_usd_minor,
        record.on_account_minor,
        record.source_transaction,
    )


def account_of(row: Any) -> ConnectedAccount:
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
        service_agreement=row.service_agreement,
    )


def state_values(state: ConnectedAccountState) -> dict[str, Any]:
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
        "service_agreement": state.service_agreement,
    }


def refused(exc: PaymentProviderError) -> bool:
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


def unknown_outcome(record: PayoutRecord, exc: PaymentProviderError) -> PaymentProviderError:
    return PaymentProviderError(
        f"Stripe could not be reached to transfer payout {record.payout_id}: {exc.message}. "
        "The payout is pending (its hold stays): retry with the same idempotency key, or "
        "reconcile() will finish it; it is never transferred twice",
        retryable=True,
        payout_id=record.payout_id,
        status="pending",
    )


def bank_minor(stripe_amount: int | None, currency: str | None) -> int | None:
    """A bank payout's amount in the ledger's minor units of its currency (None: unknown)."""
    if stripe_amount is None or not currency:
        return None
    try:
        return from_stripe_amount(stripe_amount, currency)
    except InvalidInput:
        return None


def usd(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise InvalidInput(
            "idempotency_key must be a non-empty string of at most 200 characters",
            field="idempotency_key",
        )
    return check_text(key, "idempotency_key", max_length=200)
