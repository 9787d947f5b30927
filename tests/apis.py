"""Run the existing suites against both APIs: the sync one and the asyncio one.

``open_ledger("async", ...)`` builds an :class:`AsyncLedger` on an async engine
(aiosqlite / psycopg async) for the same database and wraps it in
:class:`Blocking`, which drives each coroutine on one background event loop
and returns its result: the tests call the same methods with the same
arguments and compare the same results, whichever API answers.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any

import sqlalchemy as sa

from spaktok_ledger import AsyncGiftEconomy, AsyncLedger, Ledger, create_engine
from spaktok_ledger._aio import _run, create_async_engine

APIS = ["sync", "async"]

_loops: list[asyncio.AbstractEventLoop] = []
_lock = threading.Lock()
_engines: dict[str, Any] = {}


def loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop (a daemon thread), started on first use."""
    with _lock:
        if not _loops:
            _loops.append(asyncio.new_event_loop())
            threading.Thread(target=_loops[0].run_forever, name="async-api", daemon=True).start()
        return _loops[0]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    running = loop()
    if threading.current_thread().name == "async-api":
        coro.close()  # a facade object called from inside the library: fail, don't hang
        raise RuntimeError("a test facade was called on the event loop's own thread")
    return asyncio.run_coroutine_threadsafe(coro, running).result()


async def _collect(agen: Any) -> list[Any]:
    return [item async for item in agen]


def _wrap(value: Any) -> Any:
    return Blocking(value) if type(value).__module__ == "spaktok_ledger._aio" else value


class Blocking:
    """An async facade called like the sync one (for tests only)."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "target", target)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.target if hasattr(self.target, name) else self.target.blocking, name, value)

    def __getattr__(self, name: str) -> Any:
        if name == "engine" and isinstance(self.target, AsyncLedger):
            return sync_engine(self.target.engine)  # tests read the tables directly
        if not hasattr(self.target, name) and hasattr(self.target, "blocking"):
            # a part the async class does not wrap (the outbox, the split...): its sync
            # object, driven in the async ledger's greenlet like the wrapped methods
            return InGreenlet(getattr(self.target.blocking, name))
        value = getattr(self.target, name)
        if inspect.iscoroutinefunction(value):
            return lambda *args, **kwargs: _wrap(run(value(*args, **kwargs)))
        if inspect.isasyncgenfunction(value):
            return lambda *args, **kwargs: iter(run(_collect(value(*args, **kwargs))))
        return _wrap(value)

    def atomic(self, fn: Any) -> Any:
        """The sync ``fn(tx)`` inside the async ledger's transaction (its queries go
        through the async driver, in the ledger's greenlet)."""
        ledger = self.target if isinstance(self.target, AsyncLedger) else self.target.ledger
        return run(_run(ledger.blocking.atomic, fn))

    def close(self) -> None:
        if isinstance(self.target, AsyncLedger):
            run(self.target.aclose())


class InGreenlet:
    """A sync object of the async API's services, each call run through ``_run``."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run(_run(self.target, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.target, name)
        if callable(value) and not isinstance(value, type):
            return InGreenlet(value)
        return value


def async_engine(bind: sa.Engine | str) -> Any:
    """One async engine per database URL (disposed by :func:`dispose_engines`)."""
    url = bind.url.render_as_string(hide_password=False) if isinstance(bind, sa.Engine) else bind
    if url not in _engines:
        _engines[url] = create_async_engine(url)
    return _engines[url]


def sync_engine(engine: Any) -> sa.Engine:
    """A sync engine on the async engine's database (for the tests' own queries)."""
    url = engine.url.set(drivername=engine.url.get_backend_name())
    key = "sync:" + url.render_as_string(hide_password=False)
    if key not in _engines:
        _engines[key] = create_engine(url)
    return _engines[key]


def dispose_engines() -> None:
    while _engines:
        _, engine = _engines.popitem()
        if isinstance(engine, sa.Engine):
            engine.dispose()
        else:
            run(engine.dispose())


def open_ledger(api: str, bind: sa.Engine | str, **options: Any) -> Any:
    """A sync :class:`Ledger`, or an :class:`AsyncLedger` behind :class:`Blocking`."""
    if api == "sync":
        return Ledger(bind, **options)
    return Blocking(AsyncLedger(async_engine(bind), **options))


def gift_economy(ledger: Any, *args: Any, **options: Any) -> Any:
    """A :class:`GiftEconomy` on ``ledger``'s API (``ledger`` from :func:`open_ledger`)."""
    from spaktok_ledger import GiftEconomy

    if isinstance(ledger, Blocking):
        return Blocking(AsyncGiftEconomy(ledger.target, *args, **options))
    return GiftEconomy(ledger, *args, **options)


def _unwrap(value: Any) -> Any:
    return value.target if isinstance(value, InGreenlet | Blocking) else value


def pricing(ledger: Any, *args: Any, **options: Any) -> Any:
    """A :class:`Pricing` on ``ledger``'s API."""
    from spaktok_ledger import AsyncPricing, Pricing

    if isinstance(ledger, Blocking):
        return Blocking(AsyncPricing(ledger.target, *args, **options))
    return Pricing(ledger, *args, **options)


def payments(economy: Any, pricing: Any, gateway: Any, **options: Any) -> Any:
    """A :class:`Payments` on ``economy``'s API."""
    from spaktok_ledger import AsyncPayments, Payments

    if isinstance(economy, Blocking):
        options = {name: _unwrap(value) for name, value in options.items()}
        return Blocking(
            AsyncPayments(economy.target, pricing.target, _unwrap(gateway), **options)
        )
    return Payments(economy, pricing, gateway, **options)


def payouts(economy: Any, gateway: Any, **options: Any) -> Any:
    """A :class:`Payouts` on ``economy``'s API."""
    from spaktok_ledger import AsyncPayouts, Payouts

    if isinstance(economy, Blocking):
        options = {name: _unwrap(value) for name, value in options.items()}
        return Blocking(AsyncPayouts(economy.target, _unwrap(gateway), **options))
    return Payouts(economy, gateway, **options)
