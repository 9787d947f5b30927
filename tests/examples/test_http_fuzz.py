"""HTTP fuzzing of the example apps from their own OpenAPI documents (issue 13).

schemathesis reads each app's served document and generates requests for
every operation, valid ones and invalid ones (wrong types, missing fields,
odd headers, hostile strings), sent in-process (WSGI for Flask, ASGI for
FastAPI) to apps on PostgreSQL and the fake Stripe. Every response must be
below 500, have a status the document lists for the route, its content type
and its schema. Hand-picked hostile requests the battery found (NUL in
headers, deep JSON, other content types, forged cursors) are checked too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from examples.common.services import Services, Settings, build_services
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from spaktok_ledger.testing import FakeStripe
from tests.examples.harness import API_KEY, CONNECT_SECRET, SECRET

pytestmark = [pytest.mark.postgres]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("SPAKTOK_HTTP_FUZZ_EXAMPLES", "10"))
"""Requests per operation and generation mode (kept small: CI runs it on 2 cores)."""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


def _services(pg_database_url: str, fake: FakeStripe, prefix: str) -> Services:
    services = build_services(
        Settings(
            stripe_secret_key=API_KEY,
            stripe_webhook_secret=SECRET,
            stripe_connect_webhook_secret=CONNECT_SECRET,
            database_url=pg_database_url,
            table_prefix=prefix,
            stripe_api_base=fake.url,
            rates="static",
            payout_mode="manual",
            payout_minimum_usd_minor=100,
        )
    )
    services.economy.register_streamer("sam")
    services.economy.credit_purchase(
        "alice", coins=1000, price_usd_minor=1000, idempotency_key="fund:alice"
    )
    return services


@pytest.fixture(scope="module")
def flask_app(pg_database_url: str, fake: FakeStripe) -> Iterator[Any]:
    from examples.flask_app.app import create_app

    services = _services(pg_database_url, fake, "fz_flask_")
    yield create_app(services)
    services.close()


@pytest.fixture(scope="module")
def fastapi_app(pg_database_url: str, fake: FakeStripe) -> Iterator[Any]:
    """The async FastAPI app served by uvicorn in a thread; yields its base URL.

    Its asyncio services (database connections included) belong to the server's
    event loop, so the app is driven over HTTP rather than through in-process
    ASGI calls, which would each bring their own loop.
    """
    import threading
    import time

    import uvicorn
    from examples.fastapi_app.app import create_app

    from tests.examples.harness import free_port

    services = _services(pg_database_url, fake, "fz_fastapi_")  # schema, payee, funds
    settings = services.settings
    services.close()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings=settings), host="127.0.0.1", port=port,
                       log_level="warning", lifespan="on")
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def _schema(kind: str, app: Any) -> Any:
    if kind == "flask":
        return schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return schemathesis.openapi.from_url(f"{app}/openapi.json")


@pytest.fixture(params=["flask", "fastapi"])
def app_schema(request: pytest.FixtureRequest) -> tuple[str, Any, Any]:
    app = request.getfixturevalue(f"{request.param}_app")
    return request.param, app, _schema(request.param, app)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gives_a_server_error(app_schema, mode: GenerationMode) -> None:
    """Generated requests for every operation: no 5xx, and every answer as documented."""
    kind, _, schema = app_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    fuzzed = 0
    for operation in operations:
        for user in (None, {"X-User-Id": "alice"}):
            try:
                _fuzz(operation, mode, user)
            except Unsatisfiable:
                # An operation whose every input is valid (a GET with one optional
                # string header) has no invalid requests to generate.
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue
            fuzzed += 1
    assert fuzzed >= 12, fuzzed


def _fuzz(operation: Any, mode: GenerationMode, user: dict[str, str] | None) -> None:
    """``EXAMPLES`` generated requests to one operation, as ``user`` (or as sent)."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if user is not None:
            case.headers = {**(case.headers or {}), **user}
        case.call_and_validate(checks=CHECKS)

    run()


