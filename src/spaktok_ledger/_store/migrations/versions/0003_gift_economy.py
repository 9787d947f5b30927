"""The gift economy: streamers, earnings maturing after a hold period, an outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.create_table(
        f"{p}streamers",
        sa.Column("streamer_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("streamer_bps", sa.SmallInteger, nullable=True),
        sa.Column("blocked_reason", sa.String(500), nullable=True),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("status IN ('active', 'blocked')", name=f"{p}streamers_status"),
        sa.CheckConstraint(
            "streamer_bps IS NULL OR streamer_bps BETWEEN 0 AND 10000", name=f"{p}streamers_bps"
        ),
    )
    op.create_table(
        f"{p}earning_lots",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("streamer_id", sa.String(64), nullable=False),
        sa.Column("gift_entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("matures_at", UTCDateTime, nullable=False),
        sa.Column("matured_at", UTCDateTime, nullable=True),
        sa.Column("maturation_entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=f"{p}earning_lots_amount"),
    )
    op.create_index(f"{p}earning_lots_due", f"{p}earning_lots", ["matured_at", "matures_at"])
    op.create_index(f"{p}earning_lots_gift", f"{p}earning_lots", ["gift_entry_id"], unique=True)
    op.create_table(
        f"{p}outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("acked_at", UTCDateTime, nullable=True),
    )
    op.create_index(f"{p}outbox_dedupe", f"{p}outbox", ["dedupe_key"], unique=True)
    op.create_index(f"{p}outbox_pending", f"{p}outbox", ["acked_at", "id"])
    op.create_index(f"{p}outbox_entry", f"{p}outbox", ["entry_id"])


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    for table in ("outbox", "earning_lots", "streamers"):
        op.drop_table(f"{p}{table}")
