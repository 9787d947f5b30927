"""A multi-process gift storm on PostgreSQL (and SQLite): many senders, few streamers.

Senders with limited coins gift concurrently from four processes. Keys are
drawn from a shared space and each key always names the same gift, so the
same request often arrives from two processes at once (a client retrying
through two app servers). Afterwards: no wallet is below zero, money is
conserved, every accepted key is recorded exactly once, and every process
that got an answer for a key got the same receipt.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import random
import traceback

import pytest

from spaktok_ledger import (
    GiftEconomy,
    GiftReceipt,
    InsufficientFunds,
    Ledger,
    SpendingBlocked,
)
from tests.service.conftest import GIFTS

pytestmark = pytest.mark.slow

SENDERS = [f"viewer{i}" for i in range(12)]
STREAMERS = ["star1", "star2", "star3"]
COINS = 600
KEYS_PER_SENDER = 40


def _request(sender: str, n: int) -> tuple[str, str, int]:
    """The gift a key stands for: fixed, so concurrent duplicates are true replays."""
    digest = hashlib.sha256(f"{sender}:{n}".encode()).digest()
    streamer = STREAMERS[digest[0] % len(STREAMERS)]
    gift = ["rose", "heart"][digest[1] % 2]
    quantity = 1 + digest[2] % 3
    return streamer, gift, quantity


def _worker(url: str, prefix: str, seed: int, ops: int, queue: mp.Queue) -> None:
    rng = random.Random(seed)
    result: dict = {"receipts": {}, "refused": 0, "errors": []}
    ledger = Ledger(url, prefix=prefix)
    economy = GiftEconomy(ledger, GIFTS, hold_days=0)
    try:
        for _ in range(ops):
            sender = rng.choice(SENDERS)
            n = rng.randrange(KEYS_PER_SENDER)
            streamer, gift, quantity = _request(sender, n)
            try:
                receipt = economy.send_gift(
                    sender, streamer, gift, quantity, idempotency_key=f"k{n}"
                )
            except (InsufficientFunds, SpendingBlocked):
                result["refused"] += 1
                continue
            key = f"{sender}:{n}"
            previous = result["receipts"].get(key)
            assert previous is None or previous == receipt.to_dict(), "replay differs"
            result["receipts"][key] = receipt.to_dict()
    except Exception:
        result["errors"].append(traceback.format_exc())
    finally:
        ledger.close()
        queue.put(result)


def _storm(url: str, prefix: str, workers: int = 4, ops: int = 150) -> None:
    ledger = Ledger(url, prefix=prefix)
    economy = GiftEconomy(ledger, GIFTS, hold_days=0)
    economy.setup()
    for streamer in STREAMERS:
        economy.register_streamer(streamer)
    for sender in SENDERS:
        economy.credit_purchase(
            sender, coins=COINS, price_usd_minor=COINS, idempotency_key=f"fund:{sender}"
        )
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, prefix, s, ops, queue)) for s in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)

    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors[0]
    # Every process that saw a key got the same receipt (same entry).
    by_key: dict[str, dict] = {}
    for r in results:
        for key, receipt in r["receipts"].items():
            assert by_key.setdefault(key, receipt) == receipt, f"two receipts for {key}"
    # Every accepted key is exactly one gift entry, and nothing else was written.
    gift_ids = {e.id for e in ledger.iter_entries() if e.type == "gift"}
    assert gift_ids == {r["entry_id"] for r in by_key.values()}
    # The stored receipt (what a later replay returns) is the one the callers saw.
    for key, receipt in list(by_key.items())[:20]:
        sender, n = key.split(":")
        streamer, gift, quantity = _request(sender, int(n))
        again = economy.send_gift(sender, streamer, gift, quantity, idempotency_key=f"k{n}")
        assert again.replayed and again == GiftReceipt.from_dict(receipt)
    # No wallet below zero; money conserved; the platform got exactly its shares.
    wallets = [economy.wallet(s).usd_minor for s in SENDERS]
    assert min(wallets) >= 0
    earnings = sum(economy.earnings(s).available_minor for s in STREAMERS)
    revenue = ledger.balance("platform:gift_revenue").posted_minor
    assert sum(wallets) + earnings + revenue == COINS * len(SENDERS)
    assert revenue == sum(r["gift"]["platform_share_minor"] for r in by_key.values())
    spent = sum(r["gift"]["value_usd_minor"] for r in by_key.values())
    assert sum(wallets) == COINS * len(SENDERS) - spent
    report = ledger.verify()
    assert report.ok, report.problems
    assert len(by_key) > 50
    ledger.close()


@pytest.mark.postgres
def test_gift_storm_postgres(pg_database_url: str, prefix: str) -> None:
    """Four processes gifting on PostgreSQL: conservation, no overdraft, exactly-once."""
    _storm(pg_database_url, prefix)


def test_gift_storm_sqlite(tmp_path, prefix: str) -> None:
    """The same storm on one SQLite file."""
    _storm(f"sqlite:///{tmp_path / 'storm.db'}", prefix, ops=80)
