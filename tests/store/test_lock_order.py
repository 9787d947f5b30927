"""Units of work lock balance rows in one global order: no deadlock, no retry (issue 12).

A unit of work (``Ledger.atomic``) may post several entries. Balance changes
are collected for the whole unit and applied once at its end in ascending
``(account, shard)`` order, with one shard per account per unit, so two units
can never wait on each other in a cycle, however their posts interleave.

Deadlocks are read from ``pg_stat_database.deadlocks``; retries are counted
through the ledger's ``Retry`` sleep hook (each retry sleeps exactly once).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    InsufficientFunds,
    Ledger,
    Posting,
    Retry,
)

pytestmark = pytest.mark.postgres

HOT = "platform:hot"


class _CountingRetry(Retry):
    """A Retry whose sleeps (one per retry) are counted, not hidden."""

    def __init__(self) -> None:
        self.retries = 0
        self._lock = threading.Lock()
        super().__init__(sleep=self._count)

    def _count(self, delay: float) -> None:
        with self._lock:
            self.retries += 1
        time.sleep(delay)


def _deadlocks(engine: sa.Engine) -> int:
    """Deadlocks PostgreSQL has detected in this database (stats flushed first)."""
    time.sleep(1.2)  # backends flush their statistics at most once a second
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        value = conn.execute(
            sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        ).scalar()
    return int(value or 0)


def _run_threads(n: int, target) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_posts_on_one_sharded_account_never_deadlock(pg_engine, prefix):
    """The issue's figure: 8 threads x 25 units, each posting two entries on one
    4-shard account, cause no deadlock and no retry."""
    retry = _CountingRetry()
    ledger = Ledger(pg_engine, prefix=prefix, retry=retry)
    ledger.migrate()
    ledger.open_accounts(
        [
            AccountSpec(HOT, AccountKind.ASSET, allow_overdraft=True, balance_shards=4),
            *(
                AccountSpec(f"user:{i}:src", AccountKind.EQUITY, allow_overdraft=True)
                for i in range(8)
            ),
        ]
    )
    before = _deadlocks(pg_engine)

    def worker(i: int) -> None:
        for u in range(25):

            def unit(tx: Ledger, u: int = u) -> None:
                for leg in range(2):
                    tx.post(
                        EntryDraft(
                            "test",
                            (Posting.debit(HOT, 10), Posting.credit(f"user:{i}:src", 10)),
                            f"t{i}:u{u}:{leg}",
                        )
                    )

            ledger.atomic(unit)

    errors = _run_threads(8, worker)
    assert errors == []
    assert _deadlocks(pg_engine) - before == 0
    assert retry.retries == 0
    assert ledger.balance(HOT).posted_minor == 8 * 25 * 2 * 10
    assert ledger.verify().ok


ACCOUNTS = [
    AccountSpec("platform:a", AccountKind.ASSET, allow_overdraft=True, balance_shards=4),
    AccountSpec("platform:b", AccountKind.REVENUE, allow_overdraft=True, balance_shards=3),
    AccountSpec("platform:c", AccountKind.EXPENSE, allow_overdraft=True),
    AccountSpec("platform:d", AccountKind.LIABILITY, allow_overdraft=True),
    *(AccountSpec(f"user:{i}:wallet", AccountKind.LIABILITY) for i in range(4)),
    AccountSpec("equity:seed", AccountKind.EQUITY, allow_overdraft=True),
]
FUNDED = [f"user:{i}:wallet" for i in range(4)]


def _random_unit(rng: random.Random, tag: str) -> list[EntryDraft]:
    """2 to 4 entries over random accounts, in random order, some from guarded wallets."""
    drafts = []
    codes = [a.code for a in ACCOUNTS]
    for n in range(rng.randint(2, 4)):
        legs = rng.sample(codes, rng.randint(2, 4))
        amounts = [rng.randint(1, 50) for _ in legs[1:]]
        postings = [Posting(code, -a, "USD") for code, a in zip(legs[1:], amounts, strict=True)]
        postings.append(Posting(legs[0], sum(amounts), "USD"))
        rng.shuffle(postings)
        drafts.append(EntryDraft("test", tuple(postings), f"{tag}:{n}"))
    return drafts


WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    from spaktok_ledger import EntryDraft, InsufficientFunds, Ledger, Posting, Retry
    sys.path.insert(0, sys.argv[4])
    from tests.store.test_lock_order import _random_unit
    url, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    retries = []
    ledger = Ledger(url, prefix=prefix, retry=Retry(sleep=lambda d: (retries.append(d), time.sleep(d))))
    rng = random.Random(seed)
    ok = refused = 0
    for u in range(30):
        drafts = _random_unit(rng, f"p{seed}:u{u}")
        try:
            ledger.atomic(lambda tx: [tx.post(d) for d in drafts])
            ok += 1
        except InsufficientFunds:
            refused += 1
    print(json.dumps({"ok": ok, "refused": refused, "retries": len(retries)}))
    """
)


