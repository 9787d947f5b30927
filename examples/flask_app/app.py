"""The gift economy's HTTP API on Flask: buy coins, send gifts, read balances, cash out.

    POST /api/quotes                              price a coin pack for the caller
    POST /api/payments/create-checkout-session    pay a quote on Stripe Checkout
    POST /api/payments/webhook                    Stripe (platform endpoint)
    POST /api/gifts/send                          send a gift to a streamer
    GET  /api/wallet/balance                      the caller's coins (and earnings)
    GET  /api/transactions                        the caller's statement, paged
    POST /api/payouts/request                     a streamer cashes out
    POST /api/payouts/webhook                     Stripe (Connect endpoint)
    GET  /api/openapi.json                        this API's OpenAPI 3.1 document

The same API as the FastAPI example, with explicit request checks instead of
pydantic. The caller is named by the ``X-User-Id`` header (a STAND-IN for
real authentication, see ``examples/common/services.py``); library errors
become RFC 9457 problem responses through the library's own table
(``spaktok_ledger.http.problem_for``). Run it with
``flask --app examples.flask_app.app run`` (see README.md next to this file).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable
from typing import Any

from examples.common.openapi import ROUTES, openapi_document
from examples.common.services import (
    IDEMPOTENCY_HEADER,
    USER_HEADER,
    Services,
    authenticate,
    balance_body,
    build_services,
    fail,
    gift_body,
    history_body,
    replay_headers,
    require_idempotency_key,
    require_owner,
    unexpected_error,
)
from examples.common.validation import (
    CURRENCY_PATTERN,
    ID_PATTERN,
    Fields,
    parse_json_object,
    parse_query_int,
)
from flask import Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from spaktok_ledger import LedgerError
from spaktok_ledger.http import PROBLEM_JSON, Problem, ProblemError, problem_for

log = logging.getLogger("examples.flask_app")
Answer = tuple[Response, int, dict[str, str]]
MAX_BODY_BYTES = 1_048_576


# -- explicit request checks (the field checks are shared with the Django example) ------


def json_object() -> dict[str, Any]:
    """The request body as a JSON object: 415 unless sent as JSON, 400 if it is not JSON,
    422 if not an object."""
    if not request.is_json:
        raise fail(
            415,
            "unsupported_media_type",
            "Unsupported Media Type",
            "send the body as JSON (Content-Type: application/json)",
        )
    return parse_json_object(request.get_data())


def query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    return parse_query_int(
        request.args.get(name), name, default=default, minimum=minimum, maximum=maximum
    )


# -- the request's context ---------------------------------------------------------------


def get_services() -> Services:
    found: Services = current_app.extensions["spaktok"]
    return found


def caller() -> str:
    return authenticate(request.headers.get(USER_HEADER))  # STAND-IN for real authentication


def idempotency_key() -> str:
    return require_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))


def answer(body: dict[str, Any], status: int, *, replayed: bool) -> Answer:
    """The same status and body for a first request and its replays."""
    return jsonify(body), status, replay_headers(replayed)


# -- endpoints ---------------------------------------------------------------------------


def create_quote() -> tuple[Response, int]:
    user = caller()
    fields = Fields(json_object())
    pack_id = fields.text("pack_id")
    currency = fields.optional_text("currency", pattern=CURRENCY_PATTERN)
    locale = fields.optional_text("locale", max_length=35)
    fields.check()
    quote = get_services().pricing.quote(pack_id, currency=currency, locale=locale, user_id=user)
    return jsonify(quote.to_dict()), 201


def create_checkout_session() -> Answer:
    user, key = caller(), idempotency_key()
    fields = Fields(json_object())
    quote_id = fields.text("quote_id")
    fields.check()
    settings = get_services().settings
    result = get_services().payments.create_checkout(
        user,
        quote_id,
        success_url=settings.checkout_success_url,
        cancel_url=settings.checkout_cancel_url,
        idempotency_key=key,
    )
    return answer(result.to_dict(), 201, replayed=result.replayed)


def payments_webhook() -> Response:
    # The raw bytes Stripe signed: never request.json (parsed and re-serialised).
    body, signature = request.get_data(), request.headers.get("Stripe-Signature", "")
    return jsonify(get_services().handle_platform_webhook(body, signature).to_dict())


def send_gift() -> Answer:
    user, key = caller(), idempotency_key()
    fields = Fields(json_object())
    streamer_id = fields.text("streamer_id", pattern=ID_PATTERN)
    gift_id = fields.text("gift_id")
    quantity = fields.integer("quantity", default=1, minimum=1, maximum=10_000)
    fields.check()
    receipt = get_services().economy.send_gift(
        user, streamer_id, gift_id, quantity, idempotency_key=key
    )
    return answer(gift_body(receipt), 201, replayed=receipt.replayed)


def wallet_balance() -> Response:
    user = require_owner(caller(), request.args.get("user_id"), "wallet")
    return jsonify(balance_body(get_services().economy, user))


def transactions() -> Response:
    """The caller's wallet statement, or with ``streamer_id`` (their own) their earnings'."""
    who = caller()
    limit = query_int("limit", default=20, minimum=1, maximum=100)
    cursor = request.args.get("cursor")
    types = request.args.getlist("type") or None
    streamer_id = request.args.get("streamer_id")
    if streamer_id is not None:
        streamer = require_owner(who, streamer_id, "earnings")
        user = None
    else:
        streamer, user = None, require_owner(who, request.args.get("user_id"), "wallet")
    page = history_body(
        get_services().economy,
        user_id=user,
        streamer_id=streamer,
        limit=limit,
        cursor=cursor,
        types=types,
    )
    return jsonify(page)


def request_payout() -> Answer:
    """Pay the calling streamer's available earnings out (202: Stripe confirms later)."""
    streamer, key = caller(), idempotency_key()
    fields = Fields(json_object())
    amount = fields.amount("amount_usd_minor")
    fields.check()
    record = get_services().payouts.request_payout(streamer, amount, idempotency_key=key)
    return answer(record.to_dict(), 202, replayed=record.replayed)


