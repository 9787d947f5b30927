"""The example API's OpenAPI 3.1 description: one source for all three apps.

The response bodies' JSON Schemas (``SCHEMAS``) and which statuses each route
answers (``ROUTES``) are written here once. The Flask and Django apps serve
:func:`openapi_document` at ``GET /api/openapi.json``; the FastAPI app attaches
the same responses to its routes (:func:`fastapi_responses`) and adds the
schemas to the document FastAPI generates from its pydantic request models
(``/openapi.json``, browsable at ``/docs``).

Every 4xx and 5xx answer is a problem (``application/problem+json``), whose
schema is the library's ``spaktok_ledger.http.PROBLEM_SCHEMA``. The end-to-end
tests validate every response they receive against the served document.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final

from spaktok_ledger.http import PROBLEM_JSON, PROBLEM_SCHEMA

__all__ = ["ROUTES", "SCHEMAS", "Route", "fastapi_responses", "openapi_document"]

JSON: Final = "application/json"
_INT: Final = {"type": "integer"}
_STR: Final = {"type": "string"}
_TIME: Final = {"type": "string", "format": "date-time"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with these members (more may follow: the library may add fields)."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": True,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_WALLET = _object(
    {"user_id": _STR, "coins": _INT, "usd_minor": _INT},
    {"pending_coins": _INT, "debt_usd_minor": _INT},
)
_EARNINGS = _object(
    {
        "streamer_id": _STR,
        "pending_minor": _INT,
        "available_minor": _INT,
        "in_payout_minor": _INT,
    }
)
_GIFT = _object(
    {
        "gift_id": _STR,
        "quantity": _INT,
        "coins": _INT,
        "value_usd_minor": _INT,
        "streamer_share_minor": _INT,
        "platform_share_minor": _INT,
    },
    {"streamer_bps": _INT, "platform_bps": _INT},
)

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Problem": dict(PROBLEM_SCHEMA),
    "ValidationProblem": {
        "allOf": [
            _ref("Problem"),
            {
                "type": "object",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": _object({"field": _STR, "message": _STR}),
                    }
                },
            },
        ]
    },
    "Quote": _object(
        {
            "id": _STR,
            "pack_id": _STR,
            "coins": _INT,
            "usd_price_minor": _INT,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "local_amount_minor": _INT,
            "rate": {"type": "string", "description": "a decimal, as a string (never a float)"},
            "rate_source": _STR,
            "expires_at": _TIME,
        },
        {"bonus_coins": _INT, "display": {"type": ["string", "null"]}},
    ),
    "CheckoutSession": _object(
        {
            "purchase_id": _STR,
            "checkout_session_id": _STR,
            "url": {"type": ["string", "null"]},
            "currency": _STR,
            "amount_minor": _INT,
        }
    ),
    "WebhookResult": _object(
        {
            "event_id": _STR,
            "type": _STR,
            "outcome": _STR,
            "subject_id": {"type": ["string", "null"]},
            "duplicate": {"type": "boolean"},
        }
    ),
    "GiftReceipt": {
        **_object(
            {
                "entry_id": _INT,
                "sender_id": _STR,
                "streamer_id": _STR,
                "gift": _GIFT,
                "sender_wallet": _WALLET,
                "sent_at": _TIME,
            },
            {"matures_at": {"type": ["string", "null"]}},
        ),
        "not": {"required": ["streamer_earnings"]},  # the sender never sees it
    },
    "Balance": _object(
        {
            "user_id": _STR,
            "wallet": _WALLET,
            "earnings": {"anyOf": [_EARNINGS, {"type": "null"}]},
        }
    ),
    "HistoryPage": _object(
        {
            "items": {
                "type": "array",
                "items": _object(
                    {
                        "entry_id": _INT,
                        "type": _STR,
                        "occurred_at": _TIME,
                        "change_minor": _INT,
                        "counterparty": {"type": ["string", "null"]},
                    }
                ),
            },
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "Payout": _object(
        {"payout_id": _STR, "streamer_id": _STR, "amount_usd_minor": _INT, "status": _STR}
    ),
}

# What each status means on these routes (the codes are listed in docs/http.md).
_STATUS_TEXT: Final = {
    400: "Malformed JSON, a missing Idempotency-Key, or a webhook that fails verification",
    401: "No caller (the X-User-Id stand-in for authentication)",
    403: "Someone else's wallet or statement",
    404: "Something the request names does not exist",
    409: "Refused because of what is recorded (funds, idempotency key, quote, payout rules)",
    413: "The request body is larger than the app accepts",
    415: "The body is not sent as JSON (Content-Type: application/json)",
    422: "Invalid request fields, or input the library refuses",
    429: "Purchase limit reached",
    500: "Unexpected error",
    502: "Stripe refused the call or could not be reached",
    503: "Busy or no exchange rate: retry with the same Idempotency-Key",
}


@dataclass(frozen=True, slots=True)
class Route:
    """One route: its success answer and the problem statuses it can answer."""

    method: str
    path: str
    summary: str
    status: int
    schema: str
    problems: tuple[int, ...]
    idempotent_post: bool = False
    webhook: bool = False


_COMMON: Final = (500, 503)
ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "post",
        "/api/quotes",
        "Price a coin pack for the caller",
        201,
        "Quote",
        (400, 401, 404, 422, *_COMMON),
    ),
    Route(
        "post",
        "/api/payments/create-checkout-session",
        "Pay a quote on Stripe Checkout",
        201,
        "CheckoutSession",
        (400, 401, 404, 409, 422, 429, 502, *_COMMON),
        idempotent_post=True,
    ),
    Route(
        "post",
        "/api/payments/webhook",
        "Stripe events (platform endpoint)",
        200,
        "WebhookResult",
        (400, 409, 502, *_COMMON),
        webhook=True,
    ),
    Route(
        "post",
        "/api/gifts/send",
        "Send a gift to a streamer",
        201,
        "GiftReceipt",
        (400, 401, 404, 409, 422, *_COMMON),
        idempotent_post=True,
    ),
    Route(
        "get",
        "/api/wallet/balance",
        "The caller's coins, and earnings if they stream",
        200,
        "Balance",
        (401, 403, 422, *_COMMON),
    ),
    Route(
        "get",
        "/api/transactions",
        "The caller's statement, newest first, in pages",
        200,
        "HistoryPage",
        # 404: the earnings statement (streamer_id) of a caller who does not stream.
        (401, 403, 404, 422, *_COMMON),
    ),
    Route(
        "post",
        "/api/payouts/request",
        "Cash out the calling streamer's earnings",
        202,
        "Payout",
        (400, 401, 404, 409, 422, 502, *_COMMON),
        idempotent_post=True,
    ),
    Route(
        "post",
        "/api/payouts/webhook",
        "Stripe Connect events",
        200,
        "WebhookResult",
        (400, 409, 502, *_COMMON),
        webhook=True,
    ),
)


def _problem_content(status: int) -> dict[str, Any]:
    # A 422 is request validation (with "errors") or a library refusal (without): both
    # are problems, and ValidationProblem documents the "errors" member.
    schema: dict[str, Any] = _ref("Problem")
    if status == 422:
        schema = {"anyOf": [_ref("ValidationProblem"), _ref("Problem")]}
    return {PROBLEM_JSON: {"schema": schema}}


def _responses(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(route.status): {
            "description": route.summary,
            "content": {JSON: {"schema": _ref(route.schema)}},
        }
    }
    if route.idempotent_post:
        responses[str(route.status)]["headers"] = {
            "Idempotent-Replayed": {
                "description": "true when this answers a retry with the same Idempotency-Key",
                "schema": {"type": "string", "enum": ["true"]},
            }
        }
    for status in route.problems:
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": _problem_content(status),
        }
    return responses


def fastapi_responses(
    method: str, path: str, *, extra: tuple[int, ...] = ()
) -> dict[int | str, Any]:
    """The ``responses=`` argument of a FastAPI route: every status, with its schema."""
    route = next(r for r in ROUTES if (r.method, r.path) == (method, path))
    responses: dict[int | str, Any] = dict(_responses(route))
    for status in extra:
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": _problem_content(status),
        }
    return responses


def openapi_document(
    title: str, *, extra: dict[tuple[str, str], tuple[int, ...]] | None = None
) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (Flask, Django); ``extra``: more problem statuses
    per ``(method, path)`` for an app that answers more (Django's host rule, 409)."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        responses = _responses(route)
        for status in (extra or {}).get((route.method, route.path), ()):
            responses[str(status)] = {
                "description": _STATUS_TEXT[status],
                "content": _problem_content(status),
            }
        operation: dict[str, Any] = {"summary": route.summary, "responses": responses}
        parameters = []
        if not route.webhook:
            parameters.append(
                {
                    "name": "X-User-Id",
                    "in": "header",
                    "required": False,
                    "schema": _STR,
                    "description": "STAND-IN for authentication: the caller",
                }
            )
        else:
            parameters.append(
                {"name": "Stripe-Signature", "in": "header", "required": True, "schema": _STR}
            )
        if route.idempotent_post:
            parameters.append(
                {"name": "Idempotency-Key", "in": "header", "required": True, "schema": _STR}
            )
        if route.method == "post":
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": {"type": "object"}}},
            }
        operation["parameters"] = parameters
        paths.setdefault(route.path, {})[route.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0"},
        "paths": paths,
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }
