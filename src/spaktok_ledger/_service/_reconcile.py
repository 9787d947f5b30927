"""Reconciliation: proof that the books and Stripe agree, and repair where they do not.

:meth:`Reconciliation.run` (``spaktok-ledger reconcile``) does, in order:

1. **Sweep missed events.** Stripe retries a webhook for up to three days and
   then gives up (https://docs.stripe.com/webhooks#retries); it keeps events
   for 30 days (https://docs.stripe.com/api/events/list). Every event of the
   types the endpoints handle, since the stored cursor, is listed and applied
   if the inbox has not applied it (parked ones are tried again). Connect
   events are listed on each linked connected account.
2. **Sweep open objects**: purchases whose checkout is still open or waiting
   (their events may be older than Stripe keeps), refunds still due, and
   payouts (:meth:`Payouts.reconcile`).
3. **Walk Stripe's balance transactions** of the platform (and, with manual
   payouts, of every linked connected account) since the stored cursor, and
   match each, by id, to what the ledger booked (the index of
   ``_stripe_index.py``): *missing in the ledger*, *missing at Stripe*,
   *amount or currency mismatch*. What can be repaired is re-converged (the
   purchase or payout the money belongs to is synced; top-ups and the
   platform's own bank payouts are booked) and matched again.
4. **Compare balances** per account and currency: the ledger's Stripe
   accounts (``platform:stripe_balance[:CUR]``, with manual payouts
   ``streamer:{id}:stripe_balance:{CUR}``) against Stripe's balance,
   available plus pending (https://docs.stripe.com/api/balance).

The report lists every drift found, repaired or not; :attr:`ReconcileReport.ok`
is true when none is left. Each step is incremental (cursors in
``{prefix}stripe_cursors``, migration 0007), re-reading an overlap so that
transactions created while the last run was listing are not missed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from spaktok_ledger._clock import Clock
from spaktok_ledger._currency import from_stripe_amount
from spaktok_ledger._domain import AccountKind, AccountSpec, EntryDraft, EntryType, Posting
from spaktok_ledger._errors import LedgerError, PaymentProviderError
from spaktok_ledger._service._gateway import BalanceTxn, WebhookEvent
from spaktok_ledger._service._payments import PURCHASE_EVENTS, Payments
from spaktok_ledger._service._payout_events import CONNECT_EVENTS, TRANSFER_EVENTS
from spaktok_ledger._service._payout_rows import PayoutDiscrepancy, connected_balance_account
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger._service._settlement import STRIPE_BALANCE, stripe_balance_account
from spaktok_ledger._service._stripe_index import (
    PLATFORM,
    read_cursor,
    record_booked,
    record_seen,
    write_cursor,
)
from spaktok_ledger._service._webhooks import WebhookResult
from spaktok_ledger._store import Ledger

__all__ = ["BalanceCheck", "Drift", "ReconcileReport", "Reconciliation"]

Progress = Callable[[str, int, int], None]

EVENT_RETENTION: Final = timedelta(days=30)
TOPUPS: Final = "platform:stripe_topups"
BANK: Final = "platform:bank"
# Connected-account transactions the ledger books one by one (manual payouts); the
# others there (a reversal's payment refund) are covered by the balance comparison.
_BOOKED_ON_ACCOUNTS: Final = frozenset({"payment", "payout", "payout_failure", "payout_cancel"})
_OPEN_PURCHASES: Final = ("open", "waiting", "error")


@dataclass(frozen=True, slots=True)
class Drift:
    """One way the books and Stripe disagreed."""

    kind: str
    """``missing_in_ledger``, ``missing_at_stripe``, ``amount_mismatch``,
    ``currency_mismatch`` or ``balance_difference``."""
    stripe_account: str
    """``platform`` or a connected account (``acct_...``)."""
    currency: str
    ledger_minor: int | None
    """What the ledger has (minor units of ``currency``)."""
    stripe_minor: int | None
    """What Stripe has (a transaction's net, or a balance's available plus pending)."""
    detail: str
    repaired: bool
    """True: reconciliation brought the ledger in line; False: a person must look."""
    txn_id: str | None = None
    source_id: str | None = None
    type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stripe_account": self.stripe_account,
            "currency": self.currency,
            "ledger_minor": self.ledger_minor,
            "stripe_minor": self.stripe_minor,
            "detail": self.detail,
            "repaired": self.repaired,
            "txn_id": self.txn_id,
            "source_id": self.source_id,
            "type": self.type,
        }


@dataclass(frozen=True, slots=True)
class BalanceCheck:
    """One currency of one Stripe account, as the ledger and Stripe have it."""

    stripe_account: str
    currency: str
    ledger_minor: int
    stripe_available_minor: int
    stripe_pending_minor: int

    @property
    def difference_minor(self) -> int:
        return self.ledger_minor - self.stripe_available_minor - self.stripe_pending_minor

    def to_dict(self) -> dict[str, Any]:
        return {
            "stripe_account": self.stripe_account,
            "currency": self.currency,
            "ledger_minor": self.ledger_minor,
            "stripe_available_minor": self.stripe_available_minor,
            "stripe_pending_minor": self.stripe_pending_minor,
            "difference_minor": self.difference_minor,
        }


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What :meth:`Reconciliation.run` found and did."""

    drift: tuple[Drift, ...]
    balances: tuple[BalanceCheck, ...]
    events_applied: tuple[WebhookResult, ...] = ()
    """Events Stripe sent that the ledger had not applied (now applied)."""
    payouts: tuple[PayoutDiscrepancy, ...] = ()
    """Payouts whose state disagreed with Stripe (see ``Payouts.reconcile``)."""
    transactions_checked: int = 0
    errors: tuple[str, ...] = field(default=())
    """Stripe calls that failed (the next run tries again)."""

    @property
    def unresolved(self) -> tuple[Drift, ...]:
        return tuple(d for d in self.drift if not d.repaired)

    @property
    def ok(self) -> bool:
        """No drift left and no error: the books equal Stripe."""
        return not self.unresolved and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "drift": [d.to_dict() for d in self.drift],
            "balances": [b.to_dict() for b in self.balances],
            "events_applied": [e.to_dict() for e in self.events_applied],
            "payouts": [p.to_dict() for p in self.payouts],
            "transactions_checked": self.transactions_checked,
            "errors": list(self.errors),
        }


