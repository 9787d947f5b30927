"""Benchmark: the library against honest floors, as paired ratios (min / median / max).

    python3 dev.py bench                                   # everything, both databases
    .venv/bin/python bench/ledger_bench.py --skip-postgres # SQLite only
    .venv/bin/python bench/ledger_bench.py --only reads    # writes | reads | statement | imports

Every figure is a **ratio** from paired rounds: in each round the library and
its floor run the same work back to back (the order alternates), so load
from other processes hits both alike; the table gives the min, median and
max of the per-round ratios. Absolute times are never printed: on a shared
machine they mean nothing.

The floors are what a careful developer writes by hand with SQLAlchemy Core,
statements built once:

* **writes**: one entry row with its idempotency key, its postings in one
  ``executemany``, the guarded balance update of a **no-overdraft** source
  account (the update only applies if the money is there), the destination's
  update, one commit per transfer. Two floors: a *minimal schema* (entries,
  postings, balances, nothing else) and the *library's own tables*.
  Ratio = library transfers/s / floor transfers/s (higher is better).
Reads on both sides run in a read transaction of their own (``engine.connect()``;
on SQLite a plain ``BEGIN``, as the library's reads use).

* **balance**: ``Ledger.balance(code)`` / a prebuilt
  ``SELECT posted, pending_debit, pending_credit FROM balances WHERE account_id = ?``
  on its own connection checkout. Ratio = time / floor time (lower is better).
* **history**: ``Ledger.history(code, limit=50)`` / a prebuilt keyset page
  (``postings JOIN entries WHERE account_id = ? AND id < ? ORDER BY id DESC
  LIMIT 50``, selecting the entry columns a statement line shows), on an
  account with 100,000 postings, at the newest page (shallow) and at its
  oldest postings (deep); before and after ``ANALYZE``
  (on SQLite, what ``PRAGMA optimize`` runs).
* **statement**: ``GiftEconomy.history(user_id=...)`` (``Ledger.entries_page``
  over the user's wallet and receivable, 100,000 postings on the wallet) / the
  best hand-written page of the same entries and their legs, two prebuilt
  statements: (1) per account, its postings below the cursor on the
  ``(account_id, id)`` index, newest first, ``LIMIT 51`` (the page and one
  more, to know whether there is a next page), each arm a subquery with its
  own ``ORDER BY``/``LIMIT``, combined with ``UNION ALL``, ``ORDER BY id DESC
  LIMIT 51``, joined to the entries by primary key; (2) the legs of the 50
  shown entries (``entry_id IN (...)``, account ids mapped to codes from a
  dict built once: joined to the accounts instead, PostgreSQL without
  statistics runs it as a parallel plan, 15 ms for 100 rows). Each entry
  once (deduplicated in Python, as the library does). A single
  ``account_id IN (...) ORDER BY id DESC LIMIT 50`` is not the floor: without
  statistics SQLite sorts every posting of the accounts for it (the library
  was "50x faster" than that). Before the run the bench checks that the floor
  reads the library's page (same entries, same next-page answer, every leg).
* **imports**: ``import spaktok_ledger`` / ``import sqlalchemy``, each in a
  fresh interpreter; and what a process that only posts imports
  (``from spaktok_ledger import Ledger``) / ``import sqlalchemy``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count

import sqlalchemy as sa
from _common import drop_ledger_tables  # bench/, the script's directory

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    Gift,
    GiftCatalogue,
    GiftEconomy,
    Ledger,
    Posting,
    create_engine,
)
from spaktok_ledger._store._engine import READ_ONLY

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_ids = count()


@dataclass(frozen=True)
class Result:
    measure: str
    database: str
    ratios: list[float]
    target: float | None
    """None: shown for information, no target."""
    higher_is_better: bool

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ok(self) -> bool:
        m = self.median
        if self.target is None:
            return True
        return m >= self.target if self.higher_is_better else m <= self.target

    def row(self) -> str:
        if self.target is None:
            bar, verdict = "-", "(info)"
        else:
            bar = (">= " if self.higher_is_better else "<= ") + f"{self.target:g}"
            verdict = "ok" if self.ok else "MISSED"
        return (
            f"{self.measure:<44}{self.database:<12}{min(self.ratios):>7.2f}{self.median:>8.2f}"
            f"{max(self.ratios):>7.2f}   {bar:<9}{verdict}"
        )


def paired(lib: Callable[[], None], floor: Callable[[], None], rounds: int) -> list[float]:
    """Per-round ratios time(lib) / time(floor), the order alternating each round."""
    ratios = []
    for r in range(rounds):
        times = {}
        for name in ("lib", "floor") if r % 2 == 0 else ("floor", "lib"):
            fn = lib if name == "lib" else floor
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        ratios.append(times["lib"] / times["floor"])
    return ratios


# -- writes -------------------------------------------------------------------------


class MinimalFloor:
    """Hand-written transfers on the smallest schema that keeps the same promises."""

    def __init__(self, engine: sa.Engine, prefix: str) -> None:
        md = self.metadata = sa.MetaData()
        self.entries = sa.Table(
            f"{prefix}entries",
            md,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
            sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        )
        self.postings = sa.Table(
            f"{prefix}postings",
            md,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
            sa.Column("entry_id", sa.BigInteger, nullable=False),
            sa.Column("account_id", sa.BigInteger, nullable=False),
            sa.Column("amount", sa.BigInteger, nullable=False),
            sa.Index(f"{prefix}postings_account", "account_id", "id"),
        )
        self.balances = sa.Table(
            f"{prefix}balances",
            md,
            sa.Column("account_id", sa.BigInteger, primary_key=True),
            sa.Column("available", sa.BigInteger, nullable=False),
            sa.Column("overdraft", sa.Boolean, nullable=False),
            sa.CheckConstraint("overdraft OR available >= 0"),
        )
        md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                self.balances.insert(),
                [
                    {"account_id": 1, "available": 10**12, "overdraft": False},
                    {"account_id": 2, "available": 0, "overdraft": True},
                ],
            )
        b = self.balances
        self.insert_entry = self.entries.insert().returning(self.entries.c.id)
        self.insert_postings = self.postings.insert()
        self.take = (
            b.update()
            .where(b.c.account_id == sa.bindparam("a"), b.c.available >= sa.bindparam("n"))
            .values(available=b.c.available - sa.bindparam("n"))
        )
        self.give = (
            b.update()
            .where(b.c.account_id == sa.bindparam("a"))
            .values(available=b.c.available + sa.bindparam("n"))
        )
        self.engine = engine

    def transfer(self, key: str, amount: int) -> None:
        with self.engine.begin() as conn:
            entry_id = conn.execute(self.insert_entry, {"idempotency_key": key}).scalar_one()
            conn.execute(
                self.insert_postings,
                [
                    {"entry_id": entry_id, "account_id": 1, "amount": amount},
                    {"entry_id": entry_id, "account_id": 2, "amount": -amount},
                ],
            )
            if conn.execute(self.take, {"a": 1, "n": amount}).rowcount != 1:
                raise RuntimeError("insufficient funds")
            conn.execute(self.give, {"a": 2, "n": amount})


class LibrarySchemaFloor:
    """The same hand-written transfer on the library's own tables."""

    def __init__(self, ledger: Ledger, src: int, dst: int) -> None:
        t = ledger.tables
        b = t.balances
        bp = sa.bindparam
        self.insert_entry = t.entries.insert().returning(t.entries.c.id)
        self.insert_postings = t.postings.insert()
        row = sa.and_(b.c.account_id == bp("a"), b.c.shard == 0)
        deltas = {"posted": b.c.posted + bp("d"), "version": b.c.version + 1}
        # A credit-normal source: available = -(posted + d) - pending_debit >= 0.
        self.take = (
            b.update().where(row, -(b.c.posted + bp("d")) - b.c.pending_debit >= 0).values(**deltas)
        )
        self.give = b.update().where(row).values(**deltas)
        self.engine = ledger.engine
        self.src, self.dst = src, dst

    def transfer(self, key: str, amount: int) -> None:
        now = datetime.now(UTC)
        assert self.engine is not None
        with self.engine.begin() as conn:
            entry_id = conn.execute(
                self.insert_entry,
                {
                    "type": "gift",
                    "phase": "posted",
                    "idempotency_key": key,
                    "request_hash": "raw",
                    "description": "",
                    "metadata": {},
                    "effective_at": now,
                    "recorded_at": now,
                },
            ).scalar_one()
            conn.execute(
                self.insert_postings,
                [
                    {
                        "entry_id": entry_id,
                        "account_id": self.src,
                        "amount": amount,
                        "currency": "USD",
                    },
                    {
                        "entry_id": entry_id,
                        "account_id": self.dst,
                        "amount": -amount,
                        "currency": "USD",
                    },
                ],
            )
            if conn.execute(self.take, {"a": self.src, "d": amount}).rowcount != 1:
                raise RuntimeError("insufficient funds")
            conn.execute(self.give, {"a": self.dst, "d": -amount})


