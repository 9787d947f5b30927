"""Benchmark: what transaction monitoring costs a gift, and a payout request.

    .venv/bin/python bench/compliance_bench.py            # SQLite and PostgreSQL
    .venv/bin/python bench/compliance_bench.py --skip-postgres --rounds 9 --gifts 400

**Per gift**: two gift economies on the same database, one without
monitoring and one with the default rules (and a keyring), send the same
gifts (20 senders to 3 streamers, one process). Rounds alternate which
economy goes first; each round's ratio (monitored time / plain time) is
measured within the round, so machine noise hits both halves alike. Prints
min / median / max of the ratios and the median microseconds per gift.

**Per payout request**: the heavy rules (rapid in-and-out, concentration,
chargeback ratio, linked accounts) read a streamer's receipts of the last 30
days; the time of a payout's rule check is measured for a streamer with
``--payers`` distinct payers (one gift each), rules on vs off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import count

from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy, Ledger
from spaktok_ledger.compliance import Compliance, Keyring, Movement, MovementKind
from spaktok_ledger.testing import FakeClock

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GIFTS = GiftCatalogue([Gift("rose", 10)])
SENDERS = [f"u{i}" for i in range(20)]
STREAMERS = ["s0", "s1", "s2"]
_ids = count()


def economy(url: str, clock: FakeClock, *, monitored: bool) -> GiftEconomy:
    prefix = f"cb{os.getpid()}_{next(_ids)}_"
    ledger = Ledger(url, prefix=prefix, clock=clock)
    ledger.migrate()
    result = GiftEconomy(ledger, GIFTS, clock=clock)
    result.setup()
    for streamer in STREAMERS:
        result.register_streamer(streamer)
    for sender in SENDERS:  # funded before monitoring starts: $10,000 each is over its limits
        result.credit_purchase(
            sender, coins=10**6, price_usd_minor=10**6, idempotency_key=f"fund-{sender}"
        )
    if monitored:
        result.compliance = Compliance(ledger, keyring=Keyring({"k": bytes(32)}), clock=clock)
    return result


def send(target: GiftEconomy, round_no: int, gifts: int) -> float:
    began = time.perf_counter()
    for i in range(gifts):
        target.send_gift(
            SENDERS[i % len(SENDERS)],
            STREAMERS[i % len(STREAMERS)],
            "rose",
            1,
            idempotency_key=f"r{round_no}-{i}",
        )
    return time.perf_counter() - began


def gifts_bench(url: str, rounds: int, gifts: int) -> None:
    clock = FakeClock(datetime.now(UTC))
    plain, monitored = economy(url, clock, monitored=False), economy(url, clock, monitored=True)
    send(plain, -1, 60)  # warm statement caches and the account cache
    send(monitored, -1, 60)
    ratios, plain_us, monitored_us = [], [], []
    for round_no in range(rounds):
        clock.advance(minutes=7)  # new 5-minute buckets now and then, as in real traffic
        first, second = (plain, monitored) if round_no % 2 == 0 else (monitored, plain)
        times = {id(first): send(first, round_no, gifts), id(second): send(second, round_no, gifts)}
        ratios.append(times[id(monitored)] / times[id(plain)])
        plain_us.append(times[id(plain)] / gifts * 1e6)
        monitored_us.append(times[id(monitored)] / gifts * 1e6)
    print(
        f"  send_gift, monitored / plain over {rounds} paired rounds of {gifts} gifts: "
        f"min {min(ratios):.2f}  median {statistics.median(ratios):.2f}  max {max(ratios):.2f}"
    )
    print(
        f"  median per gift: plain {statistics.median(plain_us):.0f} us, "
        f"monitored {statistics.median(monitored_us):.0f} us"
    )
    plain.ledger.close()
    monitored.ledger.close()


def payout_bench(url: str, payers: int) -> None:
    clock = FakeClock(datetime.now(UTC) - timedelta(days=1))
    target = economy(url, clock, monitored=True)
    assert target.compliance is not None
    for i in range(payers):
        fan = f"fan{i}"
        target.credit_purchase(fan, coins=100, price_usd_minor=100, idempotency_key=f"f{i}")
        clock.advance(seconds=1)
        target.send_gift(fan, "s0", "rose", 1, idempotency_key=f"g{i}")
        if i % 50 == 0:
            clock.advance(minutes=11)
    compliance = target.compliance
    movement = Movement(MovementKind.PAYOUT, "s0", 5000, clock(), reference="pyt_bench")
    samples = []
    for _ in range(5):
        began = time.perf_counter()
        target.ledger.atomic(lambda tx: compliance.check(tx, movement))
        samples.append(time.perf_counter() - began)
    print(
        f"  payout rule check for a streamer with {payers} payers in 30 days: "
        f"median {statistics.median(samples) * 1000:.1f} ms"
    )
    target.ledger.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--gifts", type=int, default=300)
    parser.add_argument("--payers", type=int, default=2000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite (a file, WAL):")
        sqlite = f"sqlite:///{tmp}/bench.db"
        gifts_bench(sqlite, args.rounds, args.gifts)
        payout_bench(sqlite, args.payers)
    if not args.skip_postgres:
        print("PostgreSQL:")
        try:
            gifts_bench(args.pg_url, args.rounds, args.gifts)
            payout_bench(args.pg_url, args.payers)
        except Exception as exc:
            print(f"  skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
