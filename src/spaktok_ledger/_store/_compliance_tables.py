"""The compliance tables (migration 0009), on the ledger's ``MetaData``.

Monitoring activity, review cases and the movements they hold, declared
account links, screening results, per-party data keys (envelope encryption)
and the operator audit log. ``audit_log`` is append-only like the journal:
the migration installs triggers that reject ``UPDATE`` and ``DELETE``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from spaktok_ledger._store._types import Json

__all__ = ["ComplianceTables", "compliance_tables"]

Id = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True, slots=True)
class ComplianceTables:
    """The compliance tables of one prefix."""

    activity: Table
    cases: Table
    case_holds: Table
    links: Table
    clusters: Table
    screenings: Table
    data_keys: Table
    audit_log: Table


def compliance_tables(md: MetaData, p: str, entries: Table, when: type) -> ComplianceTables:
    """Define the compliance tables under prefix ``p`` on ``md`` (``when``: the UTC
    datetime column type of the store, passed in to avoid an import cycle)."""

    # What the monitoring rules count, written in the movement's transaction.
    # Gifts are aggregated per (sender, streamer, 5-minute bucket) so that the
    # hot path adds one upsert on a row only that sender's gifts touch (its
    # wallet already serialises them); purchases, payouts, refunds and disputes
    # are rare and get a row each (bucket_at is their time).
    activity = Table(
        f"{p}monitor_activity",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("kind", String(16), nullable=False),
        Column("party_id", String(64), nullable=False),
        Column("counterparty_id", String(64), nullable=False, server_default=text("''")),
        Column("bucket_at", when, nullable=False),
        Column("count", BigInteger, nullable=False),
        Column("amount_usd_minor", BigInteger, nullable=False),
        Column("last_at", when, nullable=False),
        CheckConstraint("count > 0 AND amount_usd_minor >= 0", name=f"{p}monitor_activity_amounts"),
        Index(
            f"{p}monitor_activity_party",
            "party_id",
            "kind",
            "bucket_at",
            "counterparty_id",
            unique=True,
        ),
        Index(f"{p}monitor_activity_counterparty", "counterparty_id", "kind", "bucket_at"),
    )

    # Review cases: one open case per (rule, subject); decisions are final.
    cases = Table(
        f"{p}cases",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("rule", String(64), nullable=False),
        Column("outcome", String(8), nullable=False),
        Column("subject_id", String(64), nullable=False),
        Column("subject_role", String(16), nullable=False),
        Column("movement", String(16), nullable=False),
        Column("reference", String(255), nullable=True),
        Column("reason", String(1000), nullable=False),
        Column("evidence", Json, nullable=False),
        Column("status", String(8), nullable=False),
        Column("assignee", String(200), nullable=True),
        Column("assigned_at", when, nullable=True),
        Column("decision", String(8), nullable=True),
        Column("decided_by", String(200), nullable=True),
        Column("decision_reason", String(1000), nullable=True),
        Column("decided_at", when, nullable=True),
        Column("created_at", when, nullable=False),
        Column("updated_at", when, nullable=False),
        CheckConstraint("outcome IN ('hold', 'refuse')", name=f"{p}cases_outcome"),
        CheckConstraint("status IN ('open', 'closed')", name=f"{p}cases_status"),
        CheckConstraint(
            "(status = 'open' AND decision IS NULL) OR "
            "(status = 'closed' AND decision IN ('release', 'refuse'))",
            name=f"{p}cases_decision",
        ),
        Index(
            f"{p}cases_open_rule",
            "rule",
            "subject_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index(f"{p}cases_subject", "subject_id", "status"),
        Index(f"{p}cases_queue", "status", "created_at"),
    )

    # The movements a case holds: a payout in review, a purchase's coins held.
    case_holds = Table(
        f"{p}case_holds",
        md,
        Column("case_id", Id, ForeignKey(cases.c.id), primary_key=True),
        Column("kind", String(16), primary_key=True),
        Column("reference", String(255), primary_key=True),
        Column("entry_id", Id, ForeignKey(entries.c.id), nullable=True),
        CheckConstraint("kind IN ('payout', 'purchase', 'credit')", name=f"{p}case_holds_kind"),
        Index(f"{p}case_holds_item", "kind", "reference"),
    )

    # Accounts the host declares linked (same device, IP or card fingerprint):
    # pseudonymous ids only, never the fingerprint itself.
    links = Table(
        f"{p}party_links",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("party_a", String(64), nullable=False),
        Column("party_b", String(64), nullable=False),
        Column("basis", String(16), nullable=False),
        Column("declared_by", String(200), nullable=False),
        Column("declared_at", when, nullable=False),
        CheckConstraint("party_a < party_b", name=f"{p}party_links_order"),
        Index(f"{p}party_links_pair", "party_a", "party_b", "basis", unique=True),
        Index(f"{p}party_links_b", "party_b"),
    )
    # Connected components of the links (union-find, kept at declaration time),
    # so that "are these two linked?" is two primary-key reads on every gift.
    clusters = Table(
        f"{p}party_clusters",
        md,
        Column("party_id", String(64), primary_key=True),
        Column("cluster_id", String(64), nullable=False),
        Index(f"{p}party_clusters_cluster", "cluster_id"),
    )

    # Sanctions / identity screening results; the identity screened is sealed
    # with the party's data key (erasure destroys it), the list hits are kept.
    screenings = Table(
        f"{p}screenings",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("party_id", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("provider", String(64), nullable=False),
        Column("matches", Json, nullable=False),
        Column("identity", Text, nullable=True),
        Column("checked_at", when, nullable=False),
        CheckConstraint(
            "status IN ('clear', 'potential_match', 'match')", name=f"{p}screenings_status"
        ),
        Index(f"{p}screenings_party", "party_id", "id"),
    )

    # Envelope encryption: one data key per party, wrapped by a keyring key.
    # Erasure destroys the wrapped key (crypto-shredding): what it sealed, even
    # inside append-only entries, can never be read again.
    data_keys = Table(
        f"{p}data_keys",
        md,
        Column("id", String(40), primary_key=True),
        Column("party_id", String(64), nullable=False),
        Column("wrapped_key", Text, nullable=True),
        Column("wrapped_by", String(64), nullable=True),
        Column("created_at", when, nullable=False),
        Column("destroyed_at", when, nullable=True),
        CheckConstraint(
            "(destroyed_at IS NULL) = (wrapped_key IS NOT NULL)", name=f"{p}data_keys_state"
        ),
        Index(
            f"{p}data_keys_live",
            "party_id",
            unique=True,
            sqlite_where=text("destroyed_at IS NULL"),
            postgresql_where=text("destroyed_at IS NULL"),
        ),
        Index(f"{p}data_keys_wrapped_by", "wrapped_by"),
    )

    # Every operator action: who, what, why, when, and the request (append-only).
    audit_log = Table(
        f"{p}audit_log",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("at", when, nullable=False),
        Column("actor", String(200), nullable=False),
        Column("action", String(64), nullable=False),
        Column("subject", String(255), nullable=True),
        Column("reason", String(1000), nullable=True),
        Column("request", Json, nullable=False),
        Column("request_id", String(255), nullable=True),
        Column("result", Json, nullable=False),
        Index(f"{p}audit_log_subject", "subject", "id"),
        Index(f"{p}audit_log_action", "action", "at"),
        Index(f"{p}audit_log_at", "at"),
    )

    return ComplianceTables(
        activity, cases, case_holds, links, clusters, screenings, data_keys, audit_log
    )
