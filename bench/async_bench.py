"""Benchmark: the async FastAPI app against the sync one and its thread pool, 32 at a time.

    .venv/bin/python bench/async_bench.py                 # PostgreSQL (SPAKTOK_BENCH_PG_URL)
    .venv/bin/python bench/async_bench.py --sqlite        # a SQLite file instead

Three FastAPI apps with the same one-route shape (``POST /gift``: validate
the body, send one gift, answer the receipt) are driven in-process through
httpx's ASGI transport, ``--concurrency`` (32) requests in flight at a time:

* **sync**: a ``def`` route calling :class:`GiftEconomy` (FastAPI runs it in
  its thread pool, 40 threads), on a sync engine;
* **async**: an ``async def`` route awaiting :class:`AsyncGiftEconomy`, on the
  async engine (psycopg 3 async / aiosqlite);
* **floor**: an ``async def`` route running hand-written SQL on the async
  driver, statements built once: lock the wallet's balance row, check the
  funds, insert the entry and its three postings, update the three balance
  rows. That is the gift's ledger rows only (no outbox event, no earnings
  lot, no idempotency lookup), so it is a floor no implementation can beat.

Each round runs ``--requests`` gifts through each app, in an order that
rotates from round to round, so that drift in machine load hits all three
alike. The report gives, over the rounds, min / median / max of the ratios of
throughputs: async / sync (the issue's target: at least 1.0), async / floor
and sync / floor. Only these ratios mean anything; absolute rates depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import count
from typing import Any

import httpx
import sqlalchemy as sa
from _common import drop_ledger_tables  # bench/, the script's directory
from fastapi import FastAPI
from pydantic import BaseModel

from spaktok_ledger import (
    AsyncGiftEconomy,
    AsyncLedger,
    Gift,
    GiftCatalogue,
    GiftEconomy,
    Ledger,
    create_async_engine,
    create_engine,
)

DEFAULT_PG = os.environ.get(
    "SPAKTOK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GIFTS = GiftCatalogue([Gift("rose", 10)])
SENDERS = 64
STREAMERS = 4
_keys = count()


class GiftBody(BaseModel):
    sender: str
    streamer: str
    key: str


def sync_app(economy: GiftEconomy) -> FastAPI:
    app = FastAPI()

    @app.post("/gift", status_code=201)
    def gift(body: GiftBody) -> dict[str, Any]:
        receipt = economy.send_gift(body.sender, body.streamer, "rose", idempotency_key=body.key)
        return receipt.to_dict()

    return app


def async_app(economy: AsyncGiftEconomy) -> FastAPI:
    app = FastAPI()

    @app.post("/gift", status_code=201)
    async def gift(body: GiftBody) -> dict[str, Any]:
        receipt = await economy.send_gift(
            body.sender, body.streamer, "rose", idempotency_key=body.key
        )
        return receipt.to_dict()

    return app


class RawGift:
    """The gift's ledger rows in hand-written SQL, statements built once."""

    def __init__(self, engine: Any, ledger: Ledger) -> None:
        t = ledger.tables
        b = t.balances
        self.engine = engine
        self.ids = {a.code: a.id for a in ledger.accounts()}
        self.lock = (
            sa.select(b.c.posted, b.c.pending_debit)
            .where(b.c.account_id == sa.bindparam("a"), b.c.shard == 0)
            .with_for_update()
        )
        self.insert_entry = t.entries.insert().returning(t.entries.c.id)
        self.insert_postings = t.postings.insert()
        self.update_balance = (
            b.update()
            .where(b.c.account_id == sa.bindparam("a"), b.c.shard == 0)
            .values(posted=b.c.posted + sa.bindparam("d"), version=b.c.version + 1)
        )

    async def __call__(self, sender: str, streamer: str, key: str) -> dict[str, Any]:
        wallet = self.ids[f"user:{sender}:wallet"]
        earnings = self.ids[f"streamer:{streamer}:earnings"]
        revenue = self.ids["platform:gift_revenue"]
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            row = (await conn.execute(self.lock, {"a": wallet})).one()
            if -row.posted - row.pending_debit < 10:  # a liability: credits are negative
                raise RuntimeError("insufficient funds")
            entry_id = (
                await conn.execute(
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
                )
            ).scalar_one()
            await conn.execute(
                self.insert_postings,
                [
                    {"entry_id": entry_id, "account_id": wallet, "amount": 10, "currency": "USD"},
                    {"entry_id": entry_id, "account_id": earnings, "amount": -4, "currency": "USD"},
                    {"entry_id": entry_id, "account_id": revenue, "amount": -6, "currency": "USD"},
                ],
            )
            # posted is the signed sum of postings (debits positive)
            await conn.execute(self.update_balance, {"a": wallet, "d": 10})
            await conn.execute(self.update_balance, {"a": earnings, "d": -4})
            await conn.execute(self.update_balance, {"a": revenue, "d": -6})
        return {"entry_id": entry_id}


