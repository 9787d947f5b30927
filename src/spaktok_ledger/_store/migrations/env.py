"""Alembic environment for the ledger's own migration history.

Run through :func:`spaktok_ledger.migrate` (or ``spaktok-ledger migrate``),
which passes the connection and the table prefix in ``config.attributes``.
The version table is ``{prefix}alembic_version``, so the ledger's history
never collides with the host application's own Alembic history.
"""

from __future__ import annotations

from alembic import context

from spaktok_ledger._store._schema import tables_for

config = context.config
prefix: str = config.attributes["spaktok_prefix"]
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=tables_for(prefix).metadata,
    version_table=f"{prefix}alembic_version",
    transactional_ddl=True,
)

with context.begin_transaction():
    context.run_migrations()
