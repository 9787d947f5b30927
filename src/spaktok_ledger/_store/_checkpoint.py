"""Incremental ``verify``: check what was written since the last verified checkpoint.

A checkpoint is a horizon (the last entry id and posting id it covers) and,
per account, the balance its postings up to the horizon make (posted,
pending debit, pending credit). Postings and entries are append-only (the
database triggers refuse UPDATE and DELETE, and ``verify`` checks that the
triggers are there), so what was true of them at the checkpoint stays true;
what can change after it is:

- new entries and postings (ids above the horizon, or a posting appended to
  an old entry): their entries are re-checked whole (they balance per
  currency, have their postings, in their accounts' currencies; resolutions
  and reversals match what they resolve or reverse);
- holds resolved after the horizon (their amounts stop being pending);
- the balance rows, which are rewritten on every write: every account's rows
  are compared with checkpoint + the postings since (one read of the balance
  rows, one row per account shard), and totals and overdraft are checked on
  all of them as in a full verify.

So an incremental run costs time in proportion to the entries since the
checkpoint plus the number of accounts, not the history's length. The
checkpoint only moves forward when the run found nothing wrong, so a problem
stays reported until it is fixed; ``verify()`` (full) re-checks everything.

The horizon must not skip a write still in flight: on PostgreSQL, ids are
handed out before commit, so the horizon is read under a brief SHARE lock on
the entries and postings (which waits for the writers in flight and holds
new ones back for the time of two ``max(id)`` lookups). On SQLite writers are
serialized, so the largest committed id is a horizon.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._store._schema import LedgerTables

__all__ = ["Checkpoint", "Horizon", "deltas", "load_checkpoint", "read_horizon", "save_checkpoint"]

Sums = dict[int, list[int]]  # account id -> [posted, pending_debit, pending_credit]


@dataclass(frozen=True, slots=True)
class Horizon:
    """Entries and postings up to these ids are all committed."""

    entry_id: int
    posting_id: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified horizon and the per-account balances at it."""

    horizon: Horizon
    balances: Sums


def read_horizon(conn: Connection, t: LedgerTables, *, lock: bool) -> Horizon:
    """The largest entry and posting ids; ``lock``: under a SHARE lock (PostgreSQL)."""
    if lock and conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"LOCK TABLE {t.entries.name}, {t.postings.name} IN SHARE MODE")
    e, p = t.entries, t.postings
    entry_id = conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.c.id), 0))).scalar_one()
    posting_id = conn.execute(sa.select(sa.func.coalesce(sa.func.max(p.c.id), 0))).scalar_one()
    return Horizon(int(entry_id), int(posting_id))


def load_checkpoint(conn: Connection, t: LedgerTables) -> Checkpoint | None:
    c, cb = t.verify_checkpoint, t.verify_checkpoint_balances
    row = conn.execute(sa.select(c.c.entry_id, c.c.posting_id).where(c.c.id == 1)).first()
    if row is None:
        return None
    sums = {
        int(r.account_id): [int(r.posted), int(r.pending_debit), int(r.pending_credit)]
        for r in conn.execute(sa.select(cb))
    }
    return Checkpoint(Horizon(int(row.entry_id), int(row.posting_id)), sums)


