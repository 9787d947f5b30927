"""The library's asyncio services for the async example app (FastAPI), built like ``services.py``.

Same settings, same catalogues, same Stripe gateway and rate provider as the
sync apps; :class:`AsyncLedger` and friends run the same library code on the
async database drivers, and move Stripe and rate calls off the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from examples.common.services import (
    DEFAULT_GIFTS,
    DEFAULT_PACKS,
    Services,
    Settings,
    _gateway,
    _rate_provider,
    build_services,
)

from spaktok_ledger import (
    AsyncGiftEconomy,
    AsyncLedger,
    AsyncPayments,
    AsyncPayouts,
    AsyncPricing,
    GiftCatalogue,
    PackCatalogue,
    StripeGateway,
    UnknownStreamer,
    UnknownUser,
    WalletBalance,
    WebhookResult,
)


@dataclass
class AsyncServices:
    """The library's async services, built once per process by :func:`build_async_services`."""

    settings: Settings
    ledger: AsyncLedger
    economy: AsyncGiftEconomy
    pricing: AsyncPricing
    gateway: StripeGateway
    payments: AsyncPayments
    payouts: AsyncPayouts
    background: Services | None = None
    """With ``settings.in_process_worker``: the sync services whose threads run the
    Worker (and the outbox relay to Redis) beside the app, on their own connections
    (docs/worker.md). Production runs ``spaktok-ledger worker`` and ``relay`` instead."""

    async def handle_platform_webhook(self, body: bytes, signature: str) -> WebhookResult:
        """A delivery to the platform endpoint (``transfer.*`` events go to payouts):
        stored for the worker (``fast-ack``) or applied now (``inline``)."""
        if self.settings.webhook_mode == "fast-ack":
            return await self.payments.accept_webhook(body, signature)
        return await self.payments.handle_webhook(body, signature)

    async def handle_connect_webhook(self, body: bytes, signature: str) -> WebhookResult:
        """A delivery to the Connect endpoint, in the same mode."""
        if self.settings.webhook_mode == "fast-ack":
            return await self.payouts.accept_webhook(body, signature)
        return await self.payouts.handle_webhook(body, signature)

    async def aclose(self) -> None:
        if self.background is not None:
            await asyncio.to_thread(self.background.close)
            self.background = None
        await self.ledger.aclose()


async def build_async_services(settings: Settings | None = None) -> AsyncServices:
    """Build the async services from ``settings`` (default: the environment); set up the schema."""
    settings = settings or Settings.from_env()
    packs = PackCatalogue.load(settings.packs_path) if settings.packs_path else DEFAULT_PACKS
    gifts = GiftCatalogue.load(settings.gifts_path) if settings.gifts_path else DEFAULT_GIFTS
    ledger = AsyncLedger(settings.database_url, prefix=settings.table_prefix)
    try:
        economy = AsyncGiftEconomy(
            ledger, gifts, coin_value_usd_minor=packs.coin_value_usd_minor, hold_days=0
        )
        await economy.setup()
        pricing = AsyncPricing(
            ledger,
            packs,
            _rate_provider(settings),
            coin_value_usd_minor=packs.coin_value_usd_minor,
        )
        gateway = _gateway(settings)
        payouts = AsyncPayouts(
            economy,
            gateway,
            connect_webhook_secret=settings.stripe_connect_webhook_secret,
            manual_payouts=settings.payout_mode == "manual",
            minimum_usd_minor=settings.payout_minimum_usd_minor,
        )
        payments = AsyncPayments(
            economy,
            pricing,
            gateway,
            webhook_secret=settings.stripe_webhook_secret,
            transfer_events=payouts,
        )
    except BaseException:
        await ledger.aclose()
        raise
    services = AsyncServices(settings, ledger, economy, pricing, gateway, payments, payouts)
    if settings.in_process_worker:
        try:
            services.background = await asyncio.to_thread(build_services, settings)
        except BaseException:
            await ledger.aclose()
            raise
    return services


async def balance_body(economy: AsyncGiftEconomy, user: str) -> dict[str, Any]:
    """``GET /api/wallet/balance`` (the async twin of ``services.balance_body``)."""
    try:
        wallet = await economy.wallet(user)
    except UnknownUser:
        wallet = WalletBalance(user_id=user, coins=0, usd_minor=0)
    try:
        earnings: dict[str, Any] | None = (await economy.earnings(user)).to_dict()
    except UnknownStreamer:
        earnings = None
    return {"user_id": user, "wallet": wallet.to_dict(), "earnings": earnings}


async def history_body(
    economy: AsyncGiftEconomy,
    *,
    user_id: str | None,
    streamer_id: str | None,
    limit: int,
    cursor: str | None,
    types: list[str] | None,
) -> dict[str, Any]:
    """``GET /api/transactions`` (the async twin of ``services.history_body``)."""
    try:
        page = await economy.history(
            user_id=user_id, streamer_id=streamer_id, limit=limit, cursor=cursor, types=types
        )
    except UnknownUser:
        return {"items": [], "next_cursor": None}
    return page.to_dict()
