"""The worker: drains the webhook inbox and runs the periodic jobs on schedules.

With a fast acknowledgement (``Payments.accept_webhook``) the endpoint only
verifies and stores each delivery; the worker applies them. It also retries
parked events after their backoff, and runs hold expiry, earnings
maturation, refund retries, payout reconciliation and the Stripe sweep on
their schedules. A host runs it in its own scheduler (``run_once()`` from a
cron-like loop) or as a process (``run_forever()``, ``spaktok-ledger worker``).

Several workers may run at once. Events are claimed with a lease in the
inbox (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never wait on each
other; on SQLite the database's single writer serializes the claims), and
each periodic job with a lease in ``{prefix}worker_jobs``, so a job runs in
one worker when it is due, and a crashed worker's leases expire.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from spaktok_ledger._errors import InvalidInput, LedgerError
from spaktok_ledger._service._webhooks import (
    LEASE,
    WebhookResult,
    acting_as,
    new_owner,
)
from spaktok_ledger._store import Ledger

if TYPE_CHECKING:
    from spaktok_ledger._service._gifts import GiftEconomy
    from spaktok_ledger._service._payments import Payments
    from spaktok_ledger._service._payouts import Payouts

__all__ = ["Worker", "WorkerReport", "WorkerSchedule"]

JOBS: Final = ("expire_holds", "mature_earnings", "retry_refunds", "reconcile_payouts", "sweep")


@dataclass(frozen=True, slots=True)
class WorkerSchedule:
    """How often each periodic job runs (``None``: never in this worker)."""

    expire_holds: timedelta | None = timedelta(minutes=1)
    """``Ledger.expire_holds``: holds past their expiry are voided."""
    mature_earnings: timedelta | None = timedelta(minutes=5)
    """``GiftEconomy.mature_earnings``: gift shares past their hold period."""
    retry_refunds: timedelta | None = timedelta(minutes=5)
    """``Payments.retry_refunds``: refunds the library owes and Stripe has not shown."""
    reconcile_payouts: timedelta | None = timedelta(minutes=15)
    """``Payouts.reconcile``: open payouts compared with Stripe."""
    sweep: timedelta | None = timedelta(hours=1)
    """``Reconciliation.run``: missed events, balance transactions, balances."""

    def __post_init__(self) -> None:
        for name in JOBS:
            every = getattr(self, name)
            if every is not None and (
                not isinstance(every, timedelta) or every < timedelta(seconds=1)
            ):
                raise InvalidInput(f"{name} must be a timedelta of at least 1 second, or None")

    def every(self, name: str) -> timedelta | None:
        value: timedelta | None = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one ``run_once()`` did."""

    events: int = 0
    """Inbox events handled (applied, parked again, duplicates)."""
    outcomes: Mapping[str, int] = field(default_factory=dict)
    """How many events ended with each outcome (``credited``, ``parked``...)."""
    jobs: tuple[str, ...] = ()
    """The periodic jobs this run executed."""
    errors: tuple[str, ...] = ()
    """Failures (an event stays queued or parked for a later run)."""

    @property
    def idle(self) -> bool:
        """Nothing was due."""
        return self.events == 0 and not self.jobs and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "outcomes": dict(self.outcomes),
            "jobs": list(self.jobs),
            "errors": list(self.errors),
        }


