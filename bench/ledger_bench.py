"""Benchmark: the library's posting path against plain SQLAlchemy Core, and O(1) balance reads.

    python3 dev.py bench                      # both databases
    .venv/bin/python bench/ledger_bench.py --transfers 5000 --skip-postgres

For each database (SQLite file, PostgreSQL), in one run, on the same tables:

* **transfers/s**: N two-leg transfers, each in its own transaction, through
  ``Ledger.post`` and through hand-written SQLAlchemy Core doing the same
  writes (one entry row, two posting rows, two balance updates). The two are
  interleaved in rounds so that drift in machine load hits both alike; the
  figure that matters is the ratio library / raw.
* **balance read**: the latency of ``Ledger.balance`` on an account with 1,000
  postings and with 100,000 postings (median of many reads), and their ratio.

Only ratios measured in this run are meaningful; absolute times depend on the
machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from itertools import count

import sqlalchemy as sa

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    Ledger,
    Posting,
    create_engine,
)

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_ids = count()


class RawTransfer:
    """What a careful developer writes by hand: the same five writes, with the
    statements built once (so the baseline pays no statement-construction cost)."""

    def __init__(self, t) -> None:
        b = t.balances
        self.insert_entry = t.entries.insert().returning(t.entries.c.id)
        self.insert_postings = t.postings.insert()
        self.update_balance = (
            b.update()
            .where(b.c.account_id == sa.bindparam("a"), b.c.shard == 0)
            .values(posted=b.c.posted + sa.bindparam("d"), version=b.c.version + 1)
        )

    def __call__(self, conn: sa.Connection, key: str, src: int, dst: int, amount: int) -> None:
        now = datetime.now(UTC)
        entry_id = conn.execute(
            self.insert_entry,
            {
                "type": "transfer",
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
                {"entry_id": entry_id, "account_id": src, "amount": amount, "currency": "USD"},
                {"entry_id": entry_id, "account_id": dst, "amount": -amount, "currency": "USD"},
            ],
        )
        conn.execute(self.update_balance, {"a": src, "d": amount})
        conn.execute(self.update_balance, {"a": dst, "d": -amount})


def bench_transfers(engine: sa.Engine, transfers: int, rounds: int) -> tuple[float, float]:
    """Returns (library transfers/s, raw transfers/s)."""
    prefix = f"bench{os.getpid()}_{next(_ids)}_"
    ledger = Ledger(engine, prefix=prefix)
    ledger.migrate()
    # Two asset accounts that may go negative, so no transfer is refused and
    # both paths do exactly the same writes.
    src = ledger.open_account(AccountSpec("bench:a", AccountKind.ASSET, allow_overdraft=True))
    dst = ledger.open_account(AccountSpec("bench:b", AccountKind.ASSET, allow_overdraft=True))
    raw_transfer = RawTransfer(ledger.tables)
    lib_time = raw_time = 0.0
    per_round = transfers // rounds
    # warm-up: connections, statement caches
    for i in range(50):
        ledger.post(
            EntryDraft("transfer", (Posting("bench:a", 1), Posting("bench:b", -1)), f"warm{i}")
        )
        with engine.begin() as conn:
            raw_transfer(conn, f"rawwarm{i}", src.id, dst.id, 1)
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(per_round):
            ledger.post(
                EntryDraft(
                    "transfer",
                    (Posting("bench:a", 100), Posting("bench:b", -100)),
                    f"lib{r}:{i}",
                )
            )
        lib_time += time.perf_counter() - start
        start = time.perf_counter()
        for i in range(per_round):
            with engine.begin() as conn:
                raw_transfer(conn, f"raw{r}:{i}", src.id, dst.id, 100)
        raw_time += time.perf_counter() - start
    report = ledger.verify()
    if not report.ok:
        sys.exit(f"verify failed after the benchmark: {report.problems[:3]}")
    n = per_round * rounds
    return n / lib_time, n / raw_time


def _seed_postings(engine: sa.Engine, ledger: Ledger, code: str, other: str, count_: int) -> None:
    """Bulk-load ``count_`` postings on ``code`` (setup, not measured), balance rows included."""
    t = ledger.tables
    a, b = ledger.account(code), ledger.account(other)
    now = datetime.now(UTC)
    batch = 5_000
    with engine.begin() as conn:
        last_id = sa.select(sa.func.coalesce(sa.func.max(t.entries.c.id), 0))
        start_id = conn.execute(last_id).scalar_one()
        for offset in range(0, count_, batch):
            size = min(batch, count_ - offset)
            ids = range(start_id + offset + 1, start_id + offset + size + 1)
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
                    for i in ids
                ],
            )
            conn.execute(
                t.postings.insert(),
                [
                    row
                    for i in ids
                    for row in (
                        {"entry_id": i, "account_id": a.id, "amount": 1, "currency": "USD"},
                        {"entry_id": i, "account_id": b.id, "amount": -1, "currency": "USD"},
                    )
                ],
            )
        bal = t.balances
        for account_id, delta in ((a.id, count_), (b.id, -count_)):
            conn.execute(
                bal.update()
                .where(bal.c.account_id == account_id, bal.c.shard == 0)
                .values(posted=bal.c.posted + delta)
            )
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {t.postings.name}")
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{t.entries.name}', 'id'), "
                f"(SELECT max(id) FROM {t.entries.name}))"
            )


def bench_reads(engine: sa.Engine, reads: int) -> tuple[float, float]:
    """Median balance-read latency (seconds) at 1,000 and at 100,000 postings."""
    prefix = f"benchr{os.getpid()}_{next(_ids)}_"
    ledger = Ledger(engine, prefix=prefix)
    ledger.migrate()
    for code in ("bench:small", "bench:big", "bench:other"):
        ledger.open_account(AccountSpec(code, AccountKind.ASSET, allow_overdraft=True))
    _seed_postings(engine, ledger, "bench:small", "bench:other", 1_000)
    _seed_postings(engine, ledger, "bench:big", "bench:other", 100_000)
    assert ledger.balance("bench:small").posted_minor == 1_000
    assert ledger.balance("bench:big").posted_minor == 100_000

    def median_read(code: str) -> float:
        samples = []
        for _ in range(reads):
            start = time.perf_counter()
            ledger.balance(code)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    median_read("bench:small")  # warm-up
    small = big = 0.0
    for _ in range(3):  # interleave
        small += median_read("bench:small")
        big += median_read("bench:big")
    return small / 3, big / 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--sqlite-path", default="bench-ledger.db")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)

    targets: list[tuple[str, str]] = []
    if os.path.exists(args.sqlite_path):
        os.remove(args.sqlite_path)
    targets.append(("SQLite", f"sqlite:///{args.sqlite_path}"))
    if not args.skip_postgres:
        targets.append(("PostgreSQL", args.postgres_url))

    print(
        f"{args.transfers} two-leg transfers per side, one transaction each, "
        f"interleaved in {args.rounds} rounds\n"
    )
    print(
        f"{'database':<12}{'library/s':>12}{'raw/s':>12}{'ratio':>8}"
        f"{'read@1k':>12}{'read@100k':>12}{'ratio':>8}"
    )
    failed = False
    for name, url in targets:
        engine = create_engine(url)
        try:
            lib, raw = bench_transfers(engine, args.transfers, args.rounds)
            small, big = bench_reads(engine, args.reads)
        finally:
            engine.dispose()
        ratio = lib / raw
        read_ratio = big / small
        print(
            f"{name:<12}{lib:>12.0f}{raw:>12.0f}{ratio:>8.2f}"
            f"{small * 1e6:>10.0f}us{big * 1e6:>10.0f}us{read_ratio:>8.2f}"
        )
        failed |= ratio < 0.8 or read_ratio > 1.5
    if os.path.exists(args.sqlite_path):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.sqlite_path + suffix):
                os.remove(args.sqlite_path + suffix)
    print("\nbars: transfers ratio >= 0.8; read@100k / read@1k <= 1.5")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
