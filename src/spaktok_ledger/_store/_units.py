"""Stored amounts carry their units: the start-up check and the rescale that follows a table change.

Every row holding a non-USD amount records the exponent it was written with
(migration 0006 back-filled the rows written before, with what 0.1.0 used):

=============  =========================  ===========================================
table          exponent column            amounts written at that exponent
=============  =========================  ===========================================
accounts       ``exponent`` (ISO)         the account's postings and balance rows
quotes         ``local_exponent`` (ISO)   ``local_amount_minor`` (column and JSON)
purchases      ``local_exponent`` (ISO)   ``local_amount_minor``
purchases      ``stripe_exponent``        ``stripe_amount``, ``refunded_stripe_amount``,
                                          ``charged_stripe_amount`` (0007), each
                                          dispute's and refund's ``amount``
payouts        ``payout_stripe_exponent`` ``payout_stripe_amount``
payouts        ``arrival_stripe_exponent````arrival_stripe_amount`` (0015)
payouts        ``arrival_exponent`` (ISO) ``on_account_minor`` (0015)
stripe_txns    ``exponent`` (Stripe)      ``booked_net_minor`` (0015)
stripe_txns    ``stripe_exponent``        ``stripe_net_minor`` (0015)
=============  =========================  ===========================================

``purchases.settled_foreign`` holds what was booked to the platform's Stripe
balance account in each other currency: it is rescaled with those accounts.

New rows get the exponent of the library's tables at insert time (a column
default computed from the row's currency, so no write path can forget it).

:func:`check_units` compares what is stored with what the library now uses
and raises :class:`~spaktok_ledger.UnitsMismatch` on any difference; it runs in
``migrate()`` (so in ``GiftEconomy.setup()`` and ``spaktok-ledger migrate``)
and in ``Ledger.check_schema()``. ``spaktok_ledger.migrate_units`` is the way out: it
rescales the rows in one transaction, with progress, and refuses (changing
nothing) when an amount cannot be rescaled exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._currency import EXPONENT_TABLE_VERSION, currency_info, known_currencies
from spaktok_ledger._errors import UnitsMismatch
from spaktok_ledger._money import INT64_MAX, INT64_MIN
from spaktok_ledger._store._schema import LedgerTables

__all__ = [
    "Progress",
    "UnitsProblem",
    "check_units",
    "expected_exponent",
    "find_units_problems",
    "rescale_units",
]

Kind = Literal["iso", "stripe"]


@dataclass(frozen=True, slots=True)
class _Spec:
    table: str
    """Attribute of ``LedgerTables``."""
    currency: str
    exponent: str
    kind: Kind


_SPECS: tuple[_Spec, ...] = (
    _Spec("accounts", "currency", "exponent", "iso"),
    _Spec("quotes", "currency", "local_exponent", "iso"),
    _Spec("purchases", "currency", "local_exponent", "iso"),
    _Spec("purchases", "currency", "stripe_exponent", "stripe"),
    _Spec("payouts", "payout_currency", "payout_stripe_exponent", "stripe"),
    _Spec("payouts", "arrival_currency", "arrival_stripe_exponent", "stripe"),
    _Spec("payouts", "arrival_currency", "arrival_exponent", "iso"),
    _Spec("stripe_txns", "currency", "exponent", "stripe"),
    _Spec("stripe_txns", "stripe_currency", "stripe_exponent", "stripe"),
)

# (table, exponent column) -> (currency column, the one amount column written at it)
_SINGLE_AMOUNT: dict[tuple[str, str], tuple[str, str]] = {
    ("payouts", "payout_stripe_exponent"): ("payout_currency", "payout_stripe_amount"),
    ("payouts", "arrival_stripe_exponent"): ("arrival_currency", "arrival_stripe_amount"),
    ("payouts", "arrival_exponent"): ("arrival_currency", "on_account_minor"),
    ("stripe_txns", "exponent"): ("currency", "booked_net_minor"),
    ("stripe_txns", "stripe_exponent"): ("stripe_currency", "stripe_net_minor"),
}


def expected_exponent(currency: str, kind: Kind) -> int | None:
    """The exponent the library writes ``currency`` amounts at (None: it cannot)."""
    if currency not in known_currencies():
        return None
    info = currency_info(currency)
    return info.exponent if kind == "iso" else info.stripe_exponent


@dataclass(frozen=True, slots=True)
class UnitsProblem:
    """Rows whose amounts were written at another exponent than the library now uses."""

    table: str
    column: str
    currency: str
    stored_exponent: int
    """-1: the row's units were never recorded (written outside the library)."""
    expected_exponent: int | None
    """None: the library cannot hold this currency at all any more."""
    rows: int

    def describe(self, prefix: str) -> str:
        expected = "none (not a currency the library knows)"
        if self.expected_exponent is not None:
            expected = str(self.expected_exponent)
        return (
            f"{prefix}{self.table}.{self.column}: {self.rows} row(s) in {self.currency} "
            f"at exponent {self.stored_exponent}, the library's is {expected}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "currency": self.currency,
            "stored_exponent": self.stored_exponent,
            "expected_exponent": self.expected_exponent,
            "rows": self.rows,
        }


