"""Stripe: webhook events (dedupe and parking) and coin purchases.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.create_table(
        f"{p}webhook_events",
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("account", sa.String(255), nullable=True),
        sa.Column("stripe_created", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(255), nullable=True),
        sa.Column("payload", Json, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("processed_at", UTCDateTime, nullable=True),
        sa.CheckConstraint(
            "status IN ('processed', 'ignored', 'parked')", name=f"{p}webhook_events_status"
        ),
    )
    op.create_index(f"{p}webhook_events_parked", f"{p}webhook_events", ["status", "received_at"])
    op.create_index(f"{p}webhook_events_subject", f"{p}webhook_events", ["subject_id"])

    op.create_table(
        f"{p}purchases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("pack_id", sa.String(64), nullable=False),
        sa.Column("quote_id", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("coins", sa.BigInteger, nullable=False),
        sa.Column("face_value_usd_minor", sa.BigInteger, nullable=False),
        sa.Column("price_usd_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("local_amount_minor", sa.BigInteger, nullable=False),
        sa.Column("stripe_amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checkout_session_id", sa.String(255), nullable=True),
        sa.Column("checkout_url", sa.String(2000), nullable=True),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("credit_entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.Column("held", sa.Boolean, nullable=False, server_default=sa.text("false")),
        _zero("refunded_stripe_amount"),
        _zero("clawed_coins"),
        _zero("loss_usd_minor"),
        _zero("clearing_usd_minor"),
        _zero("settled_net_usd_minor"),
        _zero("settled_fee_usd_minor"),
        _zero("settled_clearing_usd_minor"),
        sa.Column("disputes", Json, nullable=False),
        sa.Column("balance_txns", Json, nullable=False),
        _zero("version"),
        sa.Column("refund_due", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("checkout_expires_at", UTCDateTime, nullable=True),
        sa.Column("risk_level", sa.String(32), nullable=True),
        sa.Column("risk_score", sa.Integer, nullable=True),
        sa.Column("note", sa.String(1000), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(
            "status IN ('creating', 'open', 'waiting', 'credited', 'held', 'refused', "
            "'mismatch', 'expired', 'failed', 'error')",
            name=f"{p}purchases_status",
        ),
        sa.CheckConstraint("coins > 0 AND stripe_amount > 0", name=f"{p}purchases_amounts"),
        sa.CheckConstraint(
            "clawed_coins >= 0 AND clawed_coins <= coins", name=f"{p}purchases_clawback"
        ),
    )
    op.create_index(f"{p}purchases_session", f"{p}purchases", ["checkout_session_id"], unique=True)
    op.create_index(f"{p}purchases_intent", f"{p}purchases", ["payment_intent_id"])
    op.create_index(f"{p}purchases_charge", f"{p}purchases", ["charge_id"])
    op.create_index(f"{p}purchases_user_time", f"{p}purchases", ["user_id", "created_at"])


def _zero(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0"))


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.drop_table(f"{p}purchases")
    op.drop_table(f"{p}webhook_events")
