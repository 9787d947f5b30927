"""``verify()``: recompute balances from postings and check every invariant.

The balance rows are a cache of the postings; history is the truth. This
module rebuilds the truth with plain aggregate queries and reports every
difference as a :class:`Problem` (values, never an exception).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._store._schema import LedgerTables

__all__ = ["Problem", "VerifyReport", "verify_ledger"]

Progress = Callable[[str, int, int], None]

STEPS = ("balances", "entries", "totals", "overdraft", "holds", "guards")
# Tables whose rows are never updated or deleted (the operator audit log: 0009).
_APPEND_ONLY = ("transactions", "postings", "accounts", "audit_log")


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken invariant."""

    check: str
    """Which check found it: balances, entries, totals, overdraft, holds, reversals, guards."""
    subject: str
    """What is wrong: an account code, ``entry #12``, a currency."""
    message: str
    expected: Any = None
    actual: Any = None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``Ledger.verify()`` found."""

    problems: tuple[Problem, ...]
    accounts_checked: int
    entries_checked: int
    postings_checked: int
    incremental: bool = False
    """True: only what was written since the last checkpoint was re-checked."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class _State:
    """What the checks share: the rows read once."""

    conn: Connection
    t: LedgerTables
    # Rows are typed loosely: SQLAlchemy 2.0 and 2.1 spell Row's parameters differently.
    accounts: dict[int, Any]
    shard_rows: list[Any]
    entry_rows: list[Any]
    cached: dict[int, tuple[int, int, int]]
    posting_counts: dict[int, int]
    problems: list[Problem]
    truth: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """Per account, the balance its postings make (filled by the balances check)."""

    def code(self, account_id: int) -> str:
        acct = self.accounts.get(account_id)
        return acct.code if acct is not None else f"account #{account_id}"

    def add(self, *args: Any) -> None:
        self.problems.append(Problem(*args))


def verify_ledger(
    conn: Connection, t: LedgerTables, on_progress: Progress | None = None
) -> VerifyReport:
    return _verify_full(conn, t, on_progress).report


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verify's report and the per-account balances the postings make."""

    report: VerifyReport
    truth: dict[int, tuple[int, int, int]]


def _verify_full(conn: Connection, t: LedgerTables, on_progress: Progress | None) -> Outcome:
    a, b, e, p = t.accounts, t.balances, t.entries, t.postings
    shard_rows = list(
        conn.execute(
            sa.select(
                b.c.account_id,
                b.c.shard,
                b.c.normal_sign,
                b.c.allow_overdraft,
                b.c.posted,
                b.c.pending_debit,
                b.c.pending_credit,
            )
        )
    )
    cached: dict[int, tuple[int, int, int]] = {}
    for r in shard_rows:
        posted, pd, pc = cached.get(r.account_id, (0, 0, 0))
        cached[r.account_id] = (posted + r.posted, pd + r.pending_debit, pc + r.pending_credit)
    state = _State(
        conn=conn,
        t=t,
        accounts={r.id: r for r in conn.execute(sa.select(a.c.id, a.c.code, a.c.currency))},
        shard_rows=shard_rows,
        entry_rows=list(conn.execute(sa.select(e.c.id, e.c.phase, e.c.hold_id, e.c.reverses_id))),
        cached=cached,
        posting_counts={
            entry_id: int(n)
            for entry_id, n in conn.execute(
                sa.select(p.c.entry_id, sa.func.count()).group_by(p.c.entry_id)
            )
        },
        problems=[],
    )
    checks = (
        _check_balance_rows,
        _check_entries,
        _check_totals,
        _check_overdraft,
        _check_holds_and_reversals,
        _check_guards,
    )
    for index, check in enumerate(checks):
        check(state)
        if on_progress is not None:
            on_progress(STEPS[index], index + 1, len(checks))
    return Outcome(
        VerifyReport(
            problems=tuple(state.problems),
            accounts_checked=len(state.accounts),
            entries_checked=len(state.entry_rows),
            postings_checked=sum(state.posting_counts.values()),
        ),
        state.truth,
    )


