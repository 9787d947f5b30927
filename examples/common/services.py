"""What the example apps share: configuration, wiring, the auth stand-in, their own problems.

The apps (``examples/fastapi_app``, ``examples/flask_app``, ``examples/django_app``)
stay short because everything that is not about their framework lives here:

- :class:`Settings`: configuration from environment variables (see the table
  in ``examples/README.md``);
- :func:`build_services`: the library's services built once at start-up from
  the settings (ledger, gift economy, pricing, payments, payouts);
- :func:`authenticate` / :func:`require_owner`: a **stand-in** for the host's
  real authentication (a header naming the caller);
- :func:`fail` and friends: the apps' own refusals (401, 403, 400, 422) as RFC
  9457 problems; library errors need no table here, ``spaktok_ledger.http``
  owns it (``problem_for``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from spaktok_ledger import (
    DEFAULT_PREFIX,
    CoinPack,
    Gift,
    GiftCatalogue,
    GiftEconomy,
    GiftReceipt,
    InvalidInput,
    Ledger,
    PackCatalogue,
    Payments,
    Payouts,
    Pricing,
    StripeGateway,
    UnknownStreamer,
    UnknownUser,
    WalletBalance,
    WebhookResult,
    check_party_id,
)
from spaktok_ledger.fx import CachedRateProvider, RateProvider, StaticRateProvider
from spaktok_ledger.http import ProblemError, make_problem

__all__ = [
    "DEFAULT_GIFTS",
    "DEFAULT_PACKS",
    "DEFAULT_STATIC_RATES",
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "USER_HEADER",
    "ConfigError",
    "Services",
    "Settings",
    "authenticate",
    "balance_body",
    "build_services",
    "fail",
    "gift_body",
    "history_body",
    "malformed_json",
    "replay_headers",
    "require_idempotency_key",
    "require_owner",
    "unexpected_error",
    "validation_failed",
]

USER_HEADER: Final = "X-User-Id"
"""STAND-IN for real authentication: the header naming the caller (see :func:`authenticate`)."""
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"

DEFAULT_PACKS: Final = PackCatalogue(
    (
        CoinPack("starter", usd_price_minor=499, coins=500, name="Starter"),
        CoinPack("fan", usd_price_minor=1999, coins=2000, bonus_coins=200, name="Fan"),
        CoinPack("whale", usd_price_minor=9999, coins=10000, bonus_coins=1500, name="Whale"),
    )
)
DEFAULT_GIFTS: Final = GiftCatalogue(
    (
        Gift("rose", 10, "Rose"),
        Gift("heart", 99, "Heart"),
        Gift("crown", 499, "Crown"),
        Gift("rocket", 5000, "Rocket"),
    )
)
# USD -> currency sample rates for SPAKTOK_RATES=static (offline runs and tests only:
# a static table never moves, so production uses ecb or openexchangerates).
DEFAULT_STATIC_RATES: Final[Mapping[str, Decimal]] = {
    "EUR": Decimal("0.934143"),
    "GBP": Decimal("0.790617"),
    "JPY": Decimal("160.6165"),
    "BRL": Decimal("5.5035"),
}

DEFAULT_DATABASE_URL: Final = "sqlite:///spaktok-example.db"
DEFAULT_PAYOUT_MINIMUM_USD_MINOR: Final = 5000  # USD 50.00, as the library's default
DEFAULT_SUCCESS_URL: Final = "http://localhost:8000/store/paid"
DEFAULT_CANCEL_URL: Final = "http://localhost:8000/store"


class ConfigError(Exception):
    """An environment variable is missing or malformed (the message names it)."""


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """The example apps' configuration; :meth:`from_env` reads it from the environment."""

    stripe_secret_key: str = field(repr=False)
    """``STRIPE_SECRET_KEY``: ``sk_...`` or a restricted ``rk_...`` key."""
    stripe_webhook_secret: str = field(repr=False)
    """``STRIPE_WEBHOOK_SECRET``: the platform endpoint's ``whsec_...``."""
    stripe_connect_webhook_secret: str = field(repr=False)
    """``STRIPE_CONNECT_WEBHOOK_SECRET``: the Connect endpoint's ``whsec_...``."""
    database_url: str = DEFAULT_DATABASE_URL
    table_prefix: str = DEFAULT_PREFIX
    stripe_api_base: str | None = None
    """``STRIPE_API_BASE``: send Stripe calls to this URL (a local FakeStripe), not Stripe."""
    rates: Literal["ecb", "static", "openexchangerates"] = "ecb"
    static_rates: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_STATIC_RATES))
    openexchangerates_app_id: str | None = field(default=None, repr=False)
    packs_path: str | None = None
    gifts_path: str | None = None
    payout_mode: Literal["automatic", "manual"] = "automatic"
    payout_minimum_usd_minor: int = DEFAULT_PAYOUT_MINIMUM_USD_MINOR
    checkout_success_url: str = DEFAULT_SUCCESS_URL
    checkout_cancel_url: str = DEFAULT_CANCEL_URL
    webhook_mode: Literal["inline", "fast-ack"] = "inline"
    """``SPAKTOK_WEBHOOK_MODE`` (default from the environment: ``fast-ack``): ``fast-ack``
    stores verified events for a worker and answers at once (docs/worker.md);
    ``inline`` applies them in the request."""
    in_process_worker: bool = False
    """``SPAKTOK_IN_PROCESS_WORKER`` (default from the environment: on): run a Worker
    (and, with ``redis_url``, the outbox relay) in a thread of the app. Off when
    ``spaktok-ledger worker`` / ``relay`` run as their own processes."""
    redis_url: str | None = None
    """``SPAKTOK_REDIS_URL``: where the relay publishes gift events, and the
    WebSocket ``/api/streams/{streamer_id}/gifts`` reads them."""
    redis_stream_prefix: str = "spaktok:"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: ``os.environ``); ``ConfigError`` if wrong."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def required(name: str) -> str:
            value = get(name)
            if value is None:
                raise ConfigError(f"{name} is not set (see examples/README.md)")
            return value

        rates = get("SPAKTOK_RATES") or "ecb"
        if rates not in ("ecb", "static", "openexchangerates"):
            raise ConfigError(f"SPAKTOK_RATES must be ecb, static or openexchangerates: {rates!r}")
        oxr = get("OPENEXCHANGERATES_APP_ID")
        if rates == "openexchangerates" and oxr is None:
            raise ConfigError("SPAKTOK_RATES=openexchangerates needs OPENEXCHANGERATES_APP_ID")
        mode = get("SPAKTOK_PAYOUT_MODE") or "automatic"
        if mode not in ("automatic", "manual"):
            raise ConfigError(f"SPAKTOK_PAYOUT_MODE must be automatic or manual: {mode!r}")
        minimum = get("SPAKTOK_PAYOUT_MINIMUM_USD_MINOR") or str(DEFAULT_PAYOUT_MINIMUM_USD_MINOR)
        if not minimum.isdigit():
            raise ConfigError("SPAKTOK_PAYOUT_MINIMUM_USD_MINOR must be a whole number of cents")
        static = get("SPAKTOK_STATIC_RATES")
        webhook_mode = get("SPAKTOK_WEBHOOK_MODE") or "fast-ack"
        if webhook_mode not in ("inline", "fast-ack"):
            raise ConfigError(f"SPAKTOK_WEBHOOK_MODE must be inline or fast-ack: {webhook_mode!r}")
        return cls(
            stripe_secret_key=required("STRIPE_SECRET_KEY"),
            stripe_webhook_secret=required("STRIPE_WEBHOOK_SECRET"),
            stripe_connect_webhook_secret=required("STRIPE_CONNECT_WEBHOOK_SECRET"),
            database_url=get("SPAKTOK_DATABASE_URL") or DEFAULT_DATABASE_URL,
            table_prefix=get("SPAKTOK_TABLE_PREFIX") or DEFAULT_PREFIX,
            stripe_api_base=get("STRIPE_API_BASE"),
            rates=rates,  # type: ignore[arg-type]
            static_rates=_parse_rates(static) if static else dict(DEFAULT_STATIC_RATES),
            openexchangerates_app_id=oxr,
            packs_path=get("SPAKTOK_PACKS"),
            gifts_path=get("SPAKTOK_GIFTS"),
            payout_mode=mode,  # type: ignore[arg-type]
            payout_minimum_usd_minor=int(minimum),
            checkout_success_url=get("SPAKTOK_CHECKOUT_SUCCESS_URL") or DEFAULT_SUCCESS_URL,
            checkout_cancel_url=get("SPAKTOK_CHECKOUT_CANCEL_URL") or DEFAULT_CANCEL_URL,
            webhook_mode=webhook_mode,  # type: ignore[arg-type]
            in_process_worker=(get("SPAKTOK_IN_PROCESS_WORKER") or "1") not in ("0", "false", "no"),
            redis_url=get("SPAKTOK_REDIS_URL"),
            redis_stream_prefix=get("SPAKTOK_REDIS_STREAM_PREFIX") or "spaktok:",
        )


