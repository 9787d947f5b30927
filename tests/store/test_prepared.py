"""Hot-path statements run as the driver's SQL, compiled once (``Prepared``, issue 14).

``Ledger._execute`` runs a Core statement as SQL text on psycopg and pysqlite.
What SQLAlchemy's execution of the Core statement would do and a driver's SQL
does not (a Python-side column default, converting a JSON or datetime column
read back) must not be lost: ``prepare`` refuses such a statement, and it runs
as Core. The tests run on both drivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from spaktok_ledger import Ledger
from spaktok_ledger._store._schema import UTCDateTime
from spaktok_ledger._store._together import prepare


@pytest.fixture
def table(ledger: Ledger, prefix: str) -> Iterator[sa.Table]:
    """A table of the test's own, with a Python-side default, a JSON column and a
    time-zone-aware datetime."""
    table = sa.Table(
        f"{prefix}probe",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("a", sa.Integer, nullable=False),
        sa.Column("ab", sa.Integer),
        sa.Column("note", sa.String(20), nullable=False, default=lambda: "from python"),
        sa.Column("doc", sa.JSON),
        sa.Column("at", UTCDateTime),
    )
    assert ledger.engine is not None
    table.create(ledger.engine)
    yield table
    table.drop(ledger.engine)


def _run(ledger: Ledger, statement: object, params: object) -> list[tuple[object, ...]]:
    def unit(tx: Ledger) -> list[tuple[object, ...]]:
        result = tx._execute(tx.connection(), statement, params)  # type: ignore[arg-type]
        return [tuple(row) for row in result.all()] if result.returns_rows else []

    return ledger.atomic(unit)


def test_a_python_side_default_is_applied(ledger: Ledger, table: sa.Table) -> None:
    """An insert that leaves a column to its Python default runs as Core (the driver's
    SQL would bind None, and the NOT NULL column refuse it)."""
    assert ledger.engine is not None
    dialect = ledger.engine.dialect
    assert prepare(table.insert(), dialect, ["a"]) is None
    _run(ledger, table.insert(), {"a": 1})
    _run(ledger, table.insert(), [{"a": 2}, {"a": 3}])
    _run(ledger, table.insert(), {"a": 4, "note": "given"})
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.a, table.c.note).order_by(table.c.a)).all()
    assert [tuple(r) for r in rows] == [
        (1, "from python"),
        (2, "from python"),
        (3, "from python"),
        (4, "given"),
    ]


def test_columns_read_back_are_converted(ledger: Ledger, table: sa.Table) -> None:
    """A select or RETURNING of a JSON or datetime column runs as Core, so the row
    holds a dict and an aware datetime, not the driver's text."""
    at = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    _run(ledger, table.insert(), {"a": 1, "note": "n", "doc": {"k": [1, 2]}, "at": at})
    read = sa.select(table.c.doc, table.c.at).where(table.c.a == sa.bindparam("want"))
    assert ledger.engine is not None
    assert prepare(read, ledger.engine.dialect, ["want"]) is None
    assert _run(ledger, read, {"want": 1}) == [({"k": [1, 2]}, at)]
    returning = table.insert().returning(table.c.doc)
    assert _run(ledger, returning, {"a": 2, "note": "n", "doc": {"x": 1}}) == [({"x": 1},)]
    # Integers and strings need no conversion: that select is prepared.
    plain = sa.select(table.c.a, table.c.note).where(table.c.a == sa.bindparam("want"))
    assert prepare(plain, ledger.engine.dialect, ["want"]) is not None
    assert _run(ledger, plain, {"want": 2}) == [(2, "n")]


def test_parameters_get_their_types_processing(ledger: Ledger, table: sa.Table) -> None:
    """JSON and datetime parameters are bound as their types bind them (a parameter
    whose name starts another's is found on its own), and the caller's dicts are
    not changed."""
    assert ledger.engine is not None
    insert = table.insert()
    keys = ["a", "ab", "note", "doc", "at"]
    prepared = prepare(insert, ledger.engine.dialect, keys)
    assert prepared is not None
    assert sorted(name for name, _ in prepared.processors) == ["at", "doc"]
    at = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    row = {"a": 1, "ab": 2, "note": "n", "doc": {"k": "v"}, "at": at}
    _run(ledger, insert, row)
    assert row["doc"] == {"k": "v"} and row["at"] is at
    read = sa.select(table.c.a, table.c.ab, table.c.doc, table.c.at)
    assert _run(ledger, read, {}) == [(1, 2, {"k": "v"}, at)]


