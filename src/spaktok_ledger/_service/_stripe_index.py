"""The index of Stripe balance transactions: what the ledger booked, what Stripe showed.

Every service that books money moving at Stripe (purchase settlement, payouts,
top-ups found by reconciliation) records here, in the same transaction, which
Stripe balance transactions the entry stands for. ``reconcile()`` records what
it saw at Stripe next to it, so the two sides meet by transaction id: seen and
not booked is *missing in the ledger*, booked and not seen *missing at
Stripe*, both with other amounts a *mismatch*.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._service._gateway import BalanceTxn
from spaktok_ledger._store._schema import LedgerTables
from spaktok_ledger._store._units import expected_exponent

__all__ = ["PLATFORM", "read_cursor", "record_booked", "record_seen", "write_cursor"]

PLATFORM: Final = "platform"
"""The ``stripe_account`` of the platform's own balance (connected accounts: ``acct_...``)."""


def _insert(conn: Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def record_booked(
    conn: Connection,
    tables: LedgerTables,
    txns: Iterable[BalanceTxn],
    *,
    subject_id: str | None,
    entry_id: int | None,
    now: datetime,
) -> None:
    """The ledger has booked these transactions (their net, in their currency)."""
    t = tables.stripe_txns
    for txn in txns:
        values = {
            "txn_id": txn.id,
            "stripe_account": txn.account or PLATFORM,
            "type": txn.type[:64],
            "source_id": txn.source_id,
            "subject_id": subject_id,
            "currency": txn.currency,
            "booked_net_minor": txn.net_minor,
            "exponent": expected_exponent(txn.currency, "stripe"),
            "stripe_created": txn.created,
            "entry_id": entry_id,
            "booked_at": now,
        }
        insert = _insert(conn)(t).values(**values)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[t.c.txn_id],
                set_={
                    "booked_net_minor": insert.excluded.booked_net_minor,
                    "currency": insert.excluded.currency,
                    "exponent": insert.excluded.exponent,
                    "subject_id": sa.func.coalesce(t.c.subject_id, insert.excluded.subject_id),
                    "entry_id": sa.func.coalesce(t.c.entry_id, insert.excluded.entry_id),
                    "booked_at": sa.func.coalesce(t.c.booked_at, insert.excluded.booked_at),
                },
            )
        )


def record_seen(conn: Connection, tables: LedgerTables, txn: BalanceTxn, now: datetime) -> None:
    """Stripe lists this transaction (reconciliation)."""
    t = tables.stripe_txns
    units = expected_exponent(txn.currency, "stripe")
    insert = _insert(conn)(t).values(
        txn_id=txn.id,
        stripe_account=txn.account or PLATFORM,
        type=txn.type[:64],
        source_id=txn.source_id,
        currency=txn.currency,
        exponent=units,
        stripe_net_minor=txn.net_minor,
        stripe_currency=txn.currency,
        stripe_exponent=units,
        stripe_created=txn.created,
        seen_at=now,
    )
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[t.c.txn_id],
            set_={
                "stripe_net_minor": insert.excluded.stripe_net_minor,
                "stripe_currency": insert.excluded.stripe_currency,
                "stripe_exponent": insert.excluded.stripe_exponent,
                "stripe_created": insert.excluded.stripe_created,
                "seen_at": insert.excluded.seen_at,
            },
        )
    )


def read_cursor(conn: Connection, tables: LedgerTables, name: str) -> int | None:
    t = tables.stripe_cursors
    value = conn.execute(sa.select(t.c.created).where(t.c.name == name)).scalar()
    return int(value) if value is not None else None


def write_cursor(
    conn: Connection, tables: LedgerTables, name: str, created: int, now: datetime
) -> None:
    t = tables.stripe_cursors
    insert = _insert(conn)(t).values(name=name, created=created, updated_at=now)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={"created": insert.excluded.created, "updated_at": now},
        )
    )
