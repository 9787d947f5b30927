"""A SQLAlchemy connection on the very psycopg connection Django holds.

Django owns the transaction (``transaction.atomic()``); SQLAlchemy must only
execute statements and savepoints on it. Three things in SQLAlchemy would
otherwise end Django's transaction behind its back:

1. the engine's first connect initialises the dialect and then **rolls back**
   the DBAPI connection (``create_engine``'s ``first_connect`` handler);
2. closing a ``Connection`` rolls back the transaction it began;
3. the pool resets a connection on return (``pool_reset_on_return``, a
   rollback by default) and closes it (``NullPool``).

See https://docs.sqlalchemy.org/en/20/core/pooling.html (custom creators,
"Reset On Return") and https://docs.sqlalchemy.org/en/20/orm/session_transaction.html
("Joining a Session into an External Transaction"). The recipe there joins an
external *SQLAlchemy* transaction; here the outer transaction is Django's, so
the DBAPI connection itself is lent to SQLAlchemy through :class:`Borrowed`,
whose ``rollback()`` and ``close()`` do nothing (Django commits, rolls back and
closes) and whose ``commit()`` refuses. Savepoints are SQL statements
(``SAVEPOINT``, ``ROLLBACK TO SAVEPOINT``) and go through, which is how every
ledger call in host mode isolates itself. The engine uses ``NullPool`` (a new
record per checkout, so each borrows the current thread's Django connection)
and ``pool_reset_on_return=None``.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

__all__ = ["Borrowed", "bridge_engine"]


class Borrowed:
    """Django's psycopg 3 connection lent to SQLAlchemy: transaction control stays Django's."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        object.__setattr__(self, "_raw", raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # autocommit, isolation_level, read_only: Django's to decide, per connection.
        raise RuntimeError(
            f"spaktok_ledger.contrib.django: SQLAlchemy tried to set {name!r} on Django's "
            "connection; isolation levels and autocommit belong to Django's settings"
        )

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # a named (server-side) cursor: as asked
            return self._raw.cursor(*args, **kwargs)
        # Django's default cursor class binds parameters on the client; SQLAlchemy's
        # psycopg dialect is written for psycopg's standard (server-side binding) cursor.
        import psycopg

        cursor = psycopg.Cursor(self._raw)
        _psycopg_loaders(cursor.adapters)
        return cursor

    def commit(self) -> None:
        raise RuntimeError(
            "spaktok_ledger.contrib.django: the ledger never commits Django's transaction; "
            "transaction.atomic() does"
        )

    def rollback(self) -> None:
        """SQLAlchemy's end of *its* view of the transaction: Django decides the real one."""

    def close(self) -> None:
        """Django closes its connections (CONN_MAX_AGE, end of request)."""

    def add_notice_handler(self, handler: Any) -> None:
        """Not installed on a borrowed connection (one per checkout would pile up)."""


# Django's connections load jsonb, inet and cidr as text (Django parses them itself) and
# timestamptz in its own time zone (naive with USE_TZ=False); SQLAlchemy's psycopg
# dialect expects psycopg's own loaders (JSON parsed, aware datetimes). The borrowed
# connection's cursors get psycopg's defaults back for these types.
_RESTORED_TYPES = ("json", "jsonb", "timestamptz", "inet", "cidr")


def _psycopg_loaders(adapters: Any) -> None:
    import psycopg
    from psycopg import pq

    for name in _RESTORED_TYPES:
        info = psycopg.adapters.types.get(name)
        if info is None:
            continue
        for fmt in (pq.Format.TEXT, pq.Format.BINARY):
            loader = psycopg.adapters.get_loader(info.oid, fmt)
            if loader is not None:
                adapters.register_loader(info.oid, loader)


_engines: dict[tuple[str, str], sa.Engine] = {}
_lock = threading.Lock()


def bridge_engine(alias: str, url: sa.URL) -> sa.Engine:
    """The engine whose connections are the current thread's Django connection ``alias``."""
    key = (alias, url.render_as_string(hide_password=False))
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            from django.db import connections

            def creator() -> Borrowed:
                django_connection = connections[alias]
                django_connection.ensure_connection()
                return Borrowed(django_connection.connection)

            engine = sa.create_engine(
                url,
                creator=creator,
                poolclass=NullPool,
                pool_reset_on_return=None,
                # The hstore lookup would run psycopg's TypeInfo.fetch in a nested
                # transaction block of its own; the ledger has no hstore columns.
                use_native_hstore=False,
            )
            _engines[key] = engine
        return engine
