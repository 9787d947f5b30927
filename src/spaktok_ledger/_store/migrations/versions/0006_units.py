"""Stored amounts carry their units: the exponent every non-USD amount was written at.

Adds ``accounts.exponent``, ``quotes.local_exponent``, ``purchases.local_exponent``,
``purchases.stripe_exponent`` and ``payouts.payout_stripe_exponent`` and back-fills
them with what spaktok-ledger 0.1.0 actually used: 0.1.0 took a currency's minor
units from babel's CLDR data, and was released and tested with babel 2.18. That
mapping is frozen below, so this migration gives the same answer whatever babel
(or spaktok-ledger table) is installed when it runs. Rows whose back-filled
exponent differs from the library's ISO 4217 table (ALL, LAK, IQD, RSD, MGA...:
CLDR showed them in whole units) are then refused by the start-up check until
``spaktok-ledger migrate-units`` rescales them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# babel 2.18.0 (CLDR 47) ``get_currency_precision``, for every code babel 2.18
# listed; every code not named here had 2. Frozen: never derive it again.
_BABEL_2_18_DIGITS = {
    0: (
        "ADP AFN ALL BIF BYR CLP DJF ESP GNF IQD IRR ISK ITL JPY KMF KPW KRW LAK LBP LUF "
        "MGA MGF MMK MRO PYG RSD RWF SLL SOS STD SYP TMM TRL UGX UYI VND VUV XAF XOF XPF "
        "YER ZMK ZWD"
    ),
    3: "BHD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

# 0.1.0's Stripe units (its _currency.py, unchanged since): zero-decimal list,
# three-decimal list, every other currency two-decimal (ISK and UGX included).
_STRIPE_0_1_0 = {
    0: "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF",
    3: "BHD JOD KWD OMR TND",
}

_COLUMNS = (
    # table, currency column, exponent column, mapping, nullable
    ("accounts", "currency", "exponent", _BABEL_2_18_DIGITS, False),
    ("quotes", "currency", "local_exponent", _BABEL_2_18_DIGITS, False),
    ("purchases", "currency", "local_exponent", _BABEL_2_18_DIGITS, False),
    ("purchases", "currency", "stripe_exponent", _STRIPE_0_1_0, False),
    ("payouts", "payout_currency", "payout_stripe_exponent", _STRIPE_0_1_0, True),
)


def _case(currency: str, mapping: dict[int, str]) -> str:
    whens = " ".join(
        f"WHEN '{code}' THEN {digits}"
        for digits, codes in sorted(mapping.items())
        for code in codes.split()
    )
    return f"CASE {currency} {whens} ELSE 2 END"


def upgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    dialect = op.get_bind().dialect.name
    for table, _currency, column, _mapping, nullable in _COLUMNS:
        # NOT NULL needs a default to add the column to existing rows; -1
        # ("never recorded") is overwritten just below, and dropped where the
        # engine can (SQLite cannot drop a column default in place).
        op.add_column(
            f"{p}{table}",
            sa.Column(
                column,
                sa.SmallInteger,
                nullable=nullable,
                server_default=None if nullable else sa.text("-1"),
            ),
        )
    with _accounts_writable(p, dialect):
        for table, currency, column, mapping, _nullable in _COLUMNS:
            where = f" WHERE {currency} IS NOT NULL" if _nullable else ""
            op.execute(f"UPDATE {p}{table} SET {column} = {_case(currency, mapping)}{where}")
    if dialect == "postgresql":
        for table, _currency, column, _mapping, nullable in _COLUMNS:
            if not nullable:
                op.execute(f"ALTER TABLE {p}{table} ALTER COLUMN {column} DROP DEFAULT")


class _accounts_writable:  # noqa: N801 - a context manager that reads like one
    """Lift the append-only guard on accounts for the back-fill (frozen copy of 0001's DDL)."""

    def __init__(self, p: str, dialect: str) -> None:
        self.p, self.dialect = p, dialect

    def __enter__(self) -> None:
        p = self.p
        if self.dialect == "postgresql":
            op.execute(f"ALTER TABLE {p}accounts DISABLE TRIGGER {p}accounts_append_only")
        else:
            op.execute(f"DROP TRIGGER {p}accounts_no_update")

    def __exit__(self, *exc: object) -> None:
        p = self.p
        if self.dialect == "postgresql":
            op.execute(f"ALTER TABLE {p}accounts ENABLE TRIGGER {p}accounts_append_only")
        else:
            op.execute(
                f"CREATE TRIGGER {p}accounts_no_update BEFORE UPDATE ON {p}accounts "
                f"BEGIN SELECT RAISE(ABORT, 'spaktok-ledger: UPDATE on {p}accounts is not "
                f"allowed: history is append-only'); END"
            )


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    dialect = op.get_bind().dialect.name
    for table, _currency, column, _mapping, _nullable in reversed(_COLUMNS):
        if dialect == "sqlite":
            with op.batch_alter_table(f"{p}{table}", recreate="never") as batch:
                batch.drop_column(column)
        else:
            op.drop_column(f"{p}{table}", column)
