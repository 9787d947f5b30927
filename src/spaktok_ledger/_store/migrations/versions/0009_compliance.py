"""Compliance: monitoring activity, review cases, links, screening, data keys, audit log.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-04

Also: payouts gain the ``review`` and ``refused`` statuses (a payout waits
in review while its streamer has an open case), and connected accounts a
``sealed`` column (their details encrypted with the streamer's data key).
``audit_log`` is append-only, guarded like the journal by triggers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")

_OLD_STATUSES = (
    "status IN ('pending', 'transferred', 'in_transit', 'paid', 'failed', 'canceled', 'reversed')"
)
_NEW_STATUSES = (
    "status IN ('pending', 'transferred', 'in_transit', 'paid', 'failed', "
    "'canceled', 'reversed', 'review', 'refused')"
)


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    dialect = op.get_bind().dialect.name

    op.create_table(
        f"{p}monitor_activity",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("party_id", sa.String(64), nullable=False),
        sa.Column("counterparty_id", sa.String(64), nullable=False, server_default=sa.text("''")),
        sa.Column("bucket_at", UTCDateTime, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("amount_usd_minor", sa.BigInteger, nullable=False),
        sa.Column("last_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(
            "count > 0 AND amount_usd_minor >= 0", name=f"{p}monitor_activity_amounts"
        ),
    )
    op.create_index(
        f"{p}monitor_activity_party",
        f"{p}monitor_activity",
        ["party_id", "kind", "bucket_at", "counterparty_id"],
        unique=True,
    )
    op.create_index(
        f"{p}monitor_activity_counterparty",
        f"{p}monitor_activity",
        ["counterparty_id", "kind", "bucket_at"],
    )

    op.create_table(
        f"{p}cases",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("subject_role", sa.String(16), nullable=False),
        sa.Column("movement", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(255), nullable=True),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("evidence", Json, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("assigned_at", UTCDateTime, nullable=True),
        sa.Column("decision", sa.String(8), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decision_reason", sa.String(1000), nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("outcome IN ('hold', 'refuse')", name=f"{p}cases_outcome"),
        sa.CheckConstraint("status IN ('open', 'closed')", name=f"{p}cases_status"),
        sa.CheckConstraint(
            "(status = 'open' AND decision IS NULL) OR "
            "(status = 'closed' AND decision IN ('release', 'refuse'))",
            name=f"{p}cases_decision",
        ),
    )
    op.create_index(
        f"{p}cases_open_rule",
        f"{p}cases",
        ["rule", "subject_id"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(f"{p}cases_subject", f"{p}cases", ["subject_id", "status"])
    op.create_index(f"{p}cases_queue", f"{p}cases", ["status", "created_at"])

    op.create_table(
        f"{p}case_holds",
        sa.Column("case_id", Id, sa.ForeignKey(f"{p}cases.id"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("reference", sa.String(255), primary_key=True),
        sa.Column("entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.CheckConstraint("kind IN ('payout', 'purchase', 'credit')", name=f"{p}case_holds_kind"),
    )
    op.create_index(f"{p}case_holds_item", f"{p}case_holds", ["kind", "reference"])

    op.create_table(
        f"{p}party_links",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("party_a", sa.String(64), nullable=False),
        sa.Column("party_b", sa.String(64), nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("declared_by", sa.String(200), nullable=False),
        sa.Column("declared_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("party_a < party_b", name=f"{p}party_links_order"),
    )
    op.create_index(
        f"{p}party_links_pair", f"{p}party_links", ["party_a", "party_b", "basis"], unique=True
    )
    op.create_index(f"{p}party_links_b", f"{p}party_links", ["party_b"])

    op.create_table(
        f"{p}party_clusters",
        sa.Column("party_id", sa.String(64), primary_key=True),
        sa.Column("cluster_id", sa.String(64), nullable=False),
    )
    op.create_index(f"{p}party_clusters_cluster", f"{p}party_clusters", ["cluster_id"])

    op.create_table(
        f"{p}screenings",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("party_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("matches", Json, nullable=False),
        sa.Column("identity", sa.Text, nullable=True),
        sa.Column("checked_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(
            "status IN ('clear', 'potential_match', 'match')", name=f"{p}screenings_status"
        ),
    )
    op.create_index(f"{p}screenings_party", f"{p}screenings", ["party_id", "id"])

    op.create_table(
        f"{p}data_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("party_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.Text, nullable=True),
        sa.Column("wrapped_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("destroyed_at", UTCDateTime, nullable=True),
        sa.CheckConstraint(
            "(destroyed_at IS NULL) = (wrapped_key IS NOT NULL)", name=f"{p}data_keys_state"
        ),
    )
    op.create_index(
        f"{p}data_keys_live",
        f"{p}data_keys",
        ["party_id"],
        unique=True,
        sqlite_where=sa.text("destroyed_at IS NULL"),
        postgresql_where=sa.text("destroyed_at IS NULL"),
    )
    op.create_index(f"{p}data_keys_wrapped_by", f"{p}data_keys", ["wrapped_by"])

    op.create_table(
        f"{p}audit_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("request", Json, nullable=False),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("result", Json, nullable=False),
    )
    op.create_index(f"{p}audit_log_subject", f"{p}audit_log", ["subject", "id"])
    op.create_index(f"{p}audit_log_action", f"{p}audit_log", ["action", "at"])
    op.create_index(f"{p}audit_log_at", f"{p}audit_log", ["at"])
    for statement in _audit_guards(p, dialect):
        op.execute(statement)

    with op.batch_alter_table(f"{p}connected_accounts") as batch:
        batch.add_column(sa.Column("sealed", sa.Text, nullable=True))
    # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table.
    with op.batch_alter_table(f"{p}payouts") as batch:
        batch.drop_constraint(f"{p}payouts_status", type_="check")
        batch.create_check_constraint(f"{p}payouts_status", _NEW_STATUSES)


def _audit_guards(p: str, dialect: str) -> list[str]:
    """The audit log is append-only: the same guards as the journal (0001)."""
    if dialect == "postgresql":
        # {p}reject_change() was created by 0001.
        return [
            f"CREATE TRIGGER {p}audit_log_append_only BEFORE UPDATE OR DELETE ON {p}audit_log "
            f"FOR EACH ROW EXECUTE FUNCTION {p}reject_change()",
            f"CREATE TRIGGER {p}audit_log_no_truncate BEFORE TRUNCATE ON {p}audit_log "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {p}reject_change()",
        ]
    return [
        f"CREATE TRIGGER {p}audit_log_no_{name.lower()} BEFORE {name} ON {p}audit_log "
        f"BEGIN SELECT RAISE(ABORT, 'spaktok-ledger: {name} on {p}audit_log is not "
        f"allowed: the audit log is append-only'); END"
        for name in ("UPDATE", "DELETE")
    ]


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    with op.batch_alter_table(f"{p}payouts") as batch:
        batch.drop_constraint(f"{p}payouts_status", type_="check")
        batch.create_check_constraint(f"{p}payouts_status", _OLD_STATUSES)
    with op.batch_alter_table(f"{p}connected_accounts") as batch:
        batch.drop_column("sealed")
    for table in (
        "audit_log",
        "data_keys",
        "screenings",
        "party_clusters",
        "party_links",
        "case_holds",
        "cases",
        "monitor_activity",
    ):
        op.drop_table(f"{p}{table}")