def find_units_problems(conn: Connection, tables: LedgerTables) -> list[UnitsProblem]:
    """Every (table, currency, stored exponent) that differs from the library's tables."""
    problems: list[UnitsProblem] = []
    for spec in _SPECS:
        t: sa.Table = getattr(tables, spec.table)
        currency, exponent = t.c[spec.currency], t.c[spec.exponent]
        rows = conn.execute(
            sa.select(currency, exponent, sa.func.count())
            .where(currency.is_not(None))
            .group_by(currency, exponent)
        ).all()
        for code, recorded, count in rows:
            expected = expected_exponent(code, spec.kind)
            stored = -1 if recorded is None else recorded  # -1: units never recorded
            if stored != expected:
                problems.append(
                    UnitsProblem(spec.table, spec.exponent, code, stored, expected, count)
                )
    return sorted(problems, key=lambda p: (p.table, p.column, p.currency, p.stored_exponent))


def check_units(conn: Connection, tables: LedgerTables) -> None:
    """Raise ``UnitsMismatch`` if stored amounts use other exponents than the library does."""
    problems = find_units_problems(conn, tables)
    if not problems:
        return
    raise UnitsMismatch(
        "the database holds amounts written with other units than this library uses "
        f"(ISO 4217 table {EXPONENT_TABLE_VERSION}; Stripe's units): "
        + "; ".join(p.describe(tables.prefix) for p in problems)
        + ". Nothing was read or changed. To migrate: back up the database, then run "
        f"`spaktok-ledger --db <database URL> --prefix {tables.prefix} migrate-units` "
        "(it rescales these rows in one transaction and refuses if an amount cannot be "
        "rescaled exactly; see docs/pricing.md, 'Units'), or keep running the "
        "spaktok-ledger version that wrote them.",
        found=[p.to_dict() for p in problems],
        table_version=EXPONENT_TABLE_VERSION,
    )


# --- the rescale ----------------------------------------------------------------


Progress = Callable[[str], None]


def _no_progress(_message: str) -> None:
    return None


def rescale_units(
    conn: Connection, tables: LedgerTables, *, progress: Progress = _no_progress
) -> list[UnitsProblem]:
    """Rescale every amount stored at another exponent than the library's; returns what was found.

    Runs on ``conn`` in its transaction (see ``spaktok_ledger.migrate_units``).
    An amount that cannot be rescaled exactly (a fraction the new exponent
    cannot hold, a currency the library no longer knows) raises
    ``UnitsMismatch`` before anything is written for it; the caller rolls back.
    History stays append-only in every other path: only this maintenance step
    lifts the guards on postings and accounts, inside its transaction.
    """
    prefix = tables.prefix
    problems = find_units_problems(conn, tables)
    if not problems:
        progress("all stored amounts already use the library's units: nothing to rescale")
        return problems
    impossible = [p for p in problems if p.expected_exponent is None or p.stored_exponent < 0]
    if impossible:
        raise UnitsMismatch(
            "cannot rescale: "
            + "; ".join(p.describe(prefix) for p in impossible)
            + ". Convert or close these rows by hand first (nothing was changed).",
            found=[p.to_dict() for p in impossible],
        )
    for problem in problems:
        progress(problem.describe(prefix) + ": rescaling")
        _rescale(conn, tables, problem, progress)
    left = find_units_problems(conn, tables)
    if left:  # pragma: no cover - a bug in the rescale, not a user error
        raise AssertionError(f"units still mismatched after the rescale: {left}")
    progress(f"done: {sum(p.rows for p in problems)} row(s) now at the library's units")
    return problems


