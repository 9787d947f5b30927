"""Balances stay within signed 64 bits: a CHECK on every balance column.

Adds ``balances.shard_count`` (the account's ``balance_shards``, copied like
``normal_sign`` so a row-level CHECK can use it) and the CHECK
``{prefix}balances_range``: ``posted`` within ``±(2**63 - 1) / shard_count``
and both pending columns at most ``(2**63 - 1) / shard_count``, so an
account's balance, the sum of its shard rows, always fits in signed 64 bits
and so does its negation. On SQLite an integer sum that overflows silently
becomes a float, which this constraint refuses; on PostgreSQL ``bigint``
arithmetic already raises. The library turns either refusal into
``BalanceOverflow`` (see ``_store/_overflow.py``).

SQLite cannot add a CHECK constraint in place: batch mode rebuilds the table,
which drops its triggers, so the DELETE guard of 0001 is created again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

RANGE = (
    "shard_count BETWEEN 1 AND 64 "
    "AND posted BETWEEN -(9223372036854775807 / shard_count) "
    "AND 9223372036854775807 / shard_count "
    "AND pending_debit <= 9223372036854775807 / shard_count "
    "AND pending_credit <= 9223372036854775807 / shard_count"
)


def _sqlite_delete_guard(p: str) -> str:
    return (
        f"CREATE TRIGGER {p}balances_no_delete BEFORE DELETE ON {p}balances "
        f"BEGIN SELECT RAISE(ABORT, 'spaktok-ledger: DELETE on {p}balances is not allowed'); END"
    )


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    postgres = op.get_bind().dialect.name == "postgresql"
    column = sa.Column("shard_count", sa.SmallInteger, nullable=False, server_default=sa.text("1"))
    if postgres:
        op.add_column(f"{p}balances", column)
    else:
        with op.batch_alter_table(f"{p}balances", recreate="never") as batch:
            batch.add_column(column)
    op.execute(
        f"UPDATE {p}balances SET shard_count = (SELECT a.balance_shards FROM {p}accounts a "
        f"WHERE a.id = {p}balances.account_id)"
    )
    if postgres:
        op.create_check_constraint(f"{p}balances_range", f"{p}balances", RANGE)
        return
    with op.batch_alter_table(f"{p}balances", recreate="always") as batch:
        batch.create_check_constraint(f"{p}balances_range", RANGE)
    op.execute(_sqlite_delete_guard(p))


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(f"{p}balances_range", f"{p}balances", type_="check")
        op.drop_column(f"{p}balances", "shard_count")
        return
    with op.batch_alter_table(f"{p}balances", recreate="always") as batch:
        batch.drop_constraint(f"{p}balances_range", type_="check")
        batch.drop_column("shard_count")
    op.execute(_sqlite_delete_guard(p))