def _parse_rates(text: str) -> dict[str, Decimal]:
    """``"EUR=0.93,JPY=160.6"`` -> rates as ``Decimal`` (never float)."""
    rates: dict[str, Decimal] = {}
    for item in text.split(","):
        code, _, value = item.partition("=")
        try:
            rates[code.strip().upper()] = Decimal(value.strip())
        except InvalidOperation:
            raise ConfigError(f"SPAKTOK_STATIC_RATES: bad rate {item!r} (CODE=decimal)") from None
    return rates


# -- wiring ------------------------------------------------------------------------------


@dataclass(slots=True)
class Services:
    """The library's services, built once per process by :func:`build_services`."""

    settings: Settings
    ledger: Ledger
    economy: GiftEconomy
    pricing: Pricing
    gateway: StripeGateway
    payments: Payments
    payouts: Payouts
    background: list[Any] = field(default_factory=list)
    """The in-process worker and relay (``start_background``) and their threads."""

    def handle_platform_webhook(self, body: bytes, signature: str) -> WebhookResult:
        """A delivery to the platform endpoint (``transfer.*`` events among them are
        handed to the payouts service by ``Payments``, see ``build_services``):
        stored for the worker (``fast-ack``) or applied now (``inline``)."""
        if self.settings.webhook_mode == "fast-ack":
            return self.payments.accept_webhook(body, signature)
        return self.payments.handle_webhook(body, signature)

    def handle_connect_webhook(self, body: bytes, signature: str) -> WebhookResult:
        """A delivery to the Connect endpoint, in the same mode."""
        if self.settings.webhook_mode == "fast-ack":
            return self.payouts.accept_webhook(body, signature)
        return self.payouts.handle_webhook(body, signature)

    def start_background(self) -> None:
        """Run a Worker (and the outbox relay to Redis, with ``redis_url``) in daemon
        threads; ``close()`` stops them. Production runs ``spaktok-ledger worker`` and
        ``spaktok-ledger relay`` instead (docs/operations.md)."""
        import threading

        from spaktok_ledger import OutboxRelay, RedisStreamsPublisher, Worker

        loops: list[Any] = [Worker(self.payments, self.payouts, idle_seconds=0.2)]
        if self.settings.redis_url:
            publisher = RedisStreamsPublisher(
                self.settings.redis_url, stream_prefix=self.settings.redis_stream_prefix
            )
            loops.append(OutboxRelay(self.economy.outbox, [publisher], idle_seconds=0.1))
        for loop in loops:
            thread = threading.Thread(target=loop.run_forever, daemon=True)
            thread.start()
            self.background.append((loop, thread))

    def close(self) -> None:
        for loop, _thread in self.background:
            loop.stop()
        for loop, thread in self.background:
            thread.join(timeout=30)
            if hasattr(loop, "close"):
                loop.close()
        self.background.clear()
        self.ledger.close()


