"""Books that agree with Stripe: refunds, gift clawbacks, foreign settlement and unapplied
payments on purchases; transfer attempts, arrival and on-account money on payouts; the
service agreement of connected accounts; the Stripe balance-transaction index and the
reconciliation cursors.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _zero(name: str, kind: type[sa.types.TypeEngine[int]] = sa.BigInteger) -> sa.Column[int]:
    return sa.Column(name, kind, nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    for column in (
        sa.Column("refunds", Json, nullable=True),
        sa.Column("gift_clawbacks", Json, nullable=True),
        sa.Column("settled_foreign", Json, nullable=True),
        _zero("unapplied_usd_minor"),
        sa.Column("fraud_warning", sa.String(255), nullable=True),
        sa.Column("charged_stripe_amount", sa.BigInteger, nullable=True),
        _zero("over_returned_usd_minor"),
    ):
        op.add_column(f"{p}purchases", column)
    op.add_column(f"{p}connected_accounts", sa.Column("service_agreement", sa.String(16)))
    for column in (
        _zero("transfer_attempts", sa.Integer),
        sa.Column("source_transaction", sa.String(255), nullable=True),
        sa.Column("arrival_currency", sa.String(3), nullable=True),
        sa.Column("arrival_stripe_amount", sa.BigInteger, nullable=True),
        _zero("bank_attempts", sa.Integer),
        _zero("on_account_minor"),
    ):
        op.add_column(f"{p}payouts", column)

    op.create_table(
        f"{p}stripe_txns",
        sa.Column("txn_id", sa.String(255), primary_key=True),
        sa.Column("stripe_account", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(255), nullable=True),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("booked_net_minor", sa.BigInteger, nullable=True),
        sa.Column("stripe_net_minor", sa.BigInteger, nullable=True),
        sa.Column("stripe_currency", sa.String(3), nullable=True),
        sa.Column("stripe_created", sa.BigInteger, nullable=False),
        sa.Column("entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.Column("booked_at", UTCDateTime, nullable=True),
        sa.Column("seen_at", UTCDateTime, nullable=True),
    )
    op.create_index(
        f"{p}stripe_txns_account_time", f"{p}stripe_txns", ["stripe_account", "stripe_created"]
    )
    op.create_index(f"{p}stripe_txns_source", f"{p}stripe_txns", ["source_id"])
    op.create_index(f"{p}stripe_txns_subject", f"{p}stripe_txns", ["subject_id"])
    op.create_table(
        f"{p}stripe_cursors",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.drop_table(f"{p}stripe_cursors")
    op.drop_table(f"{p}stripe_txns")
    with op.batch_alter_table(f"{p}payouts") as batch:
        for name in (
            "on_account_minor",
            "bank_attempts",
            "arrival_stripe_amount",
            "arrival_currency",
            "source_transaction",
            "transfer_attempts",
        ):
            batch.drop_column(name)
    with op.batch_alter_table(f"{p}connected_accounts") as batch:
        batch.drop_column("service_agreement")
    with op.batch_alter_table(f"{p}purchases") as batch:
        for name in (
            "over_returned_usd_minor",
            "charged_stripe_amount",
            "fraud_warning",
            "unapplied_usd_minor",
            "settled_foreign",
            "gift_clawbacks",
            "refunds",
        ):
            batch.drop_column(name)