def _factor(problem: UnitsProblem) -> tuple[int, int]:
    """(multiply, divide): exactly one of them is 1."""
    assert problem.expected_exponent is not None
    shift = problem.expected_exponent - problem.stored_exponent
    return (10**shift, 1) if shift >= 0 else (1, 10**-shift)


def _scaled(value: int, problem: UnitsProblem, what: str) -> int:
    multiply, divide = _factor(problem)
    quotient, remainder = divmod(value * multiply, divide)
    if not INT64_MIN <= quotient <= INT64_MAX:
        raise UnitsMismatch(
            f"cannot rescale {what} = {value} {problem.currency} to exponent "
            f"{problem.expected_exponent}: it would leave the signed 64-bit range; "
            "nothing was changed",
            currency=problem.currency,
            amount=value,
        )
    if remainder:
        raise UnitsMismatch(
            f"cannot rescale {what} = {value} {problem.currency} from exponent "
            f"{problem.stored_exponent} to {problem.expected_exponent} without rounding; "
            "nothing was changed",
            currency=problem.currency,
            amount=value,
        )
    return quotient


def _sql_scaled(column: Any, problem: UnitsProblem) -> Any:
    multiply, divide = _factor(problem)
    return column * multiply if divide == 1 else column // divide


def _exact_or_refuse(
    conn: Connection, problem: UnitsProblem, what: str, query: sa.Select[Any]
) -> None:
    """With a dividing rescale, refuse if any amount has digits the new exponent drops."""
    _, divide = _factor(problem)
    if divide == 1:
        return
    bad = conn.execute(query.limit(1)).first()
    if bad is not None:
        _scaled(int(bad[0]), problem, what)  # raises with the first offending value


def _in_range_or_refuse(
    conn: Connection, problem: UnitsProblem, what: str, column: Any, where: Any
) -> None:
    """With a multiplying rescale, refuse if the largest amount would leave int64.

    Checked before the UPDATE: SQLite would turn an overflowing product into
    a float rather than fail.
    """
    multiply, _ = _factor(problem)
    if multiply == 1:
        return
    largest = conn.execute(sa.select(sa.func.max(sa.func.abs(column))).where(where)).scalar()
    if largest is not None:
        _scaled(int(largest), problem, what)  # raises if out of range


def _rescale(
    conn: Connection, tables: LedgerTables, problem: UnitsProblem, progress: Progress
) -> None:
    if problem.table == "accounts":
        _rescale_accounts(conn, tables, problem, progress)
    elif problem.table == "quotes":
        _rescale_quotes(conn, tables, problem, progress)
    elif problem.table == "purchases":
        _rescale_purchases(conn, tables, problem, progress)
    else:
        _rescale_single_amount(conn, tables, problem, progress)


