"""Benchmark: webhook deliveries over HTTP at 1, 4, 16 and 32 senders, inline and fast-ack;
and the outbox relay's throughput to Redis Streams.

    .venv/bin/python bench/webhook_bench.py                     # short default (~2-3 min)
    .venv/bin/python bench/webhook_bench.py --purchases 300 --rounds 3 --relay-events 20000

uvicorn runs the FastAPI example (one process; ``--web-workers N`` for
``uvicorn --workers N``) on PostgreSQL against the
bundled FakeStripe. For each sender count and mode, fresh purchases are paid
at the fake Stripe and every event is delivered 1 to 5 times, shuffled, over
that many keep-alive connections from a sender process of its own (Stripe's
retries and several deliverers at once). Inline: the answer applies the
event. Fast-ack: the answer stores it, and one ``spaktok-ledger worker``
process (``--threads 2``; ``--worker-threads N``) applies it; the bench waits
until the inbox is drained.

Reported per run (rounds interleave the modes and sender counts, the mode
that goes first alternating by round, so load from elsewhere on the machine
hits them alike; each run starts after a ``CHECKPOINT`` once no autovacuum
worker is busy), as min / median / max over rounds:

- first deliveries per second (applied events / wall time until applied),
  and its ratio to the 1-sender figure of the same mode and round;
- p99 answer latency; 5xx answers; PostgreSQL deadlocks
  (``pg_stat_database.deadlocks`` before and after);
- fast-ack's floor: the same inbox rows written by hand-made SQL (one prebuilt
  ``INSERT ... ON CONFLICT DO NOTHING`` per delivery, same threads, no HTTP):
  ack throughput / floor throughput;
- the relay: events/s from the outbox to Redis (``OutboxRelay`` with
  ``RedisStreamsPublisher``), against a floor of the same ``XADD`` pipeline
  from prebuilt messages without the database: relay / floor.

Absolute numbers depend on the machine and its load; read the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import drop_ledger_tables  # noqa: E402 - bench/, the script's directory
from examples.common.services import Settings, build_services  # noqa: E402

from spaktok_ledger import OutboxRelay, RedisStreamsPublisher, VelocityLimits  # noqa: E402
from spaktok_ledger.testing import FakeStripe, signed_event  # noqa: E402

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SPAKTOK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "whsec_bench_platform"
CONNECT_SECRET = "whsec_bench_connect"
API_KEY = "sk_test_bench"
SENDERS = (1, 4, 16, 32)
_serial = itertools.count()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(url: str, prefix: str, fake: FakeStripe, mode: str) -> dict[str, str]:
    return {
        **os.environ,
        "SPAKTOK_DATABASE_URL": url,
        "SPAKTOK_TABLE_PREFIX": prefix,
        "STRIPE_API_BASE": fake.url,
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_CONNECT_WEBHOOK_SECRET": CONNECT_SECRET,
        "SPAKTOK_RATES": "static",
        "SPAKTOK_WEBHOOK_MODE": mode,
        "SPAKTOK_IN_PROCESS_WORKER": "0",
        "PYTHONUNBUFFERED": "1",
    }


class App:
    """uvicorn with the FastAPI example (and, fast-ack, a worker process) on one prefix."""

    def __init__(
        self,
        url: str,
        fake: FakeStripe,
        mode: str,
        worker_nice: int = 10,
        web_workers: int = 1,
        worker_threads: int = 2,
    ) -> None:
        self.prefix = f"wb{uuid.uuid4().hex[:6]}_"
        self.mode = mode
        self.settings = Settings(
            stripe_secret_key=API_KEY,
            stripe_webhook_secret=SECRET,
            stripe_connect_webhook_secret=CONNECT_SECRET,
            database_url=url,
            table_prefix=self.prefix,
            stripe_api_base=fake.url,
            rates="static",
        )
        self.services = build_services(self.settings)  # migrates the prefix
        self.port = _free_port()
        env = _env(url, self.prefix, fake, mode)
        self.log = open(ROOT / "build" / f"webhook-bench-{self.prefix}.log", "wb")  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                 "--backlog", "512", "--workers", str(web_workers)],
                cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            )
        ]
        if mode == "fast-ack":
            self.procs.append(
                subprocess.Popen(
                    # Below the web server's priority, as docs/operations.md deploys it
                    # (systemd Nice=10): on a shared host the acknowledgements come first.
                    ["nice", "-n", str(worker_nice),
                     sys.executable, "-m", "spaktok_ledger", "--db", url, "--prefix", self.prefix,
                     "-q", "worker", "--idle", "0.05", "--sweep", "off",
                     "--reconcile-payouts", "off", "--threads", str(worker_threads)],
                    cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/openapi.json", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the app did not start; see build/webhook-bench-*.log")

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        ledger = self.services.ledger
        with ledger.engine.begin() as conn:  # leave the shared database as it was
            drop_ledger_tables(conn, ledger, self.prefix)
        self.services.close()
        self.log.close()

    def unapplied(self, status: str = "queued") -> int:
        t = self.services.ledger.tables.webhook_events
        return int(
            self.services.ledger.read(
                lambda conn: conn.execute(
                    sa.select(sa.func.count()).select_from(t).where(t.c.status == status)
                ).scalar()
            )
        )


def _deliveries(app: App, fake: FakeStripe, purchases: int, rng: random.Random) -> tuple[list, int]:
    payments = app.services.payments
    payments.velocity = VelocityLimits(None, None)  # the bench buys a lot, quickly
    events = []
    for n in (next(_serial) for _ in range(purchases)):
        quote = payments.pricing.quote("starter", currency="USD", user_id=f"v{n % 50}")
        result = payments.create_checkout(
            f"v{n % 50}", quote.id, idempotency_key=f"{app.prefix}{n}",
            success_url="https://a.example/ok", cancel_url="https://a.example/no",
        )
        events.append(fake.complete_checkout(result.checkout_session_id))
    deliveries = [signed_event(e, SECRET) for e in events for _ in range(rng.randint(1, 5))]
    rng.shuffle(deliveries)
    return deliveries, len(events)


def _deadlocks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar()
            or 0
        )


def _send(
    port: int, deliveries: list, senders: int
) -> tuple[list[float], Counter[int], float, float]:
    """Deliver ``deliveries`` over ``senders`` keep-alive connections, each sending its
    share one after the other (Stripe waits for an answer before its next attempt).

    The senders run in a separate process on one asyncio loop with a minimal HTTP/1.1
    client (``_sender_main``): on a 2-core machine, 32 client threads (httpx) in this
    process cost more CPU than the server's acknowledgement itself, and they shared the
    GIL with the fake Stripe that the inline mode and the worker call. What a delivery's
    latency measures should be the server, not the load generator.

    Returns the latencies, the answers' statuses, when sending began (``time.time()``)
    and how long it took until the last answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for body, header in deliveries:
            f.write(json.dumps([body.decode(), header]) + "\n")
        path = f.name
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "webhook_senders.py"), str(port),
             str(senders), path],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(path)
    answer = json.loads(out)
    statuses = Counter({int(k): v for k, v in answer["statuses"].items()})
    return answer["latencies"], statuses, answer["began"], answer["elapsed"]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _floor(app: App, deliveries: list, senders: int) -> float:
    """Inbox rows for the same deliveries written by hand: one prebuilt statement each."""
    engine = app.services.ledger.engine
    table = f"{app.prefix}webhook_events"
    statement = sa.text(
        f"INSERT INTO {table} (event_id, endpoint, type, stripe_created, status, outcome, "
        "payload, received_at) VALUES (:id, 'platform', :type, :created, 'ignored', 'floor', "
        "CAST(:payload AS JSONB), now()) ON CONFLICT (event_id) DO NOTHING"
    )
    rows = []
    for body, _header in deliveries:
        event = json.loads(body)
        rows.append({"id": "floor_" + event["id"], "type": event["type"],
                     "created": event["created"], "payload": body.decode()})
    chunks = [rows[i::senders] for i in range(senders)]

    def run(chunk: list) -> None:
        with engine.connect() as conn:
            for row in chunk:
                conn.execute(statement, row)
                conn.commit()

    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(rows) / (time.perf_counter() - began)