def _rate_provider(settings: Settings) -> RateProvider:
    if settings.rates == "static":
        return StaticRateProvider(dict(settings.static_rates))
    if settings.rates == "openexchangerates":
        from spaktok_ledger.fx import OpenExchangeRatesProvider

        assert settings.openexchangerates_app_id is not None
        return CachedRateProvider(OpenExchangeRatesProvider(settings.openexchangerates_app_id))
    from spaktok_ledger.fx import ECBRateProvider

    return CachedRateProvider(ECBRateProvider())


def _gateway(settings: Settings) -> StripeGateway:
    if settings.stripe_api_base:
        # A local FakeStripe (tests, offline runs): the real SDK, another base URL.
        from spaktok_ledger.testing import stripe_client

        return StripeGateway(
            stripe_client(settings.stripe_api_base, settings.stripe_secret_key, timeout=20)
        )
    return StripeGateway(api_key=settings.stripe_secret_key)


def build_services(settings: Settings | None = None, *, ledger: Ledger | None = None) -> Services:
    """Build the services from ``settings`` (default: the environment) and set up the schema.

    ``economy.setup()`` migrates the ledger's tables and opens the platform
    accounts; it is idempotent, so every process may call it at start-up.
    ``ledger``: one the host made (Django's, from ``spaktok_ledger.contrib.django``)
    instead of one from ``settings.database_url``.
    """
    settings = settings or Settings.from_env()
    packs = PackCatalogue.load(settings.packs_path) if settings.packs_path else DEFAULT_PACKS
    gifts = GiftCatalogue.load(settings.gifts_path) if settings.gifts_path else DEFAULT_GIFTS
    if ledger is None:
        ledger = Ledger(settings.database_url, prefix=settings.table_prefix)
    try:
        economy = GiftEconomy(
            ledger,
            gifts,
            coin_value_usd_minor=packs.coin_value_usd_minor,
            # Shares payable at once, so the example's story fits in one run; in
            # production keep the 7-day default hold period (docs/gifts.md).
            hold_days=0,
        )
        economy.setup()
        pricing = Pricing(
            ledger,
            packs,
            _rate_provider(settings),
            coin_value_usd_minor=packs.coin_value_usd_minor,
        )
        gateway = _gateway(settings)
        payments = Payments(
            economy, pricing, gateway, webhook_secret=settings.stripe_webhook_secret
        )
        payouts = Payouts(
            economy,
            gateway,
            connect_webhook_secret=settings.stripe_connect_webhook_secret,
            manual_payouts=settings.payout_mode == "manual",
            minimum_usd_minor=settings.payout_minimum_usd_minor,
        )
        # Transfers are the platform's objects, so transfer.* events reach the
        # platform endpoint; they belong to payouts.
        payments.transfer_events = payouts.handle_event
    except BaseException:
        ledger.close()
        raise
    services = Services(settings, ledger, economy, pricing, gateway, payments, payouts)
    if settings.in_process_worker:
        services.start_background()
    return services


