"""An entry, its postings and the rows written with it, in one statement on PostgreSQL.

A gift writes an entry, three postings, an outbox event and (with a hold
period) an earning lot. The postings and those rows need the entry's id, which
the database hands out, so written one after another they cost a round trip
each. PostgreSQL runs data-modifying statements in ``WITH``: the entry is
inserted in a CTE (``ON CONFLICT DO NOTHING``: a key already used inserts
nothing), and the postings and attached rows are inserted from it, so one
statement writes them all, or nothing when the entry was not inserted. The
postings go in leg order (``ORDER BY``), so their ids follow the draft as
they do when inserted one by one.

SQLite has no data-modifying CTEs: there the same rows are written by one
statement per table, with the same result.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Dialect

from spaktok_ledger._store._schema import LedgerTables

__all__ = [
    "MAX_LEGS_TOGETHER",
    "PREPARED_DRIVERS",
    "ArrayUpdate",
    "Attached",
    "Prepared",
    "balances_update",
    "entry_with_postings",
    "plain_insert",
    "prepare",
]

# Entries with up to this many postings are written together with their
# postings on PostgreSQL (a gift has three legs); longer ones take two statements.
MAX_LEGS_TOGETHER = 8


@dataclass(frozen=True, slots=True)
class Attached:
    """A row written with a new entry, which takes the entry's id.

    ``values``: the row's columns. ``entry_id``: the column that gets the new
    entry's id. ``key``: ``(column, prefix)``, the column gets ``prefix`` and the
    id (an outbox event's dedupe key). ``payload``: ``(column, name)``, a JSON
    object column whose ``name`` member gets the id (an event's ``entry_id``).
    """

    table: sa.Table
    values: Mapping[str, Any]
    entry_id: str | None = None
    key: tuple[str, str] | None = None
    payload: tuple[str, str] | None = None

    def row(self, entry_id: int) -> dict[str, Any]:
        """The row to insert once the entry's id is known."""
        row = dict(self.values)
        if self.entry_id is not None:
            row[self.entry_id] = entry_id
        if self.key is not None:
            column, prefix = self.key
            row[column] = f"{prefix}{entry_id}"
        if self.payload is not None:
            column, name = self.payload
            row[column] = {**row[column], name: entry_id}
        return row

    def shape(self) -> tuple[Any, ...]:
        """What the statement depends on (not the values): its cache key."""
        key = None if self.key is None else self.key[0]  # the prefix is a parameter
        return (self.table.name, tuple(sorted(self.values)), self.entry_id, key, self.payload)

    def params(self, n: int) -> dict[str, Any]:
        """The bind parameters of this row as the ``n``-th attached row."""
        out = {f"r{n}_{column}": value for column, value in self.values.items()}
        if self.key is not None:
            out[f"r{n}_{self.key[0]}"] = self.key[1]
        return out


@functools.cache
def plain_insert(table: sa.Table) -> Any:
    """An insert into ``table``, built once: an attached row written on its own
    (building a statement per call, and its cache key, costs more than SQLite's
    insert itself)."""
    return table.insert()


def entry_with_postings(t: LedgerTables, legs: int, attached: Sequence[Attached] = ()) -> Any:
    """PostgreSQL: insert an entry (``ON CONFLICT DO NOTHING``), its ``legs``
    postings in order and the ``attached`` rows in one statement that returns
    the entry id once per leg (no row: the entry was not inserted).

    Parameters: the entry's columns by name; ``account_{i}``, ``amount_{i}``,
    ``currency_{i}`` per leg; each attached row's :meth:`Attached.params`.
    """
    from sqlalchemy.dialects import postgresql

    e, p, bp = t.entries, t.postings, sa.bindparam
    columns = [c.name for c in e.columns if c.name != "id"]
    entry = (
        postgresql.insert(e)
        .values({name: bp(name, type_=e.c[name].type) for name in columns})
        .on_conflict_do_nothing()
        .returning(e.c.id)
        .cte("new_entry")
    )
    rows = [
        sa.select(
            sa.literal_column(str(i), sa.Integer).label("leg"),
            bp(f"account_{i}", type_=p.c.account_id.type).label("account_id"),
            bp(f"amount_{i}", type_=p.c.amount.type).label("amount"),
            bp(f"currency_{i}", type_=p.c.currency.type).label("currency"),
        )
        for i in range(legs)
    ]
    leg_rows = (rows[0] if legs == 1 else sa.union_all(*rows)).subquery("legs")
    statement = (
        p.insert()
        .from_select(
            ["entry_id", "account_id", "amount", "currency"],
            sa.select(entry.c.id, leg_rows.c.account_id, leg_rows.c.amount, leg_rows.c.currency)
            .select_from(entry)
            .join(leg_rows, sa.true())
            .order_by(leg_rows.c.leg),
        )
        .returning(p.c.entry_id)
    )
    for n, row in enumerate(attached):
        statement = statement.add_cte(_attached_insert(entry, row, n))
    return statement


def _attached_insert(entry: Any, row: Attached, n: int) -> Any:
    from sqlalchemy.dialects.postgresql import JSONB

    table, bp = row.table, sa.bindparam
    names: list[str] = []
    exprs: list[Any] = []
    for column in sorted(row.values):
        names.append(column)
        value: Any = bp(f"r{n}_{column}", type_=table.c[column].type)
        if row.payload is not None and column == row.payload[0]:
            value = sa.cast(
                sa.cast(value, JSONB).op("||")(
                    sa.func.jsonb_build_object(sa.literal(row.payload[1]), entry.c.id)
                ),
                table.c[column].type,
            )
        exprs.append(value)
    if row.entry_id is not None:
        names.append(row.entry_id)
        exprs.append(entry.c.id)
    if row.key is not None:
        column = row.key[0]
        names.append(column)
        exprs.append(bp(f"r{n}_{column}", type_=sa.String()) + sa.cast(entry.c.id, sa.String()))
    insert = table.insert().from_select(names, sa.select(*exprs).select_from(entry))
    return insert.cte(f"attached_{n}")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled once for a dialect, run as the driver's SQL.

    SQLAlchemy's execution of a Core statement (its compiled-cache lookup,
    building the parameters, running each type's bind processor) cost about
    50 microseconds of a gift's 2 ms on PostgreSQL for this one statement, and
    more than SQLite's own work for a small insert; here the SQL text is
    rendered once and only the parameters that need a bind processor (JSON,
    datetimes) get it, from the same types the Core statement has. It still
    runs through the connection (``exec_driver_sql``): transactions, cursor
    events and the translation of the driver's errors are SQLAlchemy's as for
    any statement. What differs: ``before_execute`` listeners see the SQL
    text, not the Core statement; a bind processor's error is raised as it
    is, not wrapped in ``StatementError``; rows come back as the driver gives
    them (so only statements whose result columns need no conversion are
    prepared: :func:`prepare` refuses the others); and execution options that
    rewrite statements are not applied, so the ledger uses this only with
    psycopg and pysqlite, without a ``schema_translate_map``
    (``Ledger._execute``).
    """

    sql: str
    constants: Mapping[str, Any]
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]

    def run(
        self, conn: Connection, params: dict[str, Any] | list[dict[str, Any]]
    ) -> CursorResult[Any]:
        """Execute with ``params`` (a list: executemany), which this fills in place."""
        for row in params if isinstance(params, list) else [params]:
            for name, process in self.processors:
                if name in row:
                    row[name] = process(row[name])
            for name, value in self.constants.items():
                row.setdefault(name, value)  # a value the caller passes wins, as in Core
        return conn.exec_driver_sql(self.sql, params)


# Drivers whose SQL takes parameters by name, and how a parameter is written.
# pysqlite's dialect renders ``?`` (qmark); its driver takes ``:name`` with a dict
# too, so the statement is compiled for a copy of the dialect set to that style.
PREPARED_DRIVERS: Final = {"psycopg": "pyformat", "pysqlite": "named"}
_PLACEHOLDER: Final = {"pyformat": re.compile(r"%\((\w+)\)s"), "named": re.compile(r":(\w+)")}


def prepare(
    statement: Any, dialect: Dialect, keys: Sequence[str] = (), *, many: bool = False
) -> Prepared | None:
    """Compile ``statement`` for ``dialect`` (a driver of ``PREPARED_DRIVERS``)
    as Core would for parameters named ``keys`` (``many``: an executemany), or
    None when its result needs SQLAlchemy's conversion (a JSON or datetime
    column read back) or its parameters do (a Python-side column default, an
    expanding ``IN`` list), which a driver's SQL does not get."""
    paramstyle = PREPARED_DRIVERS[dialect.driver]
    if dialect.paramstyle != paramstyle:
        dialect = copy.copy(dialect)
        dialect.paramstyle = paramstyle
        dialect.positional = False
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=many)
    if compiled.insert_prefetch or compiled.update_prefetch:
        return None  # a Python-side column default: Core's execution computes it
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None  # an expanding IN list or a literal rendered per execution
    # A private attribute of SQLAlchemy's compiler: if a version renames it, prepare
    # nothing (fail closed: Core then converts the results) rather than guess.
    result_columns = getattr(compiled, "_result_columns", None)
    if result_columns is None:
        return None
    for column in result_columns:
        if column[3]._cached_result_processor(dialect, None) is not None:
            return None
    sql = str(compiled)
    rendered = set(_PLACEHOLDER[paramstyle].findall(sql))
    constants = {}
    processors = []
    for name, bind in compiled.binds.items():
        if name not in rendered:
            continue  # rendered inline (a literal), not a parameter
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if not bind.required:  # a literal passed as a parameter, bound as Core binds it
            constants[name] = bind.value if process is None else process(bind.value)
            continue
        if process is not None:
            processors.append((name, process))
    return Prepared(sql, constants, tuple(processors))