def _settle(engine: sa.Engine, wait: float = 15.0) -> None:
    """Start each run on a settled database: the previous run's dirty pages written
    (``CHECKPOINT``) and no autovacuum worker busy on its tables (a 32-sender inline
    run left autovacuum running into the next run, which then measured slower)."""
    with engine.connect() as conn:
        try:
            conn.execute(sa.text("CHECKPOINT"))  # superuser or pg_checkpoint
        except sa.exc.ProgrammingError:
            conn.rollback()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and conn.execute(
            sa.text("SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'autovacuum worker'")
        ).scalar():
            conn.rollback()
            time.sleep(0.1)


def one(app: App, fake: FakeStripe, senders: int, purchases: int, rng: random.Random) -> dict:
    deliveries, events = _deliveries(app, fake, purchases, rng)
    engine = app.services.ledger.engine
    _settle(engine)
    before = _deadlocks(engine)
    latencies, statuses, began, acked = _send(app.port, deliveries, senders)
    while app.mode == "fast-ack" and app.unapplied():
        time.sleep(0.02)
    applied = time.time() - began
    result = {
        "events_per_s": events / applied,
        "acks_per_s": len(deliveries) / acked,
        "p99_ms": _p99(latencies) * 1000,
        "5xx": sum(n for code, n in statuses.items() if code >= 500),
        "non_2xx": sum(n for code, n in statuses.items() if code >= 300),
        "deadlocks": _deadlocks(engine) - before,
        "parked": app.unapplied("parked"),
    }
    if app.mode == "fast-ack":
        result["floor_per_s"] = _floor(app, deliveries, senders)
    return result


