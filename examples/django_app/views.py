"""The gift economy's HTTP API on Django: buy coins, send gifts, read balances, cash out.

    POST /api/quotes                              price a coin pack for the caller
    POST /api/payments/create-checkout-session    pay a quote on Stripe Checkout
    POST /api/payments/webhook                    Stripe (platform endpoint)
    POST /api/gifts/send                          send a gift; the host's order row too
    GET  /api/wallet/balance                      the caller's coins (and earnings)
    GET  /api/transactions                        the caller's statement, paged
    POST /api/payouts/request                     a streamer cashes out
    POST /api/payouts/webhook                     Stripe (Connect endpoint)
    GET  /api/openapi.json                        this API's OpenAPI 3.1 document

The same API as the FastAPI and Flask examples, with one Django-specific
addition: ``POST /api/gifts/send`` writes the host's own ``GiftOrder`` row
and the ledger's gift **in one transaction on Django's connection**
(``spaktok_ledger.contrib.django.atomic``): if the host's INSERT fails, the
gift is rolled back with it (409 ``host_rule_violated``). Library errors
become RFC 9457 problems through ``spaktok_ledger.http.problem_for`` in
:class:`ProblemMiddleware`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from examples.common.openapi import openapi_document
from examples.common.services import (
    IDEMPOTENCY_HEADER,
    USER_HEADER,
    Services,
    Settings,
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

from spaktok_ledger import LedgerError
from spaktok_ledger.contrib import django as spaktok
from spaktok_ledger.http import PROBLEM_JSON, Problem, ProblemError, problem_for

log = logging.getLogger("examples.django_app")
View = Callable[[HttpRequest], HttpResponse]

_services: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    """The library's services, built once per process on the ledger that joins Django's
    transactions (``spaktok.get_ledger()``: Django's database, the configured prefix)."""
    global _services  # noqa: PLW0603 - one wiring point per process
    with _lock:
        if _services is None:
            _services = build_services(Settings.from_env(), ledger=spaktok.get_ledger())
        return _services


# -- problems ------------------------------------------------------------------------------


def problem_response(problem: Problem) -> HttpResponse:
    response = HttpResponse(problem.to_json(), status=problem.status, content_type=PROBLEM_JSON)
    for name, value in problem.headers.items():
        response[name] = value
    return response


class ProblemMiddleware:
    """Library errors and the app's own refusals become problem responses."""

    def __init__(self, get_response: View) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        if isinstance(exc, ProblemError):
            return problem_response(exc.problem)
        if isinstance(exc, LedgerError):
            problem = problem_for(exc)
            if problem.status >= 500:
                log.error("%s %s: %s", request.method, request.path, exc, exc_info=exc)
            return problem_response(problem)
        log.error("%s %s failed", request.method, request.path, exc_info=exc)
        return problem_response(unexpected_error().problem)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(fail(404, "not_found", "Not Found", "no such route").problem)


def server_error(request: HttpRequest) -> HttpResponse:
    return problem_response(unexpected_error().problem)


def allow(method: str) -> Callable[[View], View]:
    """Only ``method`` (405 problem otherwise); CSRF-exempt: the API authenticates by header."""

    def decorate(view: View) -> View:
        @csrf_exempt
        def checked(request: HttpRequest) -> HttpResponse:
            if request.method != method:
                raise fail(
                    405,
                    "method_not_allowed",
                    "Method Not Allowed",
                    f"use {method}",
                    headers={"Allow": method},
                )
            return view(request)

        checked.__name__ = view.__name__
        checked.__doc__ = view.__doc__
        return checked

    return decorate


# -- the request's context -----------------------------------------------------------------


def caller(request: HttpRequest) -> str:
    return authenticate(request.headers.get(USER_HEADER))  # STAND-IN for real authentication


def idempotency_key(request: HttpRequest) -> str:
    return require_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))


def answer(body: dict[str, Any], status: int = 200, *, replayed: bool = False) -> JsonResponse:
    """The same status and body for a first request and its replays."""
    return JsonResponse(body, status=status, headers=replay_headers(replayed))


# -- endpoints -----------------------------------------------------------------------------


@allow("POST")
def create_quote(request: HttpRequest) -> HttpResponse:
    user = caller(request)
    fields = Fields(parse_json_object(request.body))
    pack_id = fields.text("pack_id")
    currency = fields.optional_text("currency", pattern=CURRENCY_PATTERN)
    locale = fields.optional_text("locale", max_length=35)
    fields.check()
    quote = services().pricing.quote(pack_id, currency=currency, locale=locale, user_id=user)
    return answer(quote.to_dict(), 201)


