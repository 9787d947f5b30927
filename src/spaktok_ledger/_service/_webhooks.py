"""The webhook inbox: verified Stripe events, deduplicated in the effect's transaction.

Stripe delivers at least once and in any order. Each handler records the
event id in ``{prefix}webhook_events`` inside the same database transaction as
the event's effect: if the row is already there the whole transaction rolls
back and the delivery is answered as a duplicate, so an effect can never
happen twice, and never be lost half-done. Events the service cannot apply
yet (a purchase it does not know) are *parked* with their payload and
retried later (``retry_parked``, the :class:`Worker`, or at once when the
purchase or payout they name is written: their ``wake_key``); they are never
dropped. With a keyring
(``Compliance(keyring=...)``) a parked payload is stored sealed: Stripe's
objects carry customers' emails, names and addresses.

Claims (migration 0012): before any Stripe call a delivery *claims* the event
id, inserting its row as ``queued`` with the payload and a lease
(``lease_owner``, ``lease_until``). Concurrent copies of the event find the
lease and answer at once (``in_progress``) without calling Stripe; a claimant
that crashes leaves a queued row whose lease expires, and the worker (or the
next delivery) takes it over. The dedupe in the effect's transaction stays
the guarantee; the claim only keeps copies from all fetching from Stripe.
A fast acknowledgement (``accept``) stores the event ``queued`` without a
lease for the worker to apply.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._core import Compliance, open_payload
from spaktok_ledger._service._gateway import WebhookEvent
from spaktok_ledger._store import Ledger

__all__ = ["DuplicateDelivery", "WebhookInbox", "WebhookResult"]

Endpoint = Literal["platform", "connect"]
Claim = Literal["claimed", "done", "busy"]

LEASE = timedelta(seconds=60)
"""How long a claim keeps other deliveries and workers off an event: longer than
any Stripe round trip the handler makes, short enough that a crash is soon undone."""
PARKED_BACKOFF_FIRST = timedelta(seconds=30)
PARKED_BACKOFF_MAX = timedelta(hours=1)

_owner: ContextVar[str | None] = ContextVar("spaktok_inbox_owner", default=None)


def new_owner() -> str:
    """A lease owner id: one per delivery, or one per worker process."""
    return uuid.uuid4().hex


def current_owner() -> str:
    """The owner set by :func:`acting_as` (the worker), else a fresh one."""
    return _owner.get() or new_owner()


@contextmanager
def acting_as(owner: str) -> Iterator[None]:
    """Handle events as ``owner``: the worker's claims are then the handler's."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def parked_backoff(attempts: int) -> timedelta:
    """Wait before the ``attempts``-th retry of a parked event: 30 s doubling, at most 1 h."""
    seconds = PARKED_BACKOFF_FIRST.total_seconds() * 2 ** min(max(attempts - 1, 0), 20)
    return min(timedelta(seconds=seconds), PARKED_BACKOFF_MAX)


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What a delivery did; the host answers 200 with it (it is JSON-friendly)."""

    event_id: str
    type: str
    outcome: str
    """What happened. Purchases: ``credited``, ``held``, ``refused``, ``waiting``,
    ``failed``, ``expired``, ``amount_mismatch``, ``clawed_back``, ``restored``,
    ``refunded`` (an early fraud warning: refund sent), ``fraud_warning``,
    ``settled``, ``no_change``. Payouts: ``kyc_updated``, ``paid``, ``failed``,
    ``canceled``, ``returned``, ``reversed``, ``recorded``, ``automatic_payout``,
    ``unchanged``, ``stale``, ``account_mismatch``. Both: ``ignored`` (a type the
    endpoint does not handle), ``parked`` (kept for ``retry_parked``),
    ``duplicate``."""
    subject_id: str | None = None
    """The purchase or payout the event was about."""
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "outcome": self.outcome,
            "subject_id": self.subject_id,
            "duplicate": self.duplicate,
        }


def acknowledged(event: WebhookEvent, status: str | None) -> WebhookResult:
    """A fast acknowledgement's answer, from the inbox status :meth:`WebhookInbox.accept`
    gave: ``duplicate`` for an event already applied (or ignored), else ``queued``;
    ``ignored`` when it was not stored (None: a type the endpoint does not handle)."""
    if status is None:
        return WebhookResult(event.id, event.type, "ignored")
    if status in ("processed", "ignored"):
        return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
    return WebhookResult(event.id, event.type, "queued")


class DuplicateDelivery(Exception):
    """Raised inside a handler's transaction to roll it back: the event was applied."""


