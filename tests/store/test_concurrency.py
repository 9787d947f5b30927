"""Several processes hammering one ledger: conservation, no overdraft, no leaked deadlock.

Workers are separate processes (``spawn``), each with its own engine, doing
random transfers among a few accounts (some no-overdraft, one sharded) and
ring transfers A→B→C→...→A in both directions, the classic deadlock shape.
Afterwards the ledger must verify clean, every currency must sum to zero, no
no-overdraft account may be negative, and no worker may have seen anything but
success or ``InsufficientFunds``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import traceback

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    AsyncLedger,
    EntryDraft,
    InsufficientFunds,
    Ledger,
    Posting,
)
from tests.apis import APIS

pytestmark = pytest.mark.slow

RING = [f"user:{i}:wallet" for i in range(5)]
SHARDED = "streamer:1:earnings"
SEED = "equity:seed"
SPECS = [
    *(AccountSpec(code, AccountKind.LIABILITY) for code in RING),
    AccountSpec(SHARDED, AccountKind.LIABILITY, balance_shards=4),
    AccountSpec(SEED, AccountKind.EQUITY, allow_overdraft=True),
    AccountSpec("platform:gift_revenue", AccountKind.REVENUE, allow_overdraft=True, balance_shards=8),
]
START = 5_000


def _transfer(rng: random.Random, key: str, step: int) -> EntryDraft:
    """One random transfer: a ring step, a multi-leg entry, or a hot-account credit."""
    kind = rng.random()
    if kind < 0.4:
        # ring: each worker walks the ring in its own direction (step)
        a = rng.randrange(len(RING))
        src, dst = RING[a], RING[(a + step) % len(RING)]
        amount = rng.randint(1, 400)
        postings = (Posting.debit(src, amount), Posting.credit(dst, amount))
    elif kind < 0.8:
        # a multi-leg entry over 3-5 accounts, listed in random order
        n = rng.randint(3, 5)
        codes = rng.sample([*RING, SHARDED], n)
        amounts = [rng.randint(1, 300) for _ in range(n - 1)]
        legs = [Posting.debit(codes[0], sum(amounts))]
        legs += [Posting.credit(c, x) for c, x in zip(codes[1:], amounts, strict=True)]
        rng.shuffle(legs)
        postings = tuple(legs)
    else:
        # spend from the sharded account into the hot revenue account
        amount = rng.randint(1, 500)
        postings = (
            Posting.debit(SHARDED, amount),
            Posting.credit("platform:gift_revenue", amount),
        )
    return EntryDraft("transfer", postings, key)


def _worker(url: str, prefix: str, seed: int, ops: int, queue: mp.Queue, api: str = "sync") -> None:
    if api == "async":
        try:
            queue.put(asyncio.run(_async_worker(url, prefix, seed, ops)))
        except BaseException:
            queue.put({"ok": 0, "refused": 0, "errors": [traceback.format_exc()]})
        return
    rng = random.Random(seed)
    outcome = {"ok": 0, "refused": 0, "errors": []}
    ledger = Ledger(url, prefix=prefix)
    try:
        for i in range(ops):
            try:
                ledger.post(_transfer(rng, f"w{seed}:{i}", 1 if seed % 2 else -1))
                outcome["ok"] += 1
            except InsufficientFunds:
                outcome["refused"] += 1
    except Exception:
        outcome["errors"].append(traceback.format_exc())
    finally:
        ledger.close()
        queue.put(outcome)


async def _async_worker(url: str, prefix: str, seed: int, ops: int, tasks: int = 4) -> dict:
    """The async API's worker: ``tasks`` concurrent coroutines on one AsyncLedger share the ops."""
    outcome = {"ok": 0, "refused": 0, "errors": []}
    ledger = AsyncLedger(url, prefix=prefix)

    async def task(t: int) -> None:
        rng = random.Random(seed * 1000 + t)
        for i in range(t, ops, tasks):
            try:
                await ledger.post(_transfer(rng, f"w{seed}:{i}", 1 if seed % 2 else -1))
                outcome["ok"] += 1
            except InsufficientFunds:
                outcome["refused"] += 1
            except Exception:
                outcome["errors"].append(traceback.format_exc())

    try:
        await asyncio.gather(*(task(t) for t in range(tasks)))
    finally:
        await ledger.aclose()
    return outcome


def _run_storm(url: str, prefix: str, workers: int, ops: int, api: str = "sync") -> list[dict]:
    ledger = Ledger(url, prefix=prefix)
    ledger.migrate()
    ledger.open_accounts(SPECS)
    for code in [*RING, SHARDED]:
        ledger.post(EntryDraft("seed", (Posting.debit(SEED, START), Posting.credit(code, START)), f"seed:{code}"))
    ledger.close()
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, prefix, seed, ops, queue, api))
        for seed in range(workers)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


def _check(url: str, prefix: str, results: list[dict], workers: int, ops: int) -> None:
    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors[0]
    assert sum(r["ok"] + r["refused"] for r in results) == workers * ops
    ledger = Ledger(url, prefix=prefix)
    try:
        report = ledger.verify()
        assert report.ok, report.problems
        assert ledger.trial_balance().totals()["USD"][0] == ledger.trial_balance().totals()["USD"][1]
        balances = ledger.balances([*RING, SHARDED])
        assert all(b.available_minor >= 0 for b in balances.values())
        # conservation: what left the seed is exactly what the others hold
        total = sum(b.posted_minor for b in balances.values())
        total += ledger.balance("platform:gift_revenue").posted_minor
        assert total == START * (len(RING) + 1)
        assert ledger.count_entries() == 1 + len(RING) + sum(r["ok"] for r in results)
        assert sum(r["ok"] for r in results) > workers * ops // 4
    finally:
        ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
def test_postgres_storm(pg_database_url: str, prefix: str, api: str) -> None:
    """Four processes on PostgreSQL (async: four coroutines each): invariants hold and no
    deadlock escapes."""
    workers, ops = 4, 500
    results = _run_storm(pg_database_url, prefix, workers, ops, api)
    _check(pg_database_url, prefix, results, workers, ops)


@pytest.mark.parametrize("api", APIS)
def test_sqlite_storm(tmp_path, prefix: str, api: str) -> None:
    """Four processes on one SQLite file (async: four coroutines each): invariants hold and
    no 'database is locked' escapes."""
    url = f"sqlite:///{tmp_path / 'storm.db'}"
    workers, ops = 4, 150
    results = _run_storm(url, prefix, workers, ops, api)
    _check(url, prefix, results, workers, ops)


def test_retry_gives_up_with_ledger_busy() -> None:
    """Contention that outlasts the retries surfaces as LedgerBusy, never as a driver error."""
    from spaktok_ledger import LedgerBusy, Retry

    class Busy(Exception):
        sqlite_errorcode = 5

    attempts = []

    def always_busy() -> None:
        attempts.append(1)
        raise sa.exc.OperationalError("UPDATE ...", {}, Busy("database is locked"))

    with pytest.raises(LedgerBusy):
        Retry(attempts=3, sleep=lambda _s: None).run(always_busy)
    assert len(attempts) == 3