def test_a_literal_is_passed_as_a_constant(ledger: Ledger, table: sa.Table) -> None:
    """A value built into the statement (not a parameter the caller passes) is bound
    from the statement on every run."""
    _run(ledger, table.insert(), [{"a": 5, "note": "five"}, {"a": 6, "note": "six"}])
    read = sa.select(table.c.note).where(table.c.a == sa.bindparam("want") + sa.bindparam("one", 1))
    assert ledger.engine is not None
    prepared = prepare(read, ledger.engine.dialect, ["want"])
    assert prepared is not None and prepared.constants == {"one": 1}
    assert _run(ledger, read, {"want": 4}) == [("five",)]
    assert _run(ledger, read, {"want": 5}) == [("six",)]
    # A value the caller passes for it wins, as in Core.
    assert _run(ledger, read, {"want": 4, "one": 2}) == [("six",)]


def test_an_expanding_list_runs_as_core(ledger: Ledger, table: sa.Table) -> None:
    """An ``IN`` list rendered per call (one placeholder per item) is not prepared: its
    SQL depends on the list."""
    _run(ledger, table.insert(), [{"a": n, "note": str(n)} for n in (1, 2, 3)])
    read = sa.select(table.c.a).where(table.c.a.in_(sa.bindparam("want", expanding=True)))
    assert ledger.engine is not None
    assert prepare(read, ledger.engine.dialect, ["want"]) is None
    assert _run(ledger, read.order_by(table.c.a), {"want": [1, 3]}) == [(1,), (3,)]
    assert _run(ledger, read.order_by(table.c.a), {"want": [2]}) == [(2,)]


# --- many rows as arrays (ArrayInsert, PostgreSQL with psycopg) --------------------------

HOSTILE = [
    "",
    "a,b",
    "{x}",
    '"q"',
    "back\\slash",
    "NULL",
    "null",
    " lead",
    "tab\tnew\nline",
    "ü€😀",
]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_array_insert_keeps_values_order_and_types(ledger: Ledger, table: sa.Table) -> None:
    """Each value goes in as its column's type binds it (JSON, an aware datetime,
    None), strings a text array would need to escape come back as they were, and
    the rows take ids in the order given."""
    at = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    rows = [
        {
            "a": n,
            "ab": None if n % 2 else n,
            "note": text,
            "doc": {"text": text, "n": [n, None]},
            "at": None if n == 3 else at,
        }
        for n, text in enumerate(HOSTILE)
    ]

    def unit(tx: Ledger) -> list[tuple[object, ...]]:
        return [
            tuple(r) for r in tx._insert_many(tx.connection(), table, rows, returning=["id", "a"])
        ]

    returned = ledger.atomic(unit)
    assert [a for _, a in returned] == list(range(len(HOSTILE)))
    assert [i for i, _ in returned] == sorted(i for i, _ in returned)
    read = sa.select(table.c.a, table.c.ab, table.c.note, table.c.doc, table.c.at).order_by(
        table.c.id
    )
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        stored = [tuple(r) for r in conn.execute(read)]
    assert stored == [(r["a"], r["ab"], r["note"], r["doc"], r["at"]) for r in rows]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_array_insert_refuses_a_naive_datetime_writing_nothing(
    ledger: Ledger, table: sa.Table
) -> None:
    """A value its column's type refuses (a naive datetime) fails the whole insert."""
    from spaktok_ledger import InvalidInput

    rows = [
        {"a": 1, "ab": 1, "note": "n", "doc": {}, "at": datetime(2026, 12, 2, tzinfo=UTC)},
        {"a": 2, "ab": 2, "note": "n", "doc": {}, "at": datetime(2026, 12, 2)},
    ]
    with pytest.raises(InvalidInput, match="timezone-aware"):
        ledger.atomic(lambda tx: tx._insert_many(tx.connection(), table, rows))
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_array_insert_refuses_a_string_too_long_for_its_column(
    ledger: Ledger, table: sa.Table
) -> None:
    """A string longer than its column (here 21 characters for 20) is refused, as by
    Core's insert, not cut short: the arrays are cast to the types without their
    lengths, so the column's own check applies."""
    rows = [{"a": 1, "ab": 1, "note": "x" * 21, "doc": {}, "at": None}]
    with pytest.raises(sa.exc.DataError, match="too long"):
        ledger.atomic(lambda tx: tx._insert_many(tx.connection(), table, rows))
    ok = [{"a": 2, "ab": 2, "note": "y" * 20, "doc": {}, "at": None}]
    ledger.atomic(lambda tx: tx._insert_many(tx.connection(), table, ok))
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        assert conn.execute(sa.select(table.c.a, table.c.note)).all() == [(2, "y" * 20)]


