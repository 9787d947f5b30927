"""The read path's query plans: index lookups, never a scan of the entries or postings.

Every statement ``balance``, ``balances``, ``history`` (shallow and deep, with
filters) and ``entries_page`` send is captured and EXPLAINed with its own
parameters, before and after the planner has statistics (``ANALYZE``, which
is what SQLite's ``PRAGMA optimize`` runs).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from spaktok_ledger import AccountKind, AccountSpec, EntryDraft, Ledger, Posting

BIG = "user:1:wallet"
OTHER = "user:2:wallet"
DEBT = "user:1:receivable"
CASH = "platform:cash"
REVENUE = "platform:revenue"
# PostgreSQL rightly hashes a small table rather than probe its index; at
# tens of thousands of entries the index is the plan to expect.
SIZES = {"sqlite": 6_000, "postgresql": 30_000}


def seed(ledger: Ledger) -> None:
    """Two-leg entries on BIG (bulk), then a few holds, one posted and one voided."""
    seeded = SIZES[ledger.dialect]
    ledger.open_accounts(
        [
            AccountSpec(BIG, AccountKind.LIABILITY, allow_overdraft=True),
            AccountSpec(OTHER, AccountKind.LIABILITY, allow_overdraft=True),
            AccountSpec(DEBT, AccountKind.ASSET, allow_overdraft=True),
            AccountSpec(CASH, AccountKind.ASSET, allow_overdraft=True),
            AccountSpec(REVENUE, AccountKind.REVENUE, allow_overdraft=True),
        ]
    )
    t = ledger.tables
    ids = {code: ledger.account(code).id for code in (BIG, OTHER, CASH)}
    now = ledger.now()
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        conn.execute(
            t.entries.insert(),
            [
                {
                    "id": i,
                    "type": "seed" if i % 2 else "gift",
                    "phase": "posted",
                    "idempotency_key": f"seed:{i}",
                    "request_hash": "-",
                    "description": "",
                    "metadata": {},
                    "effective_at": now - timedelta(seconds=seeded - i),
                    "recorded_at": now,
                }
                for i in range(1, seeded + 1)
            ],
        )
        conn.execute(
            t.postings.insert(),
            [
                row
                for i in range(1, seeded + 1)
                for row in (
                    {"entry_id": i, "account_id": ids[CASH], "amount": 1, "currency": "USD"},
                    {
                        "entry_id": i,
                        "account_id": ids[BIG if i % 3 else OTHER],
                        "amount": -1,
                        "currency": "USD",
                    },
                )
            ],
        )
        b = t.balances
        big = sum(1 for i in range(1, seeded + 1) if i % 3)
        for account_id, delta in (
            (ids[CASH], seeded),
            (ids[BIG], -big),
            (ids[OTHER], big - seeded),
        ):
            conn.execute(
                b.update().where(b.c.account_id == account_id).values(posted=b.c.posted + delta)
            )
        if ledger.dialect == "postgresql":
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{t.entries.name}', 'id'), {seeded})"
            )
    holds = [
        ledger.hold(
            EntryDraft("gift", (Posting.debit(BIG, 2), Posting.credit(REVENUE, 2)), f"h{i}")
        ).id
        for i in range(3)
    ]
    ledger.post_hold(holds[0])
    ledger.void_hold(holds[1])
    assert ledger.verify().ok


def captured(ledger: Ledger, read) -> list[tuple[str, object]]:
    """The statements (with their parameters) that ``read()`` sends."""
    seen: list[tuple[str, object]] = []

    def listen(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append((statement, parameters))

    engine = ledger.engine
    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        read()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    return [
        (sql, params)
        for sql, params in seen
        if sql.lstrip().upper().startswith("SELECT") and ledger.prefix in sql
    ]


def scans(ledger: Ledger, statements: list[tuple[str, object]]) -> list[str]:
    """Plan lines that read every row of the entries or postings (or their indexes)."""
    entries, postings = ledger.tables.entries.name, ledger.tables.postings.name
    bad = []
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        for sql, params in statements:
            if ledger.dialect == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
                for row in rows:
                    detail = row[-1]
                    # "SCAN t" / "SCAN t USING INDEX i": every row; "SEARCH": an index range.
                    if re.match(rf"SCAN ({entries}|{postings})\b", detail) or (
                        re.match(r"SCAN ", detail)
                        and re.search(rf"\b({entries}|{postings})\b", detail)
                    ):
                        bad.append(f"{detail}  <- {sql}")
            else:
                plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar_one()
                plan = plan if isinstance(plan, list) else json.loads(plan)
                for node in _nodes(plan[0]["Plan"]):
                    if node["Node Type"] == "Seq Scan" and node["Relation Name"] in (
                        entries,
                        postings,
                    ):
                        bad.append(f"Seq Scan on {node['Relation Name']}  <- {sql}")
                    # A parallel plan for a page: the planner expects thousands of
                    # rows, and starting its workers costs more than the page.
                    if node["Node Type"] in ("Gather", "Gather Merge"):
                        bad.append(f"{node['Node Type']}  <- {sql}")
    return bad


def sorted_histories(ledger: Ledger, statements: list[tuple[str, object]]) -> list[str]:
    """Plan lines that sort an account's postings rather than walk them in index order.

    A walk on ``(account_id, id)`` already yields postings newest first; a sort
    above it (with no LIMIT in between) reads and sorts the account's whole
    history before a page is cut from it: the plan SQLite picks, without
    statistics, for ``account_id IN (...) ORDER BY id DESC LIMIT n``.
    """
    index = f"{ledger.prefix}postings_account"
    bad = []
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        for sql, params in statements:
            if ledger.dialect == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
                walks = {
                    r[1]
                    for r in rows
                    if re.search(rf"^SEARCH \S+ USING (COVERING )?INDEX {index}\b", r[-1])
                }
                bad += [
                    f"{r[-1]} over {index}  <- {sql}"
                    for r in rows
                    if r[-1].startswith("USE TEMP B-TREE FOR ORDER BY") and r[1] in walks
                ]
            else:
                plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar_one()
                plan = plan if isinstance(plan, list) else json.loads(plan)
                bad += [
                    f"Sort over {index}  <- {sql}"
                    for node in _nodes(plan[0]["Plan"])
                    if node["Node Type"] in ("Sort", "Incremental Sort")
                    and any(n.get("Index Name") == index for n in _unlimited(node))
                ]
    return bad


def _unlimited(node: dict) -> list[dict]:
    """The nodes below ``node`` that no Limit node stands between."""
    out = []
    for child in node.get("Plans", []):
        if child["Node Type"] != "Limit":
            out += [child, *_unlimited(child)]
    return out


def _nodes(node: dict) -> list[dict]:
    out = [node]
    for child in node.get("Plans", []):
        out.extend(_nodes(child))
    return out


def analyze(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        if ledger.dialect == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("PRAGMA optimize")
        else:
            for table in (ledger.tables.entries, ledger.tables.postings, ledger.tables.balances):
                conn.exec_driver_sql(f"ANALYZE {table.name}")


def reads(ledger: Ledger) -> dict[str, object]:
    """Each read the plans are checked for."""
    first = ledger.history(BIG, limit=50)
    deep_cursor = first.next_cursor
    for _ in range(3):
        deep_cursor = ledger.history(BIG, limit=500, cursor=deep_cursor).next_cursor
    page = ledger.entries_page([BIG, DEBT], limit=50)
    since = ledger.now() - timedelta(seconds=SIZES[ledger.dialect] // 2)
    return {
        "balance": lambda: ledger.balance(BIG),
        "balances": lambda: ledger.balances([BIG, OTHER, CASH]),
        "history": lambda: ledger.history(BIG, limit=50),
        "history deep": lambda: ledger.history(BIG, limit=50, cursor=deep_cursor),
        "history filtered": lambda: ledger.history(BIG, limit=50, types=["gift"], since=since),
        "entries_page": lambda: ledger.entries_page([BIG, DEBT], limit=50),
        "entries_page next": lambda: ledger.entries_page(
            [BIG, DEBT], limit=50, cursor=page.next_cursor
        ),
        "entries_page filtered": lambda: ledger.entries_page(
            [BIG, DEBT], limit=50, types=["gift"], since=since
        ),
        "entries_page, many accounts": lambda: ledger.entries_page(
            [BIG, DEBT, OTHER, CASH, REVENUE], limit=50
        ),
    }


@pytest.mark.parametrize("stats", [False, True], ids=["no-stats", "analyzed"])
def test_reads_use_indexes_only(ledger: Ledger, stats: bool) -> None:
    """No read scans the entries or postings, with or without planner statistics."""
    seed(ledger)
    if stats:
        analyze(ledger)
    for name, read in reads(ledger).items():
        statements = captured(ledger, read)
        assert statements, name
        assert scans(ledger, statements) == [], name
        assert sorted_histories(ledger, statements) == [], name


# SQLite only (PostgreSQL merges the accounts' index walks for this page: Merge Append);
# parametrized rather than skipped, since a skipped PostgreSQL test fails CI.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_sorted_history_is_caught(ledger: Ledger) -> None:
    """The plan check flags the page SQLite sorts without statistics (one IN for both accounts)."""
    seed(ledger)
    t = ledger.tables
    ids = [ledger.account(BIG).id, ledger.account(DEBT).id]
    naive = (
        sa.select(t.postings.c.id, t.postings.c.entry_id)
        .where(t.postings.c.account_id.in_(ids))
        .order_by(t.postings.c.id.desc())
        .limit(51)
        .compile(ledger.engine, compile_kwargs={"literal_binds": True})
    )
    assert sorted_histories(ledger, [(str(naive), ())]), "a sort of both accounts' postings"


def test_history_of_holds_reports_their_resolution(ledger: Ledger) -> None:
    """Holds on a page carry how they were resolved (looked up on the hold index)."""
    seed(ledger)
    analyze(ledger)
    items = ledger.history(BIG, limit=4).items
    statuses = sorted(i.hold_status.value for i in items if i.phase.value == "pending")
    assert statuses == ["pending", "posted", "voided"]


def test_statement_page_stays_serial_before_analyze(ledger: Ledger) -> None:
    """At 100,000 entries without statistics, no statement of a statement page runs in parallel.

    PostgreSQL guesses that 50 entry ids match a quarter of the postings; with
    the legs joined to the accounts that guess bought a parallel plan whose
    worker start-up took 15 ms for 100 rows.
    """
    if ledger.dialect != "postgresql":
        pytest.skip("parallel plans are PostgreSQL's")
    ledger.open_accounts(
        [
            AccountSpec(BIG, AccountKind.LIABILITY, allow_overdraft=True),
            AccountSpec(DEBT, AccountKind.ASSET, allow_overdraft=True),
            AccountSpec(CASH, AccountKind.ASSET, allow_overdraft=True),
        ]
    )
    t = ledger.tables
    big, cash = ledger.account(BIG).id, ledger.account(CASH).id
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        for table in (t.entries.name, t.postings.name):  # no statistics while the test runs
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        # Bulk rows for the plan only: the guard triggers are not what is tested here.
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.exec_driver_sql(
            f"INSERT INTO {t.entries.name} (id, type, phase, idempotency_key, request_hash,"
            " description, metadata, effective_at, recorded_at)"
            " SELECT i, 'seed', 'posted', 'seed:' || i, '-', '', '{}', now(), now()"
            " FROM generate_series(1, 100000) i"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {t.postings.name} (entry_id, account_id, amount, currency)"
            f" SELECT i, a, CASE WHEN a = {big} THEN -1 ELSE 1 END, 'USD'"
            f" FROM generate_series(1, 100000) i, (VALUES ({big}), ({cash})) v(a) ORDER BY i, a"
        )
    page = ledger.entries_page([BIG, DEBT], limit=50)
    assert len(page.entries) == 50
    for read in (
        lambda: ledger.entries_page([BIG, DEBT], limit=50),
        lambda: ledger.entries_page([BIG, DEBT], limit=50, cursor=page.next_cursor),
    ):
        statements = captured(ledger, read)
        assert statements
        assert scans(ledger, statements) == []