class Worker:
    """Drain the inbox and run the periodic jobs; safe to run in several processes.

    >>> worker = Worker(payments, payouts)  # doctest: +SKIP
    >>> worker.run_once().events  # doctest: +SKIP
    3
    >>> threading.Thread(target=worker.run_forever).start(); worker.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        payments: Payments | None = None,
        payouts: Payouts | None = None,
        *,
        economy: GiftEconomy | None = None,
        schedule: WorkerSchedule | None = None,
        batch: int = 100,
        lease: timedelta = LEASE,
        idle_seconds: float = 0.5,
        threads: int = 1,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """``payments`` and/or ``payouts``: the services whose events the worker
        applies (the platform and Connect endpoints). ``economy`` defaults to
        theirs. ``batch``: events claimed per round. ``idle_seconds``: how long
        ``run_forever`` sleeps when nothing was due. ``threads``: how many of a
        round's events are applied at once (each waits on Stripe's answers and the
        database, so on PostgreSQL more threads apply more events per second; on
        SQLite, whose single writer serializes them, 1 is right). Each thread holds
        at most one of the engine's pooled connections at a time: the default pool
        (5, and 10 more on demand) serves up to 15 threads. ``on_progress``
        receives one line per round that did something (the CLI prints them)."""
        if payments is None and payouts is None and economy is None:
            raise InvalidInput("a Worker needs payments, payouts or an economy")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise InvalidInput("batch must be an int from 1 to 10,000")
        if not isinstance(lease, timedelta) or lease < timedelta(seconds=1):
            raise InvalidInput("lease must be a timedelta of at least 1 second")
        if not isinstance(idle_seconds, int | float) or idle_seconds < 0:
            raise InvalidInput("idle_seconds must be a number >= 0")
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 16:
            raise InvalidInput("threads must be an int from 1 to 16")
        self.payments = payments
        self.payouts = payouts
        found = economy or (payments.economy if payments else None)
        found = found or (payouts.economy if payouts else None)
        assert found is not None
        self.economy: GiftEconomy = found
        self.ledger: Ledger = found.ledger
        self.schedule = schedule or WorkerSchedule()
        self.batch = batch
        self.lease = lease
        self.idle_seconds = float(idle_seconds)
        self.threads = threads
        self.owner = new_owner()
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._jobs = self.ledger.tables.worker_jobs
        service = payments or payouts
        self._inbox = service.inbox if service is not None else None
        self._clock = service.clock if service is not None else self.ledger.now

    def __repr__(self) -> str:
        return f"Worker(owner={self.owner[:8]})"

    # -- the loop --------------------------------------------------------------------

    def run_once(self) -> WorkerReport:
        """One round: up to ``batch`` due events, then every periodic job that is due."""
        outcomes: Counter[str] = Counter()
        errors: list[str] = []
        events = self._drain(outcomes, errors)
        jobs = []
        for name in JOBS:
            every = self.schedule.every(name)
            run = self._job(name)
            if every is None or run is None:
                continue
            if self._claim_job(name):
                jobs.append(name)
                try:
                    summary = run()
                except LedgerError as exc:
                    errors.append(f"{name}: {exc}")
                    self._finish_job(name, every, f"failed: {exc}", failed=True)
                else:
                    self._finish_job(name, every, summary, failed=False)
        report = WorkerReport(events, dict(outcomes), tuple(jobs), tuple(errors))
        if self._on_progress is not None and not report.idle:
            self._on_progress(_line(report))
        return report

    def run_forever(self, *, stop: threading.Event | None = None) -> None:
        """Run rounds until :meth:`stop` (or ``stop.set()``); sleeps only when idle."""
        while not (self._stop.is_set() or (stop is not None and stop.is_set())):
            try:
                report = self.run_once()
            except Exception as exc:  # a database outage must not end the loop
                if self._on_progress is not None:
                    self._on_progress(f"error: {type(exc).__name__}: {exc}")
                self._stop.wait(max(self.idle_seconds, 1.0))
                continue
            if report.idle or report.events < self.batch:
                self._stop.wait(self.idle_seconds)

    def stop(self) -> None:
        """Ask ``run_forever`` to return after the current round."""
        self._stop.set()

    # -- events ----------------------------------------------------------------------

    def _drain(self, outcomes: Counter[str], errors: list[str]) -> int:
        if self._inbox is None:
            return 0
        taken = self._inbox.take_due(
            owner=self.owner, now=self._clock(), limit=self.batch, lease=self.lease
        )
        threads = min(self.threads, len(taken))
        if threads > 1:
            # Events of one purchase or payout applied at once are safe: each is
            # claimed and applied as inline deliveries are (units of work lock in one
            # order; a copy in progress answers at once). Results keep claim order.
            with ThreadPoolExecutor(threads, thread_name_prefix="spaktok-worker") as pool:
                results = list(pool.map(self._attempt, taken))
        else:
            results = [self._attempt(event) for event in taken]
        handled = 0
        for (_, payload), result in zip(taken, results, strict=True):
            if isinstance(result, LedgerError):
                errors.append(f"event {payload.get('id')}: {result}")
                continue
            handled += 1
            outcomes[result.outcome] += 1
        return handled

    def _attempt(self, claimed: tuple[str, Mapping[str, Any]]) -> WebhookResult | LedgerError:
        """Apply one claimed event as this worker (the lease's owner); a LedgerError
        is returned, not raised: the event stays queued or parked for a later round."""
        endpoint, payload = claimed
        with acting_as(self.owner):
            try:
                return self._apply(endpoint, payload)
            except LedgerError as exc:
                return exc

    def _apply(self, endpoint: str, payload: Mapping[str, Any]) -> WebhookResult:
        service: Any = self.payments if endpoint == "platform" else self.payouts
        if service is None:
            raise InvalidInput(f"this worker has no service for the {endpoint} endpoint")
        return service.handle_event(service.gateway.parse_event(payload))  # type: ignore[no-any-return]

    # -- periodic jobs -----------------------------------------------------------------

    def _job(self, name: str) -> Callable[[], str] | None:
        payments, payouts = self.payments, self.payouts
        if name == "expire_holds":
            return lambda: f"{len(self.ledger.expire_holds(now=self._clock()))} hold(s) expired"
        if name == "mature_earnings":
            return lambda: f"{len(self.economy.mature_earnings(now=self._clock()))} matured"
        if name == "retry_refunds" and payments is not None:
            return lambda: f"{len(payments.retry_refunds())} refund(s) retried"
        if name == "reconcile_payouts" and payouts is not None:
            return lambda: f"{len(payouts.reconcile())} payout discrepancy(ies)"
        if name == "sweep" and payments is not None:
            from spaktok_ledger._service._reconcile import Reconciliation

            def sweep() -> str:
                report = Reconciliation(payments, payouts).run()
                return f"{len(report.events_applied)} missed event(s), ok={report.ok}"

            return sweep
        return None

    def _claim_job(self, name: str) -> bool:
        t = self._jobs
        now = self._clock()

        def run(tx: Ledger) -> bool:
            conn = tx.connection()
            if conn.execute(sa.select(t.c.name).where(t.c.name == name)).first() is None:
                insert: Any = _insert(conn)(t).values(name=name, next_run_at=now, runs=0)
                conn.execute(insert.on_conflict_do_nothing(index_elements=[t.c.name]))
            claimed = conn.execute(
                t.update()
                .where(
                    t.c.name == name,
                    t.c.next_run_at <= now,
                    sa.or_(t.c.lease_until.is_(None), t.c.lease_until < now),
                )
                .values(lease_owner=self.owner, lease_until=now + self.lease)
            )
            return bool(claimed.rowcount)

        return self.ledger.atomic(run)

    def _finish_job(self, name: str, every: timedelta, summary: str, *, failed: bool) -> None:
        t = self._jobs
        now = self._clock()
        # A failed job is tried again sooner, never more often than once a minute.
        wait = min(every, timedelta(minutes=1)) if failed else every
        values: dict[str, Any] = {
            "next_run_at": now + wait,
            "lease_owner": None,
            "lease_until": None,
            "last_run_at": now,
            "last_result": summary[:1000],
            "runs": t.c.runs + 1,
        }
        if failed:
            values["failures"] = t.c.failures + 1
        self.ledger.atomic(
            lambda tx: tx.connection().execute(
                t.update().where(t.c.name == name, t.c.lease_owner == self.owner).values(**values)
            )
        )

    def jobs(self) -> list[dict[str, Any]]:
        """The periodic jobs' state: next run, last run and result, runs, failures."""
        t = self._jobs
        rows = self.ledger.read(
            lambda conn: list(conn.execute(sa.select(t).order_by(t.c.name)).mappings())
        )
        return [dict(row) for row in rows]


def _line(report: WorkerReport) -> str:
    parts = [f"{report.events} event(s)"]
    if report.outcomes:
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(report.outcomes.items())))
    if report.jobs:
        parts.append("jobs: " + ", ".join(report.jobs))
    if report.errors:
        parts.append(f"{len(report.errors)} error(s): {report.errors[0]}")
    return "; ".join(parts)


def _insert(conn: Any) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