def bench_writes(engine: sa.Engine, name: str, args: argparse.Namespace) -> list[Result]:
    prefix = f"bw{os.getpid()}_{next(_ids)}_"
    ledger = Ledger(engine, prefix=prefix)
    ledger.migrate()
    ledger.open_accounts(
        [
            AccountSpec("bench:cash", AccountKind.ASSET, allow_overdraft=True),
            AccountSpec("bench:wallet", AccountKind.LIABILITY),  # no overdraft: guarded
            AccountSpec("bench:revenue", AccountKind.REVENUE),
        ]
    )
    funding = (Posting.debit("bench:cash", 10**12), Posting.credit("bench:wallet", 10**12))
    ledger.post(EntryDraft("fund", funding, "fund"))
    minimal = MinimalFloor(engine, f"bf{os.getpid()}_{next(_ids)}_")
    lib_schema = LibrarySchemaFloor(
        ledger, ledger.account("bench:wallet").id, ledger.account("bench:revenue").id
    )
    n = args.transfers
    keys = count()

    def lib() -> None:
        for _ in range(n):
            legs = (Posting.debit("bench:wallet", 1), Posting.credit("bench:revenue", 1))
            ledger.post(EntryDraft("gift", legs, f"l{next(keys)}"))

    def floor_min() -> None:
        for _ in range(n):
            minimal.transfer(f"m{next(keys)}", 1)

    def floor_lib() -> None:
        for _ in range(n):
            lib_schema.transfer(f"r{next(keys)}", 1)

    for fn in (lib, floor_min, floor_lib):  # warm-up: pools, statement caches
        fn()
    target = 0.9 if name == "PostgreSQL" else 0.8
    vs_min = [1 / r for r in paired(lib, floor_min, args.rounds)]
    vs_lib = [1 / r for r in paired(lib, floor_lib, args.rounds)]
    # What the library's tables cost by themselves: the same hand-written transfer
    # on them against the minimal schema (no library code on either side).
    schema = [1 / r for r in paired(floor_lib, floor_min, args.rounds)]
    report = ledger.verify()
    if not report.ok:
        sys.exit(f"verify failed after the write benchmark: {report.problems[:3]}")
    if engine.dialect.name == "postgresql":  # leave the shared database as it was
        with engine.begin() as conn:
            drop_ledger_tables(conn, ledger, prefix)
        minimal.metadata.drop_all(engine)
    return [
        Result("Ledger.post / floor (minimal schema)", name, vs_min, target, True),
        Result("Ledger.post / floor (library schema)", name, vs_lib, target, True),
        Result("floor on library schema / minimal floor", name, schema, None, True),
    ]


