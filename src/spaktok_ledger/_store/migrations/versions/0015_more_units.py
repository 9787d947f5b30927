"""Stored amounts carry their units: the amounts migration 0007 added.

0007 (reconciliation with Stripe) added amounts that 0006 could not know:

- ``payouts.arrival_stripe_amount`` (Stripe's units for ``arrival_currency``)
  gains ``arrival_stripe_exponent``;
- ``payouts.on_account_minor`` (the ledger's units for ``arrival_currency``)
  gains ``arrival_exponent``;
- ``stripe_txns.booked_net_minor`` (Stripe's units for ``currency``) gains
  ``exponent`` and ``stripe_txns.stripe_net_minor`` (Stripe's units for
  ``stripe_currency``) gains ``stripe_exponent``.

The rows already written were written by 0.2.0's tables, frozen below, so this
migration gives the same answer whatever tables are installed when it runs.
(``purchases.settled_foreign`` holds ledger amounts of the platform's Stripe
balance accounts: it is rescaled with those accounts, whose exponent is
recorded since 0006.)

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

# The library's ISO 4217 minor units (its _iso4217.py, table 2026-11) for every
# code that is not two-decimal. Frozen: never derive it again.
_ISO_0_2_0 = {
    0: "BIF BYR CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

# Stripe's units as the library applied them (0.1.0 and 0.2.0 alike): the
# zero-decimal and three-decimal lists, every other currency two-decimal.
_STRIPE_0_2_0 = {
    0: "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF",
    3: "BHD JOD KWD OMR TND",
}

_COLUMNS = (
    # table, currency column, exponent column, mapping
    ("payouts", "arrival_currency", "arrival_stripe_exponent", _STRIPE_0_2_0),
    ("payouts", "arrival_currency", "arrival_exponent", _ISO_0_2_0),
    ("stripe_txns", "currency", "exponent", _STRIPE_0_2_0),
    ("stripe_txns", "stripe_currency", "stripe_exponent", _STRIPE_0_2_0),
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
    for table, _currency, column, _mapping in _COLUMNS:
        op.add_column(f"{p}{table}", sa.Column(column, sa.SmallInteger, nullable=True))
    for table, currency, column, mapping in _COLUMNS:
        op.execute(
            f"UPDATE {p}{table} SET {column} = {_case(currency, mapping)} "
            f"WHERE {currency} IS NOT NULL"
        )


def downgrade() -> None:
    p = context.config.attributes["spaktok_prefix"]
    dialect = op.get_bind().dialect.name
    for table, _currency, column, _mapping in reversed(_COLUMNS):
        if dialect == "sqlite":
            with op.batch_alter_table(f"{p}{table}", recreate="never") as batch:
                batch.drop_column(column)
        else:
            op.drop_column(f"{p}{table}", column)