def test_random_multi_post_units_from_threads_and_processes_never_deadlock(
    pg_engine, pg_database_url, prefix, request
):
    """Random multi-post units from 6 threads and 3 processes at once: zero deadlocks,
    zero retries, balances verified, no guarded wallet below zero."""
    retry = _CountingRetry()
    ledger = Ledger(pg_engine, prefix=prefix, retry=retry)
    ledger.migrate()
    ledger.open_accounts(ACCOUNTS)
    ledger.post(
        EntryDraft(
            "seed",
            (*(Posting.credit(w, 2_000) for w in FUNDED), Posting.debit("equity:seed", 8_000)),
            "seed",
        )
    )
    before = _deadlocks(pg_engine)
    root = str(request.config.rootpath)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, pg_database_url, prefix, str(100 + p), root],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(3)
    ]
    outcomes = {"ok": 0, "refused": 0}

    def worker(i: int) -> None:
        rng = random.Random(i)
        for u in range(30):
            drafts = _random_unit(rng, f"t{i}:u{u}")
            try:
                ledger.atomic(lambda tx, drafts=drafts: [tx.post(d) for d in drafts])
                outcomes["ok"] += 1
            except InsufficientFunds:
                outcomes["refused"] += 1

    errors = _run_threads(6, worker)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert errors == []
    assert _deadlocks(pg_engine) - before == 0
    assert retry.retries == 0
    assert [r["retries"] for r in results] == [0, 0, 0]
    assert outcomes["ok"] + sum(r["ok"] for r in results) > 0
    report = ledger.verify()
    assert report.ok, report
    for code in FUNDED:
        assert ledger.balance(code).available_minor >= 0


def test_refusal_inside_a_unit_is_raised_at_the_post(pg_engine, prefix):
    """Collecting balance changes until the end of the unit does not delay a refusal:
    the post that would overdraw raises InsufficientFunds, counting the unit's earlier posts."""
    ledger = Ledger(pg_engine, prefix=prefix)
    ledger.migrate()
    ledger.open_accounts(ACCOUNTS)
    ledger.post(
        EntryDraft("seed", (Posting.credit(FUNDED[0], 100), Posting.debit("equity:seed", 100)), "s")
    )
    calls = []

    def unit(tx: Ledger) -> None:
        tx.post(
            EntryDraft("t", (Posting.debit(FUNDED[0], 60), Posting.credit("platform:d", 60)), "a")
        )
        calls.append("first")
        assert tx.balance(FUNDED[0]).available_minor == 40
        tx.post(
            EntryDraft("t", (Posting.debit(FUNDED[0], 60), Posting.credit("platform:d", 60)), "b")
        )
        calls.append("second")

    with pytest.raises(InsufficientFunds):
        ledger.atomic(unit)
    assert calls == ["first"]
    assert ledger.balance(FUNDED[0]).available_minor == 100
    assert ledger.count_entries() == 1
