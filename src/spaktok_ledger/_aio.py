"""The asyncio API: the same ledger and services, awaitable, on SQLAlchemy's asyncio extension.

:class:`AsyncLedger`, :class:`AsyncGiftEconomy`, :class:`AsyncPricing`,
:class:`AsyncPayments` and :class:`AsyncPayouts` have the sync classes'
methods, each ``async``. They hold no business rules of their own: each call
runs the sync service's method (``.blocking``) in a greenlet bound to an
``AsyncEngine`` (``sqlalchemy.util.greenlet_spawn``, the mechanism behind
``AsyncConnection.run_sync``), so every query goes through the async driver
(psycopg 3 in async mode, aiosqlite) and yields to the event loop, with the
same transactions, locks, retries and idempotency as the sync API.

What would still block the loop is moved off it: retry back-off sleeps with
``asyncio.sleep``; payment-gateway (Stripe) and rate-provider calls run in a
worker thread (``asyncio.to_thread``) while the event loop serves others.

    ledger = AsyncLedger("sqlite+aiosqlite:///spaktok.db")
    await ledger.migrate()
    economy = AsyncGiftEconomy(ledger, gifts)
    receipt = await economy.send_gift("alice", "bob", "rose", idempotency_key="k1")
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa

from spaktok_ledger._catalogue import GiftCatalogue, PackCatalogue
from spaktok_ledger._clock import Clock, utc_now
from spaktok_ledger._domain import (
    Account,
    AccountSpec,
    Balance,
    Entry,
    EntryDraft,
    EntryPage,
    EntryPhase,
    HistoryPage,
    TrialBalance,
)
from spaktok_ledger._errors import InvalidInput, LedgerBusy
from spaktok_ledger._extras import needs_extra
from spaktok_ledger._pricing import Quote
from spaktok_ledger._service import (
    ActivityPage,
    CheckoutResult,
    ConnectedAccount,
    EarningsBalance,
    GiftEconomy,
    GiftReceipt,
    Maturation,
    Payments,
    PayoutDiscrepancy,
    PayoutRecord,
    Payouts,
    Pricing,
    Purchase,
    Streamer,
    WalletBalance,
    WalletCredit,
    WriteOff,
)
from spaktok_ledger._service._gateway import PaymentGateway, WebhookEvent
from spaktok_ledger._service._gifts import CLEARING
from spaktok_ledger._service._webhooks import Endpoint, WebhookInbox, WebhookResult, acknowledged
from spaktok_ledger._store import (
    DEFAULT_PREFIX,
    Ledger,
    LedgerTables,
    Retry,
    VerifyReport,
    configure_sqlite,
)
from spaktok_ledger._store._ingest import IngestReport

__all__ = ["AsyncGiftEconomy", "AsyncLedger", "AsyncPayments", "AsyncPayouts", "AsyncPricing"]

P = ParamSpec("P")
T = TypeVar("T")

# Gateway methods that only parse (no network): run inline, not in a thread.
_INLINE: Final = frozenset({"parse_webhook", "parse_event"})


def _concurrency() -> Any:
    with needs_extra("the asyncio API"):  # greenlet: the async extra
        import greenlet  # type: ignore[import-untyped]  # noqa: F401
    from sqlalchemy.util import concurrency

    return concurrency


async def _run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a sync library call in a greenlet whose database I/O awaits the async driver."""
    from sqlalchemy.util import greenlet_spawn

    result: T = await greenlet_spawn(fn, *args, **kwargs)  # type: ignore[arg-type]
    return result


def _in_loop_greenlet() -> bool:
    from sqlalchemy.util.concurrency import in_greenlet

    return bool(in_greenlet())


def _off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call blocking ``fn`` in a worker thread when inside a library greenlet
    (the loop serves other requests meanwhile); call it directly otherwise."""
    if not _in_loop_greenlet():
        return fn(*args, **kwargs)
    from sqlalchemy.util import await_only

    result: T = await_only(asyncio.to_thread(fn, *args, **kwargs))
    return result


def _loop_sleep(seconds: float) -> None:
    """Retry back-off: ``asyncio.sleep`` inside a library greenlet, else ``time.sleep``."""
    if not _in_loop_greenlet():
        time.sleep(seconds)
        return
    from sqlalchemy.util import await_only

    await_only(asyncio.sleep(seconds))


class _Offloaded:
    """A port (payment gateway, rate provider) whose calls run in a worker thread."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in _INLINE or name.startswith("_") or not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            return _off_loop(value, *args, **kwargs)

        return call

    def __repr__(self) -> str:
        return repr(self._target)


def _offloaded(target: T) -> T:
    if isinstance(target, _Offloaded):
        return target
    return _Offloaded(target)  # type: ignore[return-value]


