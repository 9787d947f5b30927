"""An outbox of domain events, written in the same transaction as their entries.

Hosts that animate gifts live or notify users read pending events, deliver
them (a websocket, a queue), then acknowledge them. An event exists if and
only if its entry committed, so nothing is announced that did not happen and
nothing that happened is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._domain import check_json
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._store import Ledger
from spaktok_ledger._store._together import Attached

__all__ = ["Outbox", "OutboxEvent"]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A domain event: ``gift.sent``, ``wallet.credited``, ``earnings.matured``..."""

    id: int
    topic: str
    entry_id: int | None
    payload: Mapping[str, Any]
    created_at: datetime
    acked_at: datetime | None = None


class Outbox:
    """Read and acknowledge domain events::

    for event in economy.outbox.pending(limit=100):
        websocket.broadcast(event.topic, event.payload)
    economy.outbox.ack([e.id for e in events])
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._t = ledger.tables.outbox

    def write(
        self,
        conn: Connection,
        topic: str,
        dedupe_key: str,
        payload: Mapping[str, Any],
        *,
        entry_id: int | None,
        now: datetime,
    ) -> None:
        """Add an event inside the caller's transaction (used by the services)."""
        conn.execute(
            self._t.insert(),
            {
                "topic": topic,
                "dedupe_key": dedupe_key,
                "entry_id": entry_id,
                "payload": check_json(payload, name="payload"),
                "created_at": now,
            },
        )

    def attached(
        self, topic: str, key_prefix: str, payload: Mapping[str, Any], *, now: datetime
    ) -> Attached:
        """An event to write with a new entry (``Ledger._post_with``): its dedupe key is
        ``key_prefix`` and the entry's id, and ``payload["entry_id"]`` is that id.

        ``payload`` is stored as given: the services call this with payloads they
        built from checked values (``write`` checks a payload with ``check_json``)."""
        return Attached(
            self._t,
            {"topic": topic, "payload": dict(payload), "created_at": now},
            entry_id="entry_id",
            key=("dedupe_key", key_prefix),
            payload=("payload", "entry_id"),
        )

    def find(self, conn: Connection, dedupe_key: str) -> OutboxEvent | None:
        row = conn.execute(sa.select(self._t).where(self._t.c.dedupe_key == dedupe_key)).first()
        return None if row is None else _event(row)

    def pending(
        self, *, limit: int = 100, topics: Iterable[str] | None = None
    ) -> list[OutboxEvent]:
        """Unacknowledged events, oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be an int from 1 to 10,000")
        t = self._t
        query = sa.select(t).where(t.c.acked_at.is_(None)).order_by(t.c.id).limit(limit)
        if topics is not None:
            query = query.where(t.c.topic.in_(sorted(set(topics))))
        return self._ledger.read(lambda conn: [_event(r) for r in conn.execute(query)])

    def ack(self, event_ids: Iterable[int]) -> int:
        """Mark events delivered; returns how many were newly acknowledged."""
        ids = sorted({int(i) for i in event_ids})
        if not ids:
            return 0
        t = self._t
        now = self._ledger.now()

        def run(tx: Ledger) -> int:
            result = tx.connection().execute(
                t.update().where(t.c.id.in_(ids), t.c.acked_at.is_(None)).values(acked_at=now)
            )
            return int(result.rowcount)

        return self._ledger.atomic(run)


def _event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        topic=row.topic,
        entry_id=row.entry_id,
        payload=row.payload,
        created_at=row.created_at,
        acked_at=row.acked_at,
    )