def _rescale_accounts(
    conn: Connection, tables: LedgerTables, problem: UnitsProblem, progress: Progress
) -> None:
    _, divide = _factor(problem)
    code, stored = problem.currency, problem.stored_exponent
    a, p, b = tables.accounts, tables.postings, tables.balances
    ids = sa.select(a.c.id).where(a.c.currency == code, a.c.exponent == stored)
    _in_range_or_refuse(conn, problem, "a posting", p.c.amount, p.c.account_id.in_(ids))
    for name in ("posted", "pending_debit", "pending_credit"):
        _in_range_or_refuse(
            conn, problem, f"a balance's {name}", b.c[name], b.c.account_id.in_(ids)
        )
    if divide != 1:
        _exact_or_refuse(
            conn,
            problem,
            "a posting",
            sa.select(p.c.amount).where(p.c.account_id.in_(ids), p.c.amount % divide != 0),
        )
        for name in ("posted", "pending_debit", "pending_credit"):
            column = b.c[name]
            _exact_or_refuse(
                conn,
                problem,
                f"a balance's {name}",
                sa.select(column).where(b.c.account_id.in_(ids), column % divide != 0),
            )
    with _guards_lifted(conn, tables.prefix):
        moved = conn.execute(
            p.update()
            .where(p.c.account_id.in_(ids))
            .values(amount=_sql_scaled(p.c.amount, problem))
        ).rowcount
        progress(f"  {moved} posting(s) rescaled")
        conn.execute(
            b.update()
            .where(b.c.account_id.in_(ids))
            .values(
                {
                    name: _sql_scaled(b.c[name], problem)
                    for name in ("posted", "pending_debit", "pending_credit")
                }
            )
        )
        conn.execute(
            a.update()
            .where(a.c.currency == code, a.c.exponent == stored)
            .values(exponent=problem.expected_exponent)
        )
    _rescale_settled_foreign(conn, tables, problem, progress)


def _rescale_quotes(
    conn: Connection, tables: LedgerTables, problem: UnitsProblem, progress: Progress
) -> None:
    code, stored = problem.currency, problem.stored_exponent
    q = tables.quotes
    where = sa.and_(q.c.currency == code, q.c.local_exponent == stored)
    columns = (q.c.id, q.c.local_amount_minor, q.c.quote)
    for done, row in _batches(conn, q.c.id, where, columns):
        data = dict(row.quote)
        data["local_amount_minor"] = _scaled(data["local_amount_minor"], problem, "a quote")
        data["exponent"] = problem.expected_exponent
        conn.execute(
            q.update()
            .where(q.c.id == row.id)
            .values(
                local_amount_minor=_scaled(row.local_amount_minor, problem, "a quote"),
                local_exponent=problem.expected_exponent,
                quote=data,
            )
        )
        if done % 1000 == 0:
            progress(f"  {done} quote(s) rescaled")


def _rescale_purchases(
    conn: Connection, tables: LedgerTables, problem: UnitsProblem, progress: Progress
) -> None:
    _, divide = _factor(problem)
    code, stored = problem.currency, problem.stored_exponent
    t = tables.purchases
    if problem.column == "local_exponent":
        where = sa.and_(t.c.currency == code, t.c.local_exponent == stored)
        _in_range_or_refuse(conn, problem, "a purchase", t.c.local_amount_minor, where)
        _exact_or_refuse(
            conn,
            problem,
            "a purchase's local_amount_minor",
            sa.select(t.c.local_amount_minor).where(where, t.c.local_amount_minor % divide != 0),
        )
        conn.execute(
            t.update()
            .where(where)
            .values(
                local_amount_minor=_sql_scaled(t.c.local_amount_minor, problem),
                local_exponent=problem.expected_exponent,
            )
        )
        return
    where = sa.and_(t.c.currency == code, t.c.stripe_exponent == stored)
    stripe_columns = (
        t.c.id,
        t.c.stripe_amount,
        t.c.refunded_stripe_amount,
        t.c.charged_stripe_amount,
        t.c.disputes,
        t.c.refunds,
    )
    for done, row in _batches(conn, t.c.id, where, stripe_columns):
        disputes = {
            key: {**value, "amount": _scaled(value["amount"], problem, "a dispute")}
            for key, value in (row.disputes or {}).items()
        }
        refunds = {
            key: {**value, "amount": _scaled(value["amount"], problem, "a refund")}
            for key, value in (row.refunds or {}).items()
        }
        charged = row.charged_stripe_amount
        conn.execute(
            t.update()
            .where(t.c.id == row.id)
            .values(
                stripe_amount=_scaled(row.stripe_amount, problem, "a purchase"),
                refunded_stripe_amount=_scaled(
                    row.refunded_stripe_amount, problem, "a purchase's refund"
                ),
                disputes=disputes,
                refunds=refunds,
                charged_stripe_amount=None
                if charged is None
                else _scaled(charged, problem, "a purchase's charge"),
                stripe_exponent=problem.expected_exponent,
            )
        )
        if done % 1000 == 0:
            progress(f"  {done} purchase(s) rescaled")


