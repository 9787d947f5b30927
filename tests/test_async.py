"""The asyncio API: the sync API's methods, awaitable, on the async drivers, never blocking the loop.

The suites under tests/store and tests/service run against both APIs (the
``api`` fixture, tests/apis.py); this file pins what only the async API has:
the same signatures, an event loop that keeps running while the database or
Stripe is slow, host AsyncSession transactions, ``atomic`` with coroutines,
and typed refusals of bad wiring that write nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    AsyncGiftEconomy,
    AsyncLedger,
    AsyncPayments,
    AsyncPayouts,
    AsyncPricing,
    EntryDraft,
    GiftEconomy,
    InsufficientFunds,
    InvalidInput,
    Ledger,
    Payments,
    Payouts,
    Posting,
    Pricing,
    create_async_engine,
)
from spaktok_ledger._aio import async_url
from tests.apis import async_engine, dispose_engines
from tests.service.conftest import GIFTS

# Sync methods without an awaitable twin, and why.
NOT_WRAPPED = {
    "using",  # async twin takes an AsyncConnection / AsyncSession (tested below)
    "atomic",  # async twin takes a coroutine function (tested below)
    "iter_entries",  # async twin is an async iterator (tested below)
    "read",  # async twin (tested below)
    "connection",  # only inside atomic(): use the sync view there
    "close",  # aclose()
    "now",  # no I/O: same method
    "split_for",  # no I/O: economy.blocking.split_for
    "currency_for",  # no I/O: pricing.blocking.currency_for
    "gateway_call",  # internal plumbing of Payments
}
PAIRS = [
    (Ledger, AsyncLedger),
    (GiftEconomy, AsyncGiftEconomy),
    (Pricing, AsyncPricing),
    (Payments, AsyncPayments),
    (Payouts, AsyncPayouts),
]


def _public_methods(cls: type) -> dict[str, object]:
    return {
        name: value
        for name, value in vars_with_bases(cls).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


def vars_with_bases(cls: type) -> dict[str, object]:
    merged: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass))
    return merged


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_every_sync_method_has_an_awaitable_twin_with_the_same_parameters(
    sync_cls: type, async_cls: type
) -> None:
    """A new sync method without an async twin (or with other parameters) fails here."""
    async_methods = _public_methods(async_cls)
    for name, method in _public_methods(sync_cls).items():
        if name in NOT_WRAPPED:
            continue
        assert name in async_methods, f"{async_cls.__name__} has no {name}()"
        twin = async_methods[name]
        assert inspect.iscoroutinefunction(twin), f"{async_cls.__name__}.{name} is not async"
        assert inspect.signature(twin) == inspect.signature(method), name


def _gift_world(url: str) -> tuple[AsyncLedger, AsyncGiftEconomy]:
    ledger = AsyncLedger(url, prefix="a_")
    return ledger, AsyncGiftEconomy(ledger, GIFTS, hold_days=0)


async def _ready(economy: AsyncGiftEconomy, coins: int = 1_000) -> None:
    await economy.setup()
    await economy.register_streamer("bob")
    await economy.credit_purchase(
        "alice", coins=coins, price_usd_minor=coins, idempotency_key="fund"
    )


def test_a_locked_sqlite_file_does_not_stall_the_event_loop(tmp_path) -> None:
    """While another process holds SQLite's write lock, a gift waits without freezing the loop:
    a ticker keeps ticking (the sync API would block the loop for the whole wait)."""
    path = tmp_path / "locked.db"

    async def main() -> tuple[float, float]:
        ledger, economy = _gift_world(f"sqlite:///{path}")
        await _ready(economy)
        release = threading.Event()

        def hold_lock() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(5)
            conn.execute("ROLLBACK")
            conn.close()

        locked = threading.Event()
        threading.Thread(target=hold_lock).start()
        await asyncio.to_thread(locked.wait, 5)
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.perf_counter()
            while not release.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        asyncio.get_running_loop().call_later(0.4, release.set)
        started = time.perf_counter()
        receipt = await economy.send_gift("alice", "bob", "rose", idempotency_key="g1")
        waited = time.perf_counter() - started
        await ticking
        assert receipt.entry_id > 0
        await ledger.aclose()
        return waited, max(gaps)

    waited, worst_gap = asyncio.run(main())
    assert waited >= 0.35  # the gift really waited for the lock
    assert worst_gap < 0.2  # and the loop went on meanwhile


def test_slow_stripe_calls_run_off_the_event_loop(tmp_path) -> None:
    """Gateway calls run in a worker thread: the loop's own thread never makes them."""
    from decimal import Decimal

    from spaktok_ledger import CoinPack, PackCatalogue, StripeGateway
    from spaktok_ledger.fx import StaticRateProvider
    from spaktok_ledger.testing import FakeStripe, stripe_client

    threads: list[str] = []

    class Recording(StripeGateway):
        def create_checkout_session(self, request):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            time.sleep(0.2)  # a slow Stripe
            return super().create_checkout_session(request)

    async def main() -> int:
        ledger, economy = _gift_world(f"sqlite:///{tmp_path / 'stripe.db'}")
        await economy.setup()
        pricing = AsyncPricing(
            ledger,
            PackCatalogue([CoinPack("starter", 499, 500)]),
            StaticRateProvider({"EUR": Decimal("0.9")}),
        )
        with FakeStripe() as fake:
            payments = AsyncPayments(
                economy,
                pricing,
                Recording(stripe_client(fake, timeout=5)),
                webhook_secret="whsec_x",
            )
            quote = await pricing.quote("starter", currency="USD", user_id="alice")
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticking = asyncio.create_task(ticker())
            result = await payments.create_checkout(
                "alice",
                quote.id,
                success_url="https://app.example/ok",
                cancel_url="https://app.example/no",
                idempotency_key="c1",
            )
            ticking.cancel()
            assert result.url
        await ledger.aclose()
        return ticks

    ticks = asyncio.run(main())
    assert threads and all(name != "MainThread" for name in threads)
    assert ticks >= 5  # the loop ran during the 0.2 s Stripe call


