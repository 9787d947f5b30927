"""Core ledger: accounts, balances, transactions (journal entries), postings.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

The DDL is frozen here on purpose (a migration must not change when the
library's current schema does); ``tests/store/test_migrations.py`` checks
that migrating to head yields exactly the library's ``MetaData``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from spaktok_ledger._store._schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    op.create_table(
        f"{p}accounts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("allow_overdraft", sa.Boolean, nullable=False),
        sa.Column("balance_shards", sa.SmallInteger, nullable=False),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(
            "kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')",
            name=f"{p}accounts_kind",
        ),
        sa.CheckConstraint("length(currency) = 3", name=f"{p}accounts_currency"),
        sa.CheckConstraint("balance_shards BETWEEN 1 AND 64", name=f"{p}accounts_shards"),
        sa.UniqueConstraint("id", "currency", name=f"{p}accounts_id_currency"),
    )
    op.create_index(f"{p}accounts_code", f"{p}accounts", ["code"], unique=True)

    op.create_table(
        f"{p}balances",
        sa.Column("account_id", Id, sa.ForeignKey(f"{p}accounts.id"), primary_key=True),
        sa.Column("shard", sa.SmallInteger, primary_key=True),
        sa.Column("normal_sign", sa.SmallInteger, nullable=False),
        sa.Column("allow_overdraft", sa.Boolean, nullable=False),
        sa.Column("posted", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("pending_debit", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("pending_credit", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("normal_sign IN (-1, 1)", name=f"{p}balances_sign"),
        sa.CheckConstraint(
            "pending_debit >= 0 AND pending_credit >= 0", name=f"{p}balances_pending"
        ),
        sa.CheckConstraint(
            "allow_overdraft OR (CASE WHEN normal_sign = 1 THEN posted - pending_credit "
            "ELSE -posted - pending_debit END) >= 0",
            name=f"{p}balances_no_overdraft",
        ),
    )

    op.create_table(
        f"{p}transactions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("effective_at", UTCDateTime, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("hold_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.Column("reverses_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=True),
        sa.CheckConstraint(
            "phase IN ('posted', 'pending', 'voided', 'expired')", name=f"{p}transactions_phase"
        ),
        sa.CheckConstraint(
            "expires_at IS NULL OR phase = 'pending'", name=f"{p}transactions_expiry"
        ),
        sa.CheckConstraint(
            "phase NOT IN ('voided', 'expired') OR hold_id IS NOT NULL",
            name=f"{p}transactions_void_names_hold",
        ),
    )
    op.create_index(f"{p}transactions_key", f"{p}transactions", ["idempotency_key"], unique=True)
    op.create_index(f"{p}transactions_hold", f"{p}transactions", ["hold_id"], unique=True)
    op.create_index(f"{p}transactions_reverses", f"{p}transactions", ["reverses_id"], unique=True)
    op.create_index(f"{p}transactions_type_time", f"{p}transactions", ["type", "effective_at"])
    op.create_index(f"{p}transactions_open_holds", f"{p}transactions", ["phase", "expires_at"])

    op.create_table(
        f"{p}postings",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("entry_id", Id, sa.ForeignKey(f"{p}transactions.id"), nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.CheckConstraint("amount <> 0", name=f"{p}postings_nonzero"),
        sa.ForeignKeyConstraint(
            ["account_id", "currency"],
            [f"{p}accounts.id", f"{p}accounts.currency"],
            name=f"{p}postings_account_currency",
        ),
    )
    op.create_index(f"{p}postings_account", f"{p}postings", ["account_id", "id"])
    op.create_index(f"{p}postings_entry", f"{p}postings", ["entry_id"])

    dialect = op.get_bind().dialect.name
    for statement in _guards(p, dialect):
        op.execute(statement)


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in ("postings", "transactions", "balances", "accounts"):
            op.execute(f"DROP TABLE {p}{table} CASCADE")
        op.execute(f"DROP FUNCTION IF EXISTS {p}reject_change()")
        op.execute(f"DROP FUNCTION IF EXISTS {p}check_entry_balanced()")
    else:
        for table in ("postings", "transactions", "balances", "accounts"):
            op.drop_table(f"{p}{table}")


def _guards(p: str, dialect: str) -> list[str]:
    """Triggers that keep history append-only (and, on PostgreSQL, balanced)."""
    if dialect == "postgresql":
        statements = [
            f"""
            CREATE FUNCTION {p}reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'spaktok-ledger: % on % is not allowed: history is append-only',
                    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
            END $$
            """,
            f"""
            CREATE FUNCTION {p}check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (
                    SELECT 1 FROM {p}postings WHERE entry_id = NEW.entry_id
                    GROUP BY currency HAVING SUM(amount) <> 0
                ) THEN
                    RAISE EXCEPTION 'spaktok-ledger: transaction % does not balance per currency',
                        NEW.entry_id USING ERRCODE = 'check_violation';
                END IF;
                RETURN NULL;
            END $$
            """,
            f"""
            CREATE CONSTRAINT TRIGGER {p}postings_balanced
            AFTER INSERT ON {p}postings DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION {p}check_entry_balanced()
            """,
        ]
        for table in ("transactions", "postings", "accounts"):
            statements += [
                f"CREATE TRIGGER {p}{table}_append_only BEFORE UPDATE OR DELETE ON {p}{table} "
                f"FOR EACH ROW EXECUTE FUNCTION {p}reject_change()",
                f"CREATE TRIGGER {p}{table}_no_truncate BEFORE TRUNCATE ON {p}{table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {p}reject_change()",
            ]
        statements.append(
            f"CREATE TRIGGER {p}balances_no_delete BEFORE DELETE ON {p}balances "
            f"FOR EACH ROW EXECUTE FUNCTION {p}reject_change()"
        )
        return statements
    statements = []
    for table in ("transactions", "postings", "accounts"):
        for op_name in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER {p}{table}_no_{op_name.lower()} BEFORE {op_name} ON {p}{table} "
                f"BEGIN SELECT RAISE(ABORT, 'spaktok-ledger: {op_name} on {p}{table} is not "
                f"allowed: history is append-only'); END"
            )
    statements.append(
        f"CREATE TRIGGER {p}balances_no_delete BEFORE DELETE ON {p}balances "
        f"BEGIN SELECT RAISE(ABORT, 'spaktok-ledger: DELETE on {p}balances is not allowed'); END"
    )
    return statements
