"""What the start-up units check costs: ``check_units`` over N stored quotes and purchases.

    .venv/bin/python bench/units_check_bench.py [--rows 200000] [--rounds 5] [--skip-postgres]

The check (run by ``migrate()``, ``Ledger.check_schema()`` and ``GiftEconomy.
setup()``) groups every units-bearing table by (currency, exponent); its cost
grows with the number of quotes and purchases. Prints min/median/max seconds
per backend, next to an empty-database baseline measured in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from spaktok_ledger import create_engine, migrate
from spaktok_ledger._store._schema import tables_for
from spaktok_ledger._store._units import check_units

PG_URL = os.environ.get("SPAKTOK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CURRENCIES = ["EUR", "JPY", "HUF", "KWD", "GBP", "BRL", "INR", "ISK"]


def fill(engine: sa.Engine, prefix: str, rows: int) -> None:
    t = tables_for(prefix)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    batch = 10_000
    with engine.begin() as conn:
        for start in range(0, rows, batch):
            conn.execute(
                t.quotes.insert(),
                [
                    {
                        "id": f"q{n}",
                        "pack_id": "starter",
                        "user_id": f"u{n % 5000}",
                        "currency": CURRENCIES[n % len(CURRENCIES)],
                        "local_amount_minor": 1000 + n,
                        "usd_price_minor": 499,
                        "rate": "1",
                        "quote": {},
                        "created_at": now,
                        "expires_at": now + timedelta(minutes=15),
                    }
                    for n in range(start, min(start + batch, rows))
                ],
            )


def timed(engine: sa.Engine, prefix: str) -> float:
    tables = tables_for(prefix)
    with engine.connect() as conn:
        started = time.perf_counter()
        check_units(conn, tables)
        return time.perf_counter() - started


def bench(name: str, engine: sa.Engine, rows: int, rounds: int) -> None:
    stamp = f"{os.getpid()}_{int(time.time())}"
    empty, full = f"ube{stamp}_", f"ubf{stamp}_"
    migrate(engine, empty)
    migrate(engine, full)
    fill(engine, full, rows)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {full}quotes")
    base, loaded = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        base.append(timed(engine, empty))
        loaded.append(timed(engine, full))
    print(
        f"{name}: check_units, empty tables: min {min(base) * 1000:.1f} ms, median "
        f"{statistics.median(base) * 1000:.1f} ms; with {rows} quotes: min "
        f"{min(loaded) * 1000:.1f} ms, median {statistics.median(loaded) * 1000:.1f} ms, "
        f"max {max(loaded) * 1000:.1f} ms ({rounds} rounds)"
    )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for prefix in (empty, full):
                names = [t.name for t in reversed(tables_for(prefix).metadata.sorted_tables)]
                for table in [*names, f"{prefix}alembic_version"]:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = create_engine(f"sqlite:///{tmp}/units.db")
        bench("sqlite", sqlite, args.rows, args.rounds)
        sqlite.dispose()
    if not args.skip_postgres:
        pg = create_engine(PG_URL)
        bench("postgresql", pg, args.rows, args.rounds)
        pg.dispose()


if __name__ == "__main__":
    main()
