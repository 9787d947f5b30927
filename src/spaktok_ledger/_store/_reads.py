"""The read path: balances, history pages and statements at the cost of a raw select.

Every statement here is built once per (table prefix, dialect) and reused, so
a read pays no statement construction; each query is driven by an index whose
use is asserted in ``tests/store/test_read_plans.py`` (EXPLAIN on PostgreSQL,
EXPLAIN QUERY PLAN on SQLite), with and without planner statistics.

- A balance is a lookup of the account's balance rows by primary key (the
  account id comes from the ledger's cache of immutable account facts).
- A history page walks the account's postings backwards on the
  ``(account_id, id)`` index and joins each row's entry by primary key. The
  resolution of a hold on the page is looked up separately, for the pending
  entries of the page only, on the unique ``hold_id`` index: an outer join
  on ``hold_id`` let SQLite, once ``ANALYZE`` had counted that column as
  mostly NULL, scan every entry for every row of the page.
- A statement page (``entries_page``) is keyed on the accounts' postings too:
  one index walk per account, merged, so its cost is O(page) however long the
  accounts' histories are.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._store._schema import LedgerTables, tables_for

__all__ = ["ReadStatements", "read_statements"]


@dataclass(frozen=True, slots=True)
class ReadStatements:
    """The read path's prebuilt statements for one prefix and dialect."""

    tables: LedgerTables
    dialect: str
    balance_rows: Any
    """Balance rows of accounts (``ids``, expanding), one row per shard."""
    history_page: Any
    """One account's postings below a posting id, newest first, with their entries."""
    history_page_filtered: dict[tuple[bool, bool, bool], Any]
    """The same with (types, since, until) filters, by which filters are present."""
    resolutions: Any
    """How the holds ``ids`` were resolved (``hold_id``, ``phase``)."""
    counterparties: Any
    """Other accounts' codes on the entries ``ids``, in posting order."""
    entry_rows: Any
    entry_legs: Any
    postings_below: Any
    """One account's postings below a posting id (``id``, ``entry_id``), newest first."""
    seen_at_or_above: Any
    """Which of the entries ``ids`` have a posting on ``accounts`` at or above ``at``."""


def _hint(stmt: Any, table: sa.Table, index: str, dialect: str) -> Any:
    """Pin SQLite to ``index``: its planner's statistics can make it prefer a scan."""
    if dialect == "sqlite":
        return stmt.with_hint(table, f"INDEXED BY {index}", "sqlite")
    return stmt


@cache
def read_statements(prefix: str, dialect: str) -> ReadStatements:
    """Build (once) the read statements for ``prefix`` on ``dialect``."""
    t = tables_for(prefix)
    a, b, e, p = t.accounts, t.balances, t.entries, t.postings
    bp = sa.bindparam
    by_account = f"{prefix}postings_account"

    balance_rows = sa.select(
        b.c.account_id, b.c.posted, b.c.pending_debit, b.c.pending_credit
    ).where(b.c.account_id.in_(bp("ids", expanding=True)))

    def page(types: bool, since: bool, until: bool) -> Any:
        query = (
            sa.select(p.c.id.label("posting_id"), p.c.amount, p.c.currency, e)
            .select_from(p)
            .join(e, e.c.id == p.c.entry_id)
            .where(p.c.account_id == bp("account_id"), p.c.id < bp("before"))
        )
        if types:
            query = query.where(e.c.type.in_(bp("types", expanding=True)))
        if since:
            query = query.where(e.c.effective_at >= bp("since"))
        if until:
            query = query.where(e.c.effective_at < bp("until"))
        query = query.order_by(p.c.id.desc()).limit(bp("limit"))
        return _hint(query, p, by_account, dialect)

    flags = [(x, y, z) for x in (False, True) for y in (False, True) for z in (False, True)]
    resolutions = _hint(
        sa.select(e.c.hold_id, e.c.phase).where(e.c.hold_id.in_(bp("ids", expanding=True))),
        e,
        f"{prefix}transactions_hold",
        dialect,
    )
    counterparties = _hint(
        sa.select(p.c.entry_id, a.c.code)
        .select_from(p)
        .join(a, a.c.id == p.c.account_id)
        .where(p.c.entry_id.in_(bp("ids", expanding=True)), p.c.account_id != bp("account_id"))
        .order_by(p.c.id),
        p,
        f"{prefix}postings_entry",
        dialect,
    )
    entry_rows = sa.select(e).where(e.c.id.in_(bp("ids", expanding=True)))
    entry_legs = _hint(
        sa.select(p.c.entry_id, a.c.code, p.c.amount, p.c.currency)
        .select_from(p)
        .join(a, a.c.id == p.c.account_id)
        .where(p.c.entry_id.in_(bp("ids", expanding=True)))
        .order_by(p.c.id),
        p,
        f"{prefix}postings_entry",
        dialect,
    )
    postings_below = _hint(
        sa.select(p.c.id, p.c.entry_id)
        .where(p.c.account_id == bp("account_id"), p.c.id < bp("before"))
        .order_by(p.c.id.desc())
        .limit(bp("limit")),
        p,
        by_account,
        dialect,
    )
    seen_at_or_above = _hint(
        sa.select(p.c.entry_id)
        .where(
            p.c.entry_id.in_(bp("ids", expanding=True)),
            p.c.account_id.in_(bp("accounts", expanding=True)),
            p.c.id >= bp("at"),
        )
        .distinct(),
        p,
        f"{prefix}postings_entry",
        dialect,
    )
    return ReadStatements(
        tables=t,
        dialect=dialect,
        balance_rows=balance_rows,
        history_page=page(False, False, False),
        history_page_filtered={f: page(*f) for f in flags},
        resolutions=resolutions,
        counterparties=counterparties,
        entry_rows=entry_rows,
        entry_legs=entry_legs,
        postings_below=postings_below,
        seen_at_or_above=seen_at_or_above,
    )


