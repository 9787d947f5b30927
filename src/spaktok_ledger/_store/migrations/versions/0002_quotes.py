"""Price quotes: what a viewer was shown, so checkout charges exactly that.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.create_table(
        f"{p}quotes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("pack_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("local_amount_minor", sa.BigInteger, nullable=False),
        sa.Column("usd_price_minor", sa.BigInteger, nullable=False),
        sa.Column("rate", sa.String(40), nullable=False),
        sa.Column("quote", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("local_amount_minor > 0", name=f"{p}quotes_amount"),
        sa.CheckConstraint("expires_at > created_at", name=f"{p}quotes_expiry"),
    )
    op.create_index(f"{p}quotes_user", f"{p}quotes", ["user_id", "created_at"])


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.drop_table(f"{p}quotes")