_SIZE: Final = re.compile(r"\(\d+(?:,\s*\d+)?\)")  # a type's length or precision


@dataclass(frozen=True, slots=True)
class ArrayInsert:
    """PostgreSQL: many rows in one statement, one array parameter per column.

    ``INSERT INTO t (a, b) SELECT a, b FROM unnest(%(c0)b::bigint[], ...) WITH
    ORDINALITY ... ORDER BY n``: the rows go in the order given, so their ids
    follow it (PostgreSQL inserts an ``INSERT ... SELECT``'s rows in the
    select's order and hands out serial ids as it inserts; its documentation
    does not promise it, so ``_write_batch`` matches entry ids by key, and only
    the order of a batch's outbox ids rests on it), and the driver sends a
    handful of arrays instead of a statement per row (psycopg's executemany:
    one server execution, and its Python, per row) or SQLAlchemy's ``VALUES``
    pages with a parameter per value. Each value goes through its column
    type's bind processor, as a Core insert's would.
    """

    sql: str
    columns: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> CursorResult[Any]:
        """Insert ``rows`` (each with every column of this insert)."""
        params: dict[str, list[Any]] = {}
        for i, (name, process) in enumerate(zip(self.columns, self.processors, strict=True)):
            values = [row[name] for row in rows]
            params[f"c{i}"] = values if process is None else [process(v) for v in values]
        return conn.exec_driver_sql(self.sql, params)