def async_url(url: str | sa.URL) -> sa.URL:
    """The async driver's URL: ``sqlite`` -> ``sqlite+aiosqlite``,
    ``postgresql`` / ``postgresql+psycopg`` -> psycopg 3 (async mode)."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.get_driver_name() in ("pysqlite", "aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres") and parsed.get_driver_name() in (
        "psycopg",
        "psycopg2",
        "psycopg_async",
    ):
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidInput(
        "the asyncio API supports sqlite+aiosqlite and postgresql+psycopg URLs, "
        f"not {parsed.drivername!r}",
        backend=backend,
    )


def create_async_engine(url: str | sa.URL, **kwargs: Any) -> Any:
    """An ``AsyncEngine`` for the ledger (the async twin of :func:`create_engine`):
    SQLite gets the same WAL / ``BEGIN IMMEDIATE`` / busy-timeout recipe."""
    _concurrency()
    from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

    target = async_url(url)
    with needs_extra(f"an async {target.get_backend_name()} database"):
        engine = sa_create_async_engine(target, **kwargs)
    configure_sqlite(engine.sync_engine)
    return engine


class _InboxOwner(Protocol):
    """What :class:`_Acknowledgements` needs of :class:`Payments` / :class:`Payouts`."""

    inbox: WebhookInbox
    clock: Clock


_Waiting = tuple[WebhookEvent, Endpoint, datetime, "asyncio.Future[str]"]


@dataclass(slots=True)
class _LoopQueue:
    """One event loop's deliveries waiting to be stored, and its writer task."""

    waiting: list[_Waiting] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class _Acknowledgements:
    """Fast acknowledgements arriving together on one event loop, stored together.

    Each :meth:`store` queues its verified event (with the time it arrived) and
    waits. One writer task per event loop stores what is queued in one
    transaction (``WebhookInbox.accept_many``: one insert, one commit) while the
    next deliveries queue up behind it, and then stores those: a lone delivery
    is written at once (no window to wait out), and under a storm of concurrent
    deliveries the commits, round trips and pooled connections per
    acknowledgement fall with the batch size. Each caller gets its own status.
    A batch refused because of one delivery's row is written again one delivery
    at a time, so that caller gets exactly the error a call of its own would
    have raised and the others their statuses; a failure of the database itself
    (contention that outlasted the retries, a lost connection, an exhausted
    pool) fails the batch's callers at once with that error.
    """

    def __init__(self, owner: _InboxOwner, *, max_batch: int = 100) -> None:
        self._owner = owner
        self._max_batch = max_batch
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )

    async def store(self, event: WebhookEvent, endpoint: Endpoint) -> str:
        """The inbox status of ``event`` once stored (``queued`` if new)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues.setdefault(loop, _LoopQueue())
        future: asyncio.Future[str] = loop.create_future()
        queue.waiting.append((event, endpoint, self._owner.clock(), future))
        if queue.writer is None or queue.writer.done():
            # A context of its own: a batch belongs to no one request's trace.
            queue.writer = loop.create_task(self._write(queue), context=contextvars.Context())
        return await future

    async def _write(self, queue: _LoopQueue) -> None:
        batch: list[_Waiting] = []
        try:
            while queue.waiting:
                batch = queue.waiting[: self._max_batch]
                del queue.waiting[: self._max_batch]
                await self._store(batch)
        finally:  # cancelled with the loop: no caller waits forever
            for *_, future in (*batch, *queue.waiting):
                future.cancel()
            queue.waiting.clear()

    async def _store(self, batch: list[_Waiting]) -> None:
        inbox = self._owner.inbox
        try:
            statuses = await _run(inbox.accept_many, [(e, p, at) for e, p, at, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or _database_failure(exc):
                for *_, future in batch:
                    _settle(future, error=exc)
                return
            for event, endpoint, at, future in batch:  # each on its own: its own answer
                try:
                    status = await _run(inbox.accept, event, endpoint, now=at)
                except Exception as alone:
                    _settle(future, error=alone)
                else:
                    _settle(future, status)
            return
        for (*_, future), status in zip(batch, statuses, strict=True):
            _settle(future, status)


def _database_failure(exc: Exception) -> bool:
    """A failure of the database or the connection, not of one delivery's row."""
    if isinstance(exc, LedgerBusy | sa.exc.OperationalError | sa.exc.TimeoutError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _settle(
    future: asyncio.Future[str], status: str | None = None, *, error: Exception | None = None
) -> None:
    if future.done():  # its caller was cancelled (the event is stored all the same)
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert status is not None
        future.set_result(status)


class AsyncLedger:
    """:class:`Ledger` for asyncio: the same methods, awaitable.

    ``bind`` is a database URL (``sqlite+aiosqlite:///...``,
    ``postgresql+psycopg://...``; plain ``sqlite:`` / ``postgresql:`` URLs are
    read as those), an ``AsyncEngine``, or a host's ``AsyncConnection`` /
    ``AsyncSession`` whose transaction the ledger joins (a SAVEPOINT per call)::

        ledger = AsyncLedger("sqlite+aiosqlite:///spaktok.db")
        await ledger.migrate()
        await ledger.open_account(AccountSpec("user:1:wallet", AccountKind.LIABILITY))

    ``.blocking`` is the sync :class:`Ledger` doing the work (its engine is the
    async engine's ``sync_engine``); call it only through this class, or inside
    :meth:`atomic`.
    """

    def __init__(
        self,
        bind: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = utc_now,
        retry: Retry | None = None,
    ) -> None:
        _concurrency()
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

        base = retry or Retry()
        retry = Retry(base.attempts, base.base_delay, base.max_delay, sleep=_loop_sleep)
        self._owns_engine = False
        self._engine: AsyncEngine | None = None
        sync_bind: Any
        if isinstance(bind, str | sa.URL):
            self._engine = create_async_engine(bind)
            self._owns_engine = True
            sync_bind = self._engine.sync_engine
        elif isinstance(bind, AsyncEngine):
            self._engine = bind
            sync_bind = bind.sync_engine
        elif isinstance(bind, AsyncConnection):
            sync_bind = bind.sync_connection
            if sync_bind is None:
                raise InvalidInput("the AsyncConnection is not connected")
        elif isinstance(bind, AsyncSession):
            sync_bind = bind.sync_session
        else:
            raise InvalidInput(
                "bind must be a URL, AsyncEngine, AsyncConnection or AsyncSession, "
                f"not {type(bind).__name__}"
            )
        self.blocking = Ledger(sync_bind, prefix=prefix, clock=clock, retry=retry)

    @classmethod
    def _wrap(cls, blocking: Ledger) -> AsyncLedger:
        view = object.__new__(cls)
        view._owns_engine = False
        view._engine = None
        view.blocking = blocking
        return view

    def using(self, bind: Any) -> AsyncLedger:
        """This ledger joined to a host's ``AsyncConnection`` or ``AsyncSession``:
        each call runs in a SAVEPOINT of the host's transaction, which the host
        commits or rolls back together with its own rows::

            async with AsyncSession(engine) as session, session.begin():
                session.add(order)
                await ledger.using(session).post(draft)
        """
        return AsyncLedger._wrap(self.blocking.using(_sync_bind(bind)))

    @property
    def engine(self) -> Any:
        """The ``AsyncEngine``, when the ledger has one (not for a joined view)."""
        return self._engine

    @property
    def prefix(self) -> str:
        return self.blocking.prefix

    @property
    def tables(self) -> LedgerTables:
        """The ledger's SQLAlchemy tables (for host queries, see :meth:`read`)."""
        return self.blocking.tables

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.blocking.dialect

    def now(self) -> datetime:
        """The ledger's clock, UTC."""
        return self.blocking.now()

    async def aclose(self) -> None:
        """Dispose of the engine if the ledger created it from a URL."""
        if self._owns_engine and self._engine is not None:
            await self._engine.dispose()

    async def __aenter__(self) -> AsyncLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def atomic(self, fn: Callable[[AsyncLedger], Awaitable[T]]) -> T:
        """Run ``await fn(ledger)`` in one transaction: its ledger calls commit together.

        As with :meth:`Ledger.atomic`, transient contention retries the whole
        function, so ``fn`` must have no side effects outside the database.
        """

        def unit(tx: Ledger) -> T:
            from sqlalchemy.util import await_only

            result: T = await_only(fn(AsyncLedger._wrap(tx)))
            return result

        return await _run(self.blocking.atomic, unit)

    async def run_sync(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a sync library call on this ledger's async driver without blocking the loop:
        for the parts the async classes do not wrap (the outbox, reconciliation, compliance),
        reached through ``.blocking``::

            events = await ledger.run_sync(economy.blocking.outbox.pending, limit=100)
        """
        return await _run(fn, *args, **kwargs)

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run sync ``fn(connection)`` for reads (see :meth:`Ledger.read`)."""
        return await _run(self.blocking.read, fn)

    async def iter_entries(
        self, *, batch_size: int = 1000, after_id: int = 0
    ) -> AsyncIterator[Entry]:
        """Every entry in id order, fetched ``batch_size`` at a time (for exports)."""
        pages = self.blocking.iter_entries(batch_size=batch_size, after_id=after_id)
        done = object()
        while True:
            item = await _run(next, pages, done)
            if item is done:
                return
            assert isinstance(item, Entry)
            yield item

    async def account(self, code: str) -> Account:
        """Awaitable :meth:`Ledger.account`: the account with this code, or ``UnknownAccount``."""
        return await _run(self.blocking.account, code)

    async def accounts(self, *, prefix: str = "") -> list[Account]:
        """Awaitable :meth:`Ledger.accounts`."""
        return await _run(self.blocking.accounts, prefix=prefix)

    async def balance(self, account: str) -> Balance:
        """Awaitable :meth:`Ledger.balance`."""
        return await _run(self.blocking.balance, account)

    async def balance_as_of(self, account: str, at: datetime) -> Balance:
        """Awaitable :meth:`Ledger.balance_as_of`."""
        return await _run(self.blocking.balance_as_of, account, at)

    async def balances(self, accounts: Iterable[str]) -> dict[str, Balance]:
        """Awaitable :meth:`Ledger.balances`: balances of several accounts in one query."""
        return await _run(self.blocking.balances, accounts)

    async def check_schema(self) -> None:
        """Awaitable :meth:`Ledger.check_schema`."""
        return await _run(
            self.blocking.check_schema,
        )

    async def count_entries(self) -> int:
        """Awaitable :meth:`Ledger.count_entries`."""
        return await _run(
            self.blocking.count_entries,
        )

    async def entries_page(
        self,
        accounts: Sequence[str],
        *,
        limit: int = 50,
        cursor: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> EntryPage:
        """Awaitable :meth:`Ledger.entries_page`."""
        return await _run(
            self.blocking.entries_page,
            accounts,
            limit=limit,
            cursor=cursor,
            types=types,
            since=since,
            until=until,
        )

    async def entry(self, entry_id: int) -> Entry:
        """Awaitable :meth:`Ledger.entry`: the entry with this id (``UnknownEntry`` if none)."""
        return await _run(self.blocking.entry, entry_id)

    async def entry_by_key(self, idempotency_key: str) -> Entry:
        """Awaitable :meth:`Ledger.entry_by_key`."""
        return await _run(self.blocking.entry_by_key, idempotency_key)

    async def expire_holds(self, *, now: datetime | None = None, limit: int = 1000) -> list[Entry]:
        """Awaitable :meth:`Ledger.expire_holds`."""
        return await _run(self.blocking.expire_holds, now=now, limit=limit)

    async def history(
        self,
        account: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> HistoryPage:
        """Awaitable :meth:`Ledger.history`."""
        return await _run(
            self.blocking.history,
            account,
            limit=limit,
            cursor=cursor,
            types=types,
            since=since,
            until=until,
        )

    async def hold(
        self,
        draft: EntryDraft,
        *,
        expires_at: datetime | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Awaitable :meth:`Ledger.hold`."""
        return await _run(self.blocking.hold, draft, expires_at=expires_at, request=request)

    async def hold_status(self, hold_id: int) -> EntryPhase:
        """Awaitable :meth:`Ledger.hold_status`."""
        return await _run(self.blocking.hold_status, hold_id)

    async def migrate(self) -> str:
        """Awaitable :meth:`Ledger.migrate`."""
        return await _run(
            self.blocking.migrate,
        )

    async def open_account(self, spec: AccountSpec) -> Account:
        """Awaitable :meth:`Ledger.open_account`."""
        return await _run(self.blocking.open_account, spec)

    async def open_accounts(self, specs: Iterable[AccountSpec]) -> list[Account]:
        """Awaitable :meth:`Ledger.open_accounts`."""
        return await _run(self.blocking.open_accounts, specs)

    async def ingest(self, drafts: Iterable[EntryDraft], *, batch_size: int = 1000) -> IngestReport:
        """Awaitable :meth:`Ledger.ingest` (bulk import, one transaction per batch)."""
        return await _run(self.blocking.ingest, drafts, batch_size=batch_size)

    async def post(self, draft: EntryDraft, *, request: Mapping[str, Any] | None = None) -> Entry:
        """Awaitable :meth:`Ledger.post`: record a balanced entry and apply it to the balances."""
        return await _run(self.blocking.post, draft, request=request)

    async def post_hold(
        self,
        hold_id: int,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Awaitable :meth:`Ledger.post_hold`."""
        return await _run(
            self.blocking.post_hold,
            hold_id,
            idempotency_key=idempotency_key,
            description=description,
            metadata=metadata,
        )

    async def reverse(
        self,
        entry_id: int,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Awaitable :meth:`Ledger.reverse`."""
        return await _run(
            self.blocking.reverse,
            entry_id,
            idempotency_key=idempotency_key,
            description=description,
            metadata=metadata,
        )

    async def trial_balance(self) -> TrialBalance:
        """Awaitable :meth:`Ledger.trial_balance`."""
        return await _run(
            self.blocking.trial_balance,
        )

    async def verify(
        self,
        *,
        on_progress: Callable[[str, int, int], None] | None = None,
        incremental: bool = False,
    ) -> VerifyReport:
        """Awaitable :meth:`Ledger.verify` (``incremental``: from the last checkpoint)."""
        return await _run(self.blocking.verify, on_progress=on_progress, incremental=incremental)

    async def void_hold(
        self,
        hold_id: int,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Awaitable :meth:`Ledger.void_hold`."""
        return await _run(
            self.blocking.void_hold,
            hold_id,
            idempotency_key=idempotency_key,
            description=description,
            metadata=metadata,
        )


def _sync_bind(bind: Any) -> Any:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(bind, AsyncConnection):
        if bind.sync_connection is None:
            raise InvalidInput("the AsyncConnection is not connected")
        return bind.sync_connection
    if isinstance(bind, AsyncSession):
        return bind.sync_session
    raise InvalidInput("using() takes an AsyncConnection or an AsyncSession")


class AsyncGiftEconomy:
    """:class:`GiftEconomy` for asyncio: the same options and methods, awaitable.

    >>> economy = AsyncGiftEconomy(AsyncLedger("sqlite+aiosqlite://"), gifts)  # doctest: +SKIP
    >>> await economy.setup()  # doctest: +SKIP
    """

    def __init__(
        self, ledger: AsyncLedger, gifts: GiftCatalogue | None = None, **options: Any
    ) -> None:
        """``options``: those of :class:`GiftEconomy` (``split``, ``hold_days``...)."""
        if not isinstance(ledger, AsyncLedger):
            raise InvalidInput("ledger must be an AsyncLedger")
        self.ledger = ledger
        self.blocking = GiftEconomy(ledger.blocking, gifts, **options)

    @classmethod
    def _wrap(cls, blocking: GiftEconomy, ledger: AsyncLedger) -> AsyncGiftEconomy:
        view = object.__new__(cls)
        view.ledger = ledger
        view.blocking = blocking
        return view

    def using(self, bind: Any) -> AsyncGiftEconomy:
        """This service joined to a host's ``AsyncConnection`` / ``AsyncSession``: its
        writes commit or roll back with the host's own rows (an order and its gift)."""
        ledger = self.ledger.using(bind)
        return AsyncGiftEconomy._wrap(self.blocking.using(ledger.blocking), ledger)

    async def adjust(
        self,
        user_id: str | int,
        coins: int,
        *,
        reason: str,
        idempotency_key: str,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> WalletCredit:
        """Awaitable :meth:`GiftEconomy.adjust`."""
        return await _run(
            self.blocking.adjust,
            user_id,
            coins,
            reason=reason,
            idempotency_key=idempotency_key,
            actor=actor,
            request_id=request_id,
        )

    async def block_streamer(
        self,
        streamer_id: str | int,
        reason: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> Streamer:
        """Awaitable :meth:`GiftEconomy.block_streamer`."""
        return await _run(
            self.blocking.block_streamer, streamer_id, reason, actor=actor, request_id=request_id
        )

    async def credit_purchase(
        self,
        user_id: str | int,
        *,
        coins: int,
        price_usd_minor: int,
        idempotency_key: str,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        request: Mapping[str, Any] | None = None,
        clearing_account: str = CLEARING,
        hold: bool = False,
    ) -> WalletCredit:
        """Awaitable :meth:`GiftEconomy.credit_purchase`."""
        return await _run(
            self.blocking.credit_purchase,
            user_id,
            coins=coins,
            price_usd_minor=price_usd_minor,
            idempotency_key=idempotency_key,
            description=description,
            metadata=metadata,
            request=request,
            clearing_account=clearing_account,
            hold=hold,
        )

    async def earnings(self, streamer_id: str | int) -> EarningsBalance:
        """Awaitable :meth:`GiftEconomy.earnings`."""
        return await _run(self.blocking.earnings, streamer_id)

    async def history(
        self,
        *,
        user_id: str | int | None = None,
        streamer_id: str | int | None = None,
        limit: int = 50,
        cursor: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> ActivityPage:
        """Awaitable :meth:`GiftEconomy.history`."""
        return await _run(
            self.blocking.history,
            user_id=user_id,
            streamer_id=streamer_id,
            limit=limit,
            cursor=cursor,
            types=types,
            since=since,
            until=until,
        )

    async def mature_earnings(
        self, *, now: datetime | None = None, limit: int = 500
    ) -> list[Maturation]:
        """Awaitable :meth:`GiftEconomy.mature_earnings`."""
        return await _run(self.blocking.mature_earnings, now=now, limit=limit)

    async def open_user(self, user_id: str | int) -> str:
        """Awaitable :meth:`GiftEconomy.open_user`."""
        return await _run(self.blocking.open_user, user_id)

    async def register_streamer(
        self,
        streamer_id: str | int,
        *,
        streamer_bps: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Streamer:
        """Awaitable :meth:`GiftEconomy.register_streamer`."""
        return await _run(
            self.blocking.register_streamer,
            streamer_id,
            streamer_bps=streamer_bps,
            metadata=metadata,
        )

    async def repay_debt(self, user_id: str | int, idempotency_key: str) -> int:
        """Awaitable :meth:`GiftEconomy.repay_debt`."""
        return await _run(self.blocking.repay_debt, user_id, idempotency_key)

    async def send_gift(
        self,
        sender_id: str | int,
        streamer_id: str | int,
        gift_id: str,
        quantity: int = 1,
        *,
        idempotency_key: str,
    ) -> GiftReceipt:
        """Awaitable :meth:`GiftEconomy.send_gift`."""
        return await _run(
            self.blocking.send_gift,
            sender_id,
            streamer_id,
            gift_id,
            quantity,
            idempotency_key=idempotency_key,
        )

    async def set_split(self, streamer_id: str | int, streamer_bps: int | None) -> Streamer:
        """Awaitable :meth:`GiftEconomy.set_split`."""
        return await _run(self.blocking.set_split, streamer_id, streamer_bps)

    async def setup(self) -> None:
        """Awaitable :meth:`GiftEconomy.setup`."""
        return await _run(
            self.blocking.setup,
        )

    async def streamer(self, streamer_id: str | int) -> Streamer:
        """Awaitable :meth:`GiftEconomy.streamer`."""
        return await _run(self.blocking.streamer, streamer_id)

    async def unblock_streamer(
        self,
        streamer_id: str | int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> Streamer:
        """Awaitable :meth:`GiftEconomy.unblock_streamer`."""
        return await _run(
            self.blocking.unblock_streamer,
            streamer_id,
            actor=actor,
            reason=reason,
            request_id=request_id,
        )

    async def wallet(self, user_id: str | int) -> WalletBalance:
        """Awaitable :meth:`GiftEconomy.wallet`."""
        return await _run(self.blocking.wallet, user_id)


class AsyncPricing:
    """:class:`Pricing` for asyncio; the rate provider's fetches run in a worker thread."""

    def __init__(
        self, ledger: AsyncLedger, catalogue: PackCatalogue, rates: Any, **options: Any
    ) -> None:
        """``options``: those of :class:`Pricing` (``ttl``, ``markup_bps``...)."""
        if not isinstance(ledger, AsyncLedger):
            raise InvalidInput("ledger must be an AsyncLedger")
        self.ledger = ledger
        self.blocking = Pricing(ledger.blocking, catalogue, _offloaded(rates), **options)

    async def get(self, quote_id: str) -> Quote:
        """Awaitable :meth:`Pricing.get`."""
        return await _run(self.blocking.get, quote_id)

    async def quote(
        self,
        pack_id: str,
        *,
        currency: str | None = None,
        locale: str | None = None,
        user_id: str | None = None,
    ) -> Quote:
        """Awaitable :meth:`Pricing.quote`."""
        return await _run(
            self.blocking.quote, pack_id, currency=currency, locale=locale, user_id=user_id
        )


class AsyncPayments:
    """:class:`Payments` for asyncio; Stripe calls run in a worker thread.

    ``transfer_events`` may be an :class:`AsyncPayouts` (``transfer.*`` events
    reach the platform endpoint but belong to payouts).
    """

    def __init__(
        self,
        economy: AsyncGiftEconomy,
        pricing: AsyncPricing,
        gateway: PaymentGateway,
        *,
        transfer_events: AsyncPayouts | Callable[[WebhookEvent], WebhookResult] | None = None,
        **options: Any,
    ) -> None:
        """``options``: those of :class:`Payments` (``webhook_secret`` is required)."""
        if not isinstance(economy, AsyncGiftEconomy):
            raise InvalidInput("economy must be an AsyncGiftEconomy")
        if not isinstance(pricing, AsyncPricing):
            raise InvalidInput("pricing must be an AsyncPricing")
        self.economy = economy
        self.pricing = pricing
        self.blocking = Payments(economy.blocking, pricing.blocking, _offloaded(gateway), **options)
        self.transfer_events = transfer_events
        self._acknowledgements = _Acknowledgements(self.blocking)

    @property
    def transfer_events(self) -> AsyncPayouts | Callable[[WebhookEvent], WebhookResult] | None:
        """Where ``transfer.*`` events go: the payouts service (or a sync handler, which
        runs like the library's own code, on the async driver)."""
        return self._transfer_events

    @transfer_events.setter
    def transfer_events(
        self, handler: AsyncPayouts | Callable[[WebhookEvent], WebhookResult] | None
    ) -> None:
        if isinstance(handler, AsyncPayouts):
            self.blocking.transfer_events = handler.blocking.handle_event
        elif handler is None or callable(handler):
            self.blocking.transfer_events = handler
        else:
            raise InvalidInput("transfer_events must be an AsyncPayouts or a callable")
        self._transfer_events = handler

    async def create_checkout(
        self,
        user_id: str | int,
        quote_id: str,
        *,
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
        customer_email: str | None = None,
    ) -> CheckoutResult:
        """Awaitable :meth:`Payments.create_checkout`."""
        return await _run(
            self.blocking.create_checkout,
            user_id,
            quote_id,
            success_url=success_url,
            cancel_url=cancel_url,
            idempotency_key=idempotency_key,
            customer_email=customer_email,
        )

    async def debts(self, *, limit: int = 100) -> list[tuple[str, int]]:
        """Awaitable :meth:`Payments.debts`."""
        return await _run(self.blocking.debts, limit=limit)

    async def handle_event(self, event: WebhookEvent) -> WebhookResult:
        """Awaitable :meth:`Payments.handle_event`."""
        return await _run(self.blocking.handle_event, event)

    async def handle_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Awaitable :meth:`Payments.handle_webhook`."""
        return await _run(self.blocking.handle_webhook, payload, signature_header)

    async def accept_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Awaitable :meth:`Payments.accept_webhook` (the fast acknowledgement).

        Concurrent calls on one event loop are stored together: one insert and one
        commit for the deliveries that arrive while the previous ones are written,
        each caller answered with its own result (:class:`_Acknowledgements`)."""
        event, endpoint = self.blocking._verify_for_inbox(payload, signature_header)
        stored = endpoint and await self._acknowledgements.store(event, endpoint)
        return acknowledged(event, stored)

    async def wake(self, keys: Iterable[str | None]) -> list[WebhookResult]:
        """Awaitable :meth:`Payments.wake`."""
        return await _run(self.blocking.wake, keys)

    async def purchase(self, purchase_id: str) -> Purchase:
        """Awaitable :meth:`Payments.purchase`."""
        return await _run(self.blocking.purchase, purchase_id)

    async def purchases(self, user_id: str | int, *, limit: int = 50) -> list[Purchase]:
        """Awaitable :meth:`Payments.purchases`: a user's purchases, newest first."""
        return await _run(self.blocking.purchases, user_id, limit=limit)

    async def refund(
        self,
        purchase_id: str,
        *,
        local_amount_minor: int | None = None,
        idempotency_key: str,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Awaitable :meth:`Payments.refund`."""
        return await _run(
            self.blocking.refund,
            purchase_id,
            local_amount_minor=local_amount_minor,
            idempotency_key=idempotency_key,
            actor=actor,
            reason=reason,
            request_id=request_id,
        )

    async def refuse(
        self,
        purchase_id: str,
        *,
        refund: bool = True,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> Purchase:
        """Awaitable :meth:`Payments.refuse`."""
        return await _run(
            self.blocking.refuse,
            purchase_id,
            refund=refund,
            actor=actor,
            reason=reason,
            request_id=request_id,
        )

    async def release(
        self,
        purchase_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> Purchase:
        """Awaitable :meth:`Payments.release`."""
        return await _run(
            self.blocking.release, purchase_id, actor=actor, reason=reason, request_id=request_id
        )

    async def retry_parked(
        self, *, limit: int = 100, subject_id: str | None = None
    ) -> list[WebhookResult]:
        """Awaitable :meth:`Payments.retry_parked`."""
        return await _run(self.blocking.retry_parked, limit=limit, subject_id=subject_id)

    async def retry_refunds(self, *, limit: int = 100) -> list[Purchase]:
        """Awaitable :meth:`Payments.retry_refunds`."""
        return await _run(self.blocking.retry_refunds, limit=limit)

    async def sync(self, purchase_id: str) -> Purchase:
        """Awaitable :meth:`Payments.sync`."""
        return await _run(self.blocking.sync, purchase_id)

    async def write_off(
        self,
        user_id: str | int,
        *,
        reason: str,
        idempotency_key: str,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> WriteOff:
        """Awaitable :meth:`Payments.write_off`."""
        return await _run(
            self.blocking.write_off,
            user_id,
            reason=reason,
            idempotency_key=idempotency_key,
            actor=actor,
            request_id=request_id,
        )


class AsyncPayouts:
    """:class:`Payouts` for asyncio; Stripe calls run in a worker thread."""

    def __init__(self, economy: AsyncGiftEconomy, gateway: PaymentGateway, **options: Any) -> None:
        """``options``: those of :class:`Payouts` (``connect_webhook_secret`` is required)."""
        if not isinstance(economy, AsyncGiftEconomy):
            raise InvalidInput("economy must be an AsyncGiftEconomy")
        self.economy = economy
        self.blocking = Payouts(economy.blocking, _offloaded(gateway), **options)
        self._acknowledgements = _Acknowledgements(self.blocking)

    async def account_status(self, streamer_id: str | int) -> ConnectedAccount | None:
        """Awaitable :meth:`Payouts.account_status`."""
        return await _run(self.blocking.account_status, streamer_id)

    async def create_express_account(
        self, streamer_id: str | int, *, country: str, email: str | None = None
    ) -> ConnectedAccount:
        """Awaitable :meth:`Payouts.create_express_account`."""
        return await _run(
            self.blocking.create_express_account, streamer_id, country=country, email=email
        )

    async def handle_event(self, event: WebhookEvent) -> WebhookResult:
        """Awaitable :meth:`Payouts.handle_event`."""
        return await _run(self.blocking.handle_event, event)

    async def handle_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Awaitable :meth:`Payouts.handle_webhook`."""
        return await _run(self.blocking.handle_webhook, payload, signature_header)

    async def accept_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Awaitable :meth:`Payouts.accept_webhook` (the fast acknowledgement); concurrent
        calls are stored together, as :meth:`AsyncPayments.accept_webhook`."""
        event, endpoint = self.blocking._verify_for_inbox(payload, signature_header)
        stored = endpoint and await self._acknowledgements.store(event, endpoint)
        return acknowledged(event, stored)

    async def wake(self, keys: Iterable[str | None]) -> list[WebhookResult]:
        """Awaitable :meth:`Payouts.wake`."""
        return await _run(self.blocking.wake, keys)

    async def link_account(self, streamer_id: str | int, account_id: str) -> ConnectedAccount:
        """Awaitable :meth:`Payouts.link_account`."""
        return await _run(self.blocking.link_account, streamer_id, account_id)

    async def onboarding_link(
        self, streamer_id: str | int, refresh_url: str, return_url: str
    ) -> str:
        """Awaitable :meth:`Payouts.onboarding_link`."""
        return await _run(self.blocking.onboarding_link, streamer_id, refresh_url, return_url)

    async def payout(self, payout_id: str) -> PayoutRecord:
        """Awaitable :meth:`Payouts.payout`: one payout by id (``UnknownPayout`` if none)."""
        return await _run(self.blocking.payout, payout_id)

    async def payouts(
        self, streamer_id: str | int, *, limit: int = 50, status: str | None = None
    ) -> list[PayoutRecord]:
        """Awaitable :meth:`Payouts.payouts`."""
        return await _run(self.blocking.payouts, streamer_id, limit=limit, status=status)

    async def recall(self, payout_id: str, *, idempotency_key: str) -> PayoutRecord:
        """Awaitable :meth:`Payouts.recall`."""
        return await _run(self.blocking.recall, payout_id, idempotency_key=idempotency_key)

    async def reconcile(
        self, *, limit: int = 100, settled_within_days: int = 14
    ) -> list[PayoutDiscrepancy]:
        """Awaitable :meth:`Payouts.reconcile`."""
        return await _run(
            self.blocking.reconcile, limit=limit, settled_within_days=settled_within_days
        )

    async def reconcile_payout(self, payout_id: str) -> PayoutDiscrepancy | None:
        """Awaitable :meth:`Payouts.reconcile_payout`."""
        return await _run(self.blocking.reconcile_payout, payout_id)

    async def refresh_account(self, streamer_id: str | int) -> ConnectedAccount:
        """Awaitable :meth:`Payouts.refresh_account`."""
        return await _run(self.blocking.refresh_account, streamer_id)

    async def repay(self, payout_id: str) -> PayoutRecord:
        """Awaitable :meth:`Payouts.repay`."""
        return await _run(self.blocking.repay, payout_id)

    async def request_payout(
        self,
        streamer_id: str | int,
        amount_usd_minor: int | Literal["all"],
        *,
        idempotency_key: str,
    ) -> PayoutRecord:
        """Awaitable :meth:`Payouts.request_payout`."""
        return await _run(
            self.blocking.request_payout,
            streamer_id,
            amount_usd_minor,
            idempotency_key=idempotency_key,
        )

    async def retry_parked(self, *, limit: int = 100) -> list[WebhookResult]:
        """Awaitable :meth:`Payouts.retry_parked`."""
        return await _run(self.blocking.retry_parked, limit=limit)