def _check_balance_rows(s: _State) -> None:
    """Each account's balance rows sum to its postings (posted and pending separately)."""
    e, p = s.t.entries, s.t.postings
    resolution = e.alias("resolution")
    open_hold = sa.and_(e.c.phase == "pending", resolution.c.id.is_(None))
    columns = (
        sa.case((e.c.phase == "posted", p.c.amount), else_=0),
        sa.case((sa.and_(open_hold, p.c.amount > 0), p.c.amount), else_=0),
        sa.case((sa.and_(open_hold, p.c.amount < 0), -p.c.amount), else_=0),
    )
    truth = {
        account_id: (posted, pd, pc)
        for (account_id,), (posted, pd, pc) in _grouped_sums(
            s.conn,
            [p.c.account_id],
            columns,
            lambda q: q.join(e, e.c.id == p.c.entry_id).outerjoin(
                resolution, resolution.c.hold_id == e.c.id
            ),
        ).items()
    }
    s.truth = truth
    _compare_balance_rows(s)


def _compare_balance_rows(s: _State) -> None:
    """Each account's cached balance (its rows' sum) equals ``s.truth``."""
    truth = s.truth
    for account_id, acct in s.accounts.items():
        want = truth.get(account_id, (0, 0, 0))
        have = s.cached.get(account_id)
        if have is None:
            s.add("balances", acct.code, "account has no balance rows", want, None)
        elif have != want:
            s.add(
                "balances",
                acct.code,
                "balance rows (posted, pending_debit, pending_credit) differ from postings",
                want,
                have,
            )


def _check_entries(s: _State) -> None:
    """Entries balance per currency, have the right number of postings, in the right currency."""
    a, p = s.t.accounts, s.t.postings
    totals = _grouped_sums(s.conn, [p.c.entry_id, p.c.currency], (p.c.amount,), lambda q: q)
    for (entry_id, currency), (total,) in sorted(totals.items()):
        if total != 0:
            s.add(
                "entries",
                f"entry #{entry_id}",
                f"postings sum to {total} {currency}, not 0",
                0,
                total,
            )
    for entry in s.entry_rows:
        n = s.posting_counts.get(entry.id, 0)
        if entry.phase in ("posted", "pending") and n < 2:
            s.add("entries", f"entry #{entry.id}", f"{entry.phase} entry has {n} postings", 2, n)
        if entry.phase in ("voided", "expired") and n:
            s.add("entries", f"entry #{entry.id}", f"{entry.phase} entry has postings", 0, n)
    for m in s.conn.execute(
        sa.select(p.c.id, p.c.account_id, p.c.currency, a.c.currency.label("account_currency"))
        .join(a, a.c.id == p.c.account_id)
        .where(p.c.currency != a.c.currency)
    ):
        s.add(
            "entries",
            f"posting #{m.id}",
            f"posting in {m.currency} on {s.code(m.account_id)}",
            m.account_currency,
            m.currency,
        )


def _check_totals(s: _State) -> None:
    """Per currency, posted balances sum to zero and pending debits equal pending credits."""
    per_currency: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for account_id, (posted, pd, pc) in s.cached.items():
        acct = s.accounts.get(account_id)
        if acct is not None:
            sums = per_currency[acct.currency]
            sums[0] += posted
            sums[1] += pd
            sums[2] += pc
    for currency, (posted, pd, pc) in sorted(per_currency.items()):
        if posted != 0:
            s.add("totals", currency, "posted balances do not sum to zero", 0, posted)
        if pd != pc:
            s.add("totals", currency, "pending debits and credits differ", pd, pc)


def _check_overdraft(s: _State) -> None:
    """No shard of a no-overdraft account has available < 0; no pending amount is negative."""
    for r in s.shard_rows:
        if r.pending_debit < 0 or r.pending_credit < 0:
            s.add(
                "overdraft",
                s.code(r.account_id),
                f"shard {r.shard} has a negative pending amount",
                ">= 0",
                (r.pending_debit, r.pending_credit),
            )
        if r.allow_overdraft:
            continue
        out = r.pending_credit if r.normal_sign > 0 else r.pending_debit
        available = r.normal_sign * r.posted - out
        if available < 0:
            s.add(
                "overdraft",
                s.code(r.account_id),
                f"shard {r.shard} of a no-overdraft account has available {available}",
                ">= 0",
                available,
            )


