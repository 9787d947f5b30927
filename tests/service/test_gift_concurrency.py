"""Many threads sending gifts at once on PostgreSQL, copies of the same request among them.

A gift is one read and one statement writing its entry, postings, event and earning
lot (docs/operations.md, "What a gift costs the database"). Under concurrent senders,
with the same idempotency keys sent from two threads at once, every gift must be
applied once, each copy answered with the first receipt, and no transaction may have
deadlocked: retries are counted from the library's own retry log, not hidden.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from spaktok_ledger import GiftEconomy, GiftReceipt
from tests.service.conftest import fund

THREADS = 12
GIFTS_PER_THREAD = 15
USERS = [f"fan{i}" for i in range(6)]
STARS = ["star0", "star1", "star2"]


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.sqlstates: Counter[str | None] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "operation", None) == "retry":
            self.sqlstates[getattr(record, "sqlstate", None)] += 1


def _open(economy: GiftEconomy) -> None:
    """The users' wallets, funded, and the streamers."""
    for user in USERS:
        economy.open_user(user)
        fund(economy, user, 10_000)
    for star in STARS:
        economy.register_streamer(star)


def _threads_counting_retries(send: Callable[[int], None]) -> Counter[str | None]:
    """Run ``send(t)`` for t in range(THREADS), each in a thread of its own, all at
    once; the retries the library logged meanwhile, by SQLSTATE."""
    retries = _Retries()
    log = logging.getLogger("spaktok_ledger.store")
    log.addHandler(retries)
    threads = [threading.Thread(target=send, args=(t,)) for t in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        log.removeHandler(retries)
    return retries.sqlstates


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_concurrent_gifts_apply_once_without_deadlock(held_economy: GiftEconomy) -> None:
    economy = held_economy
    _open(economy)
    receipts: dict[tuple[str, str], list[GiftReceipt]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def send(t: int) -> None:
        # Threads t and t + 6 send as the same user with the same keys: copies race.
        user = USERS[t % len(USERS)]
        barrier.wait()
        for n in range(GIFTS_PER_THREAD):
            star = STARS[(t + n) % len(STARS)] if t < len(USERS) else STARS[(t - 6 + n) % 3]
            try:
                receipt = economy.send_gift(user, star, "rose", idempotency_key=f"g{n}")
            except BaseException as exc:  # every error is a failure here
                with lock:
                    errors.append(exc)
                return
            with lock:
                receipts.setdefault((user, f"g{n}"), []).append(receipt)

    sqlstates = _threads_counting_retries(send)
    assert not errors, errors[0]
    print(f"\nretries by sqlstate: {dict(sqlstates)}")
    assert sqlstates["40P01"] == 0  # deadlock_detected
    # Each (user, key) was sent twice and applied once: one first answer, one replay.
    assert len(receipts) == len(USERS) * GIFTS_PER_THREAD
    for copies in receipts.values():
        assert len(copies) == 2
        assert copies[0] == copies[1]
        assert sorted(r.replayed for r in copies) == [False, True]
    for user in USERS:
        assert economy.wallet(user).coins == 10_000 - 10 * GIFTS_PER_THREAD
    sent = economy.outbox.pending(limit=1000, topics=["gift.sent"])
    assert len(sent) == len(receipts)
    assert {e.entry_id for e in sent} == {c[0].entry_id for c in receipts.values()}
    pending = sum(economy.earnings(star).pending_minor for star in STARS)
    assert pending == len(receipts) * 4
    assert economy.ledger.verify().ok


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_batchers_share_wallets_without_deadlock(held_economy: GiftEconomy) -> None:
    """Two GiftBatchers (two processes' worth) commit set-based batches side by side:
    the same six wallets go down in both (three or more guarded rows: one update in a
    savepoint), the same three streamers go up, and the entries, postings, events and
    lots go in as arrays. Every gift is applied once, no transaction deadlocked (the
    retries are counted from the library's retry log), and the books verify."""
    from spaktok_ledger import GiftBatcher

    economy = held_economy
    _open(economy)
    batchers = [GiftBatcher(economy, window_seconds=0.002), GiftBatcher(economy)]
    receipts: list[GiftReceipt] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def send(t: int) -> None:
        batcher, user = batchers[t % 2], USERS[(t // 2) % len(USERS)]  # both share each wallet
        barrier.wait()
        for n in range(GIFTS_PER_THREAD):
            try:
                receipt = batcher.send_gift(
                    user, STARS[(t + n) % 3], "rose", idempotency_key=f"b{t}:{n}"
                )
            except BaseException as exc:  # every error is a failure here
                with lock:
                    errors.append(exc)
                return
            with lock:
                receipts.append(receipt)

    sqlstates = _threads_counting_retries(send)
    assert not errors, errors[0]
    print(f"\nretries by sqlstate: {dict(sqlstates)}; batches {[b.batches for b in batchers]}")
    assert sqlstates["40P01"] == 0  # deadlock_detected
    total = THREADS * GIFTS_PER_THREAD
    assert len(receipts) == total and not any(r.replayed for r in receipts)
    assert len({r.entry_id for r in receipts}) == total
    per_user = THREADS // len(USERS) * GIFTS_PER_THREAD
    for user in USERS:
        assert economy.wallet(user).coins == 10_000 - 10 * per_user
    sent = economy.outbox.pending(limit=1000, topics=["gift.sent"])
    assert {e.entry_id for e in sent} == {r.entry_id for r in receipts}
    assert sum(economy.earnings(star).pending_minor for star in STARS) == total * 4
    assert economy.ledger.verify().ok
