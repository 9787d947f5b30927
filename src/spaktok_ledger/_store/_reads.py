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
  one statement walks every account's index range (a ``UNION ALL`` of
  per-account ``ORDER BY id DESC LIMIT n`` subqueries) and joins the newest
  rows' entries by primary key, a second reads the page's legs, so its cost
  is O(page) however long the accounts' histories are.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._domain import EntryPhase, HistoryItem
from spaktok_ledger._store._schema import LedgerTables, tables_for

__all__ = ["ReadStatements", "read_statements"]


@dataclass(frozen=True, slots=True)
class ReadStatements:
    """The read path's prebuilt statements for one prefix and dialect."""

    tables: LedgerTables
    dialect: str
    balance_rows: Any
    """Balance rows of accounts (``ids``, expanding), one row per shard."""
    balance_rows_of_one: Any
    """Balance rows of the account ``id`` (no list to expand: the common case)."""
    history_page: Any
    """One account's postings below a posting id, newest first, with their entries."""
    history_page_filtered: dict[tuple[bool, bool, bool], Any]
    """The same with (types, since, until) filters, by which filters are present."""
    resolutions: Any
    """How the holds ``ids`` were resolved (``hold_id``, ``phase``)."""
    account_codes: Any
    """Codes of the accounts ``ids``."""
    entry_rows: Any
    entry_legs: Any
    statement_walks: tuple[Any, ...]
    """By number of accounts - 1 (up to ``MAX_ARMS``): their postings below a
    posting id, newest first, ``limit`` rows, each with its entry's columns."""
    statement_legs: Any
    """The postings of the entries ``ids`` (``entry_id``, ``account_id``, ``id``,
    ``amount``, ``currency``), by posting id."""


def _resolutions(t: LedgerTables, dialect: str) -> Any:
    e = t.entries
    if dialect != "sqlite":
        return sa.select(e.c.hold_id, e.c.phase).where(
            e.c.hold_id.in_(sa.bindparam("ids", expanding=True))
        )
    # Most entries have no hold_id, so once ANALYZE has run SQLite counts the
    # NULLs as one huge group and prefers a scan of every entry to the unique
    # index: name the index (SQLAlchemy renders no table hints for SQLite).
    # The names are the checked table prefix's (check_prefix), not input.
    sql = f"SELECT hold_id, phase FROM {e.name} INDEXED BY {t.prefix}transactions_hold "  # noqa: S608
    return (
        sa.text(sql + "WHERE hold_id IN :ids")
        .bindparams(sa.bindparam("ids", expanding=True))
        .columns(e.c.hold_id, e.c.phase)
    )


def _other_accounts(p: sa.Table, entry_id: Any, account_id: Any, dialect: str) -> Any:
    """A comma-separated list of the entry's other postings' account ids, by posting id."""
    other = p.alias("other")
    mine = sa.and_(other.c.entry_id == entry_id, other.c.account_id != account_id)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        ids = sa.func.string_agg(
            sa.cast(other.c.account_id, sa.Text), aggregate_order_by(sa.literal(","), other.c.id)
        )
        return sa.select(ids).where(mine).scalar_subquery()
    # SQLite aggregates in scan order: the postings_entry index, whose entries
    # for one entry_id are in rowid (= posting id) order.
    return sa.select(sa.func.group_concat(other.c.account_id)).where(mine).scalar_subquery()


# Accounts walked by one statement page query; more accounts are walked in
# groups of this many and the groups merged (a statement holds few accounts:
# a user's two, a streamer's three).
MAX_ARMS = 8


