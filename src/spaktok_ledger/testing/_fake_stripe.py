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

Modelled on purpose, because the library must cope with them (each rule
cites its Stripe doc page next to the code):

- money: the platform's and each connected account's balance per currency,
  *pending* until a transaction's ``available_on`` and *available* after, the
  sum of balance transactions written for every movement (charges and their
  fees, refunds and refund failures, disputes and reinstatements, transfers
  and their reversals on both sides, payouts and payout failures, top-ups);
  ``GET /v1/balance`` and ``GET /v1/balance_transactions``.
- Connect: transfers need available funds (``balance_insufficient``) unless a
  ``source_transaction`` funds them; they arrive converted into the connected
  account's currency; payouts only in a currency the account has a bank
  account in; accounts outside the platform's region need the ``recipient``
  service agreement, which cannot request ``card_payments``.
- refunds that stay ``pending`` and then succeed or fail (with
  ``charge.refund.updated``, ``refund.updated``, ``refund.failed``); a
  charged-back payment cannot be refunded; disputes and Radar early fraud
  warnings listed by charge.
- idempotency: same ``Idempotency-Key`` and params replay the first response
  (header ``Idempotent-Replayed: true``), *errors included* once the endpoint
  ran (a ``balance_insufficient`` is replayed to a retry under the same key);
  different params are a 400 ``idempotency_error``. Keys are scoped per
  ``Stripe-Account``.
- ``expand``: a charge's ``refunds`` only when expanded; lists paginate.
- Connect scoping: an object created with a ``Stripe-Account`` header lives on
  that account and is a 404 without the header, as on Stripe.
- validation: unknown top-level params, missing params, bad integers.
- faults: :meth:`FakeStripe.fail_next`, :meth:`FakeStripe.delay_next` and
  :meth:`FakeStripe.drop_next`. A delayed or dropped request is executed
  *before* the response is held back or lost, like a real timeout: a retry
  with the same idempotency key replays it instead of creating a second object.

The code: ``_state.py`` holds the objects, events and balances,
``_moves.py`` the money moves shared by API and simulator, ``_api.py`` and
``_api_connect.py`` the endpoints, ``_simulator.py`` Stripe's side of the
story, this module the server and the faults.

Not modelled: prices and products (checkout takes ``price_data`` only),
customers, reserves, and webhook delivery (tests post the signed events to
their own endpoint).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from spaktok_ledger.testing._fixtures import new_id
from spaktok_ledger.testing._forms import StripeAPIError, parse_params
from spaktok_ledger.testing._simulator import _Simulator
from spaktok_ledger.testing._state import JSON, _Call, _invalid

__all__ = ["FakeStripe", "RecordedRequest"]

_log = logging.getLogger("spaktok_ledger.testing.fake_stripe")

_FALLBACK_API_VERSION: Final = "2026-10-28.endive"


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


class FakeStripe(_Simulator):
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
        platform_country: str = "US",
        charge_delay_days: int = 2,
        adaptive_pricing: bool = True,
    ) -> None:
        """Configure the fake; nothing listens until :meth:`start`.

        ``api_version`` is stamped on events (default: the installed SDK's
        pinned version). ``api_keys``, when given, is the only set of secret
        keys accepted; otherwise any ``sk_test_``/``rk_test_`` key is. ``clock``
        gives the time of ``created`` fields and of fund availability: Unix
        seconds or an aware ``datetime`` (so a
        :class:`~spaktok_ledger.testing.FakeClock` fits). ``platform_country``
        decides which connected accounts are cross-border;
        ``charge_delay_days`` how long a charge's funds stay pending;
        ``adaptive_pricing`` whether Checkout Sessions use Adaptive Pricing
        unless they turn it off (the Dashboard setting).
        """
        if charge_delay_days < 0:
            raise ValueError("charge_delay_days cannot be negative")
        super().__init__(
            api_version=api_version or _sdk_api_version(),
            clock=clock,
            platform_country=platform_country,
            charge_delay_days=charge_delay_days,
        )
        self.adaptive_pricing_default = adaptive_pricing
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
        stored: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with a Stripe error, doing nothing.

        ``method`` is an HTTP verb or ``"*"``; ``path_prefix`` matches the start
        of the path. By default the failed request stores no idempotent result,
        so a retry with the same key runs normally (as after errors raised before
        the endpoint ran: 429, 409, a failed validation). ``stored=True`` models an
        error raised while the endpoint ran: Stripe saves it under the key and
        replays it to every retry with that key, 500s included
        (https://docs.stripe.com/api/idempotent_requests).

        >>> fake.fail_next("POST", "/v1/transfers", status=402, error_type="card_error",
        ...                code="balance_insufficient")  # doctest: +SKIP
        """
        error = StripeAPIError(
            status, message, error_type=error_type, code=code, param=param, stored=stored
        )
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
                if error.stored and idempotency_key:
                    fingerprint = json.dumps([method, path, params], sort_keys=True)
                    self._idempotency[(account, idempotency_key)] = _Saved(
                        fingerprint, error.status, outcome.body
                    )
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


def _dumps(obj: JSON) -> bytes:
    return json.dumps(obj, indent=2).encode("utf-8")


def _sdk_api_version() -> str:
    """The API version pinned by the installed SDK, without requiring the SDK."""
    try:
        import stripe
    except ImportError:
        return _FALLBACK_API_VERSION
    return str(stripe.api_version)