class WebhookInbox:
    """Event bookkeeping shared by the purchase and payout webhooks."""

    def __init__(self, ledger: Ledger, compliance: Compliance | None = None) -> None:
        self._ledger = ledger
        self._compliance = compliance
        self._t = ledger.tables.webhook_events
        self._accepts: dict[str, Any] = {}
        t = self._t
        self._statuses_statement = sa.select(t.c.event_id, t.c.status).where(
            t.c.event_id.in_(sa.bindparam("event_ids", expanding=True))
        )

    def status(self, event_id: str) -> str | None:
        """``processed``, ``ignored``, ``parked``, ``queued`` or None (never seen)."""
        t = self._t
        return self._ledger.read(
            lambda conn: conn.execute(
                sa.select(t.c.status).where(t.c.event_id == event_id)
            ).scalar()
        )

    def record(
        self,
        conn: Connection,
        event: WebhookEvent,
        endpoint: Endpoint,
        *,
        outcome: str,
        subject_id: str | None,
        now: datetime,
        ignored: bool = False,
    ) -> None:
        """Mark the event applied, in the caller's transaction; ``DuplicateDelivery`` if
        another delivery already applied it (a parked or queued event may be completed)."""
        t = self._t
        values = {
            "event_id": event.id,
            "endpoint": endpoint,
            "type": event.type[:100],
            "account": event.account,
            "stripe_created": event.created,
            "status": "ignored" if ignored else "processed",
            "outcome": outcome,
            "subject_id": subject_id,
            "payload": None,
            "received_at": now,
            "processed_at": now,
        }
        insert = _dialect_insert(conn)(t).values(**values)
        statement = insert.on_conflict_do_update(
            index_elements=[t.c.event_id],
            set_={
                "status": insert.excluded.status,
                "outcome": insert.excluded.outcome,
                "subject_id": insert.excluded.subject_id,
                "payload": None,
                "processed_at": now,
                "attempts": t.c.attempts + 1,
                "last_error": None,
                "lease_owner": None,
                "lease_until": None,
                "wake_key": None,
                "next_attempt_at": None,
            },
            where=t.c.status.in_(["parked", "queued"]),
        ).returning(t.c.event_id)
        if conn.execute(statement).first() is None:
            raise DuplicateDelivery(event.id)

    def park(
        self,
        event: WebhookEvent,
        endpoint: Endpoint,
        *,
        reason: str,
        subject_id: str | None,
        now: datetime,
        wake_key: str | None = None,
    ) -> None:
        """Keep an event we cannot apply yet (its payload too) for ``retry_parked``,
        the worker (after a backoff) or the write of the object ``wake_key`` names."""
        t = self._t

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            # Each claim counted an attempt; the backoff grows with them.
            attempts = conn.execute(
                sa.select(t.c.attempts).where(t.c.event_id == event.id)
            ).scalar()
            tries = 1 if attempts is None else int(attempts)
            insert = _dialect_insert(conn)(t).values(
                event_id=event.id,
                endpoint=endpoint,
                type=event.type[:100],
                account=event.account,
                stripe_created=event.created,
                status="parked",
                outcome="parked",
                subject_id=subject_id,
                payload=self._seal(event),
                last_error=reason[:1000],
                received_at=now,
                wake_key=wake_key,
                next_attempt_at=now + parked_backoff(1),
            )
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[t.c.event_id],
                    set_={
                        "status": "parked",
                        "outcome": "parked",
                        "subject_id": subject_id,
                        "last_error": reason[:1000],
                        "wake_key": wake_key,
                        "next_attempt_at": now + parked_backoff(tries),
                        "lease_owner": None,
                        "lease_until": None,
                    },
                    where=t.c.status.in_(["parked", "queued"]),
                )
            )

        self._ledger.atomic(run)

    # -- claims, fast acknowledgement, wake-ups (migration 0012) ---------------------

    def claim(
        self,
        event: WebhookEvent,
        endpoint: Endpoint,
        *,
        owner: str,
        now: datetime,
        lease: timedelta = LEASE,
    ) -> Claim:
        """Take the event before calling Stripe for it: ``claimed`` (ours now),
        ``done`` (applied or ignored already) or ``busy`` (another delivery or
        worker holds an unexpired lease on it)."""
        t = self._t

        def run(tx: Ledger) -> bool:
            conn = tx.connection()
            insert = _dialect_insert(conn)(t).values(
                **self._queued(event, endpoint, now), lease_owner=owner, lease_until=now + lease
            )
            statement = insert.on_conflict_do_update(
                index_elements=[t.c.event_id],
                set_={
                    "lease_owner": owner,
                    "lease_until": now + lease,
                    "attempts": t.c.attempts + 1,
                },
                where=sa.and_(
                    t.c.status.in_(["parked", "queued"]),
                    sa.or_(
                        t.c.lease_until.is_(None),
                        t.c.lease_until < now,
                        t.c.lease_owner == owner,
                    ),
                ),
            ).returning(t.c.event_id)
            return conn.execute(statement).first() is not None

        if self._ledger.atomic(run):
            return "claimed"
        return "done" if self.status(event.id) in ("processed", "ignored") else "busy"

    def handle_claimed(
        self,
        event: WebhookEvent,
        endpoint: Endpoint,
        handler: Callable[[WebhookEvent], WebhookResult],
        clock: Callable[[], datetime],
    ) -> WebhookResult:
        """Claim ``event`` for this delivery, then run ``handler`` (which may call
        Stripe): a copy already applied answers ``duplicate``, one another delivery
        holds answers ``in_progress``; a failure gives the claim back, and an event
        handled without a record leaves no row."""
        owner = current_owner()
        claim = self.claim(event, endpoint, owner=owner, now=clock())
        if claim == "done":
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
        if claim == "busy":
            return WebhookResult(event.id, event.type, "in_progress", duplicate=True)
        try:
            result = handler(event)
        except BaseException as exc:
            self.release(event.id, owner, now=clock(), error=f"{type(exc).__name__}: {exc}")
            raise
        self.settle(event.id, owner)
        return result

    def release(self, event_id: str, owner: str, *, now: datetime, error: str) -> None:
        """Give a claim back after a failure (a Stripe outage): the next delivery may
        take it at once, the worker after a backoff."""
        t = self._t

        def run(tx: Ledger) -> None:
            tx.connection().execute(
                t.update()
                .where(
                    t.c.event_id == event_id,
                    t.c.lease_owner == owner,
                    t.c.status.in_(["parked", "queued"]),
                )
                .values(
                    lease_owner=None,
                    lease_until=None,
                    last_error=error[:1000],
                    next_attempt_at=now + parked_backoff(1),
                )
            )

        self._ledger.atomic(run)

    def settle(self, event_id: str, owner: str) -> None:
        """After a claimed event was handled without a record (a type or object the
        endpoint does not handle): remove the claim row, so nothing stays queued."""
        t = self._t

        def run(tx: Ledger) -> None:
            tx.connection().execute(
                t.delete().where(
                    t.c.event_id == event_id,
                    t.c.lease_owner == owner,
                    t.c.status == "queued",
                )
            )

        self._ledger.atomic(run)

    def _queued(self, event: WebhookEvent, endpoint: Endpoint, now: datetime) -> dict[str, Any]:
        """The inbox row of a verified event stored for later (claimed or accepted);
        its keys are ``_QUEUED_COLUMNS``, which the prebuilt acknowledgement binds."""
        return {
            "event_id": event.id,
            "endpoint": endpoint,
            "type": event.type[:100],
            "account": event.account,
            "stripe_created": event.created,
            "status": "queued",
            "outcome": "queued",
            "payload": self._seal(event),
            "received_at": now,
        }

    def accept(self, event: WebhookEvent, endpoint: Endpoint, *, now: datetime) -> str:
        """Store a verified event for the worker (a fast acknowledgement): ``queued``,
        or the status it already had (``processed``, ``ignored``, ``parked``)."""
        return self.accept_many([(event, endpoint, now)])[0]

    def accept_many(
        self, deliveries: Sequence[tuple[WebhookEvent, Endpoint, datetime]]
    ) -> list[str]:
        """:meth:`accept` for several deliveries (event, endpoint, received at) in one
        transaction, as concurrent acknowledgements are coalesced: one read of the
        statuses of those already stored, one insert of the new ones. A status per
        delivery, in order; copies of one event share the first copy's row.

        The read comes first so that a copy of an event the worker is applying right
        now is answered from its committed status: an insert of that id would wait
        for the worker's transaction (a unique check waits for an in-progress update
        of the conflicting row), and with it the whole batch. New rows are inserted
        in event-id order, so two processes' batches cannot deadlock each other.
        """
        rows: dict[str, dict[str, Any]] = {}
        for event, endpoint, received_at in deliveries:
            rows.setdefault(event.id, self._queued(event, endpoint, received_at))
        if not rows:
            return []

        def run(tx: Ledger) -> dict[str, str]:
            conn = tx.connection()
            found = conn.execute(self._statuses_statement, {"event_ids": list(rows)})
            statuses = {r.event_id: str(r.status) for r in found}
            new = sorted(
                (row for event_id, row in rows.items() if event_id not in statuses),
                key=lambda row: str(row["event_id"]),
            )
            if not new:
                return statuses
            inserted = conn.execute(
                self._accept_statement(conn), new[0] if len(new) == 1 else new
            ).scalars()
            statuses.update(dict.fromkeys(inserted, "queued"))
            skipped = [row["event_id"] for row in new if row["event_id"] not in statuses]
            if skipped:
                # Inserted by another transaction meanwhile (the insert waited for it
                # to commit): its status now. Not yet visible (SQLite): queued.
                found = conn.execute(self._statuses_statement, {"event_ids": skipped})
                statuses.update({r.event_id: str(r.status) for r in found})
            return statuses

        statuses = self._ledger.atomic(run)
        return [statuses.get(event.id, "queued") for event, _, _ in deliveries]

    def _accept_statement(self, conn: Connection) -> Any:
        """``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id``, built
        once per dialect: the acknowledgement's only write, run for every new event."""
        name = conn.dialect.name
        found = self._accepts.get(name)
        if found is None:
            t = self._t
            values: dict[str, Any] = {c: sa.bindparam(c) for c in _QUEUED_COLUMNS}
            found = (
                _dialect_insert(conn)(t)
                .values(values)
                .on_conflict_do_nothing(index_elements=[t.c.event_id])
                .returning(t.c.event_id)
            )
            self._accepts[name] = found
        return found

    def take_due(
        self, *, owner: str, now: datetime, limit: int, lease: timedelta = LEASE
    ) -> list[tuple[Endpoint, Mapping[str, Any]]]:
        """Claim up to ``limit`` events for a worker: queued ones (oldest first) and
        parked ones whose backoff is over, none under another unexpired lease.
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never wait on each other."""
        t = self._t
        free = sa.or_(t.c.lease_until.is_(None), t.c.lease_until < now)
        due = sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now)
        query = (
            sa.select(t.c.event_id, t.c.endpoint, t.c.payload)
            .where(t.c.status.in_(["queued", "parked"]), free, due)
            .order_by(t.c.received_at, t.c.event_id)
            .limit(limit)
        )

        def run(tx: Ledger) -> list[Any]:
            conn = tx.connection()
            locked = query.with_for_update(skip_locked=True)
            rows = list(conn.execute(locked if conn.dialect.name == "postgresql" else query))
            if rows:
                conn.execute(
                    t.update()
                    .where(t.c.event_id.in_([r.event_id for r in rows]))
                    .values(lease_owner=owner, lease_until=now + lease)
                )
            return rows

        rows = self._ledger.atomic(run)
        return [
            (row.endpoint, open_payload(self._compliance, row.payload, event_id=row.event_id))
            for row in rows
            if isinstance(row.payload, Mapping)
        ]

    def woken(self, keys: Iterable[str | None], *, limit: int = 100) -> list[Mapping[str, Any]]:
        """Parked events waiting for one of ``keys`` (the object was just written)."""
        wanted = sorted({k for k in keys if k})
        if not wanted:
            return []
        t = self._t
        query = (
            sa.select(t.c.event_id, t.c.payload)
            .where(t.c.status == "parked", t.c.wake_key.in_(wanted))
            .order_by(t.c.received_at, t.c.event_id)
            .limit(limit)
        )
        rows = self._ledger.read(lambda conn: list(conn.execute(query).all()))
        return [
            open_payload(self._compliance, payload, event_id=event_id)
            for event_id, payload in rows
            if isinstance(payload, Mapping)
        ]

    def parked(self, endpoint: Endpoint, *, limit: int = 100) -> list[Mapping[str, Any]]:
        """Parked events of an endpoint, oldest first, as Stripe sent them (the
        gateway's ``parse_event`` reads them back)."""
        t = self._t
        query = (
            sa.select(t.c.event_id, t.c.payload)
            .where(t.c.status == "parked", t.c.endpoint == endpoint)
            .order_by(t.c.received_at, t.c.event_id)
            .limit(limit)
        )
        rows = self._ledger.read(lambda conn: list(conn.execute(query).all()))
        return [
            open_payload(self._compliance, payload, event_id=event_id)
            for event_id, payload in rows
            if isinstance(payload, Mapping)
        ]

    def _seal(self, event: WebhookEvent) -> dict[str, Any]:
        if self._compliance is None:
            return dict(event.raw)
        return self._compliance.seal_payload(event.raw, event_id=event.id)


_QUEUED_COLUMNS = (
    "event_id",
    "endpoint",
    "type",
    "account",
    "stripe_created",
    "status",
    "outcome",
    "payload",
    "received_at",
)


def _dialect_insert(conn: Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