@allow("POST")
def create_checkout_session(request: HttpRequest) -> HttpResponse:
    user, key = caller(request), idempotency_key(request)
    fields = Fields(parse_json_object(request.body))
    quote_id = fields.text("quote_id")
    fields.check()
    svc = services()
    # Payments calls Stripe between its database steps: its own transactions, not Django's.
    result = svc.payments.create_checkout(
        user,
        quote_id,
        success_url=svc.settings.checkout_success_url,
        cancel_url=svc.settings.checkout_cancel_url,
        idempotency_key=key,
    )
    return answer(result.to_dict(), 201, replayed=result.replayed)


@allow("POST")
def payments_webhook(request: HttpRequest) -> HttpResponse:
    # request.body: the raw bytes Stripe signed, never parsed and re-serialised JSON.
    signature = request.headers.get("Stripe-Signature", "")
    return answer(services().handle_platform_webhook(request.body, signature).to_dict())


@allow("POST")
def send_gift(request: HttpRequest) -> HttpResponse:
    """The gift and the host's GiftOrder row commit together, or neither does."""
    from examples.django_app.gifts.models import GiftOrder

    user, key = caller(request), idempotency_key(request)
    fields = Fields(parse_json_object(request.body))
    streamer_id = fields.text("streamer_id", pattern=ID_PATTERN)
    gift_id = fields.text("gift_id")
    quantity = fields.integer("quantity", default=1, minimum=1, maximum=10_000)
    fields.check()
    economy = services().economy
    try:
        with spaktok.atomic(economy.ledger) as ledger:  # Django's transaction, joined
            receipt = economy.using(ledger).send_gift(
                user, streamer_id, gift_id, quantity, idempotency_key=key
            )
            if not receipt.replayed:
                GiftOrder.objects.create(
                    sender_id=user,
                    streamer_id=streamer_id,
                    gift_id=gift_id,
                    quantity=quantity,
                    entry_id=receipt.entry_id,
                )
    except IntegrityError as exc:
        log.info("gift order refused by the host's table: %s", exc)
        raise fail(
            409,
            "host_rule_violated",
            "The order was refused",
            "the order breaks a rule of this app (at most 100 items per order); "
            "nothing was written",
        ) from None
    return answer(gift_body(receipt), 201, replayed=receipt.replayed)


@allow("GET")
def wallet_balance(request: HttpRequest) -> HttpResponse:
    user = require_owner(caller(request), request.GET.get("user_id"), "wallet")
    return answer(balance_body(services().economy, user))


@allow("GET")
def transactions(request: HttpRequest) -> HttpResponse:
    """The caller's wallet statement, or with ``streamer_id`` (their own) their earnings'."""
    who = caller(request)
    limit = parse_query_int(request.GET.get("limit"), "limit", default=20, minimum=1, maximum=100)
    streamer_id = request.GET.get("streamer_id")
    if streamer_id is not None:
        streamer, user = require_owner(who, streamer_id, "earnings"), None
    else:
        streamer, user = None, require_owner(who, request.GET.get("user_id"), "wallet")
    page = history_body(
        services().economy,
        user_id=user,
        streamer_id=streamer,
        limit=limit,
        cursor=request.GET.get("cursor"),
        types=request.GET.getlist("type") or None,
    )
    return answer(page)


@allow("POST")
def request_payout(request: HttpRequest) -> HttpResponse:
    """Pay the calling streamer's available earnings out (202: Stripe confirms later)."""
    streamer, key = caller(request), idempotency_key(request)
    fields = Fields(parse_json_object(request.body))
    amount = fields.amount("amount_usd_minor")
    fields.check()
    record = services().payouts.request_payout(streamer, amount, idempotency_key=key)
    return answer(record.to_dict(), 202, replayed=record.replayed)


@allow("POST")
def payouts_webhook(request: HttpRequest) -> HttpResponse:
    signature = request.headers.get("Stripe-Signature", "")
    # Stored for the worker (fast-ack) or applied now (inline), as the platform endpoint.
    return answer(services().handle_connect_webhook(request.body, signature).to_dict())


# Django's own answer to the host rule (409) is documented beside the shared routes.
EXTRA_PROBLEMS = {("post", "/api/gifts/send"): (409,)}


@allow("GET")
def openapi(request: HttpRequest) -> HttpResponse:
    """The API's OpenAPI 3.1 document (shared with the Flask example)."""
    document = openapi_document("spaktok-ledger example (Django)", extra=EXTRA_PROBLEMS)
    return HttpResponse(json.dumps(document), content_type="application/json")
