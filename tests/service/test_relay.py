"""The outbox relay against the real Redis and RabbitMQ on this machine (issue 12, item 5).

At least once, in order per stream, with a stable event id; nothing is
acknowledged that a broker did not accept. Both ledger backends.
"""

from __future__ import annotations

import json
import os
import socket
import uuid

import pytest

from spaktok_ledger import (
    GiftEconomy,
    InvalidInput,
    OutboxRelay,
    PublishError,
    RabbitMQPublisher,
    RedisStreamsPublisher,
)
from tests.errors import assert_error
from tests.service.conftest import fund

REDIS_URL = os.environ.get("SPAKTOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("SPAKTOK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _need(port: int, name: str) -> None:
    if not _answers(port):
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not answering on 127.0.0.1:{port} (.ci/run starts it)")
        pytest.skip(f"{name} is not answering on 127.0.0.1:{port}")


@pytest.fixture
def redis_client():
    _need(6379, "Redis")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def stream_prefix(redis_client):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


@pytest.fixture
def gifts(economy: GiftEconomy) -> GiftEconomy:
    economy.register_streamer("bob")
    economy.register_streamer("eve")
    economy.open_user("alice")
    fund(economy, "alice", 100_000)
    return economy


def send(economy: GiftEconomy, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        economy.send_gift("alice", "bob" if i % 2 else "eve", "rose", 1, idempotency_key=f"g{i}")


def entries(redis_client, stream: str) -> list[dict]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} | {"_id": sid.decode()}
        for sid, fields in redis_client.xrange(stream)
    ]


class FailingPublisher:
    def __init__(self) -> None:
        self.fail = True

    def publish(self, events, *, event_ids) -> None:
        if self.fail:
            raise PublishError("broker down", broker="test")

    def close(self) -> None:
        pass


class TestRedisStreams:
    def test_events_arrive_in_order_with_stable_ids(self, gifts, redis_client, stream_prefix) -> None:
        """Every pending event lands on its topic's stream in outbox order, carrying
        ``{prefix}outbox:{id}``; then it is acknowledged and not published again."""
        send(gifts, 5)
        pending = gifts.outbox.pending(limit=100)
        relay = OutboxRelay(gifts.outbox, [RedisStreamsPublisher(REDIS_URL, stream_prefix=stream_prefix)])
        assert relay.run_once() == len(pending)
        assert gifts.outbox.pending() == []
        gifts_stream = entries(redis_client, f"{stream_prefix}gift.sent")
        sent = [e for e in pending if e.topic == "gift.sent"]
        assert [g["event_id"] for g in gifts_stream] == [relay.event_id(e) for e in sent]
        assert [g["_id"] for g in gifts_stream] == [f"{e.id}-0" for e in sent]
        assert json.loads(gifts_stream[0]["payload"]) == json.loads(
            json.dumps(sent[0].payload, sort_keys=True)
        )
        assert relay.run_once() == 0
        relay.close()

    def test_a_batch_published_again_adds_nothing(self, gifts, redis_client, stream_prefix) -> None:
        """At least once: a crash between publish and ack publishes the batch again, and
        Redis refuses the ids it has, so each stream still holds each event once."""
        send(gifts, 4)
        publisher = RedisStreamsPublisher(REDIS_URL, stream_prefix=stream_prefix)
        events = gifts.outbox.pending()
        relay = OutboxRelay(gifts.outbox, [publisher])
        ids = [relay.event_id(e) for e in events]
        publisher.publish(events, event_ids=ids)  # published, then the relay "crashed"
        send(gifts, 2, start=4)
        assert relay.run_once() == len(events) + 2
        streamed = entries(redis_client, f"{stream_prefix}gift.sent")
        assert len(streamed) == len({s["event_id"] for s in streamed}) == 6
        relay.close()

    def test_a_failing_broker_acknowledges_nothing(self, gifts, redis_client, stream_prefix) -> None:
        """When one publisher refuses, the batch stays pending for the next round."""
        send(gifts, 3)
        failing = FailingPublisher()
        relay = OutboxRelay(
            gifts.outbox,
            [RedisStreamsPublisher(REDIS_URL, stream_prefix=stream_prefix), failing],
        )
        before = len(gifts.outbox.pending())
        with pytest.raises(PublishError) as caught:
            relay.run_once()
        assert_error(caught.value, PublishError, ["broker down"], {"broker": "test"})
        assert len(gifts.outbox.pending()) == before
        failing.fail = False
        assert relay.run_once() == before
        assert len(entries(redis_client, f"{stream_prefix}gift.sent")) == 3
        relay.close()

    def test_one_relay_of_a_name_publishes_at_a_time(self, gifts, stream_prefix) -> None:
        """Two relays with one name: the lease holder publishes, the other waits, so
        order per stream holds; after close() the other takes over."""
        send(gifts, 2)
        one = OutboxRelay(gifts.outbox, [RedisStreamsPublisher(REDIS_URL, stream_prefix=stream_prefix)])
        two = OutboxRelay(gifts.outbox, [RedisStreamsPublisher(REDIS_URL, stream_prefix=stream_prefix)])
        assert one.run_once() > 0
        send(gifts, 2, start=2)
        assert two.run_once() == 0
        one.close()
        assert two.run_once() > 0
        two.close()

    def test_bad_settings_are_refused(self, gifts) -> None:
        """A relay without publishers, or with a silly batch, is InvalidInput."""
        with pytest.raises(InvalidInput):
            OutboxRelay(gifts.outbox, [])
        with pytest.raises(InvalidInput):
            OutboxRelay(gifts.outbox, [FailingPublisher()], batch=0)


class TestRabbitMQ:
    def test_events_arrive_in_order_with_message_ids(self, gifts) -> None:
        """A queue bound to the exchange gets every gift in order, persistent, with the
        stable event id as message_id; the body carries topic and payload."""
        _need(5672, "RabbitMQ")
        import pika

        exchange = f"test.{uuid.uuid4().hex[:8]}"
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, exchange, routing_key="gift.#")
        try:
            send(gifts, 6)
            sent = [e for e in gifts.outbox.pending(limit=100) if e.topic == "gift.sent"]
            relay = OutboxRelay(gifts.outbox, [RabbitMQPublisher(AMQP_URL, exchange=exchange)])
            assert relay.run_once() >= len(sent)
            got = []
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                got.append((properties, json.loads(body)))
            assert [p.message_id for p, _ in got] == [relay.event_id(e) for e in sent]
            assert all(p.delivery_mode == 2 for p, _ in got)
            assert got[0][1]["topic"] == "gift.sent"
            assert json.loads(got[0][1]["payload"])["streamer_id"] == sent[0].payload["streamer_id"]
            relay.close()
        finally:
            channel.exchange_delete(exchange)
            connection.close()

    def test_an_unreachable_broker_is_a_publish_error(self, gifts) -> None:
        """A broker that does not answer is a PublishError, and nothing is acknowledged."""
        send(gifts, 1)
        before = len(gifts.outbox.pending())
        relay = OutboxRelay(
            gifts.outbox, [RabbitMQPublisher("amqp://guest:guest@127.0.0.1:1/%2F")]
        )
        with pytest.raises(PublishError):
            relay.run_once()
        assert len(gifts.outbox.pending()) == before
        relay.close()
