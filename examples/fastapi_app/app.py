"""The gift economy's HTTP API on FastAPI: buy coins, send gifts, read balances, cash out.

    POST /api/quotes                              price a coin pack for the caller
    POST /api/payments/create-checkout-session    pay a quote on Stripe Checkout
    POST /api/payments/webhook                    Stripe (platform endpoint)
    POST /api/gifts/send                          send a gift to a streamer
    GET  /api/wallet/balance                      the caller's coins (and earnings)
    GET  /api/transactions                        the caller's statement, paged
    POST /api/payouts/request                     a streamer cashes out
    POST /api/payouts/webhook                     Stripe (Connect endpoint)
    WS   /api/streams/{streamer_id}/gifts         gifts a streamer receives, live (Redis)

The webhooks are acknowledged fast by default (``SPAKTOK_WEBHOOK_MODE=fast-ack``:
verified, stored, answered; a worker applies them, docs/worker.md).

Each endpoint validates its request (pydantic), names the caller through the
``X-User-Id`` header (a STAND-IN for real authentication, see
``examples/common/services.py``) and awaits one library call (the asyncio API,
``examples/common/async_services.py``: no route blocks the event loop); library errors
become RFC 9457 problem responses through the library's own table
(``spaktok_ledger.http.problem_for``). Every route declares every status it
can answer, with its schema (``examples/common/openapi.py``): the OpenAPI
document at ``/openapi.json`` describes the real responses. Configuration
comes from environment variables; run it with
``uvicorn examples.fastapi_app.app:app`` (see README.md next to this file).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any, Literal

from examples.common.async_services import (
    AsyncServices,
    balance_body,
    build_async_services,
    history_body,
)
from examples.common.openapi import SCHEMAS, fastapi_responses
from examples.common.services import (
    IDEMPOTENCY_HEADER,
    USER_HEADER,
    Settings,
    authenticate,
    fail,
    gift_body,
    malformed_json,
    replay_headers,
    require_idempotency_key,
    require_owner,
    unexpected_error,
    validation_failed,
)
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from spaktok_ledger import LedgerError
from spaktok_ledger.http import PROBLEM_JSON, Problem, ProblemError, problem_for

log = logging.getLogger("examples.fastapi_app")
ID_PATTERN = r"^[A-Za-z0-9_.@\-]{1,64}$"


# -- request bodies ----------------------------------------------------------------------


class Body(BaseModel):
    # strict: 3.0 is not a quantity and "3" is not an amount; unknown fields are errors.
    model_config = ConfigDict(extra="forbid", strict=True)


class QuoteBody(Body):
    pack_id: str = Field(min_length=1, max_length=64)
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    locale: str | None = Field(default=None, min_length=2, max_length=35)


class CheckoutBody(Body):
    quote_id: str = Field(min_length=1, max_length=64)


class GiftBody(Body):
    streamer_id: str = Field(pattern=ID_PATTERN)
    gift_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1, le=10_000)


class PayoutBody(Body):
    amount_usd_minor: Annotated[int, Field(gt=0)] | Literal["all"]


# -- dependencies ------------------------------------------------------------------------
# ``async def`` although none of them awaits: FastAPI runs a plain ``def`` dependency in
# its thread pool, a thread hop per request whose threads then contend for the GIL with
# the event loop (measured: fast acknowledgements at 32 concurrent senders spent their
# time "idle in transaction" on PostgreSQL while the loop waited for the GIL).


async def get_services(request: Request) -> AsyncServices:
    services: AsyncServices = request.app.state.services
    return services


async def get_caller(user: Annotated[str | None, Header(alias=USER_HEADER)] = None) -> str:
    return authenticate(user)  # STAND-IN for the host's real authentication


async def get_idempotency_key(
    key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER)] = None,
) -> str:
    return require_idempotency_key(key)


Svc = Annotated[AsyncServices, Depends(get_services)]
Caller = Annotated[str, Depends(get_caller)]
IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]


def created(body: dict[str, Any], *, replayed: bool, status: int = 201) -> JSONResponse:
    """The same status and body for a first request and its replays."""
    return JSONResponse(body, status_code=status, headers=replay_headers(replayed))


# -- endpoints ---------------------------------------------------------------------------

router = APIRouter(prefix="/api")


@router.post("/quotes", status_code=201, responses=fastapi_responses("post", "/api/quotes"))
async def create_quote(body: QuoteBody, services: Svc, caller: Caller) -> dict[str, Any]:
    """A stored price quote for a coin pack, in the currency asked for or the locale's."""
    quote = await services.pricing.quote(
        body.pack_id, currency=body.currency, locale=body.locale, user_id=caller
    )
    return quote.to_dict()


