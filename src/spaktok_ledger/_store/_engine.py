"""Engines, connections and the retry policy for transient contention.

SQLite follows SQLAlchemy's documented pysqlite recipe: the driver's own
transaction handling is switched off and the library emits ``BEGIN IMMEDIATE``
itself, so a writer takes the write lock up front instead of failing halfway
through on a lock upgrade; WAL lets readers run beside the writer, and a
busy timeout makes writers queue instead of failing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from spaktok_ledger._errors import InvalidInput, LedgerBusy
from spaktok_ledger._extras import needs_extra
from spaktok_ledger._log import log_gave_up, log_retry

__all__ = [
    "READ_ONLY",
    "Retry",
    "configure_sqlite",
    "create_engine",
    "is_transient",
]

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Execution option asking for a plain (deferred) BEGIN on SQLite: reads must
# not take the write lock.
READ_ONLY: Final = {"spaktok_read_only": True}

_PG_TRANSIENT = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_SQLITE_BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)


def create_engine(url: str | sa.URL, **kwargs: Any) -> Engine:
    """Create an engine for the ledger: SQLite gets WAL, ``BEGIN IMMEDIATE``
    and a busy timeout; PostgreSQL uses psycopg 3.

    ``sqlite:///spaktok.db`` and ``postgresql+psycopg://...`` are the two
    supported backends; a bare ``postgresql://`` URL is read as psycopg 3.
    """
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InvalidInput(
            f"spaktok-ledger supports SQLite and PostgreSQL, not {backend!r}", backend=backend
        )
    with needs_extra(f"a {backend} database"):  # psycopg: the postgres extra
        engine = sa.create_engine(parsed, **kwargs)
    if backend == "sqlite":
        configure_sqlite(engine)
    return engine


def configure_sqlite(engine: Engine) -> Engine:
    """Apply the pysqlite transaction recipe to ``engine`` (idempotent).

    The ledger calls this on SQLite engines it is given, so that writes begin
    with ``BEGIN IMMEDIATE``; host code on the same engine benefits too.
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "connect", _sqlite_connect):
        return engine
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver (the recipe's first half).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode")  # fetch apart: aiosqlite's execute returns None
        mode = cursor.fetchone()[0]
        if mode != "memory":  # in-memory databases cannot use WAL
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # The recipe's second half: emit BEGIN ourselves, IMMEDIATE for writers.
    read_only = connection.get_execution_options().get("spaktok_read_only", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_transient(exc: BaseException) -> bool:
    """Deadlocks, serialization failures and a busy SQLite file: retry, don't report."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _PG_TRANSIENT:
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_BUSY:
        return True
    return "database is locked" in str(orig)


class Retry:
    """Bounded exponential backoff with full jitter for transient contention."""

    def __init__(
        self,
        attempts: int = 12,
        base_delay: float = 0.002,
        max_delay: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise InvalidInput("retry attempts must be at least 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._random = random.Random()  # noqa: S311 - jitter, not secrets

    def run(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.attempts - 1:
                    log_gave_up(self.attempts)
                    raise LedgerBusy(
                        f"the database stayed busy after {self.attempts} attempts; "
                        "retry the call with the same idempotency key",
                        attempts=self.attempts,
                    ) from exc
                delay = self._random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
                log_retry(attempt + 1, self.attempts, delay, exc)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
