"""Benchmark: the gift write path against hand-written SQL (issue 14 items 2 and 4).

    python3 dev.py bench                                   # runs this file too
    .venv/bin/python bench/gift_bench.py --rounds 5        # PostgreSQL and SQLite
    .venv/bin/python bench/gift_bench.py --only storm --senders 32

Three measures, each as RATIOS from paired, interleaved rounds (the library
and its floor alternate, and which goes first alternates too, so machine load
hits both alike), reported as min / median / max over the rounds:

* ``send_gift`` / floor, one worker, a commit per gift. The floor is
  SQLAlchemy Core with statements built once, on the library's tables: the
  entry, its three postings (executemany), the guarded wallet update, the two
  credit updates (executemany), the outbox row, commit. Ratio = library
  gifts/s / floor gifts/s (1.0 = as fast as the floor).
* group commit (``GiftBatcher``) / per-commit floor at 1, 8 and 32 concurrent
  senders (threads): gifts/s ratio, and the batcher's p99 latency in ms
  (within the same run; latency is wall time per call); then the CPU per
  gift of each side, median of its rounds: client (this process, every
  thread) and server (the PostgreSQL processes of this machine, from /proc;
  "n/a" for a server elsewhere). It shows where a side's time goes: the
  floor's 32 senders fill both cores, the batcher runs one batch at a time.
* ``Ledger.ingest`` / raw bulk ``executemany`` (entries inserted with
  insertmanyvalues returning ids, postings executemany, balances once per
  account), 1,000 entries per transaction: entries/s ratio.

Only ratios measured in one run mean anything; absolute times depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import drop_ledger_tables  # bench/, the script's directory

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    Gift,
    GiftBatcher,
    GiftCatalogue,
    GiftEconomy,
    Ledger,
    Posting,
    create_engine,
)

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GIFTS = GiftCatalogue([Gift("rose", 10, "Rose")])
_keys = count()


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class RawGift:
    """A gift written by hand: same rows as ``send_gift`` (entry, 3 postings,
    3 balance rows with the wallet guarded, outbox row), statements built once."""

    def __init__(self, ledger: Ledger, economy: GiftEconomy) -> None:
        t = ledger.tables
        b = t.balances
        self.t = t
        self.insert_entry = t.entries.insert().returning(t.entries.c.id)
        self.insert_postings = t.postings.insert()
        row = sa.and_(b.c.account_id == sa.bindparam("a"), b.c.shard == sa.bindparam("s"))
        self.update = b.update().where(row).values(posted=b.c.posted + sa.bindparam("d"))
        self.guarded = (
            b.update()
            .where(row, -(b.c.posted + sa.bindparam("d")) - b.c.pending_debit >= 0)
            .values(posted=b.c.posted + sa.bindparam("d"))
            .returning(b.c.posted)
        )
        self.insert_outbox = t.outbox.insert()
        self.ids: dict[str, int] = {}
        self.shards: dict[str, int] = {}
        a = t.accounts
        with ledger.engine.connect() as conn:  # type: ignore[union-attr]
            for r in conn.execute(sa.select(a.c.id, a.c.code, a.c.balance_shards)):
                self.ids[r.code] = r.id
                self.shards[r.code] = r.balance_shards
        self.rng = random.Random(7)

    def refresh(self, ledger: Ledger) -> None:
        a = self.t.accounts
        with ledger.engine.connect() as conn:  # type: ignore[union-attr]
            for r in conn.execute(sa.select(a.c.id, a.c.code, a.c.balance_shards)):
                self.ids[r.code] = r.id
                self.shards[r.code] = r.balance_shards

    def __call__(self, engine: sa.Engine, sender: str, streamer: str) -> None:
        now = datetime.now(UTC)
        wallet, earn, rev = (
            f"user:{sender}:wallet",
            f"streamer:{streamer}:earnings",
            "platform:gift_revenue",
        )
        ids = self.ids
        with engine.begin() as conn:
            entry_id = conn.execute(
                self.insert_entry,
                {
                    "type": "gift",
                    "phase": "posted",
                    "idempotency_key": f"raw:{next(_keys)}",
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
                        "account_id": ids[wallet],
                        "amount": 10,
                        "currency": "USD",
                    },
                    {
                        "entry_id": entry_id,
                        "account_id": ids[earn],
                        "amount": -4,
                        "currency": "USD",
                    },
                    {"entry_id": entry_id, "account_id": ids[rev], "amount": -6, "currency": "USD"},
                ],
            )
            if conn.execute(self.guarded, {"a": ids[wallet], "s": 0, "d": 10}).first() is None:
                raise RuntimeError("floor wallet empty")
            conn.execute(
                self.update,
                [
                    {"a": ids[earn], "s": self.rng.randrange(self.shards[earn]), "d": -4},
                    {"a": ids[rev], "s": self.rng.randrange(self.shards[rev]), "d": -6},
                ],
            )
            conn.execute(
                self.insert_outbox,
                {
                    "topic": "gift.sent",
                    "dedupe_key": f"raw:{entry_id}",
                    "entry_id": entry_id,
                    "payload": {"entry_id": entry_id, "gift": "rose", "sender": sender},
                    "created_at": now,
                },
            )


def _drop(engine: sa.Engine, ledger: Ledger) -> None:
    """Leave a shared PostgreSQL database as it was before the run."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            drop_ledger_tables(conn, ledger, ledger.prefix)