@router.post(
    "/payments/create-checkout-session",
    status_code=201,
    responses=fastapi_responses("post", "/api/payments/create-checkout-session"),
)
async def create_checkout_session(
    body: CheckoutBody, services: Svc, caller: Caller, key: IdempotencyKey
) -> JSONResponse:
    settings = services.settings
    result = await services.payments.create_checkout(
        caller,
        body.quote_id,
        success_url=settings.checkout_success_url,
        cancel_url=settings.checkout_cancel_url,
        idempotency_key=key,
    )
    return created(result.to_dict(), replayed=result.replayed)


@router.post("/payments/webhook", responses=fastapi_responses("post", "/api/payments/webhook"))
async def payments_webhook(request: Request, services: Svc) -> dict[str, Any]:
    body = await request.body()  # the raw bytes Stripe signed, never re-serialised JSON
    signature = request.headers.get("Stripe-Signature", "")
    result = await services.handle_platform_webhook(body, signature)
    return result.to_dict()


@router.post("/gifts/send", status_code=201, responses=fastapi_responses("post", "/api/gifts/send"))
async def send_gift(
    body: GiftBody, services: Svc, caller: Caller, key: IdempotencyKey
) -> JSONResponse:
    receipt = await services.economy.send_gift(
        caller, body.streamer_id, body.gift_id, body.quantity, idempotency_key=key
    )
    return created(gift_body(receipt), replayed=receipt.replayed)


@router.get("/wallet/balance", responses=fastapi_responses("get", "/api/wallet/balance"))
async def wallet_balance(
    services: Svc, caller: Caller, user_id: str | None = None
) -> dict[str, Any]:
    return await balance_body(services.economy, require_owner(caller, user_id, "wallet"))


@router.get("/transactions", responses=fastapi_responses("get", "/api/transactions"))
async def transactions(
    *,
    services: Svc,
    caller: Caller,
    user_id: str | None = None,
    streamer_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    types: Annotated[list[str] | None, Query(alias="type")] = None,
) -> dict[str, Any]:
    """The caller's wallet statement, or with ``streamer_id`` (their own) their earnings'."""
    if streamer_id is not None:
        streamer = require_owner(caller, streamer_id, "earnings")
        return await history_body(
            services.economy,
            user_id=None,
            streamer_id=streamer,
            limit=limit,
            cursor=cursor,
            types=types,
        )
    user = require_owner(caller, user_id, "wallet")
    return await history_body(
        services.economy, user_id=user, streamer_id=None, limit=limit, cursor=cursor, types=types
    )


@router.post(
    "/payouts/request",
    status_code=202,
    responses=fastapi_responses("post", "/api/payouts/request"),
)
async def request_payout(
    body: PayoutBody, services: Svc, caller: Caller, key: IdempotencyKey
) -> JSONResponse:
    """Pay the calling streamer's available earnings out (202: Stripe confirms later)."""
    record = await services.payouts.request_payout(
        caller, body.amount_usd_minor, idempotency_key=key
    )
    return created(record.to_dict(), replayed=record.replayed, status=202)


@router.post("/payouts/webhook", responses=fastapi_responses("post", "/api/payouts/webhook"))
async def payouts_webhook(request: Request, services: Svc) -> dict[str, Any]:
    body = await request.body()
    signature = request.headers.get("Stripe-Signature", "")
    result = await services.handle_connect_webhook(body, signature)
    return result.to_dict()