def array_insert(
    table: sa.Table,
    columns: Sequence[str],
    dialect: Dialect,
    returning: Sequence[str] = (),
    *,
    skip_taken: str | None = None,
) -> ArrayInsert | None:
    """The :class:`ArrayInsert` of ``columns`` into ``table`` (PostgreSQL with psycopg),
    returning ``returning`` for each row inserted; None when a column left out
    has a Python-side default (Core's insert computes it). ``skip_taken``: a
    unique column; a row whose value of it is taken is not inserted (``ON
    CONFLICT (column) DO NOTHING``: it returns nothing, and one another
    transaction is inserting is waited for). Any other unique violation still
    fails the insert.

    Each array is cast to its column's type without a length (``VARCHAR[]``,
    not ``VARCHAR(255)[]``): an explicit cast to ``varchar(n)`` cuts a longer
    string short, while storing it in the column refuses it, as Core's insert
    does."""
    if any(c.default is not None for c in table.columns if c.name not in columns):
        return None
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    alias = ", ".join(f"c{i}" for i in range(len(columns)))
    arrays = ", ".join(
        f"%(c{i})b::{_SIZE.sub('', table.c[name].type.compile(dialect=dialect))}[]"
        for i, name in enumerate(columns)
    )
    # Only identifiers (quoted by the dialect) and type names go into the text; the
    # values are parameters.
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names}) "  # noqa: S608
        f"SELECT {alias} FROM unnest({arrays}) WITH ORDINALITY AS rows_in({alias}, n) "
        "ORDER BY n"
    )
    if skip_taken is not None:
        sql += f" ON CONFLICT ({quote(skip_taken)}) DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(quote(name) for name in returning)
    processors = tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    )
    return ArrayInsert(sql, tuple(columns), processors)