def _check_holds_and_reversals(s: _State) -> None:
    """Resolutions name a hold and repeat its postings; reversals mirror their original."""
    p = s.t.postings
    linked = [r for r in s.entry_rows if r.hold_id is not None or r.reverses_id is not None]
    needed = sorted(
        {r.id for r in linked}
        | {r.hold_id for r in linked if r.hold_id is not None}
        | {r.reverses_id for r in linked if r.reverses_id is not None}
    )
    legs: dict[int, Counter[tuple[int, int, str]]] = defaultdict(Counter)
    for start in range(0, len(needed), 500):
        for r in s.conn.execute(
            sa.select(p.c.entry_id, p.c.account_id, p.c.amount, p.c.currency).where(
                p.c.entry_id.in_(needed[start : start + 500])
            )
        ):
            legs[r.entry_id][(r.account_id, r.amount, r.currency)] += 1
    phases = {r.id: r.phase for r in s.entry_rows}
    for r in linked:
        if r.hold_id is not None:
            if phases.get(r.hold_id) != "pending":
                s.add("holds", f"entry #{r.id}", f"resolves entry #{r.hold_id}, not a hold")
            elif r.phase == "posted" and legs[r.id] != legs[r.hold_id]:
                s.add("holds", f"entry #{r.id}", f"posts hold #{r.hold_id} with other postings")
        if r.reverses_id is not None:
            mirror = Counter(
                {(acc, -amount, cur): n for (acc, amount, cur), n in legs[r.reverses_id].items()}
            )
            if legs[r.id] != mirror or phases.get(r.reverses_id) != "posted":
                s.add(
                    "reversals",
                    f"entry #{r.id}",
                    f"does not mirror the posted entry #{r.reverses_id}",
                )


def _check_guards(s: _State) -> None:
    """The append-only (and, on PostgreSQL, balance) triggers are installed."""
    dialect = s.conn.dialect.name
    expected = _expected_triggers(s.t, dialect)
    present = _installed_triggers(s.conn, dialect)
    for name in sorted(expected - present):
        s.add("guards", name, "database guard trigger is missing")


def _expected_triggers(t: LedgerTables, dialect: str) -> set[str]:
    p = t.prefix
    if dialect == "postgresql":
        names = {f"{p}postings_balanced", f"{p}balances_no_delete"}
        for table in _APPEND_ONLY:
            names |= {f"{p}{table}_append_only", f"{p}{table}_no_truncate"}
        return names
    names = {f"{p}balances_no_delete"}
    for table in _APPEND_ONLY:
        names |= {f"{p}{table}_no_update", f"{p}{table}_no_delete"}
    return names


def _installed_triggers(conn: Connection, dialect: str) -> set[str]:
    if dialect == "postgresql":
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return set(conn.exec_driver_sql(query).scalars())


def _grouped_sums(
    conn: Connection,
    keys: Sequence[Any],
    values: Sequence[Any],
    joined: Callable[[Any], Any],
) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """``SUM(values) GROUP BY keys`` as exact Python ints.

    Each row of postings is within int64, but a running sum of them need not
    be: SQLite's ``sum()`` raises "integer overflow" then (PostgreSQL's sum of
    ``bigint`` is ``numeric`` and cannot). On that error the same rows are read
    unaggregated and summed here, so ``verify()`` always answers.
    """
    summed = joined(
        sa.select(*keys, *(sa.func.sum(v) for v in values)).select_from(keys[0].table)
    ).group_by(*keys)
    n = len(keys)
    try:
        return {tuple(r[:n]): tuple(int(x or 0) for x in r[n:]) for r in conn.execute(summed).all()}
    except sa.exc.OperationalError as exc:
        if "integer overflow" not in str(exc.orig):
            raise
    out: dict[tuple[Any, ...], list[int]] = {}
    for r in conn.execute(joined(sa.select(*keys, *values).select_from(keys[0].table))):
        sums = out.setdefault(tuple(r[:n]), [0] * len(values))
        for i, x in enumerate(r[n:]):
            sums[i] += int(x or 0)
    return {key: tuple(v) for key, v in out.items()}