def save_checkpoint(
    conn: Connection,
    t: LedgerTables,
    *,
    base: Horizon | None,
    horizon: Horizon,
    changed: Sums,
    now: datetime,
) -> bool:
    """Move the checkpoint from ``base`` to ``horizon``; False if another run moved it first.

    ``base`` None (a full run): every account's row is rewritten. Otherwise
    only ``changed`` accounts' rows are, and only if the stored horizon is
    still ``base`` (the rows of two runs must not mix).
    """
    c, cb = t.verify_checkpoint, t.verify_checkpoint_balances
    query = sa.select(c.c.entry_id, c.c.posting_id).where(c.c.id == 1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    stored = None if row is None else Horizon(int(row.entry_id), int(row.posting_id))
    if base is not None and stored != base:
        return False
    if base is None:
        conn.execute(cb.delete())
    elif changed:
        conn.execute(cb.delete().where(cb.c.account_id.in_(sorted(changed))))
    rows = [
        {"account_id": aid, "posted": v[0], "pending_debit": v[1], "pending_credit": v[2]}
        for aid, v in sorted(changed.items())
    ]
    for start in range(0, len(rows), 1000):
        conn.execute(cb.insert(), rows[start : start + 1000])
    values = {"entry_id": horizon.entry_id, "posting_id": horizon.posting_id, "verified_at": now}
    if row is None:
        conn.execute(c.insert().values(id=1, **values))
    else:
        conn.execute(c.update().where(c.c.id == 1).values(**values))
    return True


def deltas(
    conn: Connection, t: LedgerTables, after: Horizon, upto: Horizon | None = None
) -> tuple[Sums, set[int]]:
    """What the postings and hold resolutions in ``(after, upto]`` add to each balance.

    Returns the per-account sums and the entries those postings belong to.
    ``upto`` None: everything visible above ``after``.
    """
    e, p = t.entries, t.postings
    sums: Sums = defaultdict(lambda: [0, 0, 0])
    entries: set[int] = set()
    posting_window = [p.c.id > after.posting_id]
    entry_window = [e.c.id > after.entry_id, e.c.hold_id.is_not(None)]
    if upto is not None:
        posting_window.append(p.c.id <= upto.posting_id)
        entry_window.append(e.c.id <= upto.entry_id)
    for r in conn.execute(
        sa.select(p.c.entry_id, p.c.account_id, p.c.amount, e.c.phase)
        .select_from(p)
        .join(e, e.c.id == p.c.entry_id)
        .where(*posting_window)
    ):
        entries.add(int(r.entry_id))
        _add(sums, r.account_id, r.amount, r.phase, +1)
    # A hold resolved in the window stops being pending, whenever it was written.
    resolved = [int(x) for x in conn.execute(sa.select(e.c.hold_id).where(*entry_window)).scalars()]
    for start in range(0, len(resolved), 500):
        for leg in conn.execute(
            sa.select(p.c.account_id, p.c.amount).where(
                p.c.entry_id.in_(resolved[start : start + 500])
            )
        ):
            account_id, amount = leg
            _add(sums, account_id, amount, "pending", -1)
    return dict(sums), entries


def _add(sums: Sums, account_id: int, amount: int, phase: str, sign: int) -> None:
    if phase == "posted":
        sums[account_id][0] += sign * amount
    elif phase == "pending":
        if amount > 0:
            sums[account_id][1] += sign * amount
        else:
            sums[account_id][2] -= sign * amount


def combine(*parts: Sums, minus: Sums | None = None) -> Sums:
    """The per-account sum of ``parts``, less ``minus``."""
    out: Sums = defaultdict(lambda: [0, 0, 0])
    for part in parts:
        for aid, v in part.items():
            o = out[aid]
            o[0] += v[0]
            o[1] += v[1]
            o[2] += v[2]
    for aid, v in (minus or {}).items():
        o = out[aid]
        o[0] -= v[0]
        o[1] -= v[1]
        o[2] -= v[2]
    return dict(out)


def entry_rows_for(conn: Connection, t: LedgerTables, ids: Iterable[int]) -> list[Any]:
    """(id, phase, hold_id, reverses_id) of the entries ``ids`` and those they name."""
    e = t.entries
    wanted = sorted(set(ids))
    rows: dict[int, Any] = {}
    for start in range(0, len(wanted), 500):
        for r in conn.execute(
            sa.select(e.c.id, e.c.phase, e.c.hold_id, e.c.reverses_id).where(
                e.c.id.in_(wanted[start : start + 500])
            )
        ):
            rows[r.id] = r
    named = sorted(
        {x for r in rows.values() for x in (r.hold_id, r.reverses_id) if x is not None} - set(rows)
    )
    for start in range(0, len(named), 500):
        for r in conn.execute(
            sa.select(e.c.id, e.c.phase, e.c.hold_id, e.c.reverses_id).where(
                e.c.id.in_(named[start : start + 500])
            )
        ):
            rows[r.id] = r
    return [rows[k] for k in sorted(rows)]


def run_verify(
    conn: Connection,
    t: LedgerTables,
    horizon: Horizon,
    on_progress: Any,
) -> tuple[Any, Checkpoint | None, Sums]:
    """Verify (incrementally when there is a checkpoint) in one snapshot.

    Returns the report, the checkpoint it started from (None: it ran in full)
    and the per-account balances at ``horizon`` whose checkpoint rows change.
    """
    from spaktok_ledger._store._verify import _verify_full, verify_since

    base = load_checkpoint(conn, t)
    if base is None:
        outcome = _verify_full(conn, t, on_progress)
    else:
        outcome = verify_since(
            conn,
            t,
            checkpoint_sums=base.balances,
            checkpoint_entry_id=base.horizon.entry_id,
            checkpoint_posting_id=base.horizon.posting_id,
            on_progress=on_progress,
        )
    truth = {aid: list(v) for aid, v in outcome.truth.items()}
    after, _ = deltas(conn, t, horizon)
    at_horizon = combine(truth, minus=after)
    if base is None:
        changed = at_horizon
    else:
        changed = {
            aid: v for aid, v in at_horizon.items() if base.balances.get(aid, [0, 0, 0]) != v
        }
    return outcome.report, base, changed