def test_many_rows_leaving_a_python_default_out_get_it(ledger: Ledger, table: sa.Table) -> None:
    """Rows without a column that has a Python-side default are inserted as Core inserts
    them (the default applied), on every driver."""
    rows = [{"a": n, "ab": None, "doc": None, "at": None} for n in (1, 2)]
    ledger.atomic(lambda tx: tx._insert_many(tx.connection(), table, rows))
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        stored = conn.execute(sa.select(table.c.a, table.c.note).order_by(table.c.a)).all()
    assert [tuple(r) for r in stored] == [(1, "from python"), (2, "from python")]


@pytest.mark.parametrize("with_note", [True, False])
def test_many_rows_skip_a_taken_key_and_return_the_rest(
    ledger: Ledger, table: sa.Table, with_note: bool
) -> None:
    """``skip_taken``: a row whose key is taken is left out (``ON CONFLICT (id) DO
    NOTHING``) and only the rows inserted come back; as arrays on psycopg, as Core
    elsewhere or when a column with a Python-side default is left out."""
    ledger.atomic(lambda tx: tx._insert_many(tx.connection(), table, [_probe(2, "first")]))
    rows = [_probe(n, "again") for n in (1, 2, 3)]
    if not with_note:
        for row in rows:
            del row["note"]

    def unit(tx: Ledger) -> list[int]:
        result = tx._insert_many(tx.connection(), table, rows, returning=["id"], skip_taken="id")
        return sorted(r.id for r in result)

    assert ledger.atomic(unit) == [1, 3]
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        stored = conn.execute(sa.select(table.c.id, table.c.note).order_by(table.c.id)).all()
    note = "again" if with_note else "from python"
    assert [tuple(r) for r in stored] == [(1, note), (2, "first"), (3, note)]


def _probe(n: int, note: str) -> dict[str, object]:
    return {"id": n, "a": n, "ab": None, "note": note, "doc": None, "at": None}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_balances_update_locks_its_rows_in_order(ledger: Ledger) -> None:
    """The update of arrays locks its rows sorted by (account, shard) before updating
    them (``LockRows`` over a ``Sort`` in a materialised CTE), whatever join the
    planner picks for the update itself: two transactions then never wait on each
    other in a cycle, as with the row-by-row executemany it replaces."""
    from spaktok_ledger._store._together import balances_update

    assert ledger.engine is not None
    statement = balances_update(ledger.tables.balances, ledger.engine.dialect)
    params = {name: [3, 1, 2] for name in ("b_account", "b_shard", "d_posted", "d_pd", "d_pc")}
    with ledger.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement.sql, params).scalar()

    def nodes(node: dict[str, object]) -> Iterator[dict[str, object]]:
        yield node
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            yield from nodes(child)

    locks = [n for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "LockRows"]
    assert len(locks) == 1 and locks[0]["Subplan Name"] == "CTE locked", plan
    below = locks[0]["Plans"][0]  # type: ignore[index]
    assert below["Node Type"] == "Sort", plan
    assert below["Sort Key"] == ["lb.account_id", "lb.shard"], plan
