"""Create or upgrade the ledger's schema with its shipped Alembic migrations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, Engine

from spaktok_ledger._store._schema import DEFAULT_PREFIX, check_prefix, tables_for
from spaktok_ledger._store._units import Progress, UnitsProblem, check_units, rescale_units

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions that use it: a process that only
# posts and reads never loads it (``import spaktok_ledger`` stays cheap).

__all__ = [
    "current_revision",
    "head_revision",
    "migrate",
    "migrate_units",
    "upgrade_schema",
]


def _config(connection: Connection | None, prefix: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("spaktok_ledger._store") / "migrations"))
    cfg.attributes["spaktok_prefix"] = prefix
    cfg.attributes["connection"] = connection
    return cfg


@contextmanager
def _preserved_alembic_proxies() -> Iterator[None]:
    """Keep a running host migration's ``alembic.op`` / ``alembic.context`` intact.

    Alembic installs module-level proxies while it runs and removes them at
    the end; when a host calls ``migrate()`` from inside its own migration
    (or ``env.py``), the nested run would remove the host's proxies too.
    """
    import alembic.context
    import alembic.op

    saved = [(module, dict(vars(module))) for module in (alembic.context, alembic.op)]
    try:
        yield
    finally:
        for module, namespace in saved:
            current = vars(module)
            for name in set(current) - set(namespace):
                del current[name]
            current.update(namespace)


def head_revision() -> str:
    """The newest migration this version of the library ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config(None, DEFAULT_PREFIX)).get_current_head()
    assert head is not None
    return head


def current_revision(bind: Engine | Connection, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The migration the database is at for ``prefix`` (``None``: no ledger tables)."""
    prefix = check_prefix(prefix)
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return current_revision(connection, prefix)
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(bind, opts={"version_table": f"{prefix}alembic_version"})
    return context.get_current_revision()


def migrate(bind: Engine | Connection, prefix: str = DEFAULT_PREFIX, revision: str = "head") -> str:
    """Create the ledger's tables or upgrade them to ``revision``; returns the new revision.

    Safe to run at every start-up: an up-to-date schema is left alone. With a
    ``Connection``, the migration runs in the caller's transaction, begun if
    needed, and the caller commits (DDL is transactional on both PostgreSQL
    and SQLite); with an ``Engine``, in a transaction of its own.

    At head, it then checks that every stored amount uses the units this
    library uses (its ISO 4217 table, Stripe's units) and raises
    ``UnitsMismatch`` otherwise -- inside the same transaction, so a refused
    upgrade leaves the database as it was (``spaktok-ledger migrate-units``
    upgrades and rescales instead).

    >>> import sqlalchemy as sa
    >>> migrate(sa.create_engine("sqlite://")) == head_revision()
    True
    """
    prefix = check_prefix(prefix)
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return migrate(connection, prefix, revision)
    rev = upgrade_schema(bind, prefix, revision)
    if rev == head_revision():
        check_units(bind, tables_for(prefix))
    return rev


def upgrade_schema(bind: Connection, prefix: str, revision: str = "head") -> str:
    """Run the Alembic upgrade on ``bind`` (in its transaction), without the units check."""
    if not bind.in_transaction():
        bind.begin()
    if bind.dialect.name == "postgresql":
        # Several workers starting at once: one migrates, the others wait and
        # then find the schema current (the lock ends with the transaction).
        key = int.from_bytes(hashlib.sha256(f"spaktok:{prefix}".encode()).digest()[:8], "big")
        bind.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key - 2**63})")
    from alembic import command

    with _preserved_alembic_proxies():
        command.upgrade(_config(bind, prefix), revision)
    rev = current_revision(bind, prefix)
    assert rev is not None
    return rev


def _quiet(_message: str) -> None:
    return None


def migrate_units(
    bind: Engine | Connection,
    prefix: str = DEFAULT_PREFIX,
    *,
    progress: Progress = _quiet,
    dry_run: bool = False,
) -> list[UnitsProblem]:
    """Upgrade the schema and rescale amounts stored at other exponents; returns what was found.

    The way out of ``UnitsMismatch`` (``spaktok-ledger migrate-units`` on the
    command line): the schema upgrade, migration 0006's back-fill and every
    rescale run in one transaction (the caller's, with a ``Connection``) and
    commit together or not at all. ``progress`` receives one line per step;
    ``dry_run`` reports what it would rescale and rolls back.

    >>> import sqlalchemy as sa
    >>> migrate_units(sa.create_engine("sqlite://"))
    []
    """
    prefix = check_prefix(prefix)
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return migrate_units(connection, prefix, progress=progress, dry_run=dry_run)
    if not bind.in_transaction():
        bind.begin()
    if not dry_run:
        upgrade_schema(bind, prefix)
        return rescale_units(bind, tables_for(prefix), progress=progress)
    savepoint = bind.begin_nested()
    try:
        upgrade_schema(bind, prefix)
        return rescale_units(bind, tables_for(prefix), progress=progress)
    finally:
        savepoint.rollback()