def floor_app(raw: RawGift) -> FastAPI:
    app = FastAPI()

    @app.post("/gift", status_code=201)
    async def gift(body: GiftBody) -> dict[str, Any]:
        return await raw(body.sender, body.streamer, body.key)

    return app


async def drive(app: FastAPI, name: str, requests: int, concurrency: int) -> float:
    """``requests`` gifts through ``app``, ``concurrency`` in flight; returns gifts/s."""
    transport = httpx.ASGITransport(app=app)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def one(i: int) -> None:
            body = {
                "sender": f"u{i % SENDERS}",
                "streamer": f"s{i % STREAMERS}",
                "key": f"{name}:{next(_keys)}",
            }
            async with gate:
                response = await client.post("/gift", json=body)
            if response.status_code != 201:
                raise SystemExit(f"{name}: {response.status_code} {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return requests / (time.perf_counter() - started)


async def main_async(args: argparse.Namespace, url: str) -> int:
    prefix = f"abench{os.getpid()}_"
    sync_engine = create_engine(url, pool_size=args.concurrency + 8, max_overflow=16)
    ledger = Ledger(sync_engine, prefix=prefix)
    economy = GiftEconomy(ledger, GIFTS, hold_days=0)
    economy.setup()
    for s in range(STREAMERS):
        economy.register_streamer(f"s{s}")
    coins = 10 * (args.requests * (args.rounds + 1) * 3 // SENDERS + 10)
    for u in range(SENDERS):
        economy.credit_purchase(
            f"u{u}", coins=coins, price_usd_minor=coins, idempotency_key=f"f{u}"
        )
    aengine = create_async_engine(url, pool_size=args.concurrency + 8, max_overflow=16)
    aledger = AsyncLedger(aengine, prefix=prefix)
    aeconomy = AsyncGiftEconomy(aledger, GIFTS, hold_days=0)
    apps = {
        "sync": sync_app(economy),
        "async": async_app(aeconomy),
        "floor": floor_app(RawGift(aengine, ledger)),
    }
    for name, app in apps.items():  # warm-up: pools, statement caches, threads
        await drive(app, name, args.concurrency * 2, args.concurrency)
    rates: dict[str, list[float]] = {name: [] for name in apps}
    order = list(apps)
    for r in range(args.rounds):
        for name in order[r % 3 :] + order[: r % 3]:
            rates[name].append(await drive(apps[name], name, args.requests, args.concurrency))
    report = await aledger.verify()
    await aengine.dispose()
    if args.backend == "postgresql":  # leave the shared PostgreSQL database as it was
        with sync_engine.begin() as conn:
            drop_ledger_tables(conn, ledger, prefix)
    sync_engine.dispose()
    if not report.ok:
        print(f"verify failed: {report.problems[:3]}")
        return 1

    def ratios(a: str, b: str) -> str:
        values = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        return (
            f"min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}"
        )

    print(
        f"{args.backend}: {args.rounds} rounds x {args.requests} gifts per app, "
        f"{args.concurrency} concurrent requests"
    )
    print(f"  async / sync    {ratios('async', 'sync')}   (target: median >= 1.0)")
    print(f"  async / floor   {ratios('async', 'floor')}")
    print(f"  sync  / floor   {ratios('sync', 'floor')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=320, help="gifts per app per round")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    if args.sqlite:
        args.backend = "sqlite"
        url = f"sqlite:///{tempfile.mkdtemp()}/async_bench.db"
    else:
        args.backend = "postgresql"
        url = args.pg_url
    return asyncio.run(main_async(args, url))


if __name__ == "__main__":
    sys.exit(main())