def verify_since(
    conn: Connection,
    t: LedgerTables,
    *,
    checkpoint_sums: dict[int, list[int]],
    checkpoint_entry_id: int,
    checkpoint_posting_id: int,
    on_progress: Progress | None = None,
) -> Outcome:
    """Check what was written after a verified checkpoint (see ``_checkpoint.py``).

    ``checkpoint_sums``: per account, the balance the postings up to the
    checkpoint make. Returns the report and the per-account balances now.
    """
    from spaktok_ledger._store._checkpoint import Horizon, combine, deltas, entry_rows_for

    a, b, e, p = t.accounts, t.balances, t.entries, t.postings
    after = Horizon(checkpoint_entry_id, checkpoint_posting_id)
    added, touched = deltas(conn, t, after)
    touched |= {
        int(x) for x in conn.execute(sa.select(e.c.id).where(e.c.id > after.entry_id)).scalars()
    }
    shard_rows = list(
        conn.execute(
            sa.select(
                b.c.account_id,
                b.c.shard,
                b.c.normal_sign,
                b.c.allow_overdraft,
                b.c.posted,
                b.c.pending_debit,
                b.c.pending_credit,
            )
        )
    )
    cached: dict[int, tuple[int, int, int]] = {}
    for r in shard_rows:
        posted, pd, pc = cached.get(r.account_id, (0, 0, 0))
        cached[r.account_id] = (posted + r.posted, pd + r.pending_debit, pc + r.pending_credit)
    entry_rows = entry_rows_for(conn, t, touched)
    counted = sorted({r.id for r in entry_rows})
    counts: dict[int, int] = {}
    for start in range(0, len(counted), 500):
        for entry_id, n in conn.execute(
            sa.select(p.c.entry_id, sa.func.count())
            .where(p.c.entry_id.in_(counted[start : start + 500]))
            .group_by(p.c.entry_id)
        ):
            counts[int(entry_id)] = int(n)
    state = _State(
        conn=conn,
        t=t,
        accounts={r.id: r for r in conn.execute(sa.select(a.c.id, a.c.code, a.c.currency))},
        shard_rows=shard_rows,
        entry_rows=entry_rows,
        cached=cached,
        posting_counts=counts,
        problems=[],
    )
    now = combine(checkpoint_sums, added)
    state.truth = {aid: (v[0], v[1], v[2]) for aid, v in now.items()}

    def balances(s: _State) -> None:
        _compare_balance_rows(s)

    def entries(s: _State) -> None:
        _check_entries_of(s, sorted(touched), after.posting_id)

    checks = (
        balances,
        entries,
        _check_totals,
        _check_overdraft,
        _check_holds_and_reversals,
        _check_guards,
    )
    for index, check in enumerate(checks):
        check(state)
        if on_progress is not None:
            on_progress(STEPS[index], index + 1, len(checks))
    new_entries = [r for r in entry_rows if r.id in touched]
    return Outcome(
        VerifyReport(
            problems=tuple(state.problems),
            accounts_checked=len(state.accounts),
            entries_checked=len(new_entries),
            postings_checked=sum(counts.get(r.id, 0) for r in new_entries),
            incremental=True,
        ),
        state.truth,
    )


def _check_entries_of(s: _State, entry_ids: list[int], after_posting_id: int) -> None:
    """``_check_entries`` for the entries ``entry_ids`` and the postings above a horizon."""
    a, p = s.t.accounts, s.t.postings
    for start in range(0, len(entry_ids), 500):
        for r in s.conn.execute(
            sa.select(p.c.entry_id, p.c.currency, sa.func.sum(p.c.amount).label("total"))
            .where(p.c.entry_id.in_(entry_ids[start : start + 500]))
            .group_by(p.c.entry_id, p.c.currency)
            .having(sa.func.sum(p.c.amount) != 0)
        ):
            s.add(
                "entries",
                f"entry #{r.entry_id}",
                f"postings sum to {r.total} {r.currency}, not 0",
                0,
                int(r.total),
            )
    wanted = set(entry_ids)
    for entry in s.entry_rows:
        if entry.id not in wanted:
            continue
        n = s.posting_counts.get(entry.id, 0)
        if entry.phase in ("posted", "pending") and n < 2:
            s.add("entries", f"entry #{entry.id}", f"{entry.phase} entry has {n} postings", 2, n)
        if entry.phase in ("voided", "expired") and n:
            s.add("entries", f"entry #{entry.id}", f"{entry.phase} entry has postings", 0, n)
    for m in s.conn.execute(
        sa.select(p.c.id, p.c.account_id, p.c.currency, a.c.currency.label("account_currency"))
        .join(a, a.c.id == p.c.account_id)
        .where(p.c.id > after_posting_id, p.c.currency != a.c.currency)
    ):
        s.add(
            "entries",
            f"posting #{m.id}",
            f"posting in {m.currency} on {s.code(m.account_id)}",
            m.account_currency,
            m.currency,
        )