@dataclass(frozen=True, slots=True)
class ArrayUpdate:
    """PostgreSQL: the balance rows of a flush updated in one statement, one array
    parameter per column (see :func:`balances_update`)."""

    sql: str

    def run(self, conn: Connection, rows: Sequence[Mapping[str, int]]) -> set[tuple[int, int]]:
        """Apply ``rows`` (``b_account``, ``b_shard``, ``d_posted``, ``d_pd``,
        ``d_pc``, one per balance row); the ``(account, shard)`` of the rows the
        guard let through (a row missing is refused, or gone)."""
        params = {
            name: [row[name] for row in rows]
            for name in ("b_account", "b_shard", "d_posted", "d_pd", "d_pc")
        }
        result = conn.exec_driver_sql(self.sql, params)
        return {(int(account), int(shard)) for account, shard in result}


def balances_update(balances: sa.Table, dialect: Dialect) -> ArrayUpdate:
    """The :class:`ArrayUpdate` of ``balances`` (psycopg): each row gets its deltas
    where ``allow_overdraft`` or its available balance after them is not below
    zero, as ``update_balance_checked`` does row by row, and the rows updated come
    back.

    The rows are locked first, in ascending ``(account, shard)`` order (a
    ``SELECT ... ORDER BY ... FOR UPDATE`` materialised before the update), as
    the row-by-row executemany takes them: two transactions then never wait on
    each other in a cycle, whatever join the planner picks for the update. The
    guard and the new values are computed from the rows as that select locked
    them, the latest committed versions (it waits for a transaction holding
    one), not as the statement's snapshot saw them: a deposit committed while
    the update waited counts, and a withdrawal too.
    """
    table = dialect.identifier_preparer.format_table(balances)
    # Only the table's name (quoted by the dialect) goes into the text; the values
    # are parameters.
    sql = f"""WITH d AS (
    SELECT * FROM unnest(
        %(b_account)b::bigint[], %(b_shard)b::smallint[], %(d_posted)b::bigint[],
        %(d_pd)b::bigint[], %(d_pc)b::bigint[]
    ) AS d(a, s, dp, dpd, dpc)
), locked AS MATERIALIZED (
    SELECT lb.account_id, lb.shard, lb.allow_overdraft, lb.normal_sign,
        lb.posted, lb.pending_debit, lb.pending_credit, lb.version
    FROM {table} lb JOIN d ON lb.account_id = d.a AND lb.shard = d.s
    ORDER BY lb.account_id, lb.shard FOR UPDATE OF lb
)
UPDATE {table} b SET
    posted = l.posted + d.dp,
    pending_debit = l.pending_debit + d.dpd,
    pending_credit = l.pending_credit + d.dpc,
    version = l.version + 1
FROM d JOIN locked l ON l.account_id = d.a AND l.shard = d.s
WHERE b.account_id = d.a AND b.shard = d.s AND (
    l.allow_overdraft OR CASE WHEN l.normal_sign = 1
        THEN (l.posted + d.dp) - (l.pending_credit + d.dpc)
        ELSE -(l.posted + d.dp) - (l.pending_debit + d.dpd) END >= 0
)
RETURNING b.account_id, b.shard"""  # noqa: S608
    return ArrayUpdate(sql)
