"""The webhook inbox: verified Stripe events, deduplicated in the effect's transaction.

Stripe delivers at least once and in any order. Each handler records the
event id in ``{prefix}webhook_events`` inside the same database transaction as
the event's effect: if the row is already there the whole transaction rolls
back and the delivery is answered as a duplicate, so an effect can never
happen twice, and never be lost half-done. Events the service cannot apply
yet (a purchase it does not know) are *parked* with their payload and
retried later (``retry_parked``); they are never dropped. With a keyring
(``Compliance(keyring=...)``) a parked payload is stored sealed: Stripe's
objects carry customers' emails, names and addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._core import Compliance, open_payload
from spaktok_ledger._service._gateway import WebhookEvent
from spaktok_ledger._store import Ledger

__all__ = ["DuplicateDelivery", "WebhookInbox", "WebhookResult"]

Endpoint = Literal["platform", "connect"]


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


class DuplicateDelivery(Exception):
    """Raised inside a handler's transaction to roll it back: the event was applied."""


class WebhookInbox:
    """Event bookkeeping shared by the purchase and payout webhooks."""

    def __init__(self, ledger: Ledger, compliance: Compliance | None = None) -> None:
        self._ledger = ledger
        self._compliance = compliance
        self._t = ledger.tables.webhook_events

    def status(self, event_id: str) -> str | None:
        """``processed``, ``ignored``, ``parked`` or None (never seen)."""
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
        another delivery already applied it (a parked event may be completed)."""
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
            },
            where=t.c.status == "parked",
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
    ) -> None:
        """Keep an event we cannot apply yet (its payload too) for ``retry_parked``."""
        t = self._t

        def run(tx: Ledger) -> None:
            conn = tx.connection()
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
            )
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[t.c.event_id],
                    set_={"attempts": t.c.attempts + 1, "last_error": reason[:1000]},
                    where=t.c.status == "parked",
                )
            )

        self._ledger.atomic(run)

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


def _dialect_insert(conn: Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