# -- the apps' own problems (RFC 9457) -----------------------------------------------------
# Library errors become problems through spaktok_ledger.http.problem_for (the library's
# one table); these are the refusals that belong to the apps themselves.


def fail(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> ProblemError:
    """An app-level refusal as an exception the apps answer like a library error."""
    return ProblemError(make_problem(status, code, title, detail, headers=headers, **extra))


def malformed_json(detail: str) -> ProblemError:
    return fail(400, "malformed_json", "Malformed JSON body", detail)


def validation_failed(errors: list[dict[str, str]]) -> ProblemError:
    """422 with one ``{"field", "message"}`` per problem found in the request."""
    fields = ", ".join(e["field"] for e in errors)
    return fail(
        422, "validation_failed", "Request validation failed", f"invalid: {fields}", errors=errors
    )


def unexpected_error() -> ProblemError:
    return fail(500, "internal_error", "Internal server error", "an unexpected error")


# -- the auth stand-in and the Idempotency-Key header ------------------------------------


def authenticate(user_header: str | None) -> str:
    """STAND-IN FOR REAL AUTHENTICATION: trusts the ``X-User-Id`` header as the caller.

    Anyone can claim any id this way. A real host derives the user id from a
    verified session or token (and never from a header the client sets);
    replace this function, keep the rest.
    """
    if user_header is None or not user_header.strip():
        raise fail(
            401,
            "unauthenticated",
            "Authentication required",
            f"send the {USER_HEADER} header (a stand-in for real authentication)",
            headers={"WWW-Authenticate": f'{USER_HEADER} realm="spaktok-example"'},
        )
    try:
        return check_party_id(user_header, "user id")
    except InvalidInput:
        raise fail(
            401,
            "unauthenticated",
            "Authentication required",
            f"{USER_HEADER} must be 1-64 letters, digits or _.@-",
            headers={"WWW-Authenticate": f'{USER_HEADER} realm="spaktok-example"'},
        ) from None


def require_owner(caller: str, requested: str | None, what: str) -> str:
    """``requested`` (default: the caller) if it is the caller; otherwise 403."""
    if requested is None or requested == caller:
        return caller
    raise fail(
        403, "forbidden", "Forbidden", f"you may only see your own {what}", requested=requested
    )


def require_idempotency_key(value: str | None) -> str:
    """The ``Idempotency-Key`` header, required on every request that moves money (400)."""
    if value is None or not value.strip():
        raise fail(
            400,
            "idempotency_key_required",
            "Idempotency-Key header required",
            f"send an {IDEMPOTENCY_HEADER} header (a unique value per intended operation; "
            "retries reuse it)",
        )
    if len(value) > 200 or not value.isprintable():
        # NUL and other control characters, or longer than the library takes.
        raise fail(
            400,
            "invalid_idempotency_key",
            "Invalid Idempotency-Key header",
            f"the {IDEMPOTENCY_HEADER} header must be 1-200 printable characters",
        )
    return value


def replay_headers(replayed: bool) -> dict[str, str]:
    """``Idempotent-Replayed: true`` when the library answered a retried request."""
    return {REPLAYED_HEADER: "true"} if replayed else {}


# -- response bodies both apps share -----------------------------------------------------


def balance_body(economy: GiftEconomy, user: str) -> dict[str, Any]:
    """``GET /api/wallet/balance``: the caller's coins, and their earnings if they stream.

    A user who never bought coins has no wallet yet (``UnknownUser``): that
    is an empty wallet, not an error, for an API.
    """
    try:
        wallet = economy.wallet(user)
    except UnknownUser:
        wallet = WalletBalance(user_id=user, coins=0, usd_minor=0)
    try:
        earnings: dict[str, Any] | None = economy.earnings(user).to_dict()
    except UnknownStreamer:
        earnings = None
    return {"user_id": user, "wallet": wallet.to_dict(), "earnings": earnings}


def history_body(
    economy: GiftEconomy,
    *,
    user_id: str | None,
    streamer_id: str | None,
    limit: int,
    cursor: str | None,
    types: list[str] | None,
) -> dict[str, Any]:
    """``GET /api/transactions``: one page of a wallet's or a streamer's statement."""
    try:
        page = economy.history(
            user_id=user_id, streamer_id=streamer_id, limit=limit, cursor=cursor, types=types
        )
    except UnknownUser:
        return {"items": [], "next_cursor": None}  # no wallet yet: nothing happened
    return page.to_dict()


def gift_body(receipt: GiftReceipt) -> dict[str, Any]:
    """``POST /api/gifts/send``: the receipt, minus the streamer's earnings balance
    (the library's receipt carries it; the sender has no business seeing it)."""
    body = receipt.to_dict()
    del body["streamer_earnings"]
    return body