def _rescale_single_amount(
    conn: Connection, tables: LedgerTables, problem: UnitsProblem, progress: Progress
) -> None:
    _, divide = _factor(problem)
    code, stored = problem.currency, problem.stored_exponent
    currency_column, amount_column = _SINGLE_AMOUNT[(problem.table, problem.column)]
    t = getattr(tables, problem.table)
    where = sa.and_(t.c[currency_column] == code, t.c[problem.column] == stored)
    amount = t.c[amount_column]
    what = f"a {problem.table} row's {amount_column}"
    _in_range_or_refuse(conn, problem, what, amount, where)
    if divide != 1:
        _exact_or_refuse(conn, problem, what, sa.select(amount).where(where, amount % divide != 0))
    moved = conn.execute(
        t.update()
        .where(where)
        .values(
            {amount_column: _sql_scaled(amount, problem), problem.column: problem.expected_exponent}
        )
    ).rowcount
    progress(f"  {moved} {problem.table} row(s) rescaled")


def _rescale_settled_foreign(
    conn: Connection, tables: LedgerTables, problem: UnitsProblem, progress: Progress
) -> None:
    """What purchases booked to the Stripe balance account in ``problem.currency``.

    ``settled_foreign`` is ``{currency: [net booked, its USD value]}``: the net
    is an amount of that account, so it moves with the account's rescale.
    """
    t = tables.purchases
    code = problem.currency
    rows = _batches(conn, t.c.id, t.c.settled_foreign.is_not(None), (t.c.id, t.c.settled_foreign))
    changed = 0
    for _done, row in rows:
        booked = dict(row.settled_foreign or {})
        if code not in booked:
            continue
        net, usd = booked[code]
        booked[code] = [_scaled(int(net), problem, "a purchase's settled_foreign"), usd]
        conn.execute(t.update().where(t.c.id == row.id).values(settled_foreign=booked))
        changed += 1
    if changed:
        progress(f"  {changed} purchase settlement(s) in {code} rescaled")


def _batches(
    conn: Connection,
    key: sa.Column[Any],
    where: sa.ColumnElement[bool],
    columns: Sequence[sa.ColumnElement[Any]],
    size: int = 500,
) -> Iterator[tuple[int, Any]]:
    """Rows matching ``where`` in key order, fetched in pages (keyset pagination)."""
    done = 0
    last: Any = None
    while True:
        query = sa.select(*columns).where(where).order_by(key).limit(size)
        if last is not None:
            query = query.where(key > last)
        page = conn.execute(query).all()
        if not page:
            return
        for row in page:
            done += 1
            yield done, row
        last = page[-1][0]


class _guards_lifted:  # noqa: N801 - used as a context manager, reads like one
    """Lift the append-only triggers on postings and accounts for this transaction only."""

    def __init__(self, conn: Connection, prefix: str) -> None:
        self.conn, self.prefix = conn, prefix
        self.names = [f"{prefix}{table}" for table in ("postings", "accounts")]

    def __enter__(self) -> None:
        if self.conn.dialect.name == "postgresql":
            for table in self.names:
                self.conn.exec_driver_sql(
                    f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"
                )
            return
        master = sa.table("sqlite_master", sa.column("type"), sa.column("name"), sa.column("sql"))
        self.saved = self.conn.execute(
            sa.select(master.c.name, master.c.sql).where(
                master.c.type == "trigger",
                master.c.name.in_([f"{table}_no_update" for table in self.names]),
            )
        ).all()
        for name, _sql in self.saved:
            self.conn.exec_driver_sql(f"DROP TRIGGER {name}")

    def __exit__(self, *exc: object) -> None:
        if self.conn.dialect.name == "postgresql":
            for table in self.names:
                self.conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")
            return
        for _name, sql in self.saved:
            self.conn.exec_driver_sql(sql)