def payouts_webhook() -> Response:
    body, signature = request.get_data(), request.headers.get("Stripe-Signature", "")
    # Stored for the worker (fast-ack) or applied now (inline), as the platform endpoint.
    return jsonify(get_services().handle_connect_webhook(body, signature).to_dict())


def openapi() -> Response:
    """The API's OpenAPI 3.1 document (hand-written, shared with the Django example)."""
    # Flask also refuses oversized bodies (413) and, on JSON routes, other media types (415).
    extra = {
        (route.method, route.path): (413,) if route.webhook else (413, 415)
        for route in ROUTES
        if route.method == "post"
    }
    return jsonify(openapi_document("spaktok-ledger example (Flask)", extra=extra))


# -- errors as problem responses ---------------------------------------------------------


def problem_response(problem: Problem) -> Response:
    return Response(
        problem.to_json(),
        status=problem.status,
        headers=dict(problem.headers),
        mimetype=PROBLEM_JSON,
    )


def on_problem(exc: ProblemError) -> Response:
    return problem_response(exc.problem)


def on_ledger_error(exc: LedgerError) -> Response:
    problem = problem_for(exc)
    if problem.status >= 500:
        log.error("%s %s: %s", request.method, request.path, exc, exc_info=exc)
    return problem_response(problem)


def on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    name = exc.name or "Error"
    code = name.lower().replace(" ", "_").replace("-", "_")
    return problem_response(fail(status, code, name, exc.description or name).problem)


def on_crash(exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return problem_response(unexpected_error().problem)


def create_app(services: Services | None = None) -> Flask:
    """The app (``flask --app`` finds this factory); ``services`` default: from the environment."""
    app = Flask(__name__)
    # Bodies over 1 MiB are refused (413) before they are read, webhooks included.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    if services is None:
        services = build_services()
        atexit.register(services.close)
    app.extensions["spaktok"] = services
    routes: list[tuple[str, str, Callable[[], ResponseReturnValue]]] = [
        ("/api/quotes", "POST", create_quote),
        ("/api/payments/create-checkout-session", "POST", create_checkout_session),
        ("/api/payments/webhook", "POST", payments_webhook),
        ("/api/gifts/send", "POST", send_gift),
        ("/api/wallet/balance", "GET", wallet_balance),
        ("/api/transactions", "GET", transactions),
        ("/api/payouts/request", "POST", request_payout),
        ("/api/payouts/webhook", "POST", payouts_webhook),
        ("/api/openapi.json", "GET", openapi),
    ]
    for rule, method, view in routes:
        app.add_url_rule(rule, view_func=view, methods=[method])
    app.register_error_handler(ProblemError, on_problem)
    app.register_error_handler(LedgerError, on_ledger_error)
    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(Exception, on_crash)
    return app
