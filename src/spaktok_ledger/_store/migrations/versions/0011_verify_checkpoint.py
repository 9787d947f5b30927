"""Incremental verify: the checkpoint up to which the books were last verified.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from spaktok_ledger._store._schema import UTCDateTime

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.create_table(
        f"{p}verify_checkpoint",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("entry_id", sa.BigInteger, nullable=False),
        sa.Column("posting_id", sa.BigInteger, nullable=False),
        sa.Column("verified_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("id = 1", name=f"{p}verify_checkpoint_single"),
    )
    op.create_table(
        f"{p}verify_checkpoint_balances",
        sa.Column(
            "account_id",
            Id,
            sa.ForeignKey(f"{p}accounts.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("posted", sa.BigInteger, nullable=False),
        sa.Column("pending_debit", sa.BigInteger, nullable=False),
        sa.Column("pending_credit", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.drop_table(f"{p}verify_checkpoint_balances")
    op.drop_table(f"{p}verify_checkpoint")