def _statement_walk(t: LedgerTables, accounts: int) -> Any:
    """The newest postings on ``accounts`` accounts (``a0``, ``a1``...) below ``before``.

    One index range per account on ``(account_id, id)``, each a subquery with
    its own ORDER BY and LIMIT (SQLite takes no parenthesised compound arms),
    then the newest ``limit`` of their union and their entries by primary key:
    no planner, with or without statistics, can sort an account's history.
    """
    e, p = t.entries, t.postings
    bp = sa.bindparam
    arms = [
        sa.select(p.c.id, p.c.entry_id)
        .where(p.c.account_id == bp(f"a{i}"), p.c.id < bp("before"))
        .order_by(p.c.id.desc())
        .limit(bp("limit"))
        .subquery(f"arm{i}")
        for i in range(accounts)
    ]
    if accounts == 1:
        newest = arms[0]
    else:
        union = sa.union_all(*(sa.select(arm.c.id, arm.c.entry_id) for arm in arms)).subquery("u")
        newest = (
            sa.select(union.c.id, union.c.entry_id)
            .order_by(union.c.id.desc())
            .limit(bp("limit"))
            .subquery("newest")
        )
    return (
        sa.select(
            newest.c.id.label("posting_id"),
            # the entry's columns in Entry's field order (entries_page unpacks them)
            e.c.id,
            e.c.type,
            e.c.phase,
            e.c.idempotency_key,
            e.c.description,
            e.c.metadata,
            e.c.effective_at,
            e.c.recorded_at,
            e.c.expires_at,
            e.c.hold_id,
            e.c.reverses_id,
        )
        .select_from(newest)
        .join(e, e.c.id == newest.c.entry_id)
        .order_by(newest.c.id.desc())
    )


@cache
def read_statements(prefix: str, dialect: str) -> ReadStatements:
    """Build (once) the read statements for ``prefix`` on ``dialect``."""
    t = tables_for(prefix)
    a, b, e, p = t.accounts, t.balances, t.entries, t.postings
    bp = sa.bindparam

    balance_rows = sa.select(
        b.c.account_id, b.c.posted, b.c.pending_debit, b.c.pending_credit
    ).where(b.c.account_id.in_(bp("ids", expanding=True)))
    balance_rows_of_one = sa.select(
        b.c.account_id, b.c.posted, b.c.pending_debit, b.c.pending_credit
    ).where(b.c.account_id == bp("id"))

    def page(types: bool, since: bool, until: bool) -> Any:
        # The account's postings first (an index range, LIMIT applied), then
        # their entries by primary key: a planner without statistics cannot
        # turn this into a hash join over every entry.
        walk = (
            sa.select(p.c.id, p.c.entry_id, p.c.amount, p.c.currency)
            .where(p.c.account_id == bp("account_id"), p.c.id < bp("before"))
            .order_by(p.c.id.desc())
            .limit(bp("limit"))
            .subquery("page")
        )
        conditions: list[sa.ColumnElement[bool]] = []
        if types:
            conditions.append(e.c.type.in_(bp("types", expanding=True)))
        if since:
            conditions.append(e.c.effective_at >= bp("since"))
        if until:
            conditions.append(e.c.effective_at < bp("until"))
        # Filters mark rows rather than drop them, so the caller knows where
        # the walk got to and continues from there.
        kept = sa.case((sa.and_(*conditions), 1), else_=0) if conditions else sa.literal(1)
        # The entry's other accounts (ids, in posting order), in the same round trip.
        others = _other_accounts(p, e.c.id, bp("account_id"), dialect)
        return (
            sa.select(
                walk.c.id.label("posting_id"),
                walk.c.amount,
                walk.c.currency,
                kept.label("kept"),
                # the columns a HistoryItem shows, in PAGE_COLUMNS' order
                e.c.id,
                e.c.type,
                e.c.phase,
                e.c.description,
                e.c.metadata,
                e.c.effective_at,
                e.c.recorded_at,
                e.c.hold_id,
                e.c.reverses_id,
                others.label("others"),
            )
            .select_from(walk)
            .join(e, e.c.id == walk.c.entry_id)
            .order_by(walk.c.id.desc())
        )

    flags = [(x, y, z) for x in (False, True) for y in (False, True) for z in (False, True)]
    resolutions = _resolutions(t, dialect)
    account_codes = sa.select(a.c.id, a.c.code).where(a.c.id.in_(bp("ids", expanding=True)))
    entry_rows = sa.select(e).where(e.c.id.in_(bp("ids", expanding=True)))
    entry_legs = (
        sa.select(p.c.entry_id, a.c.code, p.c.amount, p.c.currency)
        .select_from(p)
        .join(a, a.c.id == p.c.account_id)
        .where(p.c.entry_id.in_(bp("ids", expanding=True)))
        .order_by(p.c.id)
    )
    # Account ids, not codes: the ledger maps them from its cache of immutable
    # accounts. Without statistics PostgreSQL guesses a quarter of the postings
    # match the IN list, and joined to the accounts that guess bought a
    # parallel plan (15 ms of worker start-up for a page's 100 legs).
    statement_legs = (
        sa.select(p.c.entry_id, p.c.account_id, p.c.id, p.c.amount, p.c.currency)
        .where(p.c.entry_id.in_(bp("ids", expanding=True)))
        .order_by(p.c.id)
    )
    return ReadStatements(
        tables=t,
        dialect=dialect,
        balance_rows=balance_rows,
        balance_rows_of_one=balance_rows_of_one,
        history_page=page(False, False, False),
        history_page_filtered={f: page(*f) for f in flags},
        resolutions=resolutions,
        account_codes=account_codes,
        entry_rows=entry_rows,
        entry_legs=entry_legs,
        statement_walks=tuple(_statement_walk(t, n) for n in range(1, MAX_ARMS + 1)),
        statement_legs=statement_legs,
    )