def _setup(url: str, senders: int, pool: int) -> tuple[sa.Engine, Ledger, GiftEconomy, RawGift]:
    engine = create_engine(
        url, **({"pool_size": pool, "max_overflow": 8} if "postgresql" in url else {})
    )
    ledger = Ledger(engine, prefix=f"gb{secrets.token_hex(3)}_")
    economy = GiftEconomy(ledger, GIFTS, hold_days=0)
    economy.setup()
    for i in range(senders):
        for side in ("lib", "raw"):
            economy.open_user(f"{side}{i}")
            economy.credit_purchase(
                f"{side}{i}",
                coins=10_000_000,
                price_usd_minor=10_000_000,
                idempotency_key=f"fund:{side}{i}",
            )
    for side in ("lib", "raw"):
        economy.register_streamer(f"{side}star")
    return engine, ledger, economy, RawGift(ledger, economy)


def bench_send_gift(url: str, rounds: int, gifts: int) -> list[float]:
    engine, ledger, economy, raw = _setup(url, 1, 4)
    ratios = []
    for r in range(rounds):
        times = {}
        order = ("lib", "raw") if r % 2 == 0 else ("raw", "lib")
        for side in order:
            start = time.perf_counter()
            for _ in range(gifts):
                if side == "lib":
                    economy.send_gift("lib0", "libstar", "rose", idempotency_key=f"k{next(_keys)}")
                else:
                    raw(engine, "raw0", "rawstar")
            times[side] = time.perf_counter() - start
        ratios.append(times["raw"] / times["lib"])
    _drop(engine, ledger)
    ledger.close()
    engine.dispose()
    return ratios