# -- the battery's HTTP findings, as fixed requests --------------------------------------


def _client(kind: str, app: Any) -> Any:
    if kind == "flask":
        return app.test_client()
    import httpx

    return httpx.Client(base_url=app, timeout=60, trust_env=False)


def _post(kind: str, client: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    if kind == "flask":
        return client.post(path, data=body, headers=headers)
    return client.post(path, content=body, headers=headers)


def _status(response: Any) -> int:
    return int(response.status_code)


def _json(response: Any) -> dict[str, Any]:
    data = response.get_json() if hasattr(response, "get_json") else response.json()
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("kind", ["flask", "fastapi"])
def test_battery_requests_are_client_errors(kind: str, request: pytest.FixtureRequest) -> None:
    """NUL in headers, deep JSON, forged cursors, huge numbers: 4xx problems, never 5xx."""
    app = request.getfixturevalue(f"{kind}_app")
    client = _client(kind, app)
    alice = {"X-User-Id": "alice", "Content-Type": "application/json"}
    gift = json.dumps({"streamer_id": "sam", "gift_id": "rose"}).encode()
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    cases: list[tuple[str, bytes, dict[str, str], set[int]]] = [
        ("/api/gifts/send", gift, {**alice, "Idempotency-Key": "k\x00"}, {400}),
        ("/api/gifts/send", gift, {**alice, "Idempotency-Key": "k" * 201}, {400}),
        ("/api/gifts/send", deep, {**alice, "Idempotency-Key": "k1"}, {400}),
        ("/api/quotes", deep, alice, {400}),
        ("/api/payments/create-checkout-session", b'{"quote_id": "q\\u0000"}',
         {**alice, "Idempotency-Key": "k2"}, {404, 422}),
        ("/api/payouts/request", b'{"amount_usd_minor": 100000000000000000000000}',
         {**alice, "Idempotency-Key": "k3"}, {422}),
        ("/api/payments/webhook", deep, {"Stripe-Signature": "t=1,v1=00"}, {400}),
    ]  # fmt: skip
    for path, body, headers, expected in cases:
        if kind == "fastapi" and any("\x00" in value for value in headers.values()):
            # Over a socket, HTTP/1.1 (h11, on both ends) cannot carry NUL in a
            # header: the client refuses to send it and uvicorn would answer 400.
            continue
        response = _post(kind, client, path, body, headers)
        assert _status(response) in expected, (path, headers, _status(response), response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for cursor in ["eyJwIjogMTE4MDU5MTYyMDcxNzQxMTMwMzQyNCwgInEiOiAiMCJ9", "a\x00", "%%"]:
        response = client.get(
            "/api/transactions", query_string={"cursor": cursor}, headers={"X-User-Id": "alice"}
        ) if kind == "flask" else client.get(
            "/api/transactions", params={"cursor": cursor}, headers={"X-User-Id": "alice"}
        )  # fmt: skip
        assert _status(response) == 422, response.text
        assert _json(response)["code"] in ("invalid_cursor", "validation_failed")


def test_flask_requires_json_and_caps_bodies(flask_app: Any) -> None:
    """Flask: a body not sent as JSON is 415; a body over 1 MiB is 413."""
    client = flask_app.test_client()
    gift = json.dumps({"streamer_id": "sam", "gift_id": "rose"}).encode()
    headers = {"X-User-Id": "alice", "Idempotency-Key": "ct1"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = client.post(
            "/api/gifts/send", data=gift, headers={**headers, "Content-Type": content_type}
        )
        assert response.status_code == 415, response.text
        assert response.get_json()["code"] == "unsupported_media_type"
    big = b"{" + b" " * (1_048_577) + b"}"
    response = client.post(
        "/api/gifts/send", data=big, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    ok = client.post(
        "/api/gifts/send", data=gift, headers={**headers, "Content-Type": "application/json"}
    )
    assert ok.status_code == 201, ok.text
