"""Schema creation and upgrades through the shipped Alembic migrations."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from spaktok_ledger import (
    InvalidInput,
    Ledger,
    SchemaError,
    current_revision,
    head_revision,
    migrate,
    tables_for,
)


def test_migrate_is_idempotent(engine: sa.Engine, prefix: str) -> None:
    """Migrating twice leaves the schema at head and changes nothing the second time."""
    assert current_revision(engine, prefix) is None
    assert migrate(engine, prefix) == head_revision()
    assert migrate(engine, prefix) == head_revision()
    assert current_revision(engine, prefix) == head_revision()


def test_migrations_match_the_metadata(engine: sa.Engine, prefix: str) -> None:
    """The migrated database has exactly the tables, columns and indexes of the MetaData."""
    migrate(engine, prefix)
    metadata = tables_for(prefix).metadata
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, type_, _parent: type_ != "table"
                or name.startswith(prefix),
            },
        )
        diffs = [
            d for d in compare_metadata(context, metadata)
            # the version table is Alembic's own
            if not (d[0] == "remove_table" and d[1].name.endswith("alembic_version"))
        ]
    assert diffs == []


def test_prefixes_live_side_by_side(engine: sa.Engine, prefix: str) -> None:
    """Two prefixes in one database are two independent ledgers."""
    migrate(engine, prefix)
    migrate(engine, prefix + "b_")
    names = set(sa.inspect(engine).get_table_names())
    assert {f"{prefix}transactions", f"{prefix}b_transactions"} <= names
    assert {f"{prefix}alembic_version", f"{prefix}b_alembic_version"} <= names


def test_check_schema(engine: sa.Engine, prefix: str) -> None:
    """check_schema() names the command to run when tables are missing."""
    ledger = Ledger(engine, prefix=prefix)
    with pytest.raises(SchemaError, match="spaktok-ledger migrate"):
        ledger.check_schema()
    ledger.migrate()
    ledger.check_schema()


def test_migrate_inside_host_transaction(engine: sa.Engine, prefix: str) -> None:
    """With a Connection, the migration is part of the host's transaction."""
    with engine.connect() as conn:
        migrate(conn, prefix)
        conn.rollback()
    assert current_revision(engine, prefix) is None
    with engine.begin() as conn:
        migrate(conn, prefix)
    assert current_revision(engine, prefix) == head_revision()


@pytest.mark.parametrize("bad", ["", "Spak_", "1x_", "a-b", "x" * 40, None])
def test_prefix_validation(bad: object) -> None:
    """Prefixes are short lower-case identifiers: nothing that could inject SQL."""
    with pytest.raises(InvalidInput):
        tables_for(bad)  # type: ignore[arg-type]


def test_upgrade_from_the_first_revision_keeps_the_books(engine: sa.Engine, prefix: str) -> None:
    """A ledger created at revision 0001 upgrades to head with its entries intact.

    The rows are written with revision 0001's own columns (reflected), as the
    library of that time wrote them: today's Ledger writes today's columns.
    """
    from datetime import UTC, datetime

    assert migrate(engine, prefix, revision="0001") == "0001"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    md = sa.MetaData()
    with engine.begin() as conn:
        md.reflect(conn, only=[f"{prefix}{n}" for n in ("accounts", "balances", "transactions", "postings")])
        t = {name[len(prefix):]: table for name, table in md.tables.items()}
        ids = {}
        for code, kind, sign in (("a:x", "asset", 1), ("a:y", "liability", -1)):
            ids[code] = conn.execute(
                t["accounts"].insert().returning(t["accounts"].c.id),
                {"code": code, "kind": kind, "currency": "USD", "allow_overdraft": False,
                 "balance_shards": 1, "metadata": {}, "created_at": now},
            ).scalar_one()
            conn.execute(t["balances"].insert(), {
                "account_id": ids[code], "shard": 0, "normal_sign": sign,
                "allow_overdraft": code == "a:x", "posted": 5 * sign,
            })
        entry = conn.execute(
            t["transactions"].insert().returning(t["transactions"].c.id),
            {"type": "t", "phase": "posted", "idempotency_key": "k", "request_hash": "h",
             "description": "", "metadata": {}, "effective_at": now, "recorded_at": now},
        ).scalar_one()
        conn.execute(t["postings"].insert(), [
            {"entry_id": entry, "account_id": ids["a:x"], "amount": 5, "currency": "USD"},
            {"entry_id": entry, "account_id": ids["a:y"], "amount": -5, "currency": "USD"},
        ])
    ledger = Ledger(engine, prefix=prefix)
    assert ledger.migrate() == head_revision()
    assert ledger.balance("a:y").posted_minor == 5
    assert ledger.verify().ok
    assert ledger.account("a:x").currency == "USD"