# -- reads --------------------------------------------------------------------------


def seed(ledger: Ledger, code: str, others: list[str], postings: int, sign: int = -1) -> None:
    """Bulk-load ``postings`` two-leg entries on ``code`` (set-up, not measured).

    Each moves one unit: ``sign`` on ``code`` (-1: a credit), the opposite on one of ``others``.
    """
    t = ledger.tables
    ids = {c: ledger.account(c).id for c in [code, *others]}
    now = datetime.now(UTC)
    engine = ledger.engine
    assert engine is not None
    with engine.begin() as conn:
        start = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(t.entries.c.id), 0))
        ).scalar_one()
        for offset in range(0, postings, 5000):
            batch = range(start + offset + 1, start + min(offset + 5000, postings) + 1)
            conn.execute(
                t.entries.insert(),
                [
                    {
                        "id": i,
                        "type": "seed",
                        "phase": "posted",
                        "idempotency_key": f"seed:{code}:{i}",
                        "request_hash": "seed",
                        "description": "",
                        "metadata": {},
                        "effective_at": now,
                        "recorded_at": now,
                    }
                    for i in batch
                ],
            )
            conn.execute(
                t.postings.insert(),
                [
                    row
                    for i in batch
                    for row in (
                        {"entry_id": i, "account_id": ids[code], "amount": sign, "currency": "USD"},
                        {
                            "entry_id": i,
                            "account_id": ids[others[i % len(others)]],
                            "amount": -sign,
                            "currency": "USD",
                        },
                    )
                ],
            )
        b = t.balances
        per_other = dict.fromkeys(others, 0)
        for i in range(start + 1, start + postings + 1):
            per_other[others[i % len(others)]] -= sign
        for c, delta in [(code, sign * postings), *per_other.items()]:
            conn.execute(
                b.update()
                .where(b.c.account_id == ids[c], b.c.shard == 0)
                .values(posted=b.c.posted + delta)
            )
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{t.entries.name}', 'id'), "
                f"(SELECT max(id) FROM {t.entries.name}))"
            )