# Larger than any posting id: "below this" is the first page.
NO_CURSOR = 2**63 - 1


def balance_sums(conn: Connection, s: ReadStatements, ids: Sequence[int]) -> dict[int, list[int]]:
    """(posted, pending_debit, pending_credit) per account id, summed over shards."""
    if len(ids) == 1:
        rows = conn.execute(s.balance_rows_of_one, {"id": ids[0]})
    else:
        rows = conn.execute(s.balance_rows, {"ids": list(ids)})
    return sum_shards(rows)


def sum_shards(rows: Iterable[Any]) -> dict[int, list[int]]:
    """Per account id, (posted, pending_debit, pending_credit) summed over its
    balance rows; each row starts with those four columns (more may follow)."""
    sums: dict[int, list[int]] = {}
    for row in rows:
        account_id, posted, pd, pc = row[0], row[1], row[2], row[3]
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
    """Up to ``limit`` posting rows of the account below ``before``, with their entries.

    With filters, the account's postings are walked ``limit`` rows at a time
    until ``limit`` rows pass them or none are left (a constant chunk keeps
    each statement's plan the small one: index walk, then primary keys).
    """
    flags = (types is not None, since is not None, until is not None)
    params: dict[str, Any] = {"account_id": account_id}
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
    found: list[Any] = []
    upper = NO_CURSOR if before is None else before
    chunk = limit
    while True:  # a filtered page may take several chunks
        rows = conn.execute(stmt, {**params, "before": upper, "limit": chunk}).all()
        found.extend(rows if flags == (False, False, False) else [r for r in rows if r[3]])
        if len(found) >= limit or len(rows) < chunk:
            return found[:limit]
        upper = rows[-1][0]  # the posting id


_PHASES = {phase.value: phase for phase in EntryPhase}


def history_items(
    conn: Connection,
    s: ReadStatements,
    codes: dict[int, str],
    *,
    account: tuple[int, str, int],
    rows: list[Any],
    cache_codes: bool,
) -> tuple[HistoryItem, ...]:
    """The page's items, from ``history_rows``' rows.

    ``account``: (id, code, normal sign). ``codes``: the ledger's id -> code
    cache of accounts (immutable once committed; filled only when
    ``cache_codes``, i.e. not on a host's connection that may roll back).
    """
    if not rows:
        return ()
    _, code, sign = account
    others: dict[int, list[int]] = {}
    for row in rows:
        ids: list[int] = []
        for part in (row[13] or "").split(","):
            if part and int(part) not in ids:
                ids.append(int(part))
        others[row[4]] = ids
    known = account_codes(
        conn, s, codes, {i for ids in others.values() for i in ids}, cache=cache_codes
    )
    pending = [row[4] for row in rows if row[6] == "pending"]
    resolved = hold_resolutions(conn, s, pending) if pending else {}
    phases = _PHASES
    return tuple(
        HistoryItem(
            entry_id,
            posting_id,
            type_,
            phases[phase],
            code,
            currency,
            amount,
            sign * amount,
            tuple(known[i] for i in others.get(entry_id, ())),
            description,
            metadata,
            effective_at,
            recorded_at,
            hold_id,
            reverses_id,
            phases[resolved.get(entry_id, "pending")] if phase == "pending" else None,
        )
        for (
            posting_id,
            amount,
            currency,
            _kept,
            entry_id,
            type_,
            phase,
            description,
            metadata,
            effective_at,
            recorded_at,
            hold_id,
            reverses_id,
            _others,
        ) in rows
    )


