"""Webhooks at Stripe's pace: claims before fetch, fast acknowledgement, parked wake-ups,
the worker's schedules.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

``webhook_events`` gains a lease (``lease_owner``, ``lease_until``: the
delivery or worker applying the event), the ``queued`` status (stored by a
fast acknowledgement, applied by the worker), a ``wake_key`` (the purchase or
payout a parked event waits for) and ``next_attempt_at`` (a parked event's
backoff). ``worker_jobs`` holds the worker's periodic jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from spaktok_ledger._store._schema import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_OLD = "status IN ('processed', 'ignored', 'parked')"
_NEW = "status IN ('processed', 'ignored', 'parked', 'queued')"


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table.
    with op.batch_alter_table(f"{p}webhook_events") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("wake_key", sa.String(300), nullable=True))
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime, nullable=True))
        batch.drop_constraint(f"{p}webhook_events_status", type_="check")
        batch.create_check_constraint(f"{p}webhook_events_status", _NEW)
    op.create_index(f"{p}webhook_events_wake", f"{p}webhook_events", ["wake_key"])
    op.create_table(
        f"{p}worker_jobs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("next_run_at", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("last_run_at", UTCDateTime, nullable=True),
        sa.Column("last_result", sa.String(1000), nullable=True),
        sa.Column("runs", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("failures", sa.Integer, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.drop_table(f"{p}worker_jobs")
    op.drop_index(f"{p}webhook_events_wake", f"{p}webhook_events")
    op.execute(f"DELETE FROM {p}webhook_events WHERE status = 'queued'")
    with op.batch_alter_table(f"{p}webhook_events") as batch:
        batch.drop_constraint(f"{p}webhook_events_status", type_="check")
        batch.create_check_constraint(f"{p}webhook_events_status", _OLD)
        for name in ("next_attempt_at", "wake_key", "lease_until", "lease_owner"):
            batch.drop_column(name)