def relay_bench(url: str, events: int, rounds: int) -> dict[str, list[float]]:
    """Outbox -> Redis events/s, and the raw XADD pipeline of the same messages."""
    import redis

    from spaktok_ledger import GiftEconomy, Ledger
    from spaktok_ledger._service._relay import event_message

    ratios: dict[str, list[float]] = {"relay": [], "floor": [], "ratio": []}
    client = redis.Redis.from_url(REDIS_URL)
    for _ in range(rounds):
        prefix = f"wr{uuid.uuid4().hex[:6]}_"
        ledger = Ledger(url, prefix=prefix)
        economy = GiftEconomy(ledger)
        economy.setup()
        t = ledger.tables.outbox
        now = ledger.now()
        with ledger.engine.begin() as conn:  # outbox rows as gifts write them, in bulk
            conn.execute(t.insert(), [
                {"topic": "gift.sent", "dedupe_key": f"b{i}", "entry_id": None,
                 "payload": {"streamer_id": f"s{i % 100}", "sender_id": "v", "gift": {"id": "rose"},
                             "n": i}, "created_at": now}
                for i in range(events)
            ])
        stream_prefix = f"bench:{prefix}"
        pending = economy.outbox.pending(limit=min(events, 10_000))
        publisher = RedisStreamsPublisher(REDIS_URL, stream_prefix=stream_prefix)
        relay = OutboxRelay(economy.outbox, [publisher], batch=1000)
        began = time.perf_counter()
        while relay.run_once():
            pass
        relay_rate = events / (time.perf_counter() - began)
        relay.close()
        messages = [event_message(e, f"floor:{e.id}") for e in pending]
        floor_stream = f"{stream_prefix}floor"
        began = time.perf_counter()
        for start in range(0, len(messages), 1000):
            pipe = client.pipeline(transaction=False)
            for m in messages[start:start + 1000]:
                pipe.xadd(floor_stream, m)  # type: ignore[arg-type]
            pipe.execute()
        floor_rate = len(messages) / (time.perf_counter() - began)
        ratios["relay"].append(relay_rate)
        ratios["floor"].append(floor_rate)
        ratios["ratio"].append(relay_rate / floor_rate)
        for key in client.scan_iter(f"{stream_prefix}*"):
            client.delete(key)
        with ledger.engine.begin() as conn:
            drop_ledger_tables(conn, ledger, prefix)
        ledger.close()
    client.close()
    return ratios


