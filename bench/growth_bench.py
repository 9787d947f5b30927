"""Benchmark: does the ledger stay fast as its history grows?

    .venv/bin/python bench/growth_bench.py                       # quick: 200,000 postings
    .venv/bin/python bench/growth_bench.py --postings 10000000   # the documented run
    .venv/bin/python bench/growth_bench.py --postgres            # on PostgreSQL instead

Bulk-loads postings (hand-written ``executemany``, not the library's write
path: this measures reads and verify, not posting) in stages of 1%, 10% and
100% of ``--postings``; at each stage it times, on an account that holds
half of all postings:

* ``balance()`` -- should not grow (O(1): one balance row);
* a ``history()`` page, newest and at the account's oldest postings -- should
  not grow (O(page): an index walk);
* ``verify(incremental=True)`` after 1,000 new entries -- should not grow
  with the history (O(new entries) + one read of the balance rows);
* ``verify()`` (full) -- grows with the history, for contrast.

Each figure is the median time at that stage divided by the median at the
first stage (so 1.0 = did not grow); the time itself is never printed.
Targets: balance, pages and incremental verify within 2x of the first stage
while the history grows 100x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count

import sqlalchemy as sa
from _common import drop_ledger_tables  # bench/, the script's directory

from spaktok_ledger import AccountKind, AccountSpec, EntryDraft, Ledger, Posting, create_engine

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BIG, OTHERS = "growth:big", ["growth:a", "growth:b", "growth:c"]
_keys = count()


def load(ledger: Ledger, entries: int) -> None:
    """Bulk-load ``entries`` two-leg entries: every other one on BIG."""
    t = ledger.tables
    ids = {c: ledger.account(c).id for c in [BIG, *OTHERS]}
    engine = ledger.engine
    assert engine is not None
    now = datetime.now(UTC)
    totals = dict.fromkeys(ids.values(), 0)
    with engine.begin() as conn:
        start = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(t.entries.c.id), 0))
        ).scalar_one()
        for offset in range(0, entries, 20_000):
            batch = range(start + offset + 1, start + min(offset + 20_000, entries) + 1)
            conn.execute(
                t.entries.insert(),
                [
                    {
                        "id": i,
                        "type": "load",
                        "phase": "posted",
                        "idempotency_key": f"load:{i}",
                        "request_hash": "-",
                        "description": "",
                        "metadata": {},
                        "effective_at": now,
                        "recorded_at": now,
                    }
                    for i in batch
                ],
            )
            rows = []
            for i in batch:
                credit = ids[BIG] if i % 2 else ids[OTHERS[i % 3]]
                debit = ids[OTHERS[(i + 1) % 3]]
                rows.append({"entry_id": i, "account_id": debit, "amount": 1, "currency": "USD"})
                rows.append({"entry_id": i, "account_id": credit, "amount": -1, "currency": "USD"})
                totals[debit] += 1
                totals[credit] -= 1
            conn.execute(t.postings.insert(), rows)
        b = t.balances
        for account_id, delta in totals.items():
            conn.execute(
                b.update()
                .where(b.c.account_id == account_id, b.c.shard == 0)
                .values(posted=b.c.posted + delta)
            )
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{t.entries.name}', 'id'), "
                f"(SELECT max(id) FROM {t.entries.name}))"
            )
    if engine.dialect.name == "postgresql":
        # What to do after a bulk import (operations.md, "Growth"): VACUUM ANALYZE
        # sets the visibility map and hint bits and the planner's statistics, and a
        # CHECKPOINT (superuser or pg_checkpoint) writes the load out, so the timings
        # below measure reads, not the server still digesting millions of new rows.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in (t.entries, t.postings, t.balances):
                conn.exec_driver_sql(f"VACUUM ANALYZE {table.name}")
            try:
                conn.exec_driver_sql("CHECKPOINT")
            except sa.exc.DBAPIError as exc:
                print(f"(no CHECKPOINT: {exc.orig})", file=sys.stderr)


def deep_cursor(ledger: Ledger) -> str:
    """A history cursor just above the account's 100 oldest postings."""
    from spaktok_ledger._store._ledger import _encode_cursor, _PageQuery

    p = ledger.tables.postings
    big = ledger.account(BIG).id
    engine = ledger.engine
    assert engine is not None
    with engine.connect() as conn:
        posting_id = conn.execute(
            sa.select(p.c.id).where(p.c.account_id == big).order_by(p.c.id).offset(100).limit(1)
        ).scalar_one()
    query_id = _PageQuery.of(
        "history", [BIG], limit=50, cursor=None, types=None, since=None, until=None
    ).query_id
    return _encode_cursor(posting_id, query_id)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postings", type=int, default=200_000, help="at the last stage")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--sqlite-path", default="bench-growth.db")
    parser.add_argument("--postgres", action="store_true", help="run on PostgreSQL")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--skip-postgres", action="store_true", help="(the default; accepted)")
    parser.add_argument("--skip-full-verify", action="store_true", help="for very large runs")
    args = parser.parse_args(argv)

    _remove(args.sqlite_path)
    url = args.postgres_url if args.postgres else f"sqlite:///{args.sqlite_path}"
    engine = create_engine(url)
    prefix = f"gr{os.getpid()}_"
    ledger = Ledger(engine, prefix=prefix)
    ledger.migrate()
    ledger.open_accounts(
        [
            AccountSpec(BIG, AccountKind.LIABILITY),
            *(AccountSpec(o, AccountKind.ASSET, allow_overdraft=True) for o in OTHERS),
        ]
    )
    stages = sorted(
        {max(args.postings // 100, 1000), max(args.postings // 10, 1000), args.postings}
    )
    print(f"{engine.dialect.name}: stages of {', '.join(f'{s:,}' for s in stages)} postings\n")
    print(f"{'postings':>12}{'balance':>10}{'page new':>10}{'page old':>10}"
          f"{'verify +1k':>12}{'full verify':>13}")  # fmt: skip
    loaded = 0
    first: list[float] | None = None
    worst = 1.0
    try:
        for stage in stages:
            load(ledger, (stage - loaded) // 2)  # two postings per entry
            loaded = stage
            assert ledger.verify(incremental=True).ok  # a checkpoint at this size
            deep = deep_cursor(ledger)
            new_entries = [
                EntryDraft(
                    "new", (Posting.debit(OTHERS[0], 1), Posting.credit(BIG, 1)), f"n{next(_keys)}"
                )
                for _ in range(1000)
            ]

            for draft in new_entries:
                ledger.post(draft)
            start = time.perf_counter()
            assert ledger.verify(incremental=True).ok
            incremental = time.perf_counter() - start
            figures = [
                median_time(lambda: ledger.balance(BIG), args.repeat),
                median_time(lambda: ledger.history(BIG, limit=50), args.repeat),
                median_time(lambda c=deep: ledger.history(BIG, limit=50, cursor=c), args.repeat),
                incremental,
                0.0 if args.skip_full_verify else median_time(ledger.verify, 1),
            ]
            if first is None:
                first = figures
            ratios = [f / b if b else 0.0 for f, b in zip(figures, first, strict=True)]
            worst = max(worst, *ratios[:4])
            print(
                f"{stage:>12,}{ratios[0]:>10.2f}{ratios[1]:>10.2f}{ratios[2]:>10.2f}"
                f"{ratios[3]:>12.2f}{ratios[4]:>13.2f}",
                flush=True,
            )
    finally:
        if args.postgres:  # millions of rows: leave the shared database as it was
            with engine.begin() as conn:
                drop_ledger_tables(conn, ledger, prefix)
        engine.dispose()
        _remove(args.sqlite_path)
    print("\nratios: time at this size / time at the first size (1.00 = did not grow)")
    print(f"target: balance, pages, incremental verify <= 2.0 -> worst {worst:.2f}")
    return 0 if worst <= 2.0 else 1


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


if __name__ == "__main__":
    sys.exit(main())
