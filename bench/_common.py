"""Helpers the benchmarks share."""

from __future__ import annotations

import sqlalchemy as sa

from spaktok_ledger import Ledger


def drop_ledger_tables(conn: sa.Connection, ledger: Ledger, prefix: str) -> None:
    """Drop a benchmark's ledger tables (``prefix``) from a shared PostgreSQL
    database, leaving it as it was before the run."""
    for table in reversed(ledger.tables.metadata.sorted_tables):
        conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{prefix}alembic_version"'))