@dataclass(slots=True)
class _Run:
    now: datetime
    drift: list[Drift] = field(default_factory=list)
    balances: list[BalanceCheck] = field(default_factory=list)
    events: list[WebhookResult] = field(default_factory=list)
    payouts: list[PayoutDiscrepancy] = field(default_factory=list)
    checked: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ts(self) -> int:
        return int(self.now.timestamp())


class Reconciliation:
    """Compare the books with Stripe, repair what can be repaired, report the rest.

    >>> report = Reconciliation(payments, payouts).run()  # doctest: +SKIP
    >>> report.ok, [d.kind for d in report.unresolved]  # doctest: +SKIP
    (True, [])
    """

    def __init__(
        self,
        payments: Payments,
        payouts: Payouts | None = None,
        *,
        overlap: timedelta = timedelta(hours=1),
        clock: Clock | None = None,
    ) -> None:
        self.payments = payments
        self.payouts = payouts
        self.ledger: Ledger = payments.ledger
        self.gateway = payments.gateway
        self.overlap = int(overlap.total_seconds())
        self.clock: Clock = clock or payments.clock
        self._t = self.ledger.tables

    def run(self, *, on_progress: Progress | None = None) -> ReconcileReport:
        """Sweep, walk, compare; see the module's description."""
        run = _Run(self.clock())
        progress = on_progress or (lambda _stage, _done, _total: None)
        try:
            self._sweep_events(run, progress)
            self._sweep_objects(run, progress)
            for account in self._accounts():
                self._walk(run, account, progress)
                self._compare(run, account)
        except PaymentProviderError as exc:
            run.errors.append(exc.message)
        return ReconcileReport(
            drift=tuple(run.drift),
            balances=tuple(run.balances),
            events_applied=tuple(run.events),
            payouts=tuple(run.payouts),
            transactions_checked=run.checked,
            errors=tuple(run.errors),
        )

    # -- streams ---------------------------------------------------------------------

    def _linked_accounts(self) -> list[str]:
        if self.payouts is None:
            return []
        t = self._t.connected_accounts
        query = sa.select(t.c.account_id).order_by(t.c.account_id)
        return self.ledger.read(lambda conn: list(conn.execute(query).scalars()))

    def _accounts(self) -> list[str | None]:
        """The Stripe balances the ledger mirrors: the platform's, and with manual payouts
        the connected accounts' (with automatic payouts their money is the streamer's)."""
        manual = self.payouts is not None and self.payouts.manual_payouts
        return [None, *(self._linked_accounts() if manual else [])]

    def _cursor(self, name: str) -> int | None:
        return self.ledger.read(lambda conn: read_cursor(conn, self._t, name))

    def _advance_cursor(self, name: str, created: int, now: datetime) -> None:
        self.ledger.atomic(lambda tx: write_cursor(tx.connection(), self._t, name, created, now))

    # -- 1. events -------------------------------------------------------------------

    def _sweep_events(self, run: _Run, progress: Progress) -> None:
        streams: list[tuple[str | None, frozenset[str]]] = [
            (None, PURCHASE_EVENTS | (TRANSFER_EVENTS if self.payouts else frozenset()))
        ]
        streams += [(account, CONNECT_EVENTS) for account in self._linked_accounts()]
        for index, (account, types) in enumerate(streams):
            name = f"events:{account or PLATFORM}"
            cursor = self._cursor(name)
            since = (
                cursor - self.overlap
                if cursor is not None
                else run.ts - int(EVENT_RETENTION.total_seconds())
            )
            latest = cursor or since
            for event in self.gateway.list_events(
                sorted(types), created_gte=since, account=account
            ):
                latest = max(latest, event.created)
                if self.payments.inbox.status(event.id) in ("processed", "ignored"):
                    continue
                result = self._apply_event(event, account)
                if result.outcome not in ("duplicate", "ignored"):
                    run.events.append(result)
            self._advance_cursor(name, latest, run.now)
            progress("events", index + 1, len(streams))

    def _apply_event(self, event: WebhookEvent, account: str | None) -> WebhookResult:
        if account is not None or (event.type in TRANSFER_EVENTS and self.payouts is not None):
            assert self.payouts is not None
            return self.payouts.handle_event(event)
        return self.payments.handle_event(event)

    # -- 2. open objects -------------------------------------------------------------

    def _sweep_objects(self, run: _Run, progress: Progress) -> None:
        p = self._t.purchases
        recent = run.now - timedelta(days=2)  # a Checkout Session lives at most 24 hours
        query = (
            sa.select(p.c.id)
            .where(
                p.c.status.in_(_OPEN_PURCHASES),
                p.c.checkout_session_id.is_not(None),
                p.c.created_at >= recent,
            )
            .order_by(p.c.created_at)
        )
        open_ids = self.ledger.read(lambda conn: list(conn.execute(query).scalars()))
        for index, purchase_id in enumerate(open_ids):
            self.payments.sync(purchase_id)
            progress("open purchases", index + 1, len(open_ids))
        self.payments.retry_refunds()
        if self.payouts is not None:
            run.payouts.extend(self.payouts.reconcile(limit=500))

    # -- 3. balance transactions -----------------------------------------------------

    def _walk(self, run: _Run, account: str | None, progress: Progress) -> None:
        name = f"txns:{account or PLATFORM}"
        cursor = self._cursor(name)
        since = max(cursor - self.overlap, 0) if cursor is not None else 0
        txns = list(self.gateway.balance_transactions(created_gte=since, account=account))
        stripe_account = account or PLATFORM

        def seen(tx: Ledger) -> None:
            for txn in txns:
                record_seen(tx.connection(), self._t, txn, run.now)

        self.ledger.atomic(seen)
        run.checked += len(txns)
        by_id = {t.id: t for t in txns}
        rows = self._open_rows(stripe_account, since)
        for index, row in enumerate(rows):
            self._match(run, row, by_id.get(row.txn_id), account)
            progress(f"transactions {stripe_account}", index + 1, len(rows))
        latest = max((t.created for t in txns), default=cursor or 0)
        self._advance_cursor(name, latest, run.now)

    def _open_rows(self, stripe_account: str, since: int) -> list[Any]:
        """Index rows to look at: everything seen or booked in the window, and older rows
        still unmatched (a drift stays listed until it is resolved)."""
        t = self._t.stripe_txns
        query = (
            sa.select(t)
            .where(
                t.c.stripe_account == stripe_account,
                sa.or_(
                    t.c.stripe_created >= since,
                    sa.and_(t.c.seen_at.is_not(None), t.c.booked_net_minor.is_(None)),
                ),
            )
            .order_by(t.c.stripe_created, t.c.txn_id)
        )
        return self.ledger.read(lambda conn: list(conn.execute(query)))

    def _reload(self, txn_id: str) -> Any:
        t = self._t.stripe_txns
        return self.ledger.read(
            lambda conn: conn.execute(sa.select(t).where(t.c.txn_id == txn_id)).first()
        )

    def _match(self, run: _Run, row: Any, txn: BalanceTxn | None, account: str | None) -> None:
        stripe_account = account or PLATFORM
        if row.seen_at is not None and row.booked_net_minor is None:
            if account is not None and row.type not in _BOOKED_ON_ACCOUNTS:
                return  # covered by the balance comparison
            repaired = False
            if txn is not None:
                repaired = self._repair(txn, account)
                row = self._reload(row.txn_id)
                repaired = repaired and row.booked_net_minor is not None
            run.drift.append(
                Drift(
                    "missing_in_ledger",
                    stripe_account,
                    row.currency,
                    row.booked_net_minor,
                    row.stripe_net_minor,
                    f"Stripe {row.type} {row.source_id}: "
                    + ("booked now" if repaired else "the ledger has no entry for it"),
                    repaired,
                    row.txn_id,
                    row.source_id,
                    row.type,
                )
            )
            if not repaired:
                return
        if row.booked_net_minor is not None and row.seen_at is None:
            run.drift.append(
                Drift(
                    "missing_at_stripe",
                    stripe_account,
                    row.currency,
                    row.booked_net_minor,
                    None,
                    f"the ledger booked {row.type} {row.source_id}; Stripe does not list it",
                    False,
                    row.txn_id,
                    row.source_id,
                    row.type,
                )
            )
            return
        if row.stripe_currency is not None and row.stripe_currency != row.currency:
            kind = "currency_mismatch"
        elif row.stripe_net_minor is not None and row.stripe_net_minor != row.booked_net_minor:
            kind = "amount_mismatch"
        else:
            return
        run.drift.append(
            Drift(
                kind,
                stripe_account,
                row.currency,
                row.booked_net_minor,
                row.stripe_net_minor,
                f"{row.type} {row.source_id}: the ledger booked {row.booked_net_minor} "
                f"{row.currency}, Stripe has {row.stripe_net_minor} {row.stripe_currency}",
                False,
                row.txn_id,
                row.source_id,
                row.type,
            )
        )

    def _repair(self, txn: BalanceTxn, account: str | None) -> bool:
        """Re-converge what the money belongs to; returns whether anything was tried."""
        try:
            if account is None and txn.type == "topup":
                return self._book_platform(txn, TOPUPS, AccountKind.EQUITY, "top-up")
            if account is None and txn.type in ("payout", "payout_failure", "payout_cancel"):
                return self._book_platform(txn, BANK, AccountKind.ASSET, "bank payout")
            purchase = self._purchase_for(txn)
            if purchase is not None:
                self.payments.sync(purchase)
                return True
            payout = self._payout_for(txn)
            if payout is not None and self.payouts is not None:
                self.payouts.reconcile_payout(payout)
                return True
        except (LedgerError, PaymentProviderError):
            return False
        return False

    def _purchase_for(self, txn: BalanceTxn) -> str | None:
        p = self._t.purchases
        purchase_id = txn.metadata.get("purchase_id")
        if purchase_id:
            return purchase_id
        if not txn.charge_id:
            return None
        charge = txn.charge_id
        return self.ledger.read(
            lambda conn: conn.execute(sa.select(p.c.id).where(p.c.charge_id == charge)).scalar()
        )

    def _payout_for(self, txn: BalanceTxn) -> str | None:
        p = self._t.payouts
        if txn.metadata.get("payout_id"):
            return txn.metadata["payout_id"]
        conditions = []
        if txn.transfer_id:
            conditions.append(p.c.transfer_id == txn.transfer_id)
        if txn.source_id:
            conditions.append(p.c.stripe_payout_id == txn.source_id)
        if not conditions:
            return None
        query = sa.select(p.c.id).where(sa.or_(*conditions)).limit(1)
        return self.ledger.read(lambda conn: conn.execute(query).scalar())

    def _book_platform(self, txn: BalanceTxn, other: str, kind: AccountKind, what: str) -> bool:
        """Money the platform itself moved at Stripe: a top-up, or a payout of the
        platform's balance to its own bank (and its failure)."""
        if txn.currency != "USD":
            return False
        now = self.clock()

        def run(tx: Ledger) -> None:
            tx.open_accounts([AccountSpec(other, kind, "USD", allow_overdraft=True)])
            entry = tx.post(
                EntryDraft(
                    EntryType.TRANSFER,
                    (Posting(STRIPE_BALANCE, txn.net_minor), Posting(other, -txn.net_minor)),
                    f"stripe_txn:{txn.id}",
                    description=f"Stripe {what} {txn.source_id}: USD {txn.net_minor / 100:.2f}",
                    metadata={"stripe_txn": txn.id, "source": txn.source_id, "type": txn.type},
                    effective_at=now,
                )
            )
            record_booked(
                tx.connection(), self._t, [txn], subject_id=None, entry_id=entry.id, now=now
            )

        self.ledger.atomic(run)
        return True

    # -- 4. balances -----------------------------------------------------------------

    def _compare(self, run: _Run, account: str | None) -> None:
        stripe = {b.currency: b for b in self.gateway.balance(account)}
        ledger = self._ledger_balances(account)
        for currency in sorted(set(stripe) | set(ledger)):
            there = stripe.get(currency)
            available = from_stripe_amount(there.available_minor, currency) if there else 0
            pending = from_stripe_amount(there.pending_minor, currency) if there else 0
            check = BalanceCheck(
                account or PLATFORM, currency, ledger.get(currency, 0), available, pending
            )
            run.balances.append(check)
            if check.difference_minor:
                run.drift.append(
                    Drift(
                        "balance_difference",
                        account or PLATFORM,
                        currency,
                        check.ledger_minor,
                        available + pending,
                        f"the ledger has {check.ledger_minor}, Stripe {available} available "
                        f"and {pending} pending",
                        False,
                    )
                )

    def _ledger_balances(self, account: str | None) -> dict[str, int]:
        if account is None:
            codes: Iterable[Any] = self.ledger.accounts(prefix=STRIPE_BALANCE)
            accounts = [a for a in codes if a.code == stripe_balance_account(a.currency)]
        else:
            streamer = self._streamer_of(account)
            if streamer is None:
                return {}
            prefix = connected_balance_account(streamer, "")
            accounts = [a for a in self.ledger.accounts(prefix=prefix) if a.code.count(":") == 3]
        found = self.ledger.balances([a.code for a in accounts]) if accounts else {}
        return {found[a.code].currency: found[a.code].posted_minor for a in accounts}

    def _streamer_of(self, account: str) -> str | None:
        t = self._t.connected_accounts
        return self.ledger.read(
            lambda conn: conn.execute(
                sa.select(t.c.streamer_id).where(t.c.account_id == account)
            ).scalar()
        )