# Larger than any posting id: "below this" is the first page.
NO_CURSOR = 2**63 - 1


def balance_sums(conn: Connection, s: ReadStatements, ids: Sequence[int]) -> dict[int, list[int]]:
    """(posted, pending_debit, pending_credit) per account id, summed over shards."""
    sums: dict[int, list[int]] = {}
    for account_id, posted, pd, pc in conn.execute(s.balance_rows, {"ids": list(ids)}):
        have = sums.get(account_id)
        if have is None:
            sums[account_id] = [posted, pd, pc]
        else:
            have[0] += posted
            have[1] += pd
            have[2] += pc
    return sums


def hold_resolutions(
    conn: Connection, s: ReadStatements, hold_ids: Sequence[int]
) -> dict[int, str]:
    """How each of ``hold_ids`` was resolved (absent: still pending)."""
    if not hold_ids:
        return {}
    rows = conn.execute(s.resolutions, {"ids": list(hold_ids)})
    return {int(hold_id): str(phase) for hold_id, phase in rows}


def history_rows(
    conn: Connection,
    s: ReadStatements,
    account_id: int,
    *,
    before: int | None,
    limit: int,
    types: list[str] | None,
    since: Any,
    until: Any,
) -> list[Any]:
    """Up to ``limit`` posting rows of the account below ``before``, with their entries."""
    params: dict[str, Any] = {
        "account_id": account_id,
        "before": NO_CURSOR if before is None else before,
        "limit": limit,
    }
    flags = (types is not None, since is not None, until is not None)
    if flags == (False, False, False):
        stmt = s.history_page
    else:
        stmt = s.history_page_filtered[flags]
        if types is not None:
            params["types"] = types
        if since is not None:
            params["since"] = since
        if until is not None:
            params["until"] = until
    return list(conn.execute(stmt, params))


def counterparty_codes(
    conn: Connection, s: ReadStatements, entry_ids: Sequence[int], account_id: int
) -> dict[int, list[str]]:
    """The other accounts each entry touches, in posting order, without repeats."""
    others: dict[int, list[str]] = defaultdict(list)
    if entry_ids:
        for entry_id, code in conn.execute(
            s.counterparties, {"ids": list(entry_ids), "account_id": account_id}
        ):
            if code not in others[entry_id]:
                others[entry_id].append(code)
    return others


def _walk(
    conn: Connection, s: ReadStatements, account_id: int, before: int, chunk: int
) -> Iterator[tuple[int, int]]:
    """One account's (posting id, entry id) below ``before``, newest first, ``chunk`` a query."""
    while True:
        rows = conn.execute(
            s.postings_below, {"account_id": account_id, "before": before, "limit": chunk}
        ).all()
        for pid, eid in rows:
            yield -int(pid), int(eid)  # negated: heapq.merge is ascending
        if len(rows) < chunk:
            return
        before = int(rows[-1][0])


def _batches(items: Iterator[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    batch: list[tuple[int, int]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def statement_entry_ids(
    conn: Connection,
    s: ReadStatements,
    account_ids: Sequence[int],
    *,
    before: int | None,
    limit: int,
    types: list[str] | None,
    since: Any,
    until: Any,
) -> list[tuple[int, int]]:
    """Up to ``limit`` entries touching ``account_ids``, newest first, as (position, entry id).

    An entry's position is its newest posting on the accounts; the page holds
    the entries whose position is below ``before``. Each account's postings are
    walked backwards on its index, ``limit`` at a time, and merged.
    """
    ids = sorted(set(account_ids))
    upper = NO_CURSOR if before is None else before
    chunk = max(limit, 16)
    merged = heapq.merge(*(_walk(conn, s, aid, upper, chunk) for aid in ids))
    found: list[tuple[int, int]] = []
    seen: set[int] = set()
    for batch in _batches(merged, chunk):
        fresh = sorted({eid for _, eid in batch} - seen)
        # Entries with a posting on the accounts at or above ``before`` were on
        # an earlier page (that posting is their position).
        skip = _earlier(conn, s, fresh, ids, before) | _filtered_out(
            conn, s, fresh, types=types, since=since, until=until
        )
        for neg_pid, eid in batch:
            if eid in seen:
                continue
            seen.add(eid)
            if eid not in skip:
                found.append((-neg_pid, eid))
                if len(found) == limit:
                    return found
    return found


def _earlier(
    conn: Connection, s: ReadStatements, entry_ids: list[int], accounts: list[int], at: int | None
) -> set[int]:
    if at is None or not entry_ids:
        return set()
    params = {"ids": entry_ids, "accounts": accounts, "at": at}
    return {int(eid) for eid in conn.execute(s.seen_at_or_above, params).scalars()}


def _filtered_out(
    conn: Connection,
    s: ReadStatements,
    entry_ids: list[int],
    *,
    types: list[str] | None,
    since: Any,
    until: Any,
) -> set[int]:
    """Which of ``entry_ids`` the type and time filters leave out."""
    if (types is None and since is None and until is None) or not entry_ids:
        return set()
    e = s.tables.entries
    query = sa.select(e.c.id).where(e.c.id.in_(entry_ids))
    if types is not None:
        query = query.where(e.c.type.in_(types))
    if since is not None:
        query = query.where(e.c.effective_at >= since)
    if until is not None:
        query = query.where(e.c.effective_at < until)
    kept = {int(x) for x in conn.execute(query).scalars()}
    return set(entry_ids) - kept