@pytest.mark.parametrize("commit", [True, False])
def test_joins_a_host_async_session(engine: sa.Engine, prefix: str, commit: bool) -> None:
    """using(AsyncSession): the ledger's writes commit or roll back with the host's own row."""
    from sqlalchemy.ext.asyncio import AsyncSession

    orders = sa.Table(f"{prefix}orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))

    async def main() -> tuple[int, int]:
        aengine = async_engine(engine)
        ledger = AsyncLedger(aengine, prefix=prefix)
        economy = AsyncGiftEconomy(ledger, GIFTS, hold_days=0)
        await _ready(economy)
        async with aengine.begin() as conn:
            await conn.run_sync(orders.metadata.create_all)
        async with AsyncSession(aengine) as session:
            async with session.begin() as tx:
                await session.execute(orders.insert().values(id=1))
                await economy.using(session).send_gift(
                    "alice", "bob", "rose", idempotency_key="order-1"
                )
                if not commit:
                    await tx.rollback()
        async with aengine.connect() as conn:
            rows = (await conn.execute(sa.select(sa.func.count()).select_from(orders))).scalar()
        coins = (await economy.wallet("alice")).coins
        return int(rows or 0), coins

    try:
        rows, coins = asyncio.run_coroutine_threadsafe(main(), _loop()).result()
    finally:
        dispose_engines()
    assert (rows, coins) == ((1, 990) if commit else (0, 1_000))


def _loop() -> asyncio.AbstractEventLoop:
    from tests.apis import loop

    return loop()


def test_atomic_runs_a_coroutine_in_one_transaction(tmp_path) -> None:
    """atomic(fn): both posts commit together, and a refusal inside rolls both back."""
    specs = [
        AccountSpec("user:1:wallet", AccountKind.LIABILITY),
        AccountSpec("equity:seed", AccountKind.EQUITY, allow_overdraft=True),
    ]

    def draft(amount: int, key: str, *, spend: bool = False) -> EntryDraft:
        legs = (Posting.debit("equity:seed", amount), Posting.credit("user:1:wallet", amount))
        if spend:
            legs = (Posting.debit("user:1:wallet", amount), Posting.credit("equity:seed", amount))
        return EntryDraft("t", legs, key)

    async def main() -> tuple[int, int]:
        ledger = AsyncLedger(f"sqlite:///{tmp_path / 'atomic.db'}")
        await ledger.migrate()
        await ledger.open_accounts(specs)

        async def both(tx: AsyncLedger) -> int:
            await tx.post(draft(100, "a"))
            await tx.post(draft(50, "b"))
            return (await tx.balance("user:1:wallet")).posted_minor

        inside = await ledger.atomic(both)

        async def refused(tx: AsyncLedger) -> None:
            await tx.post(draft(10, "c"))
            await tx.post(draft(1_000, "d", spend=True))

        with pytest.raises(InsufficientFunds):
            await ledger.atomic(refused)
        after = (await ledger.balance("user:1:wallet")).posted_minor
        assert [e.idempotency_key async for e in ledger.iter_entries()] == ["a", "b"]
        assert await ledger.read(lambda conn: 7) == 7
        await ledger.aclose()
        return inside, after

    assert asyncio.run(main()) == (150, 150)


def test_bad_wiring_is_refused_with_typed_errors(tmp_path) -> None:
    """Wrong binds, wrong URLs and sync services where async ones belong: InvalidInput,
    and no database file is created."""
    path = tmp_path / "never.db"
    with pytest.raises(InvalidInput):
        AsyncLedger(42)
    with pytest.raises(InvalidInput):
        async_url("mysql+aiomysql://u@h/db")
    with pytest.raises(InvalidInput):
        create_async_engine("oracle://u@h/db")
    with pytest.raises(InvalidInput):
        AsyncGiftEconomy(Ledger(f"sqlite:///{path}"), GIFTS)  # type: ignore[arg-type]

    async def wiring() -> None:
        ledger = AsyncLedger(f"sqlite:///{path}")
        economy = AsyncGiftEconomy(ledger, GIFTS)
        with pytest.raises(InvalidInput):
            AsyncPayouts(economy.blocking, None, connect_webhook_secret="w")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            AsyncPayments(economy, None, None, webhook_secret="w")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            ledger.using(object())
        await ledger.aclose()

    asyncio.run(wiring())
    assert not path.exists()


def test_async_urls_map_to_the_async_drivers() -> None:
    """Plain sqlite / postgresql URLs are read as aiosqlite / psycopg 3 async."""
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert async_url("sqlite+aiosqlite://").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert async_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_a_missing_greenlet_names_the_async_extra(monkeypatch) -> None:
    """Without greenlet (a core-only install), the error names the extra to install."""
    import sys

    monkeypatch.setitem(sys.modules, "greenlet", None)
    with pytest.raises(ModuleNotFoundError, match=r"spaktok-ledger\[async\]"):
        AsyncLedger("sqlite://")