def _server_cpu() -> float | None:
    """CPU seconds used so far by this machine's PostgreSQL processes (from /proc), or
    None where they cannot be seen (another machine's server, no /proc)."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
            found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def bench_storm(url: str, rounds: int, senders: int, per_sender: int, window: float):
    engine, ledger, economy, raw = _setup(url, senders, senders + 4)
    # As a long-running host process should (docs/gifts.md): what start-up loaded is
    # kept out of the garbage collector's full passes, which otherwise stalled every
    # sender, the batcher's and the floor's alike, for tens of milliseconds.
    gc.collect()
    gc.freeze()
    batcher = GiftBatcher(economy, window_seconds=window, max_batch=256)
    ratios, p99s, batches = [], [], []
    cpu: dict[str, list[tuple[float, float | None]]] = {"lib": [], "raw": []}

    def run(side: str) -> tuple[float, list[float]]:
        latencies: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(senders + 1)

        def sender(i: int) -> None:
            mine = []
            barrier.wait()
            for _ in range(per_sender):
                t0 = time.perf_counter()
                if side == "lib":
                    batcher.send_gift(
                        f"lib{i}", "libstar", "rose", idempotency_key=f"k{next(_keys)}"
                    )
                else:
                    raw(engine, f"raw{i}", "rawstar")
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
        for t in threads:
            t.start()
        client, server = time.process_time(), _server_cpu()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        gifts = senders * per_sender
        server_after = _server_cpu()
        cpu[side].append(
            (
                (time.process_time() - client) / gifts * 1e6,
                None
                if server is None or server_after is None
                else (server_after - server) / gifts * 1e6,
            )
        )
        return wall, latencies

    for r in range(rounds):
        results = {}
        before = batcher.batches
        for side in ("lib", "raw") if r % 2 == 0 else ("raw", "lib"):
            results[side] = run(side)
        batches.append((senders * per_sender) / max(1, batcher.batches - before))
        ratios.append(results["raw"][0] / results["lib"][0])
        p99s.append(_p99(results["lib"][1]))
        raw_p99 = _p99(results["raw"][1])
    gc.unfreeze()
    _drop(engine, ledger)
    ledger.close()
    engine.dispose()
    return ratios, p99s, batches, raw_p99, cpu


def bench_ingest(url: str, rounds: int, entries: int) -> list[float]:
    engine = create_engine(url)
    ledger = Ledger(engine, prefix=f"gi{secrets.token_hex(3)}_")
    ledger.migrate()
    ledger.open_accounts(
        [
            AccountSpec("equity:import", AccountKind.EQUITY, allow_overdraft=True),
            *(AccountSpec(f"user:{i}:wallet", AccountKind.LIABILITY) for i in range(100)),
        ]
    )
    t = ledger.tables
    b = t.balances
    ids = {}
    with engine.connect() as conn:
        for r in conn.execute(sa.select(t.accounts.c.id, t.accounts.c.code)):
            ids[r.code] = r.id
    insert_entries = t.entries.insert().returning(t.entries.c.id, sort_by_parameter_order=True)
    insert_postings = t.postings.insert()
    update = (
        b.update()
        .where(b.c.account_id == sa.bindparam("a"), b.c.shard == 0)
        .values(posted=b.c.posted + sa.bindparam("d"))
    )

    def raw_batch(rows: list[tuple[str, int]]) -> None:
        now = datetime.now(UTC)
        with engine.begin() as conn:
            entry_ids = (
                conn.execute(
                    insert_entries,
                    [
                        {
                            "type": "import",
                            "phase": "posted",
                            "idempotency_key": f"raw:{next(_keys)}",
                            "request_hash": "raw",
                            "description": "",
                            "metadata": {},
                            "effective_at": now,
                            "recorded_at": now,
                        }
                        for _ in rows
                    ],
                )
                .scalars()
                .all()
            )
            postings = []
            deltas: dict[int, int] = defaultdict(int)
            for entry_id, (user, amount) in zip(entry_ids, rows, strict=True):
                postings.append(
                    {
                        "entry_id": entry_id,
                        "account_id": ids["equity:import"],
                        "amount": amount,
                        "currency": "USD",
                    }
                )
                postings.append(
                    {
                        "entry_id": entry_id,
                        "account_id": ids[user],
                        "amount": -amount,
                        "currency": "USD",
                    }
                )
                deltas[ids["equity:import"]] += amount
                deltas[ids[user]] -= amount
            conn.execute(insert_postings, postings)
            conn.execute(update, [{"a": a, "d": d} for a, d in sorted(deltas.items())])

    rng = random.Random(3)
    ratios = []
    for r in range(rounds):
        rows = [(f"user:{rng.randrange(100)}:wallet", rng.randint(1, 500)) for _ in range(entries)]
        drafts = [
            EntryDraft(
                "import",
                (Posting.debit("equity:import", amount), Posting.credit(user, amount)),
                f"ing:{next(_keys)}",
            )
            for user, amount in rows
        ]
        times = {}
        for side in ("lib", "raw") if r % 2 == 0 else ("raw", "lib"):
            start = time.perf_counter()
            if side == "lib":
                ledger.ingest(drafts, batch_size=1000)
            else:
                for i in range(0, len(rows), 1000):
                    raw_batch(rows[i : i + 1000])
            times[side] = time.perf_counter() - start
        ratios.append(times["raw"] / times["lib"])
    _drop(engine, ledger)
    engine.dispose()
    return ratios


def _cpu_line(cpu: dict[str, list[tuple[float, float | None]]]) -> str:
    """Client (this process, all threads) and server CPU per gift, batcher / floor."""
    out = []
    for label, at in (("client", 0), ("server", 1)):
        values = {side: [row[at] for row in rows] for side, rows in cpu.items()}
        if any(v is None for vs in values.values() for v in vs):
            out.append(f"{label} n/a (the server is not on this machine)")
            continue
        lib, raw = (statistics.median(values[side]) for side in ("lib", "raw"))  # type: ignore[type-var]
        out.append(f"{label} {lib:.0f} us batcher / {raw:.0f} us floor")
    return "; ".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--gifts", type=int, default=200, help="gifts per side per round (send_gift)"
    )
    parser.add_argument(
        "--per-sender", type=int, default=40, help="gifts per sender per round (storm)"
    )
    parser.add_argument("--senders", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--window", type=float, default=0.002, help="GiftBatcher window, seconds")
    parser.add_argument("--entries", type=int, default=5000, help="entries per round (ingest)")
    parser.add_argument("--only", choices=["send_gift", "storm", "ingest"], action="append")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    only = set(args.only or ["send_gift", "storm", "ingest"])
    urls = []
    if not args.skip_postgres:
        urls.append(("postgresql", args.pg_url))
    if not args.skip_sqlite:
        urls.append(
            (
                "sqlite",
                f"sqlite:///{Path(tempfile.gettempdir()) / f'gift_bench_{os.getpid()}.db'}",
            )
        )
    print(
        f"gift bench: {args.rounds} paired interleaved rounds; "
        "ratios min / median / max (1.0 = the floor)"
    )
    for name, url in urls:
        if "send_gift" in only:
            ratios = bench_send_gift(url, args.rounds, args.gifts)
            print(f"[{name}] send_gift / raw 3-leg floor with outbox, 1 worker: {_spread(ratios)}")
        if "storm" in only and name == "postgresql":
            for senders in args.senders:
                ratios, p99s, sizes, raw_p99, cpu = bench_storm(
                    url, args.rounds, senders, args.per_sender, args.window
                )
                print(
                    f"[{name}] group commit / per-commit floor, {senders} senders: "
                    f"{_spread(ratios)}; batcher p99 ms {_spread(p99s)} "
                    f"(floor p99 {raw_p99:.1f} ms); gifts per batch {_spread(sizes)}"
                )
                print(f"    CPU per gift, median of rounds: {_cpu_line(cpu)}")
        if "ingest" in only:
            ratios = bench_ingest(url, args.rounds, args.entries)
            print(f"[{name}] Ledger.ingest / raw executemany bulk: {_spread(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