def _walk_group(
    conn: Connection, s: ReadStatements, account_ids: list[int], before: int, chunk: int
) -> Iterator[Any]:
    """The walk's rows below ``before``, newest first, ``chunk`` rows a query."""
    stmt = s.statement_walks[len(account_ids) - 1]
    params: dict[str, Any] = {f"a{i}": aid for i, aid in enumerate(account_ids)}
    while True:
        rows = conn.execute(stmt, {**params, "before": before, "limit": chunk}).all()
        yield from rows
        if len(rows) < chunk:
            return
        before = rows[-1][0]


@dataclass(frozen=True, slots=True)
class StatementPage:
    """``statement_page``'s answer: the page's rows, their legs, and whether more follow."""

    rows: list[Any]
    """(position, then the entry's columns in field order), newest first, each entry once."""
    legs: dict[int, list[Any]]
    """Entry id -> its postings' ``statement_legs`` rows, by posting id."""
    more: bool
    """True when an entry below the page's last position passes the filters."""


def statement_page(
    conn: Connection,
    s: ReadStatements,
    account_ids: Sequence[int],
    *,
    before: int | None,
    limit: int,
    types: list[str] | None,
    since: Any,
    until: Any,
) -> StatementPage:
    """Up to ``limit`` entries touching ``account_ids``, newest first, with their legs.

    An entry's position is its newest posting on the accounts; the page holds
    the entries whose position is below ``before``. The accounts' postings are
    walked backwards on their index (``MAX_ARMS`` accounts a statement,
    ``limit + 1`` rows at a time, each with its entry); filters apply to the
    entry columns the walk returns. An entry met below ``before`` with a
    posting on the accounts at or above it was on an earlier page: that needs
    its legs, which a cursor page reads as it goes and a first page only for
    the entries it shows. Typically two statements: the walk and the legs.
    """
    ids = sorted(set(account_ids))
    wanted = set(ids)
    upper = NO_CURSOR if before is None else before
    chunk = max(limit + 1, 16)
    walks = [
        _walk_group(conn, s, ids[i : i + MAX_ARMS], upper, chunk)
        for i in range(0, len(ids), MAX_ARMS)
    ]
    merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, key=_newest_first)
    found: list[Any] = []
    legs: dict[int, list[Any]] = {}
    pending: list[Any] = []  # candidates whose legs a cursor page still has to check
    seen: set[int] = set()

    def check_pending() -> None:
        fetched = _legs(conn, s, [row[1] for row in pending])
        legs.update(fetched)
        for row in pending:
            if not any(leg[1] in wanted and leg[2] >= upper for leg in fetched.get(row[1], ())):
                found.append(row)
        pending.clear()

    for row in merged:
        entry_id = row[1]
        if entry_id in seen:
            continue
        seen.add(entry_id)
        if types is not None and row[2] not in types:
            continue
        if since is not None and row[7] < since:
            continue
        if until is not None and row[7] >= until:
            continue
        if before is None:
            found.append(row)
        else:
            pending.append(row)
            if len(found) + len(pending) > limit:
                check_pending()
        if len(found) > limit:
            break
    if pending:
        check_pending()
    more = len(found) > limit
    found = found[:limit]
    missing = [row[1] for row in found if row[1] not in legs]
    if missing:
        legs.update(_legs(conn, s, missing))
    return StatementPage(found, legs, more)


def account_codes(
    conn: Connection, s: ReadStatements, codes: dict[int, str], ids: set[int], *, cache: bool
) -> dict[int, str]:
    """``codes`` (the ledger's id -> code cache) with ``ids`` looked up if missing.

    The cache is filled only when ``cache``: not on a host's connection whose
    transaction (that may have opened the account) can still roll back.
    """
    missing = ids - codes.keys()
    if not missing:
        return codes
    known = {**codes, **dict(conn.execute(s.account_codes, {"ids": sorted(missing)}).all())}
    if cache:
        codes.update(known)
    return known


def _newest_first(row: Any) -> int:
    return -int(row[0])  # heapq.merge is ascending


def _legs(conn: Connection, s: ReadStatements, entry_ids: list[int]) -> dict[int, list[Any]]:
    legs: dict[int, list[Any]] = {}
    if not entry_ids:
        return legs
    for row in conn.execute(s.statement_legs, {"ids": entry_ids}).all():  # one fetchall
        have = legs.get(row[0])
        if have is None:
            legs[row[0]] = [row]
        else:
            have.append(row)
    return legs
