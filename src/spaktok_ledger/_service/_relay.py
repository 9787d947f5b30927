"""The outbox relay: publish outbox events to Redis Streams and RabbitMQ, at least once.

The outbox (``_outbox.py``) holds an event exactly when its entry committed.
:class:`OutboxRelay` reads the pending events in id order, hands the batch to
each publisher, and acknowledges it only when every publisher has accepted
it (Redis answered the pipeline; RabbitMQ confirmed every message). A crash
in between publishes the batch again: delivery is *at least once*, and each
message carries a stable ``event_id`` (``{prefix}outbox:{id}``) consumers
dedupe on. Order: one relay holds a lease (``{prefix}worker_jobs``, row
``relay:{name}``) at a time and publishes in outbox order, so each stream or
routing key sees its events in the order they were written.

- :class:`RedisStreamsPublisher`: ``XADD`` to ``{stream_prefix}{topic}``, with
  the outbox id as the entry id (``{id}-0``): Redis refuses an id it already
  has, so a batch published again adds nothing (the stream itself dedupes).
- :class:`RabbitMQPublisher`: a durable topic exchange, routing key = topic,
  persistent messages, ``message_id`` = the event id, publisher confirms.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from spaktok_ledger._errors import InvalidInput, PublishError
from spaktok_ledger._service._outbox import Outbox, OutboxEvent
from spaktok_ledger._service._outbox import _event as outbox_event
from spaktok_ledger._store import Ledger

__all__ = [
    "OutboxPublisher",
    "OutboxRelay",
    "RabbitMQPublisher",
    "RedisStreamsPublisher",
    "event_message",
]


class OutboxPublisher(Protocol):
    """Where the relay sends events: publish a batch (in order) or raise."""

    def publish(self, events: Sequence[OutboxEvent], *, event_ids: Sequence[str]) -> None: ...

    def close(self) -> None: ...


def event_message(event: OutboxEvent, event_id: str) -> dict[str, str]:
    """The message fields every broker gets: ``event_id``, ``topic``, ``entry_id``,
    ``created_at`` (ISO 8601) and ``payload`` (JSON text)."""
    return {
        "event_id": event_id,
        "topic": event.topic,
        "entry_id": "" if event.entry_id is None else str(event.entry_id),
        "created_at": event.created_at.isoformat(),
        "payload": json.dumps(event.payload, sort_keys=True, separators=(",", ":")),
    }


class RedisStreamsPublisher:
    """``XADD`` each event to the stream ``{stream_prefix}{topic}`` (entry id ``{outbox id}-0``).

    ``url``: ``redis://127.0.0.1:6379/0`` by default. ``maxlen``: trim each stream
    to about that many entries (``None``: never trim).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream_prefix: str = "spaktok:",
        maxlen: int | None = 1_000_000,
        client: Any = None,
    ) -> None:
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)):
            raise InvalidInput("maxlen must be an int or None")
        if client is None:
            import redis

            client = redis.Redis.from_url(url)
        self.client = client
        self.stream_prefix = stream_prefix
        self.maxlen = maxlen

    def stream(self, topic: str) -> str:
        """The stream a topic's events go to."""
        return f"{self.stream_prefix}{topic}"

    def publish(self, events: Sequence[OutboxEvent], *, event_ids: Sequence[str]) -> None:
        import redis

        pipe = self.client.pipeline(transaction=False)
        for event, event_id in zip(events, event_ids, strict=True):
            pipe.xadd(
                self.stream(event.topic),
                event_message(event, event_id),
                id=f"{event.id}-0",
                maxlen=self.maxlen,
                approximate=True,
            )
        try:
            answers = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise PublishError(f"Redis refused the batch: {exc}", broker="redis") from exc
        for answer in answers:
            # An id the stream already has: this event was published before a crash.
            if isinstance(answer, redis.ResponseError) and "equal or smaller" in str(answer):
                continue
            if isinstance(answer, Exception):
                raise PublishError(f"Redis refused an event: {answer}", broker="redis")

    def close(self) -> None:
        self.client.close()


