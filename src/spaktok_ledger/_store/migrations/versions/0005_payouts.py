"""Stripe Connect payouts: connected accounts (KYC state) and payout requests.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.create_table(
        f"{p}connected_accounts",
        sa.Column("streamer_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("payouts_enabled", sa.Boolean, nullable=False),
        sa.Column("charges_enabled", sa.Boolean, nullable=False),
        sa.Column("details_submitted", sa.Boolean, nullable=False),
        sa.Column("currently_due", Json, nullable=False),
        sa.Column("past_due", Json, nullable=False),
        sa.Column("disabled_reason", sa.String(255), nullable=True),
        sa.Column("default_currency", sa.String(3), nullable=True),
        sa.Column("country", sa.String(8), nullable=True),
        _zero("stripe_updated"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        f"{p}connected_accounts_account", f"{p}connected_accounts", ["account_id"], unique=True
    )

    op.create_table(
        f"{p}payouts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("streamer_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("amount_usd_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ledger_state", sa.String(8), nullable=False),
        sa.Column("hold_entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=False),
        sa.Column("settlement_entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        _zero("returned_usd_minor"),
        sa.Column("transfer_id", sa.String(255), nullable=True),
        _zero("transfer_reversed_minor"),
        sa.Column("stripe_payout_id", sa.String(255), nullable=True),
        sa.Column("stripe_payout_status", sa.String(16), nullable=True),
        sa.Column("payout_currency", sa.String(3), nullable=True),
        sa.Column("payout_stripe_amount", sa.BigInteger, nullable=True),
        sa.Column("exchange_rate", sa.String(40), nullable=True),
        sa.Column("failure_code", sa.String(100), nullable=True),
        sa.Column("failure_message", sa.String(1000), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("mode IN ('automatic', 'manual')", name=f"{p}payouts_mode"),
        sa.CheckConstraint(
            "status IN ('pending', 'transferred', 'in_transit', 'paid', 'failed', "
            "'canceled', 'reversed')",
            name=f"{p}payouts_status",
        ),
        sa.CheckConstraint(
            "ledger_state IN ('held', 'settled', 'voided')", name=f"{p}payouts_ledger_state"
        ),
        sa.CheckConstraint(
            "amount_usd_minor > 0 AND returned_usd_minor >= 0 "
            "AND returned_usd_minor <= amount_usd_minor AND transfer_reversed_minor >= 0",
            name=f"{p}payouts_amounts",
        ),
    )
    op.create_index(
        f"{p}payouts_key", f"{p}payouts", ["streamer_id", "idempotency_key"], unique=True
    )
    op.create_index(f"{p}payouts_streamer_time", f"{p}payouts", ["streamer_id", "created_at"])
    op.create_index(f"{p}payouts_open", f"{p}payouts", ["status", "updated_at"])
    op.create_index(f"{p}payouts_transfer", f"{p}payouts", ["transfer_id"])
    op.create_index(f"{p}payouts_stripe_payout", f"{p}payouts", ["stripe_payout_id"])


def _zero(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0"))


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.drop_table(f"{p}payouts")
    op.drop_table(f"{p}connected_accounts")
