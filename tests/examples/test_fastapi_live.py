"""The FastAPI example with fast webhook acknowledgement, its in-process worker and relay,
and live gifts over a WebSocket from Redis (issue 12, items 3 and 5)."""

from __future__ import annotations

import time
import uuid

import pytest
from examples.common.services import Settings

from spaktok_ledger.testing import FakeStripe, signed_event
from tests.service.test_relay import REDIS_URL, _need

pytest.importorskip("fastapi")
from examples.fastapi_app.app import create_app
from fastapi.testclient import TestClient

SECRET = "whsec_live_platform"
CONNECT_SECRET = "whsec_live_connect"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(tmp_path, request):
    _need(6379, "Redis")
    with FakeStripe() as fake:
        stream_prefix = f"test:{uuid.uuid4().hex[:8]}:"
        settings = Settings(
            stripe_secret_key="sk_test_live",
            stripe_webhook_secret=SECRET,
            stripe_connect_webhook_secret=CONNECT_SECRET,
            database_url=f"sqlite:///{tmp_path / 'live.db'}",
            stripe_api_base=fake.url,
            rates="static",
            webhook_mode="fast-ack",
            in_process_worker=True,
            redis_url=REDIS_URL,
            redis_stream_prefix=stream_prefix,
        )
        try:
            # The async app builds its services on its own event loop; the tests use
            # the sync services of its in-process worker (same database) directly.
            with TestClient(create_app(settings=settings)) as client:
                services = client.app.state.services.background
                assert services is not None
                yield client, services, fake
        finally:
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            for key in r.scan_iter(f"{stream_prefix}*"):
                r.delete(key)
            r.close()


def until(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def buy(client, fake, user: str = "alice") -> dict:
    headers = {"X-User-Id": user}
    quote = client.post("/api/quotes", json={"pack_id": "starter", "currency": "USD"}, headers=headers)
    assert quote.status_code == 201, quote.text
    checkout = client.post(
        "/api/payments/create-checkout-session",
        json={"quote_id": quote.json()["id"]},
        headers={**headers, "Idempotency-Key": f"buy-{user}"},
    )
    assert checkout.status_code == 201, checkout.text
    return fake.complete_checkout(checkout.json()["checkout_session_id"])


def test_webhooks_are_acknowledged_fast_and_applied_by_the_worker(app) -> None:
    """The endpoint answers queued without applying; the app's worker credits the coins."""
    client, services, fake = app
    event = buy(client, fake)
    body, header = signed_event(event, SECRET)
    answer = client.post("/api/payments/webhook", content=body, headers={"Stripe-Signature": header})
    assert answer.status_code == 200
    assert answer.json()["outcome"] in ("queued", "duplicate")
    until(lambda: services.economy.wallet("alice").coins == 500)
    # The event's row is marked processed in its own transaction after the credit:
    # until then a copy is acknowledged as queued (200 either way).
    until(lambda: services.payments.inbox.status(event["id"]) == "processed")
    again = client.post("/api/payments/webhook", content=body, headers={"Stripe-Signature": header})
    assert again.json()["outcome"] == "duplicate"
    forged = client.post(
        "/api/payments/webhook", content=body, headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert forged.status_code == 400


def test_viewers_see_gifts_live_over_the_websocket(app) -> None:
    """A socket watching bob receives the gift sent to him (relayed through Redis), not
    the one sent to someone else, with the outbox event id to dedupe on."""
    client, services, fake = app
    services.economy.register_streamer("bob")
    services.economy.register_streamer("eve")
    services.economy.open_user("alice")
    services.economy.credit_purchase("alice", coins=1000, price_usd_minor=1000, idempotency_key="f")
    with client.websocket_connect("/api/streams/bob/gifts") as socket:
        for streamer, key in (("eve", "g1"), ("bob", "g2")):
            sent = client.post(
                "/api/gifts/send",
                json={"streamer_id": streamer, "gift_id": "rose", "quantity": 1},
                headers={"X-User-Id": "alice", "Idempotency-Key": key},
            )
            assert sent.status_code == 201, sent.text
        message = socket.receive_json()
    assert message["gift"]["streamer_id"] == "bob"
    assert message["gift"]["sender_id"] == "alice"
    assert message["event_id"].endswith(f"outbox:{message['event_id'].rsplit(':', 1)[1]}")


def test_a_bad_streamer_id_closes_the_socket(app) -> None:
    """An id outside the pattern is refused (policy violation)."""
    from starlette.websockets import WebSocketDisconnect

    client, _, _ = app
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/api/streams/bad%20id/gifts") as socket:
            socket.receive_json()
    assert closed.value.code == 1008


def test_start_up_objects_are_kept_out_of_the_garbage_collector(tmp_path) -> None:
    """While it serves, the app has frozen what start-up built (``gc.freeze``: no full
    collection walks it, each of which stalled every request for about 0.1 s); at
    shut-down it gives it back to the collector."""
    import gc

    before = gc.get_freeze_count()
    with FakeStripe() as fake:
        settings = Settings(
            stripe_secret_key="sk_test_live",
            stripe_webhook_secret=SECRET,
            stripe_connect_webhook_secret=CONNECT_SECRET,
            database_url=f"sqlite:///{tmp_path / 'frozen.db'}",
            stripe_api_base=fake.url,
            rates="static",
        )
        with TestClient(create_app(settings=settings)) as client:
            assert gc.get_freeze_count() > before + 10_000
            assert client.get("/api/wallet/balance", headers={"X-User-Id": "alice"}).status_code == 200
        assert gc.get_freeze_count() == 0