class RabbitMQPublisher:
    """Publish to a durable topic exchange (routing key: the topic), with confirms.

    ``url``: ``amqp://guest:guest@127.0.0.1:5672/%2F`` by default. Bind a queue
    to the exchange with ``gift.#`` (or ``#``) to receive the events.
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
        *,
        exchange: str = "spaktok.outbox",
    ) -> None:
        import pika

        self._pika = pika
        self.url = url
        self.exchange = exchange
        self._connection: Any = None
        self._channel: Any = None

    def _open(self) -> Any:
        pika = self._pika
        if self._channel is None or not self._channel.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = self._connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def publish(self, events: Sequence[OutboxEvent], *, event_ids: Sequence[str]) -> None:
        pika = self._pika
        try:
            channel = self._open()
            for event, event_id in zip(events, event_ids, strict=True):
                message = event_message(event, event_id)
                channel.basic_publish(
                    self.exchange,
                    event.topic,
                    json.dumps(message, separators=(",", ":")).encode(),
                    pika.BasicProperties(
                        content_type="application/json",
                        delivery_mode=2,
                        message_id=event_id,
                        type=event.topic,
                    ),
                    mandatory=False,
                )
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise PublishError(f"RabbitMQ refused the batch: {exc!r}", broker="rabbitmq") from exc

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(self._pika.exceptions.AMQPError):
                connection.close()


class OutboxRelay:
    """Move outbox events to brokers, at least once, in order; ack what they accepted.

    >>> relay = OutboxRelay(economy, [RedisStreamsPublisher()])  # doctest: +SKIP
    >>> relay.run_once()  # events published this round  # doctest: +SKIP
    12
    """

    def __init__(
        self,
        outbox: Outbox,
        publishers: Iterable[OutboxPublisher],
        *,
        batch: int = 500,
        topics: Iterable[str] | None = None,
        name: str = "default",
        lease: timedelta = timedelta(seconds=30),
        idle_seconds: float = 0.2,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """``outbox``: ``economy.outbox``. ``name``: relays with one name take turns
        (one holds the lease and publishes); give each set of publishers its own."""
        self.publishers = list(publishers)
        if not self.publishers:
            raise InvalidInput("an OutboxRelay needs at least one publisher")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise InvalidInput("batch must be an int from 1 to 10,000")
        if not isinstance(name, str) or not 1 <= len(name) <= 50:
            raise InvalidInput("name must be a string of 1 to 50 characters")
        self.outbox = outbox
        self.ledger: Ledger = outbox._ledger
        self.batch = batch
        self.topics = None if topics is None else sorted(set(topics))
        self.job = f"relay:{name}"
        self.lease = lease
        self.idle_seconds = float(idle_seconds)
        self.published = 0
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._owner = uuid.uuid4().hex
        self._t = self.ledger.tables.worker_jobs

    def event_id(self, event: OutboxEvent) -> str:
        """The stable id consumers dedupe on: ``{prefix}outbox:{id}``."""
        return f"{self.ledger.tables.prefix}outbox:{event.id}"

    def run_once(self) -> int:
        """Publish one batch if this relay holds (or takes) the lease; returns how many."""
        events = self._lease_and_read()
        if not events:
            return 0
        ids = [self.event_id(e) for e in events]
        for publisher in self.publishers:
            publisher.publish(events, event_ids=ids)
        self.outbox.ack(e.id for e in events)
        self.published += len(events)
        if self._on_progress is not None:
            self._on_progress(
                f"published {len(events)} event(s) up to #{events[-1].id} ({self.published} in all)"
            )
        return len(events)

    def run_forever(self, *, stop: threading.Event | None = None) -> None:
        """Publish until :meth:`stop`; a broker or database outage is retried after
        ``idle_seconds``."""
        while not (self._stop.is_set() or (stop is not None and stop.is_set())):
            try:
                count = self.run_once()
            except Exception as exc:  # a broker or database outage: retry
                if self._on_progress is not None:
                    self._on_progress(f"error: {type(exc).__name__}: {exc}")
                count = 0
            if count < self.batch:
                self._stop.wait(self.idle_seconds)
        self._release()

    def stop(self) -> None:
        """Ask ``run_forever`` to return after the current batch."""
        self._stop.set()

    def close(self) -> None:
        """Close the publishers' connections and give the lease back."""
        self._release()
        for publisher in self.publishers:
            publisher.close()

    def _lease_and_read(self) -> list[OutboxEvent]:
        """Hold (or take) the lease and read the next batch, in one transaction."""
        out = self.outbox._t
        query = sa.select(out).where(out.c.acked_at.is_(None)).order_by(out.c.id)
        if self.topics is not None:
            query = query.where(out.c.topic.in_(self.topics))

        def run(tx: Ledger) -> list[OutboxEvent]:
            conn = tx.connection()
            if not self._take_lease(conn):
                return []
            return [outbox_event(row) for row in conn.execute(query.limit(self.batch))]

        return self.ledger.atomic(run)

    def _take_lease(self, conn: Any) -> bool:
        t = self._t
        now = self.ledger.now()
        if conn.execute(sa.select(t.c.name).where(t.c.name == self.job)).first() is None:
            from sqlalchemy.dialects import postgresql, sqlite

            insert: Any = (
                postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            )(t)
            conn.execute(
                insert.values(name=self.job, next_run_at=now, runs=0).on_conflict_do_nothing(
                    index_elements=[t.c.name]
                )
            )
        taken = conn.execute(
            t.update()
            .where(
                t.c.name == self.job,
                sa.or_(
                    t.c.lease_until.is_(None),
                    t.c.lease_until < now,
                    t.c.lease_owner == self._owner,
                ),
            )
            .values(lease_owner=self._owner, lease_until=now + self.lease, last_run_at=now)
        )
        return bool(taken.rowcount)

    def _release(self) -> None:
        t = self._t
        self.ledger.atomic(
            lambda tx: tx.connection().execute(
                t.update()
                .where(t.c.name == self.job, t.c.lease_owner == self._owner)
                .values(lease_owner=None, lease_until=None)
            )
        )