@router.websocket("/streams/{streamer_id}/gifts")
async def live_gifts(websocket: WebSocket, streamer_id: str) -> None:
    """Push the gifts a streamer receives to a viewer's page, as they commit.

    The outbox relay (``spaktok-ledger relay``, or the app's in-process one)
    publishes ``gift.sent`` events to the Redis stream ``spaktok:gift.sent``;
    each socket reads the stream from where it joined (``?after=ID`` resumes
    after a reconnect) and sends ``{"event_id", "gift"}`` for its streamer.
    Consumers dedupe on ``event_id``: delivery is at least once.
    """
    settings = websocket.app.state.services.settings
    if not re.fullmatch(ID_PATTERN, streamer_id) or not settings.redis_url:
        await websocket.close(code=1008 if settings.redis_url else 1011)
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.redis_url)
    stream = f"{settings.redis_stream_prefix}gift.sent"
    after = websocket.query_params.get("after")
    if after is None:  # from now on: the newest entry when the viewer joined
        newest = await client.xrevrange(stream, count=1)
        after = newest[0][0].decode() if newest else "0-0"
    await websocket.accept()
    left = asyncio.create_task(websocket.receive())  # completes when the viewer leaves
    try:
        while not left.done():
            read = asyncio.create_task(client.xread({stream: after}, block=1000, count=100))
            await asyncio.wait({read, left}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            for _stream, entries in read.result():
                for entry_id, fields in entries:
                    after = entry_id.decode()
                    gift = json.loads(fields[b"payload"])
                    if gift.get("streamer_id") == streamer_id:
                        await websocket.send_json(
                            {"event_id": fields[b"event_id"].decode(), "gift": gift}
                        )
    except WebSocketDisconnect:
        pass
    finally:
        left.cancel()
        await client.aclose()


# -- errors as problem responses ---------------------------------------------------------


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.to_dict(),
        status_code=problem.status,
        headers=dict(problem.headers),
        media_type=PROBLEM_JSON,
    )


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "streamer_id") -> "streamer_id"; ("query", "limit") -> "limit"
    parts = [str(p) for p in loc[1:]] or [str(loc[0])]
    return ".".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def on_problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.problem)

    @app.exception_handler(LedgerError)
    async def on_ledger_error(request: Request, exc: LedgerError) -> JSONResponse:
        problem = problem_for(exc)
        if problem.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        return problem_response(problem)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if broken is not None:
            return problem_response(
                malformed_json(str(broken.get("ctx", {}).get("error", ""))).problem
            )
        return problem_response(
            validation_failed(
                [{"field": _field(e["loc"]), "message": e["msg"]} for e in errors]
            ).problem
        )

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        return problem_response(fail(exc.status_code, code, phrase, detail).problem)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(unexpected_error().problem)


def create_app(
    services: AsyncServices | None = None, *, settings: Settings | None = None
) -> FastAPI:
    """The app; ``services`` default: built at start-up from ``settings`` (default: the
    environment), on the app's own event loop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        built = await build_async_services(settings)
        app.state.services = built
        # What start-up loaded (SQLAlchemy, pydantic, babel's locale data, the
        # services) lives as long as the process: keep it out of the cyclic garbage
        # collector's full passes, each of which otherwise stopped every request for
        # about 0.1 s (docs/worker.md, "Measured").
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await built.aclose()

    app = FastAPI(title="spaktok-ledger example (FastAPI)", lifespan=lifespan)
    app.include_router(router)
    install_error_handlers(app)
    install_openapi(app)
    return app


def install_openapi(app: FastAPI) -> None:
    """FastAPI's generated document, with the shared response schemas and problem+json.

    FastAPI generates the request side from the pydantic models. The routes'
    ``responses=`` reference the schemas in ``examples/common/openapi.py``,
    added to the components here; FastAPI's own 422 entry (its
    ``HTTPValidationError``, which this app never sends) is replaced by the
    problem this app does send.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version="1.0.0", routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(SCHEMAS)
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for route in router.routes:
                path = getattr(route, "path", "")
                for method in getattr(route, "methods", ()):
                    operation = document["paths"][path][method.lower()]
                    unprefixed = path.removeprefix("/api")
                    declared = fastapi_responses(method.lower(), "/api" + unprefixed)
                    operation["responses"] = {str(k): v for k, v in declared.items()}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
