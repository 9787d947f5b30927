"""Benchmark: do concurrent gifts serialize on the hot accounts?

    python3 dev.py bench
    .venv/bin/python bench/hot_account_bench.py --gifts 400

Every gift credits ``platform:gift_revenue``, and every gift to one streamer
credits that streamer's earnings. With one balance row per account, all those
transactions would queue on the same row locks. The library spreads credits
to hot accounts over shards (``balance_shards``), so they should not.

On PostgreSQL, with 1, 2 and 4 worker processes (each with its own senders,
so wallets never contend), it measures gifts/s when **all workers gift to one
streamer** and when **each worker gifts to its own streamer**, and prints
their ratio. The same run without sharding (one balance row per account)
shows what sharding buys. Only ratios within this run are meaningful.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from itertools import count

from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy, Ledger

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GIFTS = GiftCatalogue([Gift("rose", 10)])
_ids = count()


def _worker(
    url: str, prefix: str, worker: int, streamer: str, gifts: int, start: mp.Barrier, out: mp.Queue
) -> None:
    ledger = Ledger(url, prefix=prefix)
    economy = GiftEconomy(ledger, GIFTS)
    senders = [f"w{worker}s{i}" for i in range(8)]
    # warm up the connection pool and the statement caches
    for i, sender in enumerate(senders):
        economy.send_gift(sender, streamer, "rose", 1, idempotency_key=f"warm{i}")
    start.wait()
    began = time.perf_counter()
    for i in range(gifts):
        economy.send_gift(senders[i % len(senders)], streamer, "rose", 1, idempotency_key=f"b{i}")
    out.put(time.perf_counter() - began)
    ledger.close()


def run(url: str, workers: int, gifts: int, *, same_streamer: bool, sharded: bool) -> float:
    """Gifts per second for ``workers`` processes sending ``gifts`` each."""
    prefix = f"hot{os.getpid()}_{next(_ids)}_"
    ledger = Ledger(url, prefix=prefix)
    shards = {} if sharded else {"earnings_shards": 1, "revenue_shards": 1}
    economy = GiftEconomy(ledger, GIFTS, **shards)
    economy.setup()
    streamers = ["star"] if same_streamer else [f"star{w}" for w in range(workers)]
    for streamer in streamers:
        economy.register_streamer(streamer)
    for worker in range(workers):
        for i in range(8):
            economy.credit_purchase(
                f"w{worker}s{i}",
                coins=10 * (gifts + 10),
                price_usd_minor=0,
                idempotency_key=f"fund{worker}:{i}",
            )
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    queue: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(url, prefix, w, streamers[0 if same_streamer else w], gifts, barrier, queue),
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    elapsed = max(queue.get(timeout=900) for _ in procs)
    for p in procs:
        p.join()
    report = ledger.verify()
    if not report.ok:
        sys.exit(f"verify failed: {report.problems[:3]}")
    ledger.close()
    return workers * gifts / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gifts", type=int, default=300, help="gifts per worker")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    if args.skip_postgres:
        print("hot-account benchmark needs PostgreSQL; skipped")
        return 0
    counts = [int(w) for w in args.workers.split(",")]
    print(f"PostgreSQL, {args.gifts} gifts per worker process, one transaction each\n")
    print(
        f"{'workers':>7}  {'one streamer/s':>14}  {'own streamer/s':>14}  {'ratio':>5}"
        f"  {'unsharded one/s':>15}  {'sharding gain':>13}"
    )
    ratio_at_max = 0.0
    for workers in counts:
        same = run(args.postgres_url, workers, args.gifts, same_streamer=True, sharded=True)
        own = run(args.postgres_url, workers, args.gifts, same_streamer=False, sharded=True)
        flat = run(args.postgres_url, workers, args.gifts, same_streamer=True, sharded=False)
        print(
            f"{workers:>7}  {same:>14.0f}  {own:>14.0f}  {same / own:>5.2f}"
            f"  {flat:>15.0f}  {same / flat:>13.2f}"
        )
        if workers == max(counts):
            ratio_at_max = same / own
    print(
        "\nratio: all workers to one streamer / each worker to its own streamer (sharded)."
        "\nsharding gain: one streamer, sharded / one balance row per account."
        f"\nbar: at {max(counts)} workers the ratio is >= 0.8 (measured {ratio_at_max:.2f})"
    )
    return 0 if ratio_at_max >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