def analyze(ledger: Ledger) -> None:
    engine = ledger.engine
    assert engine is not None
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        else:
            for table in (ledger.tables.entries, ledger.tables.postings, ledger.tables.balances):
                conn.exec_driver_sql(f"ANALYZE {table.name}")


def bench_reads(engine: sa.Engine, name: str, args: argparse.Namespace) -> list[Result]:
    prefix = f"br{os.getpid()}_{next(_ids)}_"
    ledger = Ledger(engine, prefix=prefix)
    economy = GiftEconomy(ledger, GiftCatalogue([Gift("rose", 10)]))
    economy.setup()
    economy.open_user("big")
    wallet, receivable = "user:big:wallet", "user:big:receivable"
    others = ["bench:a", "bench:b", "bench:c"]
    ledger.open_accounts(AccountSpec(o, AccountKind.ASSET, allow_overdraft=True) for o in others)
    ledger.open_accounts(
        [AccountSpec("bench:overdraft", AccountKind.LIABILITY, allow_overdraft=True)]
    )
    seed(ledger, "bench:overdraft", others, 1_000)  # other history in the tables
    # The wallet is no-overdraft: its seeded history credits it (coins in).
    seed(ledger, wallet, others, args.postings)
    seed(ledger, receivable, others, 50, sign=1)
    t = ledger.tables
    p, e, a, b = t.postings, t.entries, t.accounts, t.balances
    wallet_id = ledger.account(wallet).id
    ids = [wallet_id, ledger.account(receivable).id]
    balance_sql = sa.select(b.c.posted, b.c.pending_debit, b.c.pending_credit).where(
        b.c.account_id == sa.bindparam("a")
    )
    # The columns a statement line shows (what the library's page reads too).
    shown = [
        e.c.id, e.c.type, e.c.phase, e.c.description, e.c.metadata,
        e.c.effective_at, e.c.recorded_at, e.c.hold_id, e.c.reverses_id,
    ]  # fmt: skip
    page_sql = (
        sa.select(p.c.id, p.c.amount, p.c.currency, *shown)
        .join(e, e.c.id == p.c.entry_id)
        .where(p.c.account_id == sa.bindparam("a"), p.c.id < sa.bindparam("before"))
        .order_by(p.c.id.desc())
        .limit(50)
    )
    # The statement floor: the best hand-written page. Each account's postings
    # below the cursor on its (account_id, id) index, LIMIT 51 per account (one
    # more than the page: is there a next page?), merged newest first; each arm
    # a subquery with its own ORDER BY/LIMIT (SQLite allows no parenthesised
    # compound arms), so no planner, with or without statistics, sorts the
    # accounts' whole history. Then the page's entries by primary key, and one
    # statement for their legs.
    arms = [
        sa.select(arm.c.id, arm.c.entry_id).select_from(arm)
        for arm in (
            sa.select(p.c.id, p.c.entry_id)
            .where(p.c.account_id == sa.bindparam(f"a{i}"), p.c.id < sa.bindparam("before"))
            .order_by(p.c.id.desc())
            .limit(51)
            .subquery(f"arm{i}")
            for i in range(len(ids))
        )
    ]
    positions = sa.union_all(*arms).subquery("u")
    newest = (
        sa.select(positions.c.id, positions.c.entry_id)
        .order_by(positions.c.id.desc())
        .limit(51)
        .subquery("newest")
    )
    statement_sql = (
        sa.select(newest.c.id.label("position"), e)
        .select_from(newest)
        .join(e, e.c.id == newest.c.entry_id)
        .order_by(newest.c.id.desc())
    )
    statement_params = {"before": 2**62, **{f"a{i}": x for i, x in enumerate(ids)}}
    # The legs by account id, mapped to codes from a dict (accounts are
    # immutable; the library keeps the same cache): joined to the accounts,
    # PostgreSQL without statistics picks a parallel plan for 100 rows.
    legs_sql = (
        sa.select(p.c.entry_id, p.c.account_id, p.c.amount, p.c.currency)
        .where(p.c.entry_id.in_(sa.bindparam("ids", expanding=True)))
        .order_by(p.c.id)
    )
    with engine.connect() as conn:
        code_of = dict(conn.execute(sa.select(a.c.id, a.c.code)).all())
    with engine.connect() as conn:
        wallet_postings = (
            conn.execute(sa.select(p.c.id).where(p.c.account_id == wallet_id).order_by(p.c.id))
            .scalars()
            .all()
        )
    deep_before = wallet_postings[min(100, len(wallet_postings) - 1)]  # near the oldest
    from spaktok_ledger._store._ledger import _encode_cursor, _PageQuery

    query_id = _PageQuery.of(
        "history", [wallet], limit=50, cursor=None, types=None, since=None, until=None
    ).query_id
    deep_cursor = _encode_cursor(deep_before, query_id)
    n = args.reads

    def raw_balance() -> None:
        for _ in range(n):
            with engine.connect() as conn:
                conn.execution_options(
                    **READ_ONLY
                )  # a plain BEGIN on SQLite, as the library's reads
                conn.execute(balance_sql, {"a": wallet_id}).one()

    def lib_balance() -> None:
        for _ in range(n):
            ledger.balance(wallet)

    def raw_page(before: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(max(n // 5, 1)):
                with engine.connect() as conn:
                    conn.execution_options(**READ_ONLY)
                    conn.execute(page_sql, {"a": wallet_id, "before": before}).all()

        return run

    def lib_page(cursor: str | None) -> Callable[[], None]:
        def run() -> None:
            for _ in range(max(n // 5, 1)):
                ledger.history(wallet, limit=50, cursor=cursor)

        return run

    def raw_statement() -> None:
        for _ in range(max(n // 5, 1)):
            with engine.connect() as conn:
                conn.execution_options(**READ_ONLY)
                rows = conn.execute(statement_sql, statement_params).all()
                # Each entry once (it may touch both accounts), 50 shown, the 51st: more?
                page = list(dict.fromkeys(r.id for r in rows))[:50]
                legs = conn.execute(legs_sql, {"ids": page}).all()
                [(eid, code_of[aid], amount, cur) for eid, aid, amount, cur in legs]

    def lib_statement() -> None:
        for _ in range(max(n // 5, 1)):
            economy.history(user_id="big", limit=50)

    def check_statement_floor() -> None:
        """The floor reads the entries (and legs) of the library's page, no fewer."""
        with engine.connect() as conn:
            rows = conn.execute(statement_sql, statement_params).all()
            page = list(dict.fromkeys(r.id for r in rows))
            legs = conn.execute(legs_sql, {"ids": page[:50]}).all()
        lib = economy.history(user_id="big", limit=50)
        if page[:50] != [i.entry_id for i in lib.items] or (len(page) > 50) != bool(
            lib.next_cursor
        ):
            sys.exit("the statement floor does not read the library's page")
        if len(legs) != sum(len(ledger.entry(i).postings) for i in page[:50]):
            sys.exit("the statement floor does not read every leg of the page")

    check_statement_floor()
    results = []
    for stats in ("before ANALYZE", "analyzed"):
        if stats == "analyzed":
            analyze(ledger)
        for fn in (lib_balance, raw_balance, lib_page(None), raw_page(2**62)):
            fn()  # warm-up
        lib_statement()
        raw_statement()
        suffix = f" [{stats}]"
        if args.only != "statement":
            results += [
                Result(
                    "balance() / raw select" + suffix,
                    name,
                    paired(lib_balance, raw_balance, args.rounds),
                    1.5,
                    False,
                ),
                Result(
                    "history() shallow / raw keyset page" + suffix,
                    name,
                    paired(lib_page(None), raw_page(2**62), args.rounds),
                    2.0,
                    False,
                ),
                Result(
                    "history() deep / raw keyset page" + suffix,
                    name,
                    paired(lib_page(deep_cursor), raw_page(deep_before), args.rounds),
                    2.0,
                    False,
                ),
            ]
        results.append(
            Result(
                f"GiftEconomy.history @{args.postings // 1000}k / raw" + suffix,
                name,
                paired(lib_statement, raw_statement, args.rounds),
                2.0,
                False,
            )
        )
    return results


# -- imports ------------------------------------------------------------------------


def import_seconds(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def bench_imports(args: argparse.Namespace) -> list[Result]:
    results = []
    for label, statement, target in (
        ("import spaktok_ledger / import sqlalchemy", "import spaktok_ledger", 1.3),
        (
            "from spaktok_ledger import Ledger / import sqlalchemy",
            "from spaktok_ledger import Ledger",
            None,
        ),
    ):
        ratios = []
        for r in range(args.rounds * 2):
            if r % 2 == 0:
                lib, raw = import_seconds(statement), import_seconds("import sqlalchemy")
            else:
                raw, lib = import_seconds("import sqlalchemy"), import_seconds(statement)
            ratios.append(lib / raw)
        results.append(Result(label, "-", ratios, target, False))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=150, help="per side per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reads", type=int, default=200, help="balance reads per side per round")
    parser.add_argument("--postings", type=int, default=100_000, help="on the read account")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--sqlite-path", default="bench-ledger.db")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--only",
        choices=["writes", "reads", "statement", "imports"],
        help="statement: only the GiftEconomy.history measure of the reads",
    )
    args = parser.parse_args(argv)

    targets = [("SQLite", f"sqlite:///{args.sqlite_path}")]
    if not args.skip_postgres:
        targets.append(("PostgreSQL", args.postgres_url))
    print(
        f"paired rounds: {args.rounds}; median of per-round ratios, min and max "
        f"(writes: {args.transfers} transfers per side per round; reads: {args.reads})\n"
    )
    print(f"{'measure':<44}{'database':<12}{'min':>7}{'median':>8}{'max':>7}   target")
    results: list[Result] = []
    for name, url in targets:
        _remove(args.sqlite_path)
        engine = create_engine(url)
        try:
            if args.only in (None, "writes"):
                for result in bench_writes(engine, name, args):
                    print(result.row(), flush=True)
                    results.append(result)
            if args.only in (None, "reads", "statement"):
                for result in bench_reads(engine, name, args):
                    print(result.row(), flush=True)
                    results.append(result)
        finally:
            engine.dispose()
            _remove(args.sqlite_path)
    if args.only in (None, "imports"):
        for result in bench_imports(args):
            print(result.row(), flush=True)
            results.append(result)
    missed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(missed)} of {len(results)} at target")
    return 1 if missed else 0


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


if __name__ == "__main__":
    sys.exit(main())