def _mmm(values: list[float], fmt: str = "{:.2f}") -> str:
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_PG)
    parser.add_argument("--purchases", type=int, default=24, help="events per level and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--senders", default=",".join(map(str, SENDERS)))
    parser.add_argument("--modes", default="inline,fast-ack")
    parser.add_argument("--relay-events", type=int, default=5000)
    parser.add_argument(
        "--web-workers", type=int, default=1, help="uvicorn --workers: web processes"
    )
    parser.add_argument(
        "--worker-threads", type=int, default=2,
        help="spaktok-ledger worker --threads (fast-ack): events applied at once",
    )
    args = parser.parse_args(argv)
    levels = [int(s) for s in args.senders.split(",")]
    modes = args.modes.split(",")
    (ROOT / "build").mkdir(exist_ok=True)
    rng = random.Random(12)
    results: dict[tuple[str, int], list[dict]] = {}
    with FakeStripe() as fake:
        apps = {
            mode: App(
                args.url, fake, mode, web_workers=args.web_workers,
                worker_threads=args.worker_threads,
            )
            for mode in modes
        }
        try:
            for r in range(args.rounds):
                for senders in levels:
                    # Interleaved, and which mode goes first alternates by round: both
                    # modes see the same load, and neither always follows the other.
                    for mode in modes if r % 2 == 0 else modes[::-1]:
                        results.setdefault((mode, senders), []).append(
                            one(apps[mode], fake, senders, args.purchases, rng)
                        )
        finally:
            for app in apps.values():
                app.close()
    print(f"webhooks: {args.purchases} purchases per level, 1-5 deliveries each, "
          f"{args.rounds} round(s); min/median/max over rounds")
    print(f"{'mode':9} {'senders':>7} {'events/s':>18} {'vs 1 sender':>16} {'acks/s':>18} "
          f"{'p99 ms':>20} {'5xx':>4} {'deadlocks':>9} {'parked':>6} {'ack/floor':>16}")
    for mode in modes:
        base = [r["events_per_s"] for r in results[(mode, levels[0])]]
        for senders in levels:
            rs = results[(mode, senders)]
            ratio = [r["events_per_s"] / b for r, b in zip(rs, base, strict=True)]
            floor = (_mmm([r["acks_per_s"] / r["floor_per_s"] for r in rs])
                     if "floor_per_s" in rs[0] else "-")
            events_per_s = _mmm([r["events_per_s"] for r in rs], "{:.1f}")
            print(f"{mode:9} {senders:>7} {events_per_s:>18} "
                  f"{_mmm(ratio):>16} {_mmm([r['acks_per_s'] for r in rs], '{:.0f}'):>18} "
                  f"{_mmm([r['p99_ms'] for r in rs], '{:.0f}'):>20} "
                  f"{sum(r['5xx'] for r in rs):>4} {sum(r['deadlocks'] for r in rs):>9} "
                  f"{max(r['parked'] for r in rs):>6} "
                  f"{floor:>16}")
    if args.relay_events:
        relay = relay_bench(args.url, args.relay_events, args.rounds)
        print(f"\nrelay to Redis Streams, {args.relay_events} events, batch 1000: "
              f"{_mmm(relay['relay'], '{:.0f}')} events/s; raw XADD floor "
              f"{_mmm(relay['floor'], '{:.0f}')}/s; relay/floor {_mmm(relay['ratio'])} "
              f"(target >= 5,000 events/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
