"""An offline Stripe: a local HTTP server speaking the slice of API v1 the library uses.

The real ``stripe`` SDK talks to it unchanged (see :func:`stripe_client`), so
tests exercise the real request encoding, error classes, retries and
idempotency keys. A simulator API plays Stripe's side of the story (the
customer pays, the bank returns a payout, a cardholder disputes) and hands
back the webhook event Stripe would send, ready to be signed with
:func:`~spaktok_ledger.testing.signed_event`.

Objects are deep copies of Stripe's own fixture objects (``stripe_fixtures.json``,
MIT, Copyright (c) 2011- Stripe, Inc.; see ``STRIPE_FIXTURES_LICENSE``) with the
fields that matter overwritten, so they have Stripe's real shapes.

Modelled on purpose, because the library must cope with them:

- idempotency: same ``Idempotency-Key`` and params replay the first response
  (header ``Idempotent-Replayed: true``); different params are a 400
  ``idempotency_error``. Keys are scoped per ``Stripe-Account``.
- Connect scoping: an object created with a ``Stripe-Account`` header lives on
  that account and is a 404 without the header, as on Stripe.
- validation: unknown top-level params, missing params, bad integers, and a
  few business rules (over-refunds, transfers to accounts without the
  ``transfers`` capability, payouts while ``payouts_enabled`` is false).
- faults: :meth:`FakeStripe.fail_next`, :meth:`FakeStripe.delay_next` and
  :meth:`FakeStripe.drop_next`. A delayed or dropped request is executed
  *before* the response is held back or lost, like a real timeout: a retry
  with the same idempotency key replays it instead of creating a second object.

The code: ``_state.py`` holds the objects and the moves shared by API and
simulator, ``_api.py`` the endpoints, this module the server, faults and the
simulator.

Not modelled: balances (use ``fail_next(..., code="balance_insufficient")``),
prices and products (checkout takes ``price_data`` only), customers, and
webhook delivery (tests post the signed events to their own endpoint).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from spaktok_ledger.testing._api import _StripeAPI
from spaktok_ledger.testing._fixtures import convert_minor, fixture, new_id, random_token
from spaktok_ledger.testing._forms import StripeAPIError, parse_params
from spaktok_ledger.testing._state import (
    _DAY,
    _UNSET,
    JSON,
    _Call,
    _invalid,
    _Settlement,
    _Unset,
)

__all__ = ["FakeStripe", "RecordedRequest"]

_log = logging.getLogger("spaktok_ledger.testing.fake_stripe")

_FALLBACK_API_VERSION: Final = "2026-10-28.endive"

_DEFAULT_DISPUTE_FEE_MINOR: Final = 1500

_RISK_SCORES: Final = {"normal": 12, "elevated": 68, "highest": 87}

_RISK_LEVELS: Final = ("normal", "elevated", "highest", "not_assessed", "unknown")

_PAYOUT_FAILURES: Final = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "bank_account_restricted": "The bank account has restrictions on payouts.",
    "could_not_process": "The bank could not process this payout.",
    "insufficient_funds": "Your Stripe account has insufficient funds to cover the payout.",
    "invalid_account_number": "The bank account number appears to be invalid.",
    "no_account": "The bank account details on file are probably incorrect.",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received, as the SDK sent it.

    ``params`` is the decoded body (POST) or query string (GET), nested the
    way Stripe reads the bracket notation; values stay strings.

    >>> req = fake.requests[-1]  # doctest: +SKIP
    >>> req.method, req.path, req.idempotency_key, req.params["metadata"]  # doctest: +SKIP
    ('POST', '/v1/transfers', 'payout:42', {'payout_id': '42'})
    """

    method: str
    path: str
    params: Mapping[str, Any]
    headers: Mapping[str, str]
    status: int
    request_id: str
    idempotency_key: str | None = None
    stripe_account: str | None = None
    replayed: bool = False

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name, or ``None``."""
        return _header(self.headers, name)


@dataclass(slots=True)
class _Fault:
    kind: Literal["fail", "delay", "drop"]
    method: str
    path_prefix: str
    remaining: int
    error: StripeAPIError | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and path.startswith(self.path_prefix)


@dataclass(frozen=True, slots=True)
class _Saved:
    fingerprint: str
    status: int
    body: bytes


@dataclass(slots=True)
class _Outcome:
    status: int
    body: bytes
    headers: dict[str, str]
    delay: float = 0.0
    drop: bool = False


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeStripe


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 5
    # Headers and body leave in one segment: without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every response.
    disable_nagle_algorithm = True
    wbufsize = -1
    server_version = "FakeStripe/1.0"

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def do_DELETE(self) -> None:
        self._respond("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def _respond(self, method: str) -> None:
        fake = cast(_Server, self.server).fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        outcome = fake._serve(method, self.path, body, dict(self.headers.items()))
        if outcome.delay:
            fake._stopping.wait(outcome.delay)
        if outcome.drop or fake._stopping.is_set():
            self.close_connection = True
            return
        try:
            self.send_response(outcome.status)
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(outcome.body)))
            self.end_headers()
            self.wfile.write(outcome.body)
            self.wfile.flush()
        except OSError:
            # The client gave up (its timeout fired during a delay): nothing to tell it.
            self.close_connection = True


class FakeStripe(_StripeAPI):
    """A local, in-memory Stripe API for tests: the real SDK in, webhook events out.

    Start it (context manager, or :meth:`start`/:meth:`stop`), point a real
    client at :attr:`url` with :func:`~spaktok_ledger.testing.stripe_client`, and
    drive Stripe's side with the simulator methods, each of which returns the
    webhook event Stripe would send (also kept in :attr:`events`)::

        with FakeStripe() as fake:
            client = stripe_client(fake)
            session = client.v1.checkout.sessions.create(params={
                "mode": "payment", "success_url": "https://example.com/ok",
                "line_items": [{"quantity": 1, "price_data": {
                    "currency": "eur", "unit_amount": 499,
                    "product_data": {"name": "500 coins"}}}],
            })
            event = fake.complete_checkout(session.id, settle_currency="usd",
                                           exchange_rate=Decimal("1.08"))
            assert event["type"] == "checkout.session.completed"

    API calls that Stripe notifies about record their event too (with
    ``request.id`` and ``request.idempotency_key`` set): refunds
    (``charge.refunded``), session expiry, transfers (``transfer.created``,
    ``transfer.reversed``), payouts (``payout.created``, ``payout.canceled``)
    and account updates (``account.updated``). Connect events carry
    ``"account"``; platform events have no such key.

    Simulator methods raise ``LookupError`` for unknown ids and ``ValueError``
    when Stripe could not be in the requested state (paying an expired session).
    Everything is guarded by one lock, so tests may hit the fake from many threads.
    """

    def __init__(
        self,
        *,
        api_version: str | None = None,
        api_keys: Iterable[str] | None = None,
        clock: Callable[[], float | datetime] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Configure the fake; nothing listens until :meth:`start`.

        ``api_version`` is stamped on events (default: the installed SDK's
        pinned version). ``api_keys``, when given, is the only set of secret
        keys accepted; otherwise any ``sk_test_``/``rk_test_`` key is. ``clock``
        gives the time of ``created`` fields: Unix seconds or an aware
        ``datetime`` (so a :class:`~spaktok_ledger.testing.FakeClock` fits).
        """
        super().__init__(api_version=api_version or _sdk_api_version(), clock=clock)
        self._api_keys = frozenset(api_keys) if api_keys is not None else None
        self._host = host
        self._port = port
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._idempotency: dict[tuple[str | None, str], _Saved] = {}

    def start(self) -> FakeStripe:
        """Listen on a free local port in a daemon thread; returns ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            server = _Server((self._host, self._port), _Handler)
            server.fake = self
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="FakeStripe",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop listening; pending delays end at once. Safe to call twice."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:51234``."""
        server = self._server
        if server is None:
            raise RuntimeError("FakeStripe is not running: call start() or use it as a context")
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def events(self) -> list[JSON]:
        """Every event Stripe would have sent so far, oldest first (deep copies)."""
        with self._lock:
            return copy.deepcopy(self._events)

    def get_object(self, object_id: str) -> JSON:
        """The current state of any object by id (a deep copy), bypassing the API.

        >>> fake.get_object("ch_3Pq...")["amount_refunded"]  # doctest: +SKIP
        500
        """
        with self._lock:
            return copy.deepcopy(self._require(object_id))

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        *,
        status: int = 500,
        error_type: str = "api_error",
        code: str | None = None,
        message: str = "An unknown error occurred (injected by FakeStripe).",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with a Stripe error, doing nothing.

        ``method`` is an HTTP verb or ``"*"``; ``path_prefix`` matches the start
        of the path. The failed request stores no idempotent result, so a retry
        with the same key runs normally (as after Stripe's 5xx/429/409 errors).

        >>> fake.fail_next("POST", "/v1/transfers", status=402, error_type="card_error",
        ...                code="balance_insufficient")  # doctest: +SKIP
        """
        error = StripeAPIError(status, message, error_type=error_type, code=code, param=param)
        self._add_fault(
            _Fault(
                "fail", method.upper(), path_prefix, times, error=error, headers=dict(headers or {})
            )
        )

    def delay_next(self, method: str, path_prefix: str, seconds: float, *, times: int = 1) -> None:
        """Hold the response to the next ``times`` matching requests for ``seconds``.

        The request is executed first, as on a real timeout: the object exists
        even if the client gave up, and a retry with the same idempotency key
        replays it.

        >>> fake.delay_next("POST", "/v1/transfers", 1.0)  # doctest: +SKIP
        """
        self._add_fault(_Fault("delay", method.upper(), path_prefix, times, seconds=seconds))

    def drop_next(self, method: str, path_prefix: str, *, times: int = 1) -> None:
        """Execute the next ``times`` matching requests, then close the connection unanswered.

        The fast way to a connection error (``stripe.APIConnectionError``) with
        the object created server-side.
        """
        self._add_fault(_Fault("drop", method.upper(), path_prefix, times))

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _serve(self, method: str, raw_path: str, body: bytes, headers: dict[str, str]) -> _Outcome:
        request_id = new_id("req", 14)
        split = urlsplit(raw_path)
        path = split.path
        idempotency_key = _header(headers, "Idempotency-Key") if method != "GET" else None
        account = _header(headers, "Stripe-Account") or None
        response_headers = {
            "Content-Type": "application/json",
            "Request-Id": request_id,
            "Stripe-Version": _header(headers, "Stripe-Version") or self.api_version,
        }
        if idempotency_key:
            response_headers["Idempotency-Key"] = idempotency_key
        if account:
            response_headers["Stripe-Account"] = account
        outcome = _Outcome(200, b"", response_headers)
        params: JSON = {}
        replayed = False
        with self._lock:
            try:
                params = self._decode(method, split.query, body, headers)
                call = _Call(method, path, params, account, request_id, idempotency_key)
                replayed = self._execute(call, headers, outcome)
            except StripeAPIError as error:
                outcome.status, outcome.body = error.status, _dumps(error.body(request_id))
            except Exception as exc:
                # A bug in the fake, not a Stripe answer: say so loudly, and tell the SDK
                # not to retry it.
                _log.exception("FakeStripe failed on %s %s", method, path)
                internal = StripeAPIError(
                    500, f"FakeStripe internal error: {exc!r}", error_type="api_error"
                )
                outcome.status, outcome.body = 500, _dumps(internal.body(request_id))
                outcome.headers["Stripe-Should-Retry"] = "false"
            self._requests.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    params=params,
                    headers=headers,
                    status=outcome.status,
                    request_id=request_id,
                    idempotency_key=idempotency_key,
                    stripe_account=account,
                    replayed=replayed,
                )
            )
        return outcome

    def _execute(self, call: _Call, headers: Mapping[str, str], outcome: _Outcome) -> bool:
        """Run one authenticated call into ``outcome``; ``True`` if it was an idempotent replay."""
        self._authenticate(headers)
        fault = self._take_fault(call.method, call.path)
        if fault is not None:
            if fault.error is not None:
                outcome.headers.update(fault.headers)
                raise fault.error
            outcome.delay, outcome.drop = fault.seconds, fault.kind == "drop"
        key = call.idempotency_key
        fingerprint = json.dumps([call.method, call.path, call.params], sort_keys=True)
        saved = self._idempotency.get((call.account, key)) if key else None
        if saved is not None:
            if saved.fingerprint != fingerprint:
                raise StripeAPIError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they"
                    f" were first used with. Try using a key other than '{key}' if you meant to"
                    " execute a different request.",
                    error_type="idempotency_error",
                )
            outcome.status, outcome.body = saved.status, saved.body
            outcome.headers["Idempotent-Replayed"] = "true"
            return True
        outcome.status, outcome.body = 200, _dumps(self._route(call))
        if key:
            self._idempotency[(call.account, key)] = _Saved(fingerprint, 200, outcome.body)
        return False

    @staticmethod
    def _decode(method: str, query: str, body: bytes, headers: Mapping[str, str]) -> JSON:
        if method == "POST":
            content_type = (_header(headers, "Content-Type") or "").split(";")[0].strip()
            if body and content_type != "application/x-www-form-urlencoded":
                raise _invalid(
                    "Invalid request: v1 endpoints take application/x-www-form-urlencoded bodies"
                )
            text = body.decode("utf-8")
        else:
            text = query
        return parse_params(parse_qsl(text, keep_blank_values=True))

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        authorization = _header(headers, "Authorization") or ""
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise StripeAPIError(
                401,
                "You did not provide an API key. You need to provide your API key in the"
                " Authorization header, using Bearer auth (e.g. 'Authorization: Bearer"
                " YOUR_SECRET_KEY').",
            )
        masked = key[:8] + "*" * 4 + key[-4:]
        if key.startswith(("sk_live_", "rk_live_")):
            raise StripeAPIError(
                401, f"FakeStripe is a test double and refuses live-mode keys: {masked}"
            )
        known = self._api_keys
        if (known is not None and key not in known) or (
            known is None and not key.startswith(("sk_test_", "rk_test_"))
        ):
            raise StripeAPIError(401, f"Invalid API Key provided: {masked}")

    def complete_checkout(
        self,
        session_id: str,
        *,
        paid: bool = True,
        settle_currency: str = "usd",
        exchange_rate: Decimal | None = None,
        settle_amount_minor: int | None = None,
        fee_minor: int | None = None,
        risk_level: str = "normal",
        risk_score: int | None = None,
        customer_email: str = "customer@example.com",
    ) -> JSON:
        """The customer pays: returns ``checkout.session.completed``.

        Creates the PaymentIntent (metadata from ``payment_intent_data``), its
        Charge (``outcome.risk_level``/``risk_score``, same metadata) and, when
        ``paid``, the BalanceTransaction: the amount in ``settle_currency``
        (converted at ``exchange_rate``, settlement units per presentment unit,
        rounded half up; or exactly ``settle_amount_minor``), ``fee_minor``
        (default 2.9% + 30) and ``net``. ``paid=False`` models a delayed
        method (SEPA, ACH): the session completes with ``payment_status:
        "unpaid"`` and :meth:`async_payment_succeeded` or
        :meth:`async_payment_failed` finishes it.

        >>> event = fake.complete_checkout(cs_id, exchange_rate=Decimal("1.0843"))  # doctest: +SKIP
        >>> event["data"]["object"]["payment_status"]  # doctest: +SKIP
        'paid'
        """
        if risk_level not in _RISK_LEVELS:
            raise ValueError(f"risk_level must be one of {_RISK_LEVELS}, got {risk_level!r}")
        if exchange_rate is not None and not isinstance(exchange_rate, Decimal):
            raise TypeError("exchange_rate must be a Decimal (never a float)")
        settle_currency = settle_currency.lower()
        with self._lock:
            session = self._require(session_id, "checkout.session")
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
            currency = session["currency"]
            amount = session["amount_total"]
            if settle_currency == currency:
                if exchange_rate is not None and exchange_rate != 1:
                    raise ValueError("no exchange_rate applies when settling in the same currency")
                exchange_rate = None
                settled = amount if settle_amount_minor is None else settle_amount_minor
            elif settle_amount_minor is not None:
                settled = settle_amount_minor
            elif exchange_rate is None:
                raise ValueError(
                    f"settling {currency} in {settle_currency} needs an exchange_rate"
                    " or settle_amount_minor"
                )
            else:
                settled = convert_minor(amount, currency, settle_currency, exchange_rate)
            owner = self._owners[session_id]
            extras = self._session_extras[session_id]["payment_intent_data"]
            now = self._now()
            intent_id, charge_id = new_id("pi"), new_id("ch")
            payment_method = new_id("pm")
            method_type = session["payment_method_types"][0]
            intent = fixture("payment_intent")
            intent.update(
                id=intent_id,
                amount=amount,
                amount_capturable=0,
                amount_received=amount if paid else 0,
                automatic_payment_methods=None,
                canceled_at=None,
                client_secret=f"{intent_id}_secret_{random_token(25)}",
                created=now,
                currency=currency,
                description=extras["description"],
                last_payment_error=None,
                latest_charge=charge_id,
                metadata=dict(extras["metadata"]),
                next_action=None,
                payment_method=payment_method,
                payment_method_configuration_details=None,
                payment_method_types=list(session["payment_method_types"]),
                processing=None if paid else {"type": method_type},
                shipping=None,
                statement_descriptor=extras["statement_descriptor"],
                status="succeeded" if paid else "processing",
                transfer_data=None,
                transfer_group=extras["transfer_group"],
            )
            self._put(intent, owner)
            score = risk_score if risk_score is not None else _RISK_SCORES.get(risk_level)
            charge = fixture("charge")
            charge["billing_details"]["email"] = customer_email
            charge.update(
                id=charge_id,
                amount=amount,
                amount_captured=amount,
                amount_refunded=0,
                balance_transaction=None,
                captured=True,
                created=now,
                currency=currency,
                description=extras["description"],
                disputed=False,
                metadata=dict(extras["metadata"]),
                outcome={
                    "advice_code": None,
                    "network_advice_code": None,
                    "network_decline_code": None,
                    "network_status": "approved_by_network",
                    "reason": None,
                    "risk_level": risk_level,
                    "risk_score": score,
                    "seller_message": "Payment complete.",
                    "type": "authorized",
                },
                paid=paid,
                payment_intent=intent_id,
                payment_method=payment_method,
                receipt_email=customer_email,
                refunded=False,
                refunds={
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": f"/v1/charges/{charge_id}/refunds",
                },
                source=None,
                status="succeeded" if paid else "pending",
                transfer_data=None,
                transfer_group=extras["transfer_group"],
            )
            self._put(charge, owner)
            self._settlements[charge_id] = _Settlement(settle_currency, settled, exchange_rate)
            if paid:
                self._settle_charge(charge, fee_minor)
            else:
                self._pending_fees[charge_id] = fee_minor
            previous = {
                "customer_details": None,
                "payment_intent": None,
                "payment_status": "unpaid",
                "status": "open",
            }
            session.update(
                customer_details={
                    "address": None,
                    "business_name": None,
                    "email": customer_email,
                    "individual_name": None,
                    "name": None,
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
                payment_intent=intent_id,
                payment_status="paid" if paid else "unpaid",
                status="complete",
            )
            return self._event(
                "checkout.session.completed", session, account=owner, previous=previous
            )

    def _async_session(self, session_id: str) -> tuple[JSON, JSON, JSON]:
        session = self._require(session_id, "checkout.session")
        if session["status"] != "complete" or session["payment_status"] != "unpaid":
            raise ValueError(
                f"checkout session {session_id} is not awaiting a delayed payment"
                f" (status={session['status']}, payment_status={session['payment_status']})"
            )
        intent = self._objects[session["payment_intent"]]
        charge = self._objects[intent["latest_charge"]]
        if charge["status"] != "pending":
            raise ValueError(f"the charge of {session_id} is {charge['status']}, not pending")
        return session, intent, charge

    def async_payment_succeeded(self, session_id: str) -> JSON:
        """The delayed payment clears: returns ``checkout.session.async_payment_succeeded``.

        >>> fake.complete_checkout(session.id, paid=False)  # doctest: +SKIP
        >>> fake.async_payment_succeeded(session.id)["type"]  # doctest: +SKIP
        'checkout.session.async_payment_succeeded'
        """
        with self._lock:
            session, intent, charge = self._async_session(session_id)
            charge.update(paid=True, status="succeeded")
            self._settle_charge(charge, self._pending_fees.pop(charge["id"], None))
            intent.update(amount_received=intent["amount"], processing=None, status="succeeded")
            session["payment_status"] = "paid"
            return self._event(
                "checkout.session.async_payment_succeeded",
                session,
                account=self._owners[session_id],
                previous={"payment_status": "unpaid"},
            )

    def async_payment_failed(
        self, session_id: str, *, failure_code: str = "insufficient_funds"
    ) -> JSON:
        """The delayed payment bounces: returns ``checkout.session.async_payment_failed``."""
        with self._lock:
            session, intent, charge = self._async_session(session_id)
            self._pending_fees.pop(charge["id"], None)
            charge.update(
                failure_code=failure_code,
                failure_message="The payment failed (simulated by FakeStripe).",
                paid=False,
                status="failed",
            )
            intent.update(
                last_payment_error={"code": failure_code, "type": "card_error"},
                processing=None,
                status="requires_payment_method",
            )
            return self._event(
                "checkout.session.async_payment_failed", session, account=self._owners[session_id]
            )

    def expire_checkout(self, session_id: str) -> JSON:
        """The session times out unpaid: returns ``checkout.session.expired``.

        >>> fake.expire_checkout(cs_id)["data"]["object"]["status"]  # doctest: +SKIP
        'expired'
        """
        with self._lock:
            session = self._require(session_id, "checkout.session")
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
            return self._expire(session, None)

    def refund(self, charge_id: str, amount_minor: int | None = None) -> JSON:
        """Refund from the Dashboard (all, or ``amount_minor`` of the charge currency).

        Returns ``charge.refunded``; the charge carries ``amount_refunded`` and
        its ``refunds`` list, and the refund a negative balance transaction.

        >>> event = fake.refund(charge_id, amount_minor=199)  # doctest: +SKIP
        >>> event["data"]["object"]["amount_refunded"]  # doctest: +SKIP
        199
        """
        with self._lock:
            charge = self._require(charge_id, "charge")
            try:
                _refund, event = self._refund(
                    charge, amount_minor, reason="requested_by_customer", metadata={}, call=None
                )
            except StripeAPIError as error:
                raise ValueError(error.message) from None
            return event

    def dispute(
        self,
        charge_id: str,
        *,
        amount_minor: int | None = None,
        reason: str = "fraudulent",
    ) -> JSON:
        """The cardholder disputes the charge: returns ``charge.dispute.created``.

        Follow with :meth:`dispute_funds_withdrawn` (Stripe sends it at once),
        then :meth:`dispute_funds_reinstated` if won, and :meth:`close_dispute`.

        >>> dispute_id = fake.dispute(charge_id)["data"]["object"]["id"]  # doctest: +SKIP
        >>> fake.dispute_funds_withdrawn(dispute_id)  # doctest: +SKIP
        >>> fake.close_dispute(dispute_id, status="lost")["type"]  # doctest: +SKIP
        'charge.dispute.closed'
        """
        with self._lock:
            charge = self._require(charge_id, "charge")
            if charge["status"] != "succeeded":
                raise ValueError(f"charge {charge_id} is {charge['status']}: nothing to dispute")
            if self._open_dispute(charge_id) is not None:
                raise ValueError(f"charge {charge_id} already has an open dispute")
            now = self._now()
            dispute = fixture("dispute")
            dispute["evidence_details"].update(due_by=now + 7 * _DAY, past_due=False)
            dispute["payment_method_details"]["card"]["case_type"] = "chargeback"
            dispute.update(
                id=new_id("dp"),
                amount=charge["amount"] if amount_minor is None else amount_minor,
                balance_transactions=[],
                charge=charge_id,
                created=now,
                currency=charge["currency"],
                enhanced_eligibility_types=[],
                is_charge_refundable=False,
                payment_intent=charge["payment_intent"],
                reason=reason,
                status="needs_response",
            )
            self._put(dispute, self._owners[charge_id])
            charge["disputed"] = True
            return self._event("charge.dispute.created", dispute, account=self._owners[charge_id])

    def dispute_funds_withdrawn(
        self, dispute_id: str, *, fee_minor: int = _DEFAULT_DISPUTE_FEE_MINOR
    ) -> JSON:
        """Stripe debits the disputed amount and a fee: ``charge.dispute.funds_withdrawn``.

        The dispute's ``balance_transactions`` gains the debit (settlement
        currency, ``fee`` = ``fee_minor``, 1500 = $15.00 by default).
        """
        return self._dispute_funds(dispute_id, withdrawn=True, fee_minor=fee_minor)

    def dispute_funds_reinstated(self, dispute_id: str, *, fee_returned_minor: int = 0) -> JSON:
        """A won dispute returns the funds: ``charge.dispute.funds_reinstated``.

        ``fee_returned_minor`` is the part of the dispute fee given back (none by default).
        """
        return self._dispute_funds(dispute_id, withdrawn=False, fee_minor=-fee_returned_minor)

    def _dispute_funds(self, dispute_id: str, *, withdrawn: bool, fee_minor: int) -> JSON:
        with self._lock:
            dispute = self._require(dispute_id, "dispute")
            expected = 0 if withdrawn else 1
            if len(dispute["balance_transactions"]) != expected:
                raise ValueError(
                    f"dispute {dispute_id}: funds can be withdrawn once, then reinstated once"
                )
            charge = self._objects[dispute["charge"]]
            settlement = self._settlements[charge["id"]]
            settled = self._settle_part(charge, dispute["amount"])
            txn = self._balance_transaction(
                owner=self._owners[dispute_id],
                amount_minor=-settled if withdrawn else settled,
                currency=settlement.currency,
                txn_type="adjustment",
                source=dispute_id,
                reporting_category="dispute" if withdrawn else "dispute_reversal",
                fee_minor=fee_minor,
                fee_description="Dispute fee",
                exchange_rate=settlement.exchange_rate,
                description=(
                    f"Chargeback withdrawal for {charge['id']}"
                    if withdrawn
                    else f"Chargeback reversal for {charge['id']}"
                ),
            )
            previous = {"balance_transactions": copy.deepcopy(dispute["balance_transactions"])}
            dispute["balance_transactions"].append(copy.deepcopy(txn))
            event_type = "funds_withdrawn" if withdrawn else "funds_reinstated"
            return self._event(
                f"charge.dispute.{event_type}",
                dispute,
                account=self._owners[dispute_id],
                previous=previous,
            )

    def close_dispute(self, dispute_id: str, *, status: Literal["won", "lost"]) -> JSON:
        """The dispute is decided: returns ``charge.dispute.closed`` with ``status`` won or lost."""
        if status not in ("won", "lost"):
            raise ValueError("status must be 'won' or 'lost'")
        with self._lock:
            dispute = self._require(dispute_id, "dispute")
            if dispute["status"] in ("won", "lost"):
                raise ValueError(f"dispute {dispute_id} is already closed ({dispute['status']})")
            previous = {"status": dispute["status"]}
            dispute["status"] = status
            return self._event(
                "charge.dispute.closed",
                dispute,
                account=self._owners[dispute_id],
                previous=previous,
            )

    def create_account(
        self,
        *,
        country: str = "US",
        email: str | None = None,
        metadata: Mapping[str, str] | None = None,
        onboarded: bool = False,
        account_type: str = "express",
    ) -> JSON:
        """Seed a connected account without the API (no event); returns the account.

        ``onboarded=True`` gives an account that can receive transfers and pay out.

        >>> acct = fake.create_account(onboarded=True)["id"]  # doctest: +SKIP
        """
        with self._lock:
            account = self._new_account(
                account_type=account_type,
                country=country.upper(),
                email=email,
                metadata=dict(metadata or {}),
                capabilities=("card_payments", "transfers"),
            )
            if onboarded:
                self._apply_account_update(account, **_ONBOARDED)
            return copy.deepcopy(account)

    def update_account(
        self,
        account_id: str,
        *,
        charges_enabled: bool | None = None,
        payouts_enabled: bool | None = None,
        details_submitted: bool | None = None,
        currently_due: Iterable[str] | None = None,
        eventually_due: Iterable[str] | None = None,
        past_due: Iterable[str] | None = None,
        disabled_reason: str | _Unset | None = _UNSET,
        capabilities: Mapping[str, str] | None = None,
    ) -> JSON:
        """KYC moves on: returns ``account.updated`` (a Connect event, ``account`` set).

        Only the fields given change; ``previous_attributes`` holds their old values.
        Transfers to the account need ``capabilities={"transfers": "active"}``
        (which :meth:`onboard_account` sets along with everything else).

        >>> fake.update_account(acct, payouts_enabled=False, past_due=["external_account"],
        ...                     disabled_reason="requirements.past_due")  # doctest: +SKIP
        """
        with self._lock:
            account = self._require(account_id, "account")
            previous = self._apply_account_update(
                account,
                charges_enabled=charges_enabled,
                payouts_enabled=payouts_enabled,
                details_submitted=details_submitted,
                currently_due=currently_due,
                eventually_due=eventually_due,
                past_due=past_due,
                disabled_reason=disabled_reason,
                capabilities=capabilities,
            )
            return self._event("account.updated", account, account=account_id, previous=previous)

    def onboard_account(self, account_id: str) -> JSON:
        """Onboarding completes: everything enabled, nothing due. Returns ``account.updated``."""
        return self.update_account(account_id, **_ONBOARDED)

    def reverse_transfer(self, transfer_id: str, amount_minor: int | None = None) -> JSON:
        """Reverse a transfer from the Dashboard: returns ``transfer.reversed``.

        >>> fake.reverse_transfer(transfer.id)["data"]["object"]["reversed"]  # doctest: +SKIP
        True
        """
        with self._lock:
            transfer = self._require(transfer_id, "transfer")
            try:
                _reversal, event = self._reverse(
                    transfer, amount_minor, description=None, metadata={}, call=None
                )
            except StripeAPIError as error:
                raise ValueError(error.message) from None
            return event

    def _require_payout(self, payout_id: str, allowed: Iterable[str]) -> JSON:
        payout = self._require(payout_id, "payout")
        if payout["status"] not in tuple(allowed):
            raise ValueError(f"payout {payout_id} is {payout['status']}")
        return payout

    def pay_payout(self, payout_id: str) -> JSON:
        """The bank accepts the payout: returns ``payout.paid`` (a Connect event).

        >>> fake.pay_payout(payout.id)["account"] == acct  # doctest: +SKIP
        True
        """
        with self._lock:
            payout = self._require_payout(payout_id, ("pending", "in_transit"))
            return self._payout_transition(payout, "paid")

    def fail_payout(
        self,
        payout_id: str,
        failure_code: str = "account_closed",
        failure_message: str | None = None,
    ) -> JSON:
        """The bank returns the payout: ``payout.failed`` (also after ``paid``, as on Stripe).

        >>> fake.fail_payout(payout.id, failure_code="account_closed")["type"]  # doctest: +SKIP
        'payout.failed'
        """
        with self._lock:
            payout = self._require_payout(payout_id, ("pending", "in_transit", "paid"))
            message = failure_message or _PAYOUT_FAILURES.get(
                failure_code, "The payout failed (simulated by FakeStripe)."
            )
            return self._payout_transition(
                payout, "failed", failure_code=failure_code, failure_message=message
            )

    def cancel_payout(self, payout_id: str) -> JSON:
        """The payout is canceled before it leaves: returns ``payout.canceled``."""
        with self._lock:
            payout = self._require_payout(payout_id, ("pending",))
            return self._payout_transition(payout, "canceled")


_ONBOARDED: Final[dict[str, Any]] = {
    "charges_enabled": True,
    "payouts_enabled": True,
    "details_submitted": True,
    "currently_due": [],
    "eventually_due": [],
    "past_due": [],
    "disabled_reason": None,
    "capabilities": {"card_payments": "active", "transfers": "active"},
}


def _dumps(obj: JSON) -> bytes:
    return json.dumps(obj, indent=2).encode("utf-8")


def _sdk_api_version() -> str:
    """The API version pinned by the installed SDK, without requiring the SDK."""
    try:
        import stripe
    except ImportError:
        return _FALLBACK_API_VERSION
    return str(stripe.api_version)
