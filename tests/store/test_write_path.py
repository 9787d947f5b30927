"""The ledger's write path, as the money moves: amounts, balances and refusals.

Tests that notice a changed amount, balance or refusal in ``Ledger.post``,
``hold``, ``post_hold``, ``void_hold``, ``expire_holds`` and ``reverse``
(issue 17): several postings on one account in one entry, 1-unit amounts,
exact-balance spends, holds and releases on sharded accounts with overdraft
checks, and every refusal's type, message and ``details``. They use public
behaviour only (entries, balances, ``verify()``), so they hold whatever the
store does inside. Run on SQLite and PostgreSQL (the ``backend`` fixture); the
mutation run (``python3 dev.py mutate ledger``) runs them on SQLite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import event, given
from hypothesis import strategies as st

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    AlreadyReversed,
    Balance,
    BalanceOverflow,
    CurrencyMismatch,
    Entry,
    EntryDraft,
    EntryPhase,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    InvalidInput,
    Ledger,
    Posting,
    SchemaError,
    UnknownAccount,
    UnknownEntry,
    create_engine,
)
from spaktok_ledger._store._overflow import BALANCE_MAX
from spaktok_ledger.testing import FakeClock
from tests.conftest import wait_for_a_lock_wait
from tests.errors import assert_error

WALLET = "user:1:wallet"  # liability, no overdraft, 1 shard
HOT = "streamer:7:earnings"  # liability, no overdraft, 4 shards
CLEARING = "platform:stripe_clearing"  # asset, no overdraft, 1 shard
HOT_ASSET = "platform:hot_clearing"  # asset, no overdraft, 3 shards
REVENUE = "platform:gift_revenue"  # revenue, overdraft allowed, 8 shards
SEED = "equity:seed"  # equity, overdraft allowed, 1 shard
EUR_WALLET = "user:1:eur_wallet"
EUR_SEED = "equity:eur_seed"

SPECS = [
    AccountSpec(WALLET, AccountKind.LIABILITY),
    AccountSpec(HOT, AccountKind.LIABILITY, balance_shards=4),
    AccountSpec(CLEARING, AccountKind.ASSET),
    AccountSpec(HOT_ASSET, AccountKind.ASSET, balance_shards=3),
    AccountSpec(REVENUE, AccountKind.REVENUE, allow_overdraft=True, balance_shards=8),
    AccountSpec(SEED, AccountKind.EQUITY, allow_overdraft=True),
    AccountSpec(EUR_WALLET, AccountKind.LIABILITY, "EUR"),
    AccountSpec(EUR_SEED, AccountKind.EQUITY, "EUR", allow_overdraft=True),
]
SIGN = {spec.code: spec.kind.normal_sign for spec in SPECS}
_keys = iter(range(10**9))


def key(name: str = "k") -> str:
    return f"{name}:{next(_keys)}"


TEMPLATE_PREFIX = "wp_"


@pytest.fixture(scope="session")
def sqlite_books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with the accounts open, copied for each test: migrating
    per test would cost seconds, and the mutation run repeats these tests per mutant."""
    path = tmp_path_factory.mktemp("write_path") / "books.db"
    engine = create_engine(f"sqlite:///{path}")
    ledger = Ledger(engine, prefix=TEMPLATE_PREFIX)
    ledger.migrate()
    ledger.open_accounts(SPECS)
    engine.dispose()
    return path


@pytest.fixture
def books(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Ledger]:
    """A ledger with SPECS open: a copy of the SQLite template, or a fresh PostgreSQL one."""
    if backend != "sqlite":
        ledger: Ledger = request.getfixturevalue("ledger")
        ledger.open_accounts(SPECS)
        yield ledger
        return
    template: Path = request.getfixturevalue("sqlite_books")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", tmp_path / f"books.db{suffix}")
    engine = create_engine(f"sqlite:///{tmp_path / 'books.db'}")
    yield Ledger(engine, prefix=TEMPLATE_PREFIX, clock=clock)
    engine.dispose()


def fund(ledger: Ledger, code: str, amount: int, *, times: int = 1) -> None:
    """Raise ``code``'s balance by ``amount`` (``times`` entries), the equity seed paying."""
    for _ in range(times):
        # An increase is a debit on a debit-normal account, a credit otherwise.
        ledger.post(EntryDraft("fund", into(code, amount), key("fund")))


def into(code: str, amount: int) -> tuple[Posting, Posting]:
    """Postings that raise ``code`` by ``amount``, the equity seed paying."""
    return Posting(code, SIGN[code] * amount), Posting(SEED, -SIGN[code] * amount)


def out_of(code: str, amount: int, other: str = SEED) -> tuple[Posting, Posting]:
    """Postings that take ``amount`` out of ``code`` (into ``other``)."""
    change = SIGN[code] * amount
    return Posting(code, -change), Posting(other, change)


def raw(b: Balance) -> tuple[int, int, int]:
    return b.posted_minor, b.pending_in_minor, b.pending_out_minor


def state(ledger: Ledger, codes: Iterable[str] = (s.code for s in SPECS)) -> dict[str, tuple]:
    return {code: raw(b) for code, b in ledger.balances(list(codes)).items()}


def snapshot(ledger: Ledger) -> tuple:
    """Everything a write could leave behind: entries, postings, balance rows."""
    t = ledger.tables
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        entries = conn.execute(sa.select(sa.func.count()).select_from(t.entries)).scalar()
        postings = conn.execute(sa.select(sa.func.count()).select_from(t.postings)).scalar()
        rows = conn.execute(sa.select(t.balances).order_by("account_id", "shard")).all()
    return entries, postings, [tuple(r) for r in rows]


def verified(ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.ok, report.problems


def assert_short(error: BaseException, code: str, available: int, required: int) -> None:
    """``error`` is InsufficientFunds naming ``code`` with its figures (USD)."""
    assert_error(
        error,
        InsufficientFunds,
        [code, f"{available} USD", f"needs {required}"],
        {
            "account": code,
            "available_minor": available,
            "required_minor": required,
            "currency": "USD",
        },
    )


# --- several postings on one account in one entry ---------------------------------------


class TestSeveralPostingsOnOneAccount:
    def test_post_adds_every_posting(self, books: Ledger) -> None:
        """Two debits and two credits on the same accounts in one entry all count."""
        books.post(
            EntryDraft(
                "fund",
                (
                    Posting.debit(SEED, 200),
                    Posting.debit(SEED, 300),
                    Posting.credit(WALLET, 100),
                    Posting.credit(WALLET, 400),
                ),
                key(),
            )
        )
        assert raw(books.balance(WALLET)) == (500, 0, 0)
        assert raw(books.balance(SEED)) == (-500, 0, 0)
        verified(books)

    @pytest.mark.parametrize("mode", ["post", "hold"])
    def test_postings_netting_to_zero_on_one_account(self, books: Ledger, mode: str) -> None:
        """An account whose postings in an entry cancel out is left alone, and the
        accounts after it are still moved."""
        fund(books, WALLET, 10)
        postings = (
            Posting.debit(WALLET, 5),
            Posting.credit(WALLET, 5),
            Posting.debit(SEED, 3),
            Posting.credit(REVENUE, 3),
        )
        entry = getattr(books, mode)(EntryDraft("move", postings, key()))
        assert raw(books.balance(WALLET)) == ((10, 5, 5) if mode == "hold" else (10, 0, 0))
        if mode == "hold":
            assert raw(books.balance(REVENUE)) == (0, 3, 0)
            books.post_hold(entry.id)
        assert raw(books.balance(WALLET)) == (10, 0, 0)
        assert raw(books.balance(SEED)) == (-10 - 3, 0, 0)
        assert raw(books.balance(REVENUE)) == (3, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [WALLET, HOT, CLEARING, HOT_ASSET])
    def test_in_and_out_on_one_account_net(self, books: Ledger, code: str) -> None:
        """An inflow and a larger outflow on one no-overdraft account net out: only the
        net is checked against the balance, and the net is applied."""
        fund(books, code, 10)
        a, b = out_of(code, 25)  # 25 out of code
        c, d = out_of(code, -20)  # 20 into code
        books.post(EntryDraft("move", (a, b, c, d), key()))
        assert raw(books.balance(code)) == (5, 0, 0)
        a, b = out_of(code, 12)
        c, d = out_of(code, -6)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("move", (a, b, c, d), key()))
        assert info.value.details["available_minor"] == 5
        assert info.value.details["required_minor"] == 6
        assert raw(books.balance(code)) == (5, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [WALLET, HOT, CLEARING, HOT_ASSET])
    def test_hold_counts_every_posting(self, books: Ledger, code: str) -> None:
        """A hold with two outflows and two inflows on one account holds all four."""
        fund(books, code, 500)
        a, b = out_of(code, 30, SEED)
        c, d = out_of(code, 20, SEED)
        e, f = out_of(code, -7, SEED)
        g, h = out_of(code, -4, SEED)
        draft = EntryDraft("payout", (a, b, c, d, e, f, g, h), key("hold"))
        hold = books.hold(draft)
        assert raw(books.balance(code)) == (500, 11, 50)
        assert books.balance(code).available_minor == 450
        s = SIGN[code]  # the seed moves the other way: in its normal sign, s * amount
        assert raw(books.balance(SEED)) == (s * 500, *((50, 11) if s < 0 else (11, 50)))
        books.void_hold(hold.id)
        assert raw(books.balance(code)) == (500, 0, 0)
        assert raw(books.balance(SEED)) == (s * 500, 0, 0)
        hold = books.hold(EntryDraft("payout", draft.postings, key("hold")))
        books.post_hold(hold.id)
        assert raw(books.balance(code)) == (461, 0, 0)
        assert raw(books.balance(SEED)) == (s * 461, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [WALLET, HOT, CLEARING, HOT_ASSET])
    def test_reverse_restores_every_posting(self, books: Ledger, code: str) -> None:
        """Reversing an entry with two postings on one account undoes both."""
        fund(books, code, 100)
        a, b = out_of(code, 30)
        c, d = out_of(code, 45)
        entry = books.post(EntryDraft("payout", (a, b, c, d), key()))
        assert raw(books.balance(code)) == (25, 0, 0)
        books.reverse(entry.id)
        assert raw(books.balance(code)) == (100, 0, 0)
        assert raw(books.balance(SEED)) == (SIGN[code] * 100, 0, 0)
        verified(books)


# --- 1-unit amounts -------------------------------------------------------------------


class TestOneUnit:
    @pytest.mark.parametrize("code", [WALLET, HOT, CLEARING, HOT_ASSET, REVENUE])
    def test_post_one_unit_each_way(self, books: Ledger, code: str) -> None:
        """A move of exactly 1 is applied, in and out."""
        fund(books, code, 1)
        assert raw(books.balance(code)) == (1, 0, 0)
        books.post(EntryDraft("move", out_of(code, 1), key()))
        assert raw(books.balance(code)) == (0, 0, 0)
        assert raw(books.balance(SEED)) == (0, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [WALLET, HOT, CLEARING, HOT_ASSET])
    def test_hold_one_unit_out(self, books: Ledger, code: str) -> None:
        """A 1-unit hold out of an account holds 1, is refused at 0 available, and
        posts or voids exactly 1."""
        fund(books, code, 1)
        hold = books.hold(EntryDraft("payout", out_of(code, 1), key()))
        assert raw(books.balance(code)) == (1, 0, 1)
        s = SIGN[code]  # the seed moves the other way: in its normal sign, s * amount
        assert raw(books.balance(SEED)) == (s, *((1, 0) if s < 0 else (0, 1)))
        with pytest.raises(InsufficientFunds) as info:
            books.hold(EntryDraft("payout", out_of(code, 1), key()))
        assert info.value.details["available_minor"] == 0
        books.void_hold(hold.id)
        assert raw(books.balance(code)) == (1, 0, 0)
        assert raw(books.balance(SEED)) == (s, 0, 0)
        hold = books.hold(EntryDraft("payout", out_of(code, 1), key()))
        books.post_hold(hold.id)
        assert raw(books.balance(code)) == (0, 0, 0)
        assert raw(books.balance(SEED)) == (0, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [WALLET, HOT, CLEARING, HOT_ASSET, REVENUE])
    def test_hold_one_unit_in(self, books: Ledger, code: str) -> None:
        """A 1-unit hold into an account is pending in, not available, until posted."""
        hold = books.hold(EntryDraft("fund", into(code, 1), key()))
        assert raw(books.balance(code)) == (0, 1, 0)
        assert books.balance(code).available_minor == 0
        books.post_hold(hold.id)
        assert raw(books.balance(code)) == (1, 0, 0)
        hold = books.hold(EntryDraft("fund", into(code, 1), key()))
        books.void_hold(hold.id)
        assert raw(books.balance(code)) == (1, 0, 0)
        verified(books)


# --- sharded accounts: holds, releases, overdraft checks --------------------------------


class TestShardedOverdraft:
    @pytest.mark.parametrize("code", [HOT, HOT_ASSET])
    def test_spend_exactly_everything(self, books: Ledger, code: str) -> None:
        """Money spread over the shards can be spent to exactly zero, not one more."""
        fund(books, code, 25, times=12)  # 300 over random shards
        before = snapshot(books)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("payout", out_of(code, 301), key()))
        assert_short(info.value, code, 300, 301)
        assert snapshot(books) == before
        books.post(EntryDraft("payout", out_of(code, 300), key()))
        assert raw(books.balance(code)) == (0, 0, 0)
        verified(books)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("payout", out_of(code, 1), key()))
        assert info.value.details["available_minor"] == 0
        assert info.value.details["required_minor"] == 1

    @pytest.mark.parametrize("code", [HOT, HOT_ASSET])
    def test_hold_exactly_everything_then_release(self, books: Ledger, code: str) -> None:
        """A hold of the whole spread balance is allowed, leaves nothing to spend, and
        its void makes all of it available again."""
        fund(books, code, 40, times=10)
        hold = books.hold(EntryDraft("payout", out_of(code, 400), key()))
        assert raw(books.balance(code)) == (400, 0, 400)
        verified(books)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("payout", out_of(code, 1), key()))
        assert info.value.details["available_minor"] == 0
        with pytest.raises(InsufficientFunds) as info:
            books.hold(EntryDraft("payout", out_of(code, 1), key()))
        assert info.value.details["available_minor"] == 0
        books.void_hold(hold.id)
        assert raw(books.balance(code)) == (400, 0, 0)
        verified(books)
        books.post(EntryDraft("payout", out_of(code, 400), key()))
        assert raw(books.balance(code)) == (0, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [HOT, HOT_ASSET])
    def test_holds_post_and_void_across_shards(self, books: Ledger, code: str) -> None:
        """Two holds spanning the shards: one posted, one voided, every shard valid."""
        fund(books, code, 30, times=10)  # 300
        first = books.hold(EntryDraft("payout", out_of(code, 170), key()))
        verified(books)
        second = books.hold(EntryDraft("payout", out_of(code, 130), key()))
        assert raw(books.balance(code)) == (300, 0, 300)
        verified(books)
        books.post_hold(first.id)
        assert raw(books.balance(code)) == (130, 0, 130)
        assert books.balance(code).available_minor == 0
        verified(books)
        with pytest.raises(InsufficientFunds):
            books.post(EntryDraft("payout", out_of(code, 1), key()))
        books.void_hold(second.id)
        assert raw(books.balance(code)) == (130, 0, 0)
        verified(books)
        books.post(EntryDraft("payout", out_of(code, 130), key()))
        assert raw(books.balance(code)) == (0, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [HOT, HOT_ASSET])
    def test_refusal_counts_pending_out(self, books: Ledger, code: str) -> None:
        """Available is posted minus pending out: a spend beyond it is refused with it."""
        fund(books, code, 50, times=4)  # 200
        books.hold(EntryDraft("payout", out_of(code, 120), key()))
        before = snapshot(books)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("payout", out_of(code, 81), key()))
        assert_short(info.value, code, 80, 81)
        assert snapshot(books) == before
        books.post(EntryDraft("payout", out_of(code, 80), key()))
        assert raw(books.balance(code)) == (120, 0, 120)
        verified(books)

    @pytest.mark.parametrize("code", [HOT, HOT_ASSET])
    def test_hold_in_and_out_of_one_sharded_account(self, books: Ledger, code: str) -> None:
        """A hold moving money both into and out of a sharded account keeps both sides."""
        fund(books, code, 20, times=3)  # 60
        a, b = out_of(code, 45)
        c, d = out_of(code, -70)
        hold = books.hold(EntryDraft("swap", (a, b, c, d), key()))
        assert raw(books.balance(code)) == (60, 70, 45)
        verified(books)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("payout", out_of(code, 16), key()))
        assert info.value.details["available_minor"] == 15
        books.post_hold(hold.id)
        assert raw(books.balance(code)) == (85, 0, 0)
        verified(books)
        hold = books.hold(EntryDraft("swap", (a, b, c, d), key()))
        books.void_hold(hold.id)
        assert raw(books.balance(code)) == (85, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", [HOT, HOT_ASSET, REVENUE])
    def test_pending_in_posted_and_voided(self, books: Ledger, code: str) -> None:
        """Holds into a sharded account land on its shards; posting and voiding them
        moves exactly their amounts."""
        holds = [books.hold(EntryDraft("fund", into(code, 10 + i), key())) for i in range(6)]
        assert raw(books.balance(code)) == (0, 75, 0)
        for hold in holds[:3]:
            books.post_hold(hold.id)
        assert raw(books.balance(code)) == (33, 42, 0)
        verified(books)
        for hold in holds[3:]:
            books.void_hold(hold.id)
        assert raw(books.balance(code)) == (33, 0, 0)
        verified(books)

    def test_overdraft_allowed_sharded_account_goes_negative(self, books: Ledger) -> None:
        """An overdraft-allowed sharded account is never refused."""
        books.post(EntryDraft("refund", out_of(REVENUE, 70, SEED), key()))
        hold = books.hold(EntryDraft("refund", out_of(REVENUE, 5, SEED), key()))
        assert raw(books.balance(REVENUE)) == (-70, 0, 5)
        books.post_hold(hold.id)
        assert raw(books.balance(REVENUE)) == (-75, 0, 0)
        verified(books)


# --- refusals: type, message, details, nothing written -------------------------------------


class TestRefusals:
    def test_insufficient_funds_unsharded(self, books: Ledger) -> None:
        """A no-overdraft account: the refusal names the account, what is available
        (posted minus pending out) and what the entry needs; nothing is written."""
        fund(books, WALLET, 100)
        books.hold(EntryDraft("payout", out_of(WALLET, 30), key()))
        before = snapshot(books)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("gift", out_of(WALLET, 71, REVENUE), key("gift")))
        assert_error(
            info.value,
            InsufficientFunds,
            [],
            {"account": WALLET, "available_minor": 70, "required_minor": 71, "currency": "USD"},
            message=f"account {WALLET} has 70 USD minor units available; the entry needs 71",
        )
        with pytest.raises(InsufficientFunds) as info:
            books.hold(EntryDraft("gift", out_of(WALLET, 71, REVENUE), key("gift")))
        assert info.value.details["required_minor"] == 71
        assert info.value.details["available_minor"] == 70
        assert snapshot(books) == before
        books.post(EntryDraft("gift", out_of(WALLET, 70, REVENUE), key("gift")))
        assert raw(books.balance(WALLET)) == (30, 0, 30)

    def test_insufficient_funds_net_of_inflows(self, books: Ledger) -> None:
        """The amount refused is the account's net outflow in the entry."""
        fund(books, CLEARING, 10)
        a, b = out_of(CLEARING, 50)
        c, d = out_of(CLEARING, -35)
        with pytest.raises(InsufficientFunds) as info:
            books.post(EntryDraft("move", (a, b, c, d), key()))
        assert_short(info.value, CLEARING, 10, 15)

    def test_reversal_refused_when_it_would_overdraw(self, books: Ledger) -> None:
        """Reversing a funding entry whose money was spent is refused; nothing written."""
        entry = books.post(EntryDraft("fund", out_of(SEED, 50, HOT), key()))
        books.post(EntryDraft("payout", out_of(HOT, 20), key()))
        before = snapshot(books)
        with pytest.raises(InsufficientFunds) as info:
            books.reverse(entry.id)
        assert_short(info.value, HOT, 30, 50)
        assert snapshot(books) == before

    def test_hold_not_pending(self, books: Ledger) -> None:
        """Posting or voiding what is not an open hold names the entry and its state."""
        fund(books, WALLET, 10)
        posted = books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), key()))
        with pytest.raises(HoldNotPending) as info:
            books.post_hold(posted.id)
        assert_error(
            info.value,
            HoldNotPending,
            [],
            {"entry_id": posted.id},
            message=f"entry {posted.id} is not a hold",
        )
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 2, REVENUE), key()))
        books.void_hold(hold.id)
        before = snapshot(books)
        for resolve in (books.post_hold, books.void_hold):
            with pytest.raises(HoldNotPending) as info:
                resolve(hold.id, idempotency_key=key("again"))
            assert_error(
                info.value,
                HoldNotPending,
                [],
                {"entry_id": hold.id, "status": "voided"},
                message=f"hold {hold.id} is already voided",
            )
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 2, REVENUE), key()))
        books.post_hold(hold.id)
        with pytest.raises(HoldNotPending) as info:
            books.void_hold(hold.id)
        assert info.value.details == {"entry_id": hold.id, "status": "posted"}
        with pytest.raises(UnknownEntry) as info:
            books.void_hold(987_654)
        assert_error(info.value, UnknownEntry, [], {"entry_id": 987_654}, message="no entry 987654")
        assert raw(books.balance(WALLET)) == (7, 0, 0)
        assert snapshot(books)[0] == before[0] + 2

    def test_expired_hold_cannot_be_posted(self, books: Ledger, clock: FakeClock) -> None:
        """A hold at or past its expiry is refused for posting but can still be voided."""
        fund(books, WALLET, 10)
        expires = clock() + timedelta(minutes=5)
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 4, REVENUE), key()), expires_at=expires)
        clock.advance(minutes=5)  # exactly at expiry
        before = snapshot(books)
        with pytest.raises(HoldNotPending) as info:
            books.post_hold(hold.id)
        assert_error(
            info.value,
            HoldNotPending,
            [],
            {"entry_id": hold.id, "status": "expired"},
            message=f"hold {hold.id} expired at {expires.isoformat()}",
        )
        assert snapshot(books) == before
        voided = books.void_hold(hold.id)
        assert voided.phase is EntryPhase.VOIDED
        assert raw(books.balance(WALLET)) == (10, 0, 0)

    def test_hold_before_expiry_can_be_posted(self, books: Ledger, clock: FakeClock) -> None:
        fund(books, WALLET, 10)
        expires = clock() + timedelta(minutes=5)
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 4, REVENUE), key()), expires_at=expires)
        clock.advance(seconds=299)  # a second before expiry
        posted = books.post_hold(hold.id)
        assert posted.phase is EntryPhase.POSTED
        assert raw(books.balance(WALLET)) == (6, 0, 0)

    def test_reverse_refusals(self, books: Ledger) -> None:
        fund(books, WALLET, 10)
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 4, REVENUE), key()))
        with pytest.raises(InvalidEntry) as info:
            books.reverse(hold.id)
        assert_error(
            info.value,
            InvalidEntry,
            [],
            {"entry_id": hold.id},
            message=f"entry {hold.id} is pending: only posted entries can be reversed "
            "(void a hold instead)",
        )
        void = books.void_hold(hold.id)
        with pytest.raises(InvalidEntry) as info:
            books.reverse(void.id)
        assert info.value.details == {"entry_id": void.id}
        assert "is voided" in str(info.value)
        with pytest.raises(UnknownEntry) as info:
            books.reverse(123_456)
        assert_error(info.value, UnknownEntry, [], {"entry_id": 123_456}, message="no entry 123456")
        entry = books.post(EntryDraft("gift", out_of(WALLET, 3, REVENUE), key()))
        books.reverse(entry.id)
        before = snapshot(books)
        with pytest.raises(AlreadyReversed) as info:
            books.reverse(entry.id, idempotency_key=key("second"))
        assert_error(
            info.value,
            AlreadyReversed,
            [],
            {"entry_id": entry.id},
            message=f"entry {entry.id} has already been reversed",
        )
        assert snapshot(books) == before
        assert raw(books.balance(WALLET)) == (10, 0, 0)

    def test_idempotency_conflicts(self, books: Ledger, clock: FakeClock) -> None:
        """A key reused for another request is refused with the key and the entry."""
        fund(books, WALLET, 100)
        first = books.post(EntryDraft("gift", out_of(WALLET, 5, REVENUE), "gift:1"))
        before = snapshot(books)
        with pytest.raises(IdempotencyConflict) as info:
            books.post(EntryDraft("gift", out_of(WALLET, 6, REVENUE), "gift:1"))
        assert_error(
            info.value,
            IdempotencyConflict,
            [],
            {"idempotency_key": "gift:1", "entry_id": first.id},
            message="idempotency key 'gift:1' was already used for a different request",
        )
        # The same postings as a hold, or a hold with another expiry, are other requests.
        with pytest.raises(IdempotencyConflict):
            books.hold(EntryDraft("gift", out_of(WALLET, 5, REVENUE), "gift:1"))
        expires = clock() + timedelta(hours=1)
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 5, REVENUE), "h:1"), expires_at=expires)
        with pytest.raises(IdempotencyConflict):
            books.hold(
                EntryDraft("gift", out_of(WALLET, 5, REVENUE), "h:1"),
                expires_at=expires + timedelta(seconds=1),
            )
        with pytest.raises(IdempotencyConflict):
            books.hold(EntryDraft("gift", out_of(WALLET, 5, REVENUE), "h:1"))
        books.post_hold(hold.id, description="paid")
        with pytest.raises(IdempotencyConflict):
            books.post_hold(hold.id, description="other")
        with pytest.raises(IdempotencyConflict):
            books.void_hold(hold.id, idempotency_key=f"hold:{hold.id}:post")
        with pytest.raises(IdempotencyConflict):
            books.reverse(first.id, idempotency_key="gift:1")
        assert snapshot(books)[0] == before[0] + 2
        assert raw(books.balance(WALLET)) == (90, 0, 0)

    def test_currency_mismatch(self, books: Ledger) -> None:
        before = snapshot(books)
        with pytest.raises(CurrencyMismatch) as info:
            books.post(
                EntryDraft("fund", (Posting(SEED, 5, "EUR"), Posting(EUR_WALLET, -5, "EUR")), key())
            )
        assert_error(
            info.value,
            CurrencyMismatch,
            [],
            {"account": SEED, "posting_currency": "EUR", "account_currency": "USD"},
            message=f"posting of EUR to account {SEED} held in USD",
        )
        assert snapshot(books) == before

    def test_invalid_arguments(self, books: Ledger, clock: FakeClock) -> None:
        """Malformed ids, drafts and expiries are refused before anything is written."""
        fund(books, WALLET, 10)
        before = snapshot(books)
        for bad in (True, "1", 1.0, None):
            for resolve in (books.post_hold, books.void_hold):
                with pytest.raises(InvalidInput) as info:
                    resolve(bad)  # type: ignore[arg-type]
                assert type(info.value) is InvalidInput
                assert "hold_id must be an int" in str(info.value)
                # main after the wpath/i13 merges adds {"field": "hold_id"}
                assert dict(info.value.details) in ({}, {"field": "hold_id"})
            with pytest.raises(InvalidInput) as info:
                books.reverse(bad)  # type: ignore[arg-type]
            assert type(info.value) is InvalidInput
            assert "entry_id must be an int" in str(info.value)
            assert dict(info.value.details) in ({}, {"field": "entry_id"})
        draft = EntryDraft("gift", out_of(WALLET, 1, REVENUE), key())
        for call in (books.post, books.hold):
            with pytest.raises(InvalidInput) as info:
                call(draft.postings)  # type: ignore[arg-type]
            assert_error(
                info.value, InvalidInput, [], {}, message="expected an EntryDraft, got tuple"
            )
        naive = clock().replace(tzinfo=None) + timedelta(hours=1)
        with pytest.raises(InvalidInput) as info:
            books.hold(draft, expires_at=naive)
        assert_error(info.value, InvalidInput, ["timezone-aware"], {})
        assert str(info.value).startswith("expires_at must be a timezone-aware datetime")
        for expires in (clock(), clock() - timedelta(seconds=1)):
            with pytest.raises(InvalidEntry) as info:
                books.hold(draft, expires_at=expires)
            assert_error(
                info.value,
                InvalidEntry,
                [],
                {},
                message="a hold's expires_at must be in the future",
            )
        assert snapshot(books) == before
        hold = books.hold(draft, expires_at=clock() + timedelta(microseconds=1))
        assert hold.expires_at == clock() + timedelta(microseconds=1)


# --- what a resolution, reversal or replay writes ----------------------------------------


class TestWrites:
    def test_post_and_replay(self, books: Ledger, clock: FakeClock) -> None:
        """A post stores the draft; the same draft again is a replay that writes nothing."""
        fund(books, WALLET, 10)
        effective = (clock() - timedelta(days=1)).astimezone(timezone(timedelta(hours=-5)))
        draft = EntryDraft(
            "gift", out_of(WALLET, 4, REVENUE), "g:1", "A rose", {"gift": "rose"}, effective
        )
        entry = books.post(draft)
        assert (entry.phase, entry.type, entry.idempotency_key) == (
            EntryPhase.POSTED,
            "gift",
            "g:1",
        )
        assert (entry.description, dict(entry.metadata)) == ("A rose", {"gift": "rose"})
        assert entry.postings == tuple(draft.postings)
        assert entry.effective_at == effective and entry.effective_at.utcoffset() == timedelta(0)
        assert entry.recorded_at == clock()
        assert (entry.expires_at, entry.hold_id, entry.reverses_id) == (None, None, None)
        assert not entry.replayed
        before = snapshot(books)
        clock.advance(minutes=1)
        again = books.post(draft)
        assert again == entry and again.replayed
        assert snapshot(books) == before
        assert books.entry(entry.id) == entry
        plain = books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), "g:2"))
        assert plain.effective_at == clock()

    def test_times_are_stored_in_utc(
        self, books: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Entry times come back in UTC whatever the machine's local time zone."""
        monkeypatch.setenv("TZ", "America/New_York")
        time.tzset()
        try:
            fund(books, WALLET, 10)
            offset = timezone(timedelta(hours=3))
            draft = EntryDraft(
                "gift", out_of(WALLET, 1, REVENUE), key(), effective_at=clock().astimezone(offset)
            )
            for entry in (
                books.post(draft),
                books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), key())),
            ):
                assert entry.effective_at == clock()
                assert entry.effective_at.utcoffset() == timedelta(0)
        finally:
            monkeypatch.delenv("TZ")
            time.tzset()

    def test_request_replay(self, books: Ledger) -> None:
        """With ``request``, a replay compares requests: another draft for the same
        request returns the original; another request conflicts."""
        fund(books, WALLET, 10)
        first = books.post(EntryDraft("gift", out_of(WALLET, 4, REVENUE), "g"), request={"g": 1})
        again = books.post(EntryDraft("gift", out_of(WALLET, 5, REVENUE), "g"), request={"g": 1})
        assert again == first and again.replayed
        with pytest.raises(IdempotencyConflict):
            books.post(EntryDraft("gift", out_of(WALLET, 4, REVENUE), "g"), request={"g": 2})
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 2, REVENUE), "h"), request={"h": 1})
        assert (
            books.hold(EntryDraft("gift", out_of(WALLET, 3, REVENUE), "h"), request={"h": 1})
            == hold
        )
        assert raw(books.balance(WALLET)) == (6, 0, 2)

    def test_hold_entry_and_replay(self, books: Ledger, clock: FakeClock) -> None:
        fund(books, WALLET, 10)
        expires = clock() + timedelta(hours=1)
        draft = EntryDraft("payout", out_of(WALLET, 3), "p:1", "Payout", {"payout": 1})
        hold = books.hold(draft, expires_at=expires)
        assert (hold.phase, hold.expires_at, hold.idempotency_key) == (
            EntryPhase.PENDING,
            expires,
            "p:1",
        )
        assert hold.postings == tuple(draft.postings)
        assert books.hold_status(hold.id) is EntryPhase.PENDING
        again = books.hold(draft, expires_at=expires)
        assert again == hold and again.replayed
        assert raw(books.balance(WALLET)) == (10, 0, 3)

    def test_post_hold_writes_a_posted_entry(self, books: Ledger, clock: FakeClock) -> None:
        fund(books, WALLET, 10)
        draft = EntryDraft("payout", out_of(WALLET, 3), "p:1", "Payout", {"payout": 1})
        hold = books.hold(draft, expires_at=clock() + timedelta(hours=1))
        clock.advance(minutes=10)
        posted = books.post_hold(hold.id)
        assert posted.phase is EntryPhase.POSTED
        assert posted.type == "payout"
        assert posted.postings == hold.postings
        assert posted.hold_id == hold.id
        assert posted.idempotency_key == f"hold:{hold.id}:post"
        assert posted.description == "Payout"
        assert dict(posted.metadata) == {"payout": 1}
        assert posted.effective_at == clock() and posted.recorded_at == clock()
        assert (posted.expires_at, posted.reverses_id) == (None, None)
        assert books.hold_status(hold.id) is EntryPhase.POSTED
        before = snapshot(books)
        again = books.post_hold(hold.id)
        assert again == posted and again.replayed
        assert snapshot(books) == before
        assert raw(books.balance(WALLET)) == (7, 0, 0)

    def test_resolution_with_own_key_description_metadata(self, books: Ledger) -> None:
        fund(books, WALLET, 10)
        hold = books.hold(EntryDraft("payout", out_of(WALLET, 3), key(), "Payout", {"a": 1}))
        void = books.void_hold(hold.id, idempotency_key="v", description="No", metadata={"b": 2})
        assert (void.phase, void.postings, void.hold_id) == (EntryPhase.VOIDED, (), hold.id)
        assert (void.idempotency_key, void.description, dict(void.metadata)) == (
            "v",
            "No",
            {"b": 2},
        )
        assert (
            books.void_hold(hold.id, idempotency_key="v", description="No", metadata={"b": 2})
            == void
        )
        hold = books.hold(EntryDraft("payout", out_of(WALLET, 3), key(), "Payout", {"a": 1}))
        void = books.void_hold(hold.id, description="")
        assert void.idempotency_key == f"hold:{hold.id}:void"
        assert (void.description, dict(void.metadata)) == ("", {"a": 1})
        assert books.hold_status(hold.id) is EntryPhase.VOIDED
        assert raw(books.balance(WALLET)) == (10, 0, 0)

    def test_expire_holds(self, books: Ledger, clock: FakeClock) -> None:
        """Holds at or past their expiry are expired, oldest expiry first, up to the
        limit; their money is released; an unexpired or resolved hold is left alone."""
        fund(books, HOT, 100)
        start = clock()
        holds = {
            minutes: books.hold(
                EntryDraft("payout", out_of(HOT, minutes), key(), f"h{minutes}", {"m": minutes}),
                expires_at=start + timedelta(minutes=minutes),
            )
            for minutes in (3, 1, 2, 4, 5)
        }
        books.void_hold(holds[5].id)
        forever = books.hold(EntryDraft("payout", out_of(HOT, 6), key()))
        assert raw(books.balance(HOT)) == (100, 0, 16)
        clock.advance(minutes=3)
        expired = books.expire_holds(limit=2)
        assert [e.hold_id for e in expired] == [holds[1].id, holds[2].id]
        assert raw(books.balance(HOT)) == (100, 0, 13)
        expired += books.expire_holds()
        assert [e.hold_id for e in expired] == [holds[1].id, holds[2].id, holds[3].id]
        for entry, minutes in zip(expired, (1, 2, 3), strict=True):
            assert entry.phase is EntryPhase.EXPIRED
            assert entry.postings == ()
            assert entry.idempotency_key == f"hold:{holds[minutes].id}:expire"
            assert entry.description == f"h{minutes}"
            assert dict(entry.metadata) == {"reason": "expired"}
            assert entry.effective_at == clock()
            assert books.hold_status(holds[minutes].id) is EntryPhase.EXPIRED
        assert raw(books.balance(HOT)) == (100, 0, 10)
        assert books.expire_holds() == []
        later = books.expire_holds(now=start + timedelta(minutes=4))
        assert [e.hold_id for e in later] == [holds[4].id]
        assert later[0].effective_at == start + timedelta(minutes=4)
        assert books.hold_status(forever.id) is EntryPhase.PENDING
        assert raw(books.balance(HOT)) == (100, 0, 6)
        with pytest.raises(InvalidInput):
            books.expire_holds(now=start.replace(tzinfo=None))
        verified(books)

    def test_reverse_writes_the_mirror(self, books: Ledger, clock: FakeClock) -> None:
        fund(books, WALLET, 10)
        entry = books.post(
            EntryDraft("gift", out_of(WALLET, 4, REVENUE), key(), "A rose", {"g": 1})
        )
        clock.advance(minutes=1)
        reversal = books.reverse(entry.id)
        assert reversal.phase is EntryPhase.POSTED
        assert reversal.type == "gift"
        assert reversal.reverses_id == entry.id
        assert reversal.idempotency_key == f"reverse:{entry.id}"
        assert reversal.description == f"Reversal of #{entry.id}: A rose"
        assert dict(reversal.metadata) == {}
        assert reversal.effective_at == clock() and reversal.recorded_at == clock()
        assert [(p.account, p.amount_minor, p.currency) for p in reversal.postings] == [
            (p.account, -p.amount_minor, p.currency) for p in entry.postings
        ]
        assert reversal.hold_id is None
        before = snapshot(books)
        again = books.reverse(entry.id)
        assert again == reversal and again.replayed
        assert snapshot(books) == before
        plain = books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), key()))
        own = books.reverse(plain.id, idempotency_key="r", description="Refund", metadata={"r": 1})
        assert (own.idempotency_key, own.description, dict(own.metadata)) == (
            "r",
            "Refund",
            {"r": 1},
        )
        plain = books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), key()))
        assert books.reverse(plain.id).description == f"Reversal of #{plain.id}"
        assert raw(books.balance(WALLET)) == (10, 0, 0)
        verified(books)


# --- properties: every posting counts, on every account shape --------------------------------

# The funded accounts the property moves money between (never refused: funded far
# beyond what the examples move), and the equity seed that balances them.
PROPERTY_ACCOUNTS = [WALLET, HOT, CLEARING, HOT_ASSET, REVENUE, SEED]
FLOAT = 10**9


@st.composite
def entries(draw: st.DrawFn) -> tuple[Posting, ...]:
    """2-6 USD postings summing to zero, often several on one account."""
    n = draw(st.integers(min_value=2, max_value=6))
    codes = draw(st.lists(st.sampled_from(PROPERTY_ACCOUNTS), min_size=n, max_size=n))
    values = [
        draw(st.one_of(st.just(1), st.integers(1, 500))) * draw(st.sampled_from([1, -1]))
        for _ in range(n - 1)
    ]
    last = -sum(values)
    if last == 0:
        values[0] += 1 if values[0] > 0 else -1
        last = -sum(values)
    values.append(last)
    return tuple(Posting(code, v) for code, v in zip(codes, values, strict=True))


def expected(postings: Iterable[Posting]) -> dict[str, int]:
    """Each account's change in its normal sign."""
    change = dict.fromkeys(PROPERTY_ACCOUNTS, 0)
    for p in postings:
        change[p.account] += SIGN[p.account] * p.amount_minor
    return change


def split_pending(postings: Iterable[Posting]) -> dict[str, tuple[int, int]]:
    """Each account's (pending in, pending out) while the postings are held."""
    pending = {code: [0, 0] for code in PROPERTY_ACCOUNTS}
    for p in postings:
        change = SIGN[p.account] * p.amount_minor
        pending[p.account][0 if change > 0 else 1] += abs(change)
    return {code: (i, o) for code, (i, o) in pending.items()}


class TestProperties:
    @given(postings=entries(), resolution=st.sampled_from(["post", "hold", "void", "reverse"]))
    def test_balances_move_by_every_posting(
        self, funded: Ledger, postings: tuple[Posting, ...], resolution: str
    ) -> None:
        """Whatever the entry (several postings per account, 1-unit legs, sharded or
        not, debit- or credit-normal), each balance moves by the sum of its postings:
        posted at once for a post, pending while held, posted or released on
        resolution, restored by a reversal; every shard stays valid."""
        before = state(funded, PROPERTY_ACCOUNTS)
        change = expected(postings)
        draft = EntryDraft("move", postings, key("prop"))
        if resolution in ("post", "reverse"):
            entry = funded.post(draft)
            after = state(funded, PROPERTY_ACCOUNTS)
            for code in PROPERTY_ACCOUNTS:
                posted, pin, pout = before[code]
                assert after[code] == (posted + change[code], pin, pout), code
            if resolution == "reverse":
                funded.reverse(entry.id)
                assert state(funded, PROPERTY_ACCOUNTS) == before
        else:
            hold = funded.hold(draft)
            held = state(funded, PROPERTY_ACCOUNTS)
            pending = split_pending(postings)
            for code in PROPERTY_ACCOUNTS:
                posted, pin, pout = before[code]
                assert held[code] == (posted, pin + pending[code][0], pout + pending[code][1]), code
            if resolution == "void":
                funded.void_hold(hold.id)
                assert state(funded, PROPERTY_ACCOUNTS) == before
            else:
                funded.post_hold(hold.id)
                after = state(funded, PROPERTY_ACCOUNTS)
                for code in PROPERTY_ACCOUNTS:
                    posted, pin, pout = before[code]
                    assert after[code] == (posted + change[code], pin, pout), code
        verified(funded)

    @given(
        funding=st.lists(st.integers(1, 60), min_size=1, max_size=8),
        spends=st.lists(
            st.tuples(st.sampled_from(["post", "hold", "void", "post_hold"]), st.integers(1, 120)),
            min_size=1,
            max_size=8,
        ),
        code=st.sampled_from([HOT, HOT_ASSET]),
        shards=st.integers(1, 4),
    )
    def test_no_overdraft_refuses_exactly_beyond_available(
        self,
        books: Ledger,
        funding: list[int],
        spends: list[tuple[str, int]],
        code: str,
        shards: int,
    ) -> None:
        """On a no-overdraft account (sharded or not), a post or hold succeeds exactly
        when its amount is at most what is available, and a refusal reports that
        amount and changes nothing; releases make the held money available again."""
        account = f"{code}:{next(_keys)}"
        kind = AccountKind.ASSET if SIGN[code] > 0 else AccountKind.LIABILITY
        books.open_account(AccountSpec(account, kind, balance_shards=shards))
        SIGN[account] = SIGN[code]
        try:
            for amount in funding:
                fund(books, account, amount)
            posted, held, open_holds = sum(funding), 0, []
            for action, amount in spends:
                available = posted - held
                if action in ("void", "post_hold"):
                    if not open_holds:
                        continue
                    hold_id, hold_amount = open_holds.pop(0)
                    if action == "void":
                        books.void_hold(hold_id)
                    else:
                        books.post_hold(hold_id)
                        posted -= hold_amount
                    held -= hold_amount
                elif amount > available:
                    before = snapshot(books)
                    write = books.post if action == "post" else books.hold
                    with pytest.raises(InsufficientFunds) as info:
                        write(EntryDraft("payout", out_of(account, amount), key()))
                    assert info.value.details["available_minor"] == available
                    assert info.value.details["required_minor"] == amount
                    assert snapshot(books) == before
                elif action == "post":
                    books.post(EntryDraft("payout", out_of(account, amount), key()))
                    posted -= amount
                else:
                    hold = books.hold(EntryDraft("payout", out_of(account, amount), key()))
                    open_holds.append((hold.id, amount))
                    held += amount
                assert raw(books.balance(account)) == (posted, 0, held)
            verified(books)
        finally:
            del SIGN[account]


@pytest.fixture
def funded(books: Ledger) -> Ledger:
    """The books with every no-overdraft account funded far beyond any example."""
    for code in (WALLET, HOT, CLEARING, HOT_ASSET):
        fund(books, code, FLOAT)
    return books


class TestExpiry:
    def test_naive_now_is_refused(self, books: Ledger, clock: FakeClock) -> None:
        with pytest.raises(InvalidInput) as info:
            books.expire_holds(now=clock().replace(tzinfo=None))
        assert_error(info.value, InvalidInput, ["now must be a timezone-aware datetime"], {})
        assert str(info.value).startswith("now must be")

    def test_a_hold_resolved_meanwhile_is_skipped(self, books: Ledger, clock: FakeClock) -> None:
        """A hold voided by someone else between expire_holds' query and its write is
        skipped, and the holds after it are still expired."""
        fund(books, WALLET, 100)
        expires = clock() + timedelta(minutes=1)
        first, second = (
            books.hold(EntryDraft("payout", out_of(WALLET, n), key()), expires_at=expires)
            for n in (3, 4)
        )
        other = Ledger(books.engine, prefix=books.prefix, clock=clock)  # type: ignore[arg-type]
        voided = []

        def void_first(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            if not voided and "outer join" in statement.lower():
                voided.append(other.void_hold(first.id))

        clock.advance(minutes=2)
        sa.event.listen(books.engine, "after_cursor_execute", void_first)
        try:
            expired = books.expire_holds()
        finally:
            sa.event.remove(books.engine, "after_cursor_execute", void_first)
        assert voided and voided[0].hold_id == first.id
        assert [e.hold_id for e in expired] == [second.id]
        assert books.hold_status(first.id) is EntryPhase.VOIDED
        assert books.hold_status(second.id) is EntryPhase.EXPIRED
        assert raw(books.balance(WALLET)) == (100, 0, 0)


# --- idempotency: stored fingerprints and keys checked first ------------------------------


def stored_hash(ledger: Ledger, entry_id: int) -> str:
    entries = ledger.tables.entries
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        return str(
            conn.execute(sa.select(entries.c.request_hash).where(entries.c.id == entry_id)).scalar()
        )


def sha(fields: dict) -> str:
    """The stored fingerprint (docs/concepts.md, Idempotency): SHA-256 of the request's
    canonical JSON (sorted keys, no spaces) with the operation under ``op``."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class TestIdempotency:
    def test_stored_fingerprints_are_stable(self, books: Ledger, clock: FakeClock) -> None:
        """Fingerprints are stored, so their form is a format: a database written by
        one release must replay, not conflict, under the next."""
        fund(books, WALLET, 100)
        draft = EntryDraft("gift", out_of(WALLET, 4, REVENUE), key(), "d", {"m": 1})
        entry = books.post(draft)
        assert stored_hash(books, entry.id) == sha(
            {"op": "post", **draft.fingerprint_fields(), "expires_at": None}
        )
        asked = books.post(EntryDraft("gift", out_of(WALLET, 4, REVENUE), key()), request={"r": 1})
        assert stored_hash(books, asked.id) == sha({"op": "post", "request": {"r": 1}})
        expires = clock() + timedelta(hours=1)
        draft = EntryDraft("payout", out_of(WALLET, 5), key())
        hold = books.hold(draft, expires_at=expires)
        assert stored_hash(books, hold.id) == sha(
            {"op": "hold", **draft.fingerprint_fields(), "expires_at": expires.isoformat()}
        )
        draft = EntryDraft("payout", out_of(WALLET, 6), key())
        open_hold = books.hold(draft)
        assert stored_hash(books, open_hold.id) == sha(
            {"op": "hold", **draft.fingerprint_fields(), "expires_at": None}
        )
        posted = books.post_hold(hold.id, description="paid", metadata={"p": 2})
        assert stored_hash(books, posted.id) == sha(
            {"op": "post_hold", "hold_id": hold.id, "description": "paid", "metadata": {"p": 2}}
        )
        void = books.void_hold(open_hold.id)
        assert stored_hash(books, void.id) == sha(
            {"op": "void_hold", "hold_id": open_hold.id, "description": None, "metadata": {}}
        )
        reversal = books.reverse(entry.id, description="undo", metadata={"q": 3})
        assert stored_hash(books, reversal.id) == sha(
            {"op": "reverse", "entry_id": entry.id, "description": "undo", "metadata": {"q": 3}}
        )
        expiring = books.hold(EntryDraft("payout", out_of(WALLET, 1), key()), expires_at=expires)
        clock.advance(hours=2)
        (expired,) = books.expire_holds()
        assert stored_hash(books, expired.id) == sha(
            {
                "op": "expire_hold",
                "hold_id": expiring.id,
                "description": None,
                "metadata": {"reason": "expired"},
            }
        )

    def test_a_used_key_is_checked_before_the_target(self, books: Ledger) -> None:
        """A key already used for another request conflicts, whatever the target: the
        key is looked up first, so a retry never sees a different error."""
        fund(books, WALLET, 10)
        first = books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), "used"))
        for call in (books.reverse, books.post_hold, books.void_hold):
            with pytest.raises(IdempotencyConflict) as info:
                call(999_999, idempotency_key="used")
            assert info.value.details == {"idempotency_key": "used", "entry_id": first.id}
        hold = books.hold(EntryDraft("gift", out_of(WALLET, 2, REVENUE), key()))
        books.void_hold(hold.id)
        # A replay of a resolution is recognised even though the hold is no longer open.
        again = books.void_hold(hold.id)
        assert again.replayed and again.hold_id == hold.id
        reversal = books.reverse(first.id)
        assert books.reverse(first.id).replayed
        assert books.reverse(first.id) == reversal


class TestRaces:
    """A resolution or reversal racing another one (PostgreSQL: SQLite serialises
    writers, so the race cannot happen there). Named ``race`` so that the mutation
    run, otherwise SQLite-only, includes them."""

    @pytest.mark.parametrize("resolve", ["post_hold", "void_hold", "reverse"])
    def test_race_lost_to_a_concurrent_resolution(
        self, books: Ledger, backend: str, clock: FakeClock, resolve: str
    ) -> None:
        """The loser of a race to resolve a hold (or reverse an entry) gets the same
        refusal as if it had come second, and writes nothing."""
        if backend == "sqlite":
            pytest.skip("SQLite serialises writers: this race cannot happen")
        fund(books, WALLET, 10)
        if resolve == "reverse":
            target = books.post(EntryDraft("gift", out_of(WALLET, 3, REVENUE), key())).id
        else:
            target = books.hold(EntryDraft("gift", out_of(WALLET, 3, REVENUE), key())).id
        other = Ledger(books.engine, prefix=books.prefix, clock=clock)  # type: ignore[arg-type]
        won: list = []
        started: list[bool] = []
        insert = f"insert into {books.tables.entries.name} ".lower()

        def resolve_first(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            # Just before the loser claims its entry row, the winner resolves and commits.
            # (On PostgreSQL the entry and its postings are one statement: WITH ... INSERT.)
            if not started and insert in " ".join(statement.lower().split()):
                started.append(True)
                won.append(getattr(other, resolve)(target, idempotency_key="winner"))

        sa.event.listen(books.engine, "before_cursor_execute", resolve_first)
        try:
            with pytest.raises((HoldNotPending, AlreadyReversed)) as info:
                getattr(books, resolve)(target, idempotency_key="loser")
        finally:
            sa.event.remove(books.engine, "before_cursor_execute", resolve_first)
        assert won and not won[0].replayed
        if resolve == "reverse":
            assert_error(
                info.value,
                AlreadyReversed,
                [],
                {"entry_id": target},
                message=f"entry {target} has already been reversed",
            )
            assert raw(books.balance(WALLET)) == (10, 0, 0)
        else:
            assert_error(
                info.value,
                HoldNotPending,
                [],
                {"entry_id": target},
                message=f"hold {target} was resolved concurrently",
            )
            posted = 7 if resolve == "post_hold" else 10
            assert raw(books.balance(WALLET)) == (posted, 0, 0)
        with pytest.raises(UnknownEntry):
            books.entry_by_key("loser")
        verified(books)


class TestReversalDetails:
    def test_reversal_keeps_the_currency(self, books: Ledger) -> None:
        """The mirror of a EUR entry is in EUR (and undoes it)."""
        entry = books.post(
            EntryDraft("fund", (Posting(EUR_SEED, 9, "EUR"), Posting(EUR_WALLET, -9, "EUR")), key())
        )
        reversal = books.reverse(entry.id)
        assert [(p.account, p.amount_minor, p.currency) for p in reversal.postings] == [
            (EUR_SEED, -9, "EUR"),
            (EUR_WALLET, 9, "EUR"),
        ]
        assert raw(books.balance(EUR_WALLET)) == (0, 0, 0)

    @pytest.mark.parametrize("description", ["Gift to MAX", "Tip: ", "x:"])
    def test_default_description_keeps_the_original(self, books: Ledger, description: str) -> None:
        """Only the separator is trimmed when the original has no description."""
        fund(books, WALLET, 10)
        entry = books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), key(), description))
        expected = f"Reversal of #{entry.id}: {description}".rstrip(": ")
        assert books.reverse(entry.id).description == expected
        assert expected.startswith(f"Reversal of #{entry.id}: ")


# --- a damaged database: refusals instead of wrong balances ---------------------------------


def tamper(ledger: Ledger, backend: str, *statements: str) -> None:
    """Run raw SQL past the ledger's guards (its no-delete triggers dropped first)."""
    p = ledger.prefix
    drops = {
        "sqlite": [f"DROP TRIGGER {p}balances_no_delete", f"DROP TRIGGER {p}accounts_no_delete"],
        "postgresql": [
            f"DROP TRIGGER {p}balances_no_delete ON {p}balances",
            f"DROP TRIGGER {p}accounts_append_only ON {p}accounts",
        ],
    }[backend]
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        for statement in (*drops, *statements):
            conn.exec_driver_sql(statement)


def account_id(ledger: Ledger, code: str) -> int:
    return ledger.account(code).id


class TestDamagedDatabase:
    def test_missing_pending_is_a_schema_error(self, books: Ledger, backend: str) -> None:
        """Balance rows holding less pending than an open hold: the release is refused
        (verify() finds the damage) rather than driving a pending amount negative."""
        fund(books, HOT, 50)
        hold = books.hold(EntryDraft("payout", out_of(HOT, 20), key()))
        tamper(
            books,
            backend,
            f"UPDATE {books.prefix}balances SET pending_debit = 0 "
            f"WHERE account_id = {account_id(books, HOT)}",
        )
        before = snapshot(books)
        for resolve in (books.post_hold, books.void_hold):
            with pytest.raises(SchemaError) as info:
                resolve(hold.id)
            assert_error(
                info.value,
                SchemaError,
                [],
                {},
                message=f"balance rows of {HOT} hold less pending than an open hold; run verify()",
            )
        assert snapshot(books) == before

    @pytest.mark.parametrize("code", [WALLET, HOT])
    def test_missing_balance_rows(self, books: Ledger, backend: str, code: str) -> None:
        """An account whose balance rows are gone is refused as unknown, nothing written,
        whether the write batches its rows or locks all shards."""
        fund(books, code, 50)
        fund(books, CLEARING, 50)
        tamper(
            books,
            backend,
            f"DELETE FROM {books.prefix}balances WHERE account_id = {account_id(books, code)}",
        )
        before = snapshot(books)
        with pytest.raises(UnknownAccount) as info:
            books.post(EntryDraft("payout", out_of(code, 5), key()))
        if code == HOT:  # the outflow locks every shard of the sharded account
            assert_error(
                info.value,
                UnknownAccount,
                [],
                {"account": code},
                message=f"account {code} no longer exists",
            )
        with pytest.raises(UnknownAccount) as info:
            books.post(EntryDraft("fund", into(code, 5), key()))
        if code == WALLET:
            assert_error(
                info.value,
                UnknownAccount,
                [],
                {},
                message="an account of this entry no longer exists",
            )
        assert snapshot(books) == before
        # Still refused the next time (no stale cache makes it succeed).
        with pytest.raises(UnknownAccount):
            books.post(EntryDraft("fund", into(code, 5), key()))

    def test_account_row_gone_after_it_was_cached(self, books: Ledger, backend: str) -> None:
        """A cached account whose row disappeared is refused as unknown, and forgotten."""
        spare = AccountSpec("user:9:wallet", AccountKind.LIABILITY)
        books.open_account(spare)
        with pytest.raises(InsufficientFunds):  # resolves (and caches) the account
            books.post(EntryDraft("payout", out_of(WALLET, 1, spare.code), key()))
        ident = account_id(books, spare.code)
        tamper(
            books,
            backend,
            f"DELETE FROM {books.prefix}balances WHERE account_id = {ident}",
            f"DELETE FROM {books.prefix}accounts WHERE id = {ident}",
        )
        before = snapshot(books)
        with pytest.raises(UnknownAccount) as info:
            books.post(EntryDraft("fund", (Posting(SEED, 5), Posting(spare.code, -5)), key()))
        assert_error(
            info.value,
            UnknownAccount,
            [],
            {"accounts": sorted([SEED, spare.code])},
            message="an account of this entry does not exist (was its opening rolled back?)",
        )
        with pytest.raises(UnknownAccount) as info:
            books.post(EntryDraft("fund", (Posting(SEED, 5), Posting(spare.code, -5)), key()))
        assert info.value.details == {"accounts": [spare.code]}
        assert snapshot(books) == before


def test_expiry_ties_in_id_order(books: Ledger, clock: FakeClock) -> None:
    """Holds expiring at the same moment expire in the order they were placed."""
    fund(books, WALLET, 100)
    expires = clock() + timedelta(minutes=1)
    holds = [
        books.hold(EntryDraft("payout", out_of(WALLET, n), key()), expires_at=expires)
        for n in (5, 1, 4, 2, 3)
    ]
    clock.advance(minutes=1)
    order = [books.expire_holds(limit=1)[0].hold_id for _ in holds]
    assert order == [h.id for h in holds]
    assert books.expire_holds() == []
    assert raw(books.balance(WALLET)) == (100, 0, 0)


# --- units of work: atomic() with several writes (issue 12 item 1) ------------------------
#
# Inside atomic() each post's balance changes are collected and the balance rows are
# written once, in ascending (account, shard) order, when the unit ends. What callers
# see must not change: reads inside the unit include its earlier writes, an overdraft
# is refused at the write that causes it (counting the unit's earlier writes), and a
# refusal rolls the whole unit back.

NO_OVERDRAFT = [WALLET, HOT, CLEARING, HOT_ASSET]


def balance_updates(ledger: Ledger) -> tuple[list[tuple[str, int]], Iterator[None]]:
    """A log of ("insert", 0) per entry insert and ("update", rows) per balance update."""
    log: list[tuple[str, int]] = []
    entries, balances = ledger.tables.entries.name, ledger.tables.balances.name

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        text = " ".join(statement.split()).lower()
        rows = len(parameters) if executemany else 1
        if text.startswith(f"insert into {entries} ") or (
            text.startswith("with ") and f"insert into {entries} " in text
        ):
            log.append(("insert", rows))
        elif text.startswith(f"update {balances} "):
            log.append(("update", rows))

    def listening() -> Iterator[None]:
        sa.event.listen(ledger.engine, "after_cursor_execute", seen)
        try:
            yield
        finally:
            sa.event.remove(ledger.engine, "after_cursor_execute", seen)

    return log, listening()


class TestUnitOfWork:
    @pytest.mark.parametrize("code", NO_OVERDRAFT)
    def test_reads_inside_a_unit_include_its_earlier_writes(self, books: Ledger, code: str) -> None:
        """balance()/balances() inside atomic() show the unit's posts and holds (posted,
        pending in and out in the account's normal sign), before and after the account
        was first read, and leave accounts the unit did not touch as stored."""
        fund(books, code, 100)
        s = SIGN[code]

        def unit(tx: Ledger) -> list[object]:
            # Both read before the writes: later reads of them come from the unit's
            # cache, in the order asked for (an untouched account first).
            seen: list[object] = [raw(tx.balance(code)), raw(tx.balance(EUR_WALLET))]
            tx.post(EntryDraft("payout", out_of(code, 30), key()))
            seen.append(raw(tx.balance(code)))
            tx.hold(EntryDraft("payout", out_of(code, 20), key()))
            tx.hold(EntryDraft("fund", into(code, 7), key()))
            seen.append(raw(tx.balance(code)))
            seen.append(tx.balance(code).available_minor)
            # The seed is read for the first time now: stored row plus the unit's changes.
            seen.append(raw(tx.balance(SEED)))
            both = tx.balances([EUR_WALLET, code])
            seen.append({c: raw(b) for c, b in both.items()})
            return seen

        seen = books.atomic(unit)
        # The seed's pending amounts, in its own normal sign: the seed takes the other
        # side of every posting: 20 held going into it, 7 going out of it when it has
        # `code`'s normal sign, the other way round when it has the opposite one.
        seed_in, seed_out = (20, 7) if s < 0 else (7, 20)
        assert seen == [
            (100, 0, 0),
            (0, 0, 0),
            (70, 0, 0),
            (70, 7, 20),
            50,
            (s * 70, seed_in, seed_out),
            {EUR_WALLET: (0, 0, 0), code: (70, 7, 20)},
        ]
        assert raw(books.balance(code)) == (70, 7, 20)
        assert raw(books.balance(SEED)) == (s * 70, seed_in, seed_out)
        verified(books)

    @pytest.mark.parametrize("code", NO_OVERDRAFT)
    def test_overdraft_refused_at_the_write_that_causes_it(self, books: Ledger, code: str) -> None:
        """The unit's earlier posts and holds count: the write that goes beyond what is
        available is refused with the unit's available amount, and nothing of the unit
        is written; the same unit one unit smaller commits and spends to exactly 0."""
        fund(books, code, 100)
        before = snapshot(books)
        done: list[int] = []

        def unit(tx: Ledger, last: int) -> None:
            tx.post(EntryDraft("payout", out_of(code, 60), key()))
            done.append(1)
            tx.hold(EntryDraft("payout", out_of(code, 30), key()))
            done.append(2)
            tx.post(EntryDraft("fund", into(code, 5), key()))
            done.append(3)
            tx.post(EntryDraft("payout", out_of(code, last), key()))
            done.append(4)

        with pytest.raises(InsufficientFunds) as info:
            books.atomic(lambda tx: unit(tx, 16))
        assert done == [1, 2, 3]
        assert_short(info.value, code, 15, 16)
        assert snapshot(books) == before
        done.clear()
        books.atomic(lambda tx: unit(tx, 15))
        assert done == [1, 2, 3, 4]
        assert raw(books.balance(code)) == (30, 0, 30)
        assert books.balance(code).available_minor == 0
        verified(books)

    @pytest.mark.parametrize("code", NO_OVERDRAFT)
    def test_a_hold_beyond_the_units_available_is_refused(self, books: Ledger, code: str) -> None:
        """A hold counts the unit's earlier holds too; a hold into the account does not
        make money available."""
        fund(books, code, 50)
        before = snapshot(books)

        def unit(tx: Ledger) -> None:
            tx.hold(EntryDraft("fund", into(code, 40), key()))
            tx.hold(EntryDraft("payout", out_of(code, 30), key()))
            tx.hold(EntryDraft("payout", out_of(code, 21), key()))

        with pytest.raises(InsufficientFunds) as info:
            books.atomic(unit)
        assert info.value.details == {
            "account": code,
            "available_minor": 20,
            "required_minor": 21,
            "currency": "USD",
        }
        assert snapshot(books) == before

    def test_the_lowest_account_id_is_named_first(self, books: Ledger) -> None:
        """A post overdrawing two accounts names the one opened first (lowest id), as a
        post outside a unit does, whatever the order of its postings."""
        assert account_id(books, WALLET) < account_id(books, CLEARING)
        fund(books, WALLET, 3)
        fund(books, CLEARING, 2)
        # 5 out of both: a credit to the asset (CLEARING), a debit to the liability.
        draft = EntryDraft("move", (Posting(CLEARING, -5), Posting(WALLET, 5)), key())
        for write in (books.post, lambda d: books.atomic(lambda tx: tx.post(d))):
            with pytest.raises(InsufficientFunds) as info:
                write(draft)
            assert info.value.details == {
                "account": WALLET,
                "available_minor": 3,
                "required_minor": 5,
                "currency": "USD",
            }
        fund(books, WALLET, 10)
        with pytest.raises(InsufficientFunds) as info:
            books.atomic(lambda tx: tx.post(draft))
        assert info.value.details["account"] == CLEARING
        assert info.value.details["available_minor"] == 2

    @pytest.mark.parametrize("code", NO_OVERDRAFT)
    def test_holds_posts_and_voids_in_one_unit(self, books: Ledger, code: str) -> None:
        """A hold placed before the unit is voided in it and its money spent in the same
        unit; a hold placed in the unit is posted in it; another is voided in it."""
        fund(books, code, 25, times=4)  # 100 (over the shards of a sharded account)
        old = books.hold(EntryDraft("payout", out_of(code, 40), key()))
        assert books.balance(code).available_minor == 60

        def unit(tx: Ledger) -> tuple:
            tx.void_hold(old.id)
            tx.post(EntryDraft("payout", out_of(code, 90), key()))
            new = tx.hold(EntryDraft("payout", out_of(code, 6), key()))
            tx.post_hold(new.id)
            other = tx.hold(EntryDraft("payout", out_of(code, 4), key()))
            seen = raw(tx.balance(code))
            tx.void_hold(other.id)
            kept = tx.hold(EntryDraft("payout", out_of(code, 4), key()))
            return seen, raw(tx.balance(code)), kept

        seen, end, kept = books.atomic(unit)
        assert seen == (4, 0, 4)
        assert end == (4, 0, 4)
        assert raw(books.balance(code)) == (4, 0, 4)
        assert books.hold_status(old.id) is EntryPhase.VOIDED
        verified(books)
        with pytest.raises(InsufficientFunds) as info:
            books.atomic(lambda tx: tx.post(EntryDraft("payout", out_of(code, 1), key())))
        assert info.value.details["available_minor"] == 0
        books.atomic(
            lambda tx: (tx.void_hold(kept.id), tx.post(EntryDraft("p", out_of(code, 4), key())))
        )
        assert raw(books.balance(code)) == (0, 0, 0)
        verified(books)

    def test_an_empty_unit_writes_nothing(self, books: Ledger) -> None:
        """A unit with no writes (or only reads) returns its result and writes nothing."""
        fund(books, WALLET, 5)
        before = snapshot(books)
        log, listening = balance_updates(books)
        with contextlib.contextmanager(lambda: listening)():
            assert books.atomic(lambda tx: 42) == 42
            assert books.atomic(lambda tx: raw(tx.balance(WALLET))) == (5, 0, 0)
        assert log == []
        assert snapshot(books) == before

    @pytest.mark.parametrize("code", NO_OVERDRAFT)
    def test_a_unit_netting_to_zero_leaves_the_balance_rows(self, books: Ledger, code: str) -> None:
        """Posts that cancel out on an account within a unit leave its balance rows
        alone (even when the money was spent in between); the entries are recorded."""
        fund(books, code, 10)
        rows = snapshot(books)[2]

        def unit(tx: Ledger) -> None:
            tx.post(EntryDraft("payout", out_of(code, 10), key()))
            tx.post(EntryDraft("fund", into(code, 10), key()))
            tx.post(EntryDraft("payout", out_of(code, 10), key()))
            tx.post(EntryDraft("fund", into(code, 10), key()))

        log, listening = balance_updates(books)
        with contextlib.contextmanager(lambda: listening)():
            books.atomic(unit)
        assert log == [("insert", 1)] * 4
        entries, _, after = snapshot(books)
        assert after == rows
        assert raw(books.balance(code)) == (10, 0, 0)
        verified(books)

    def test_balance_rows_are_written_once_at_the_end(self, books: Ledger) -> None:
        """Five posts between two unsharded accounts update each balance row once, in
        one statement after the last entry is recorded (the lock-order guarantee)."""
        fund(books, WALLET, 100)
        log, listening = balance_updates(books)

        def unit(tx: Ledger) -> None:
            for n in range(1, 6):
                tx.post(EntryDraft("payout", out_of(WALLET, n), key()))

        with contextlib.contextmanager(lambda: listening)():
            books.atomic(unit)
        assert log == [("insert", 1)] * 5 + [("update", 2)]
        assert raw(books.balance(WALLET)) == (85, 0, 0)
        assert raw(books.balance(SEED)) == (-85, 0, 0)
        verified(books)

    @pytest.mark.parametrize("code", NO_OVERDRAFT)
    def test_a_refusal_caught_inside_the_unit_rolls_it_back(self, books: Ledger, code: str) -> None:
        """A refused write whose error the unit catches still fails the unit: nothing
        of it is written, not even the posts before the refusal."""
        fund(books, code, 10)
        before = snapshot(books)

        def unit(tx: Ledger) -> None:
            tx.post(EntryDraft("payout", out_of(code, 4), key()))
            with pytest.raises(InsufficientFunds):
                tx.post(EntryDraft("payout", out_of(code, 7), key()))

        with pytest.raises(InvalidInput) as info:
            books.atomic(unit)
        assert "failed inside atomic()" in str(info.value)
        assert snapshot(books) == before


# --- resolutions and reversals: the optional key and description are checked -----------

BAD_OPTIONALS = [
    ("idempotency_key", "", "idempotency_key must be 1 to"),
    ("idempotency_key", 7, "idempotency_key must be a string, not int"),
    ("idempotency_key", "k\x00", "idempotency_key must not contain NUL"),
    ("description", 7, "description must be a string, not int"),
    ("description", "d" * 1001, "description must be 0 to 1000 characters, got 1001"),
]


@pytest.mark.parametrize("call", ["reverse", "post_hold", "void_hold"])
@pytest.mark.parametrize(("field", "value", "fact"), BAD_OPTIONALS)
def test_a_bad_key_or_description_is_refused_by_name(
    books: Ledger, call: str, field: str, value: object, fact: str
) -> None:
    """reverse(), post_hold() and void_hold() check the idempotency key and the
    description they are given, each under its own name, before writing anything;
    an empty description is allowed."""
    fund(books, WALLET, 10)
    draft = EntryDraft("payout", out_of(WALLET, 3), key())
    entry = books.post(draft) if call == "reverse" else books.hold(draft)
    before = snapshot(books)
    with pytest.raises(InvalidInput) as info:
        getattr(books, call)(entry.id, **{field: value})
    assert_error(info.value, InvalidInput, [fact], {"field": field})
    assert snapshot(books) == before
    done = getattr(books, call)(entry.id, idempotency_key=key("ok"), description="")
    assert done.description == ""


@pytest.mark.parametrize(
    ("limit", "fact"), [(0, "got 0"), (100_001, "got 100001"), (1.5, "not float")]
)
def test_expire_holds_limit_is_checked_by_name(books: Ledger, limit: object, fact: str) -> None:
    """expire_holds(limit=...) takes 1 to 100,000 and names the argument when refused."""
    with pytest.raises(InvalidInput) as info:
        books.expire_holds(limit=limit)  # type: ignore[arg-type]
    assert_error(info.value, InvalidInput, ["limit must be", fact], {"field": "limit"})
    assert books.expire_holds(limit=100_000) == []


def test_expire_holds_in_expiry_order(books: Ledger, clock: FakeClock) -> None:
    """Holds expire earliest expiry first, whatever order they were placed in; a limit
    takes that many; a hold not yet expired is left."""
    fund(books, WALLET, 100)
    now = clock()
    minutes = [5, 2, 9, 1, 3]
    holds = [
        books.hold(
            EntryDraft("payout", out_of(WALLET, m), key()), expires_at=now + timedelta(minutes=m)
        )
        for m in minutes
    ]
    clock.advance(minutes=6)
    by_expiry = [h.id for _, h in sorted(zip(minutes, holds, strict=True)) if _ <= 6]
    first = books.expire_holds(limit=2)
    rest = books.expire_holds()
    assert [e.hold_id for e in first + rest] == by_expiry
    assert all(e.phase is EntryPhase.EXPIRED for e in first + rest)
    assert raw(books.balance(WALLET)) == (100, 0, 9)
    verified(books)


# --- property: a unit of work behaves like its writes made one by one ----------------------


def model_refusal(
    ledger: Ledger,
    start: dict[str, tuple],
    writes: list[tuple[str, tuple[Posting, ...]]],
) -> tuple[int | None, dict, dict[str, tuple]]:
    """The writes applied one by one to ``start`` (posted, pending in, pending out):
    the index of the first refused write and its refusal's details (the lowest
    account id short of money), or None and the balances at the end."""
    current = {code: list(v) for code, v in start.items()}
    for index, (kind, postings) in enumerate(writes):
        change = {code: [0, 0, 0] for code in current}
        for p in postings:
            amount = SIGN[p.account] * p.amount_minor
            if kind == "post":
                change[p.account][0] += amount
            else:
                change[p.account][1 if amount > 0 else 2] += abs(amount)
        short = []
        for code in NO_OVERDRAFT:
            posted, _, out = current[code]
            moved = change[code][0] - change[code][2]
            if moved < 0 and posted - out + moved < 0:
                short.append((account_id(ledger, code), code, posted - out, -moved))
        if short:
            _, code, available, required = min(short)
            details = {
                "account": code,
                "available_minor": available,
                "required_minor": required,
                "currency": "USD",
            }
            return index, details, start
        for code, (dp, di, do) in change.items():
            current[code][0] += dp
            current[code][1] += di
            current[code][2] += do
    return None, {}, {code: tuple(v) for code, v in current.items()}


@given(
    writes=st.lists(
        st.tuples(st.sampled_from(["post", "post", "hold"]), entries()), min_size=1, max_size=6
    ),
    level=st.integers(0, 300),
)
def test_a_unit_refuses_and_ends_as_its_writes_one_by_one(
    books: Ledger, writes: list[tuple[str, tuple[Posting, ...]]], level: int
) -> None:
    """Random posts and holds (several postings per account, sharded or not) made in one
    unit end with the balances the same writes give one by one, and the unit is refused
    exactly when one of them would be, with the same details, writing nothing; the
    same writes made one by one are then refused at that write."""
    for code in NO_OVERDRAFT:  # each no-overdraft account starts with `level` available
        available = books.balance(code).available_minor
        if available > level:
            books.post(EntryDraft("payout", out_of(code, available - level), key()))
        elif available < level:
            fund(books, code, level - available)
    start = state(books, PROPERTY_ACCOUNTS)
    refused_at, details, end = model_refusal(books, start, writes)
    event("refused" if refused_at is not None else "committed")

    def unit(tx: Ledger) -> dict[str, tuple]:
        for kind, postings in writes:
            getattr(tx, kind)(EntryDraft("move", postings, key("unit")))
        return state(tx, PROPERTY_ACCOUNTS)

    if refused_at is None:
        seen_inside = books.atomic(unit)
        assert seen_inside == end
        assert state(books, PROPERTY_ACCOUNTS) == end
    else:
        before = snapshot(books)
        with pytest.raises(InsufficientFunds) as info:
            books.atomic(unit)
        assert info.value.details == details
        assert snapshot(books) == before
        for index, (kind, postings) in enumerate(writes):
            draft = EntryDraft("move", postings, key("serial"))
            if index < refused_at:
                getattr(books, kind)(draft)
                continue
            with pytest.raises(InsufficientFunds) as info:
                getattr(books, kind)(draft)
            assert info.value.details == details
            break
    verified(books)


# --- a unit's combined changes on one sharded account ------------------------------------


@pytest.mark.parametrize("code", [HOT, HOT_ASSET])
def test_a_units_deposit_covers_its_hold_on_a_sharded_account(books: Ledger, code: str) -> None:
    """Money a unit pays into a sharded account counts for a hold out of it in the same
    unit (the rows are written together at the end: the deposit must be counted there)."""
    fund(books, code, 20)

    def unit(tx: Ledger) -> None:
        tx.post(EntryDraft("fund", into(code, 50), key()))
        tx.hold(EntryDraft("payout", out_of(code, 70), key()))

    books.atomic(unit)
    assert raw(books.balance(code)) == (70, 0, 70)
    assert books.balance(code).available_minor == 0
    verified(books)


@pytest.mark.parametrize("code", [HOT, HOT_ASSET])
def test_a_unit_spends_and_holds_everything_across_shards(books: Ledger, code: str) -> None:
    """A unit that posts out part of a spread balance and holds the rest takes both from
    the shards without driving any shard below zero (verify() checks every shard)."""
    fund(books, code, 10, times=12)  # 120 over the shards

    def unit(tx: Ledger) -> None:
        tx.post(EntryDraft("payout", out_of(code, 50), key()))
        tx.hold(EntryDraft("payout", out_of(code, 70), key()))

    books.atomic(unit)
    assert raw(books.balance(code)) == (70, 0, 70)
    verified(books)


@pytest.mark.parametrize("kind", [AccountKind.ASSET, AccountKind.REVENUE])
def test_overdraft_allowed_sharded_account_beyond_its_shards(
    books: Ledger, kind: AccountKind
) -> None:
    """On an overdraft-allowed sharded account (debit- or credit-normal), a posted hold
    or a unit's hold beyond what its shards have puts the rest on one shard with the
    right sign: balances are exact and no pending amount goes negative."""
    code = f"float:{kind.value}:{next(_keys)}"
    books.open_account(AccountSpec(code, kind, allow_overdraft=True, balance_shards=3))
    SIGN[code] = kind.normal_sign
    try:
        fund(books, code, 1, times=30)  # 30 spread over the shards
        hold = books.hold(EntryDraft("payout", out_of(code, 50), key()))
        books.post_hold(hold.id)  # releases the pending, posts 50 out of 30
        assert raw(books.balance(code)) == (-20, 0, 0)
        verified(books)
        incoming = books.hold(EntryDraft("fund", into(code, 7), key()))
        assert raw(books.balance(code)) == (-20, 7, 0)

        def unit(tx: Ledger) -> None:
            tx.void_hold(incoming.id)  # a release (pending in) ...
            tx.hold(EntryDraft("payout", out_of(code, 45), key()))  # ... and a hold out

        books.atomic(unit)
        assert raw(books.balance(code)) == (-20, 0, 45)
        verified(books)
    finally:
        del SIGN[code]


@pytest.mark.parametrize(
    ("write", "code"), [("post", WALLET), ("hold", WALLET), ("hold", CLEARING)]
)
def test_a_unit_summing_past_int64_on_one_account_is_refused(
    books: Ledger, write: str, code: str
) -> None:
    """Two writes of one unit, each within int64, that move one account's posted or
    pending balance past it: BalanceOverflow naming that account (the lowest id of the
    accounts that overflow), nothing written."""
    before = snapshot(books)
    big = 2**63 - 1

    def unit(tx: Ledger) -> None:
        getattr(tx, write)(EntryDraft("fund", into(code, big), key()))
        getattr(tx, write)(EntryDraft("fund", into(code, 1), key()))

    with pytest.raises(BalanceOverflow) as info:
        books.atomic(unit)
    assert_error(info.value, BalanceOverflow, [code, "signed 64 bits"], {"account": code})
    assert snapshot(books) == before


@pytest.mark.parametrize("write", ["post", "hold"])
def test_a_sharded_unit_past_a_shards_range_is_refused_naming_the_account(
    books: Ledger, write: str
) -> None:
    """A unit that releases a hold on a sharded account (so every shard row is locked
    and the deltas spread) and moves more into it than one shard row may hold
    (``(2**63 - 1) / shards``): BalanceOverflow naming that account, nothing written."""
    fund(books, HOT, 100)
    outgoing = books.hold(EntryDraft("payout", out_of(HOT, 10), key()))
    before = snapshot(books)
    too_much = BALANCE_MAX // 4 + 1  # HOT has 4 shards; the inflow lands on one

    def unit(tx: Ledger) -> None:
        tx.void_hold(outgoing.id)  # the release takes this unit to every shard
        getattr(tx, write)(EntryDraft("fund", into(HOT, too_much), key()))

    with pytest.raises(BalanceOverflow) as info:
        books.atomic(unit)
    assert_error(info.value, BalanceOverflow, [HOT, "signed 64 bits"], {"account": HOT})
    assert snapshot(books) == before


def test_a_short_account_before_a_sharded_one_is_named(books: Ledger) -> None:
    """A post short on an unsharded account that also takes money out of a sharded one
    (a later account id) is refused for the short account, and nothing is written."""
    assert account_id(books, WALLET) < account_id(books, HOT)
    fund(books, WALLET, 2)
    fund(books, HOT, 50, times=2)
    before = snapshot(books)
    a, b = out_of(WALLET, 5, REVENUE)
    c, d = out_of(HOT, 40, REVENUE)
    with pytest.raises(InsufficientFunds) as info:
        books.post(EntryDraft("payout", (c, d, a, b), key()))
    assert_short(info.value, WALLET, 2, 5)
    assert snapshot(books) == before
    # Both short: still the lower id (the unsharded account's row is updated first).
    c, d = out_of(HOT, 101, REVENUE)
    with pytest.raises(InsufficientFunds) as info:
        books.post(EntryDraft("payout", (c, d, a, b), key()))
    assert info.value.details["account"] == WALLET
    assert snapshot(books) == before


def test_a_two_shard_account_spends_and_releases_across_both(books: Ledger) -> None:
    """The smallest sharded account (2 shards) takes outflows and releases from both of
    its shards: money spread over them can be held, released and spent to exactly 0."""
    code = f"two:{next(_keys)}"
    books.open_account(AccountSpec(code, AccountKind.LIABILITY, balance_shards=2))
    SIGN[code] = AccountKind.LIABILITY.normal_sign
    try:
        fund(books, code, 1, times=12)  # 12 over the two shards
        hold = books.hold(EntryDraft("payout", out_of(code, 12), key()))
        books.void_hold(hold.id)
        books.post(EntryDraft("payout", out_of(code, 12), key()))
        assert raw(books.balance(code)) == (0, 0, 0)
        verified(books)
    finally:
        del SIGN[code]


# --- the guard refuses at the write what the unit's read allowed ------------------------
# On PostgreSQL another transaction can commit between a unit's balance read and its
# write, so the guarded UPDATE refuses a row the unit's own check let through. These
# tests make that happen deterministically on either backend: they change the balance
# row on the unit's own connection between the read and the write (and, for a deposit
# committed "since", inside the refusal path's re-read).


def shift_available(tx: Ledger, code: str, amount: int) -> None:
    """Change ``code``'s available balance by ``amount`` behind the unit's back."""
    b = tx.tables.balances
    account_id = tx.account(code).id
    tx.connection().execute(
        b.update()
        .where(b.c.account_id == account_id, b.c.shard == 0)
        .values(posted=b.c.posted + SIGN[code] * amount)
    )


class TestGuardRefusedAtTheWrite:
    def test_a_withdrawal_since_the_read_is_insufficient_funds_with_the_balance_now(
        self, books: Ledger
    ) -> None:
        fund(books, WALLET, 50)
        before = snapshot(books)

        def unit(tx: Ledger) -> None:
            assert tx.balance(WALLET).available_minor == 50  # the unit's read
            shift_available(tx, WALLET, -40)  # another transaction spends 40
            tx.post(EntryDraft("gift", out_of(WALLET, 30, REVENUE), key()))

        with pytest.raises(InsufficientFunds) as info:
            books.atomic(unit)
        assert_short(info.value, WALLET, 10, 30)
        assert snapshot(books) == before

    def test_a_deposit_after_the_refusal_still_refuses_naming_the_guarded_account(
        self, books: Ledger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The guard refused the row, then a deposit committed before the refusal path
        re-read the balance: still InsufficientFunds (the write was refused), naming the
        account with the balance it has now."""
        fund(books, WALLET, 50)
        before = snapshot(books)
        reread = Ledger._balances
        pending: list[Callable[[Ledger], None]] = []

        def balances_after_a_deposit(self: Ledger, conn: Any, codes: Any) -> Any:
            while pending:
                pending.pop()(self)
            return reread(self, conn, codes)

        monkeypatch.setattr(Ledger, "_balances", balances_after_a_deposit)

        def unit(tx: Ledger) -> None:
            assert tx.balance(WALLET).available_minor == 50
            shift_available(tx, WALLET, -40)  # 10 left when the write runs
            pending.append(lambda view: shift_available(view, WALLET, 100))  # then 110
            tx.post(EntryDraft("gift", out_of(WALLET, 30, REVENUE), key()))

        with pytest.raises(InsufficientFunds) as info:
            books.atomic(unit)
        assert not pending, "the refusal path re-read the balance"
        assert_short(info.value, WALLET, 110, 30)
        assert snapshot(books) == before

    @pytest.mark.parametrize("short", [WALLET, CLEARING])
    def test_with_two_guarded_accounts_the_short_one_is_named(
        self, books: Ledger, short: str
    ) -> None:
        """An entry that takes money out of two no-overdraft accounts, one of which
        another transaction drained since the unit's read: the refusal names that one
        with its balance, even when the other is spent to exactly zero."""
        fund(books, WALLET, 50)
        fund(books, CLEARING, 100)
        before = snapshot(books)
        draft = EntryDraft(
            "payout",
            (Posting(WALLET, 50), Posting(CLEARING, -30), Posting(SEED, -20)),
            key(),
        )
        taken = {WALLET: 45, CLEARING: 90}[short]  # leaves 5 and 10

        def unit(tx: Ledger) -> None:
            assert tx.balances([WALLET, CLEARING])[CLEARING].available_minor == 100
            shift_available(tx, short, -taken)
            tx.post(draft)

        with pytest.raises(InsufficientFunds) as info:
            books.atomic(unit)
        left, needed = {WALLET: (5, 50), CLEARING: (10, 30)}[short]
        assert_short(info.value, short, left, needed)
        assert snapshot(books) == before
        books.post(draft)  # without the rival, both accounts cover it
        assert books.balance(WALLET).available_minor == 0

    def test_a_balance_row_gone_at_the_write_is_unknown_account(self, books: Ledger) -> None:
        """A row the update cannot find (a damaged database: here the wallet's only row
        moved to another shard number) is UnknownAccount, not a refusal for funds."""
        fund(books, WALLET, 50)
        before = snapshot(books)

        def unit(tx: Ledger) -> None:
            assert tx.balance(WALLET).available_minor == 50
            b = tx.tables.balances
            tx.connection().execute(
                b.update().where(b.c.account_id == tx.account(WALLET).id).values(shard=9)
            )
            tx.post(EntryDraft("gift", out_of(WALLET, 30, REVENUE), key()))

        with pytest.raises(UnknownAccount) as info:
            books.atomic(unit)
        assert_error(info.value, UnknownAccount, ["no longer exists"], {})
        assert snapshot(books) == before
        assert books.post(EntryDraft("gift", out_of(WALLET, 30, REVENUE), key())).id


# --- many guarded rows in one unit (a batch of gifts from many wallets) -----------------
# Three single-shard no-overdraft accounts, each paying out in the same unit: their
# balance rows go in one statement (Ledger._flush). With psycopg that is one statement
# of arrays returning the rows it updated, so a refused row is named at once; with
# other drivers (pysqlite here) one executemany inside a savepoint, and a refusal rolls
# that back and writes the rows one guarded row at a time, which names the account.
THREE = (WALLET, CLEARING, EUR_WALLET)
PAYEE = {WALLET: SEED, CLEARING: SEED, EUR_WALLET: EUR_SEED}
CURRENCY = {WALLET: "USD", CLEARING: "USD", EUR_WALLET: "EUR"}


def move(code: str, change: int) -> tuple[Posting, Posting]:
    """Postings that raise one of THREE by ``change`` (lower it if negative)."""
    sign, currency = SIGN[code], CURRENCY[code]
    return Posting(code, sign * change, currency), Posting(PAYEE[code], -sign * change, currency)


def fund_three(books: Ledger) -> None:
    for code in THREE:
        books.post(EntryDraft("fund", move(code, 100), key("fund")))


def pay_three(tx: Ledger, amount: int = 30) -> None:
    for code in THREE:
        tx.post(EntryDraft("gift", move(code, -amount), key()))


class TestManyGuardedRows:
    def test_they_are_written_in_one_update(self, books: Ledger) -> None:
        """Three guarded rows: one statement, not three: on PostgreSQL (psycopg) one
        update of arrays and no savepoint; on SQLite one executemany in a savepoint."""
        fund_three(books)
        statements: list[tuple[str, int]] = []
        name = books.tables.balances.name

        def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            statements.append((" ".join(statement.split()), len(parameters) if executemany else 1))

        sa.event.listen(books.engine, "before_cursor_execute", seen)
        try:
            books.atomic(pay_three)
        finally:
            sa.event.remove(books.engine, "before_cursor_execute", seen)
        updates = [(sql, rows) for sql, rows in statements if f"UPDATE {name}" in sql]
        savepoints = [sql for sql, _ in statements if sql.startswith("SAVEPOINT")]
        assert len(updates) == 1, statements
        if books.engine.dialect.name == "postgresql":  # type: ignore[union-attr]
            assert updates[0][0].startswith("WITH d AS") and "unnest" in updates[0][0]
            assert savepoints == []
        else:
            assert updates[0][1] >= 3 and len(savepoints) == 1, statements
        assert [books.balance(code).available_minor for code in THREE] == [70, 70, 70]
        verified(books)

    @pytest.mark.parametrize("short", THREE)
    def test_the_short_one_is_named(self, books: Ledger, short: str) -> None:
        """Another transaction drained one of them since the unit's read: the refusal
        names that one with its balance now, and nothing is written."""
        fund_three(books)
        before = snapshot(books)

        def unit(tx: Ledger) -> None:
            assert tx.balances(list(THREE))[short].available_minor == 100
            shift_available(tx, short, -90)  # 10 left, the entry needs 30
            pay_three(tx)

        with pytest.raises(InsufficientFunds) as info:
            books.atomic(unit)
        assert info.value.details["account"] == short
        assert info.value.details["available_minor"] == 10
        assert info.value.details["required_minor"] == 30
        assert snapshot(books) == before

    @pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
    def test_a_deposit_before_the_rows_are_written_again_commits_each_once(
        self, books: Ledger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The grouped executemany is refused, then a deposit lands before the rows
        are written one guarded row at a time (with another PostgreSQL driver, a
        transaction that commits in between): the unit commits, and every row moved
        once (the grouped update was rolled back to its savepoint, not left
        applied). psycopg's update of arrays names the refused row at once: no
        rows are written again (``test_the_short_one_is_named``)."""
        fund_three(books)
        write_again = Ledger._update_rows
        pending: list[Callable[[Ledger], None]] = []

        def deposit_first(self: Ledger, *args: Any, **kwargs: Any) -> None:
            while pending:
                pending.pop()(self)
            write_again(self, *args, **kwargs)

        monkeypatch.setattr(Ledger, "_update_rows", deposit_first)

        def unit(tx: Ledger) -> None:
            tx.balances(list(THREE))
            shift_available(tx, CLEARING, -90)  # 10 left: the grouped update is refused
            pending.append(lambda view: shift_available(view, CLEARING, 90))  # 100 again
            pay_three(tx)

        books.atomic(unit)
        assert not pending, "the rows were written again after the refusal"
        assert [books.balance(code).available_minor for code in THREE] == [70, 70, 70]
        verified(books)

    @pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
    def test_a_deposit_committed_while_the_update_waits_counts(self, books: Ledger) -> None:
        """The unit read CLEARING at 100; since then another transaction drained it to
        10 and committed, and a third holds a deposit of 90 when the unit writes. The
        update waits for that one, then checks the balance as it locked it (100), not
        as its statement's snapshot saw it (10): the unit commits. (The update first
        took the guard from its snapshot, waited, and refused with "available 100,
        required 30".)"""
        fund_three(books)
        engine = books.engine
        assert engine is not None
        b = books.tables.balances
        row = (b.c.account_id == books.account(CLEARING).id) & (b.c.shard == 0)

        def shift(conn: sa.Connection, amount: int) -> None:
            conn.execute(b.update().where(row).values(posted=b.c.posted + SIGN[CLEARING] * amount))

        held, release = threading.Event(), threading.Event()

        def deposit() -> None:
            with engine.begin() as conn:
                shift(conn, 90)
                held.set()
                assert release.wait(10)

        def let_go() -> None:
            try:
                wait_for_a_lock_wait(engine)
            finally:
                release.set()

        depositor = threading.Thread(target=deposit)
        releaser = threading.Thread(target=let_go)

        def unit(tx: Ledger) -> None:
            tx.balances(list(THREE))
            with engine.begin() as conn:
                shift(conn, -90)  # drained to 10, committed
            depositor.start()
            assert held.wait(10)
            releaser.start()  # lets the deposit commit once the unit's update waits on it
            pay_three(tx)  # the balance rows are written as the unit ends

        try:
            books.atomic(unit)
        finally:
            release.set()
            depositor.join()
            releaser.join()
        assert [books.balance(code).available_minor for code in THREE] == [70, 70, 70]

    def test_a_row_gone_is_unknown_account(self, books: Ledger) -> None:
        """One of the rows is no longer there (moved out of the account's shards on the
        unit's own connection): UnknownAccount, and nothing written."""
        fund_three(books)
        before = snapshot(books)
        b = books.tables.balances

        def unit(tx: Ledger) -> None:
            tx.balances(list(THREE))
            gone = b.c.account_id == tx.account(CLEARING).id
            tx.connection().execute(b.update().where(gone).values(shard=9))
            pay_three(tx)

        with pytest.raises(UnknownAccount) as info:
            books.atomic(unit)
        assert_error(info.value, UnknownAccount, ["no longer exists"], {})
        assert snapshot(books) == before
        books.atomic(pay_three)  # the account cache was dropped: it works again
        assert [books.balance(code).available_minor for code in THREE] == [70, 70, 70]

    @pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
    def test_a_row_gone_beside_a_short_one_is_unknown_account(self, books: Ledger) -> None:
        """One row gone and another short in the same update of arrays: UnknownAccount
        (the account cache is dropped), whichever comes first, not the short one's
        InsufficientFunds."""
        fund_three(books)
        b = books.tables.balances
        for short, gone in ((WALLET, CLEARING), (CLEARING, WALLET)):

            def unit(tx: Ledger, short: str = short, gone: str = gone) -> None:
                tx.balances(list(THREE))
                where = b.c.account_id == tx.account(gone).id
                tx.connection().execute(b.update().where(where).values(shard=9))
                shift_available(tx, short, -90)
                pay_three(tx)

            with pytest.raises(UnknownAccount):
                books.atomic(unit)
        assert [books.balance(code).available_minor for code in THREE] == [100, 100, 100]

    def test_a_balance_past_its_range_is_balance_overflow(self, books: Ledger) -> None:
        """The grouped update takes the EUR seed account's row past its range (the
        database's CHECK refuses it): BalanceOverflow, as for a batch of one, and
        nothing written."""
        fund_three(books)
        seed_id = books.account(EUR_SEED).id
        b = books.tables.balances
        row = (b.c.account_id == seed_id) & (b.c.shard == 0)

        def seed_posted() -> int:
            with books.engine.connect() as conn:  # type: ignore[union-attr]
                return int(conn.execute(sa.select(b.c.posted).where(row)).scalar_one())

        was = seed_posted()
        books.atomic(pay_three)
        direction = 1 if seed_posted() > was else -1  # where paying moves the seed's row
        before = snapshot(books)

        def unit(tx: Ledger) -> None:
            tx.balances(list(THREE))
            tx.connection().execute(b.update().where(row).values(posted=direction * BALANCE_MAX))
            pay_three(tx)

        with pytest.raises(BalanceOverflow) as info:
            books.atomic(unit)
        assert "outside signed 64-bit range" in str(info.value)
        assert snapshot(books) == before


def test_a_bad_request_fingerprint_is_invalid_input_naming_request(books: Ledger) -> None:
    """``request=`` (the caller's idempotency fingerprint) must be JSON: refused by name."""
    before = snapshot(books)
    for bad in ({"amount": float("nan")}, {"when": object()}):
        with pytest.raises(InvalidInput) as info:
            books.post(EntryDraft("gift", out_of(WALLET, 1, REVENUE), key()), request=bad)
        assert str(info.value).startswith("request must be JSON-serialisable"), info.value
        assert info.value.details == {"field": "request"}
    assert snapshot(books) == before


def test_a_hold_resolved_by_another_transaction_at_the_write_is_hold_not_pending(
    books: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two resolutions of one hold race: both find it pending, one inserts first, the
    other's insert meets the unique ``hold_id`` and answers HoldNotPending naming the
    hold (the winner's void is simulated on the loser's connection just before its
    insert)."""
    fund(books, WALLET, 50)
    hold = books.hold(EntryDraft("payout", out_of(WALLET, 20), key()))
    before = snapshot(books)
    record = Ledger._record

    def record_after_a_rival(self: Ledger, conn: Any, op: Any) -> Any:
        if op.hold_id == hold.id:
            now = books.now()
            conn.execute(
                self.tables.entries.insert(),
                {
                    "type": "payout",
                    "phase": EntryPhase.VOIDED.value,
                    "idempotency_key": "rival-void",
                    "request_hash": "rival",
                    "description": "",
                    "metadata": {},
                    "effective_at": now,
                    "recorded_at": now,
                    "hold_id": hold.id,
                },
            )
        return record(self, conn, op)

    monkeypatch.setattr(Ledger, "_record", record_after_a_rival)
    for resolve in (books.post_hold, books.void_hold):
        with pytest.raises(HoldNotPending) as info:
            resolve(hold.id)
        assert_error(
            info.value,
            HoldNotPending,
            [f"hold {hold.id}", "resolved concurrently"],
            {"entry_id": hold.id},
        )
        assert snapshot(books) == before


# --- rows written with an entry (Ledger._post_with) ----------------------------------------
#
# A service writes rows that take the new entry's id (a gift's outbox event and earning
# lot) with the entry: on PostgreSQL in the same statement as the entry and its postings.
# The rows are made from the balances as they will be after the entry.


def _event_rows(ledger: Ledger, seen: list[dict[str, Balance]], *, note: str = "n") -> Any:
    """A ``rows`` function for ``_post_with``: one outbox event (dedupe key and payload
    take the entry id) and one earning lot; it records the balances it was given."""
    from datetime import datetime

    from spaktok_ledger._store._together import Attached

    t = ledger.tables
    at = datetime(2026, 12, 2, tzinfo=UTC)

    def rows(balances: dict[str, Balance]) -> list[Attached]:
        seen.append(balances)
        wallet = balances[WALLET].posted_minor
        event = Attached(
            t.outbox,
            {"topic": "test.sent", "payload": {"entry_id": 0, "wallet": wallet}, "created_at": at},
            entry_id="entry_id",
            key=("dedupe_key", f"test.sent.{note}:"),
            payload=("payload", "entry_id"),
        )
        lot = Attached(
            t.earning_lots,
            {"streamer_id": note, "amount_minor": 7, "matures_at": at},
            entry_id="gift_entry_id",
        )
        return [event, lot]

    return rows


def _written(ledger: Ledger) -> tuple[list[Any], list[Any]]:
    t = ledger.tables
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        events = conn.execute(
            sa.select(t.outbox.c.topic, t.outbox.c.dedupe_key, t.outbox.c.entry_id)
            .add_columns(t.outbox.c.payload)
            .where(t.outbox.c.topic == "test.sent")
            .order_by(t.outbox.c.id)
        ).all()
        lots = conn.execute(
            sa.select(t.earning_lots.c.streamer_id, t.earning_lots.c.gift_entry_id)
            .add_columns(t.earning_lots.c.amount_minor)
            .order_by(t.earning_lots.c.id)
        ).all()
    return events, lots


class TestRowsWrittenWithTheEntry:
    @pytest.mark.parametrize("in_unit", [True, False], ids=["atomic", "alone"])
    def test_rows_take_the_entry_id_and_see_the_balances_after(
        self, books: Ledger, in_unit: bool
    ) -> None:
        fund(books, WALLET, 100)
        seen: list[dict[str, Balance]] = []
        draft = EntryDraft("gift", out_of(WALLET, 30, REVENUE), key("with"))

        def post(tx: Ledger) -> tuple[Entry, dict[str, tuple]]:
            entry = tx._post_with(
                draft, request=None, codes=[WALLET, CLEARING], rows=_event_rows(tx, seen)
            )
            return entry, state(tx, [WALLET, CLEARING])

        if in_unit:
            entry, after = books.atomic(post)
        else:
            entry = books._post_with(
                draft, request=None, codes=[WALLET, CLEARING], rows=_event_rows(books, seen)
            )
            after = state(books, [WALLET, CLEARING])
        assert not entry.replayed
        # The rows were made from the balances as they are once the entry is posted.
        assert [{code: raw(b) for code, b in s.items()} for s in seen] == [after]
        assert after[WALLET] == (70, 0, 0)
        events, lots = _written(books)
        assert [(e.topic, e.dedupe_key, e.entry_id) for e in events] == [
            ("test.sent", f"test.sent.n:{entry.id}", entry.id)
        ]
        assert events[0].payload == {"entry_id": entry.id, "wallet": 70}
        assert [tuple(lot) for lot in lots] == [("n", entry.id, 7)]
        assert [(p.account, p.amount_minor) for p in books.entry(entry.id).postings] == [
            (WALLET, 30),
            (REVENUE, -30),
        ]
        verified(books)

    def test_a_replay_writes_no_rows(self, books: Ledger) -> None:
        fund(books, WALLET, 100)
        draft = EntryDraft("gift", out_of(WALLET, 30, REVENUE), key("again"))
        first = books._post_with(draft, request=None, codes=[WALLET], rows=_event_rows(books, []))
        again = books._post_with(draft, request=None, codes=[WALLET], rows=_event_rows(books, []))
        assert again.replayed and again.id == first.id
        events, lots = _written(books)
        assert len(events) == len(lots) == 1
        assert state(books, [WALLET])[WALLET] == (70, 0, 0)

    def test_a_refusal_writes_no_rows(self, books: Ledger) -> None:
        fund(books, WALLET, 10)
        before = snapshot(books)
        draft = EntryDraft("gift", out_of(WALLET, 11, REVENUE), key("short"))
        with pytest.raises(InsufficientFunds) as info:
            books.atomic(
                lambda tx: tx._post_with(
                    draft, request=None, codes=[WALLET], rows=_event_rows(tx, [])
                )
            )
        assert_short(info.value, WALLET, 10, 11)
        assert snapshot(books) == before
        assert _written(books) == ([], [])

    def test_a_long_entry_writes_its_rows_too(self, books: Ledger) -> None:
        """More legs than one statement takes (PostgreSQL): entry, postings and rows
        are written one statement each, with the same result."""
        from spaktok_ledger._store._together import MAX_LEGS_TOGETHER

        fund(books, WALLET, 100)
        legs = [Posting(WALLET, 1) for _ in range(MAX_LEGS_TOGETHER + 1)]
        legs.append(Posting(REVENUE, -(MAX_LEGS_TOGETHER + 1)))
        draft = EntryDraft("gift", legs, key("long"))
        entry = books._post_with(draft, request=None, codes=[WALLET], rows=_event_rows(books, []))
        events, lots = _written(books)
        assert [e.entry_id for e in events] == [entry.id]
        assert events[0].payload == {"entry_id": entry.id, "wallet": 100 - len(legs) + 1}
        assert [lot.gift_entry_id for lot in lots] == [entry.id]
        assert len(books.entry(entry.id).postings) == len(legs)
        verified(books)

    def test_two_entries_in_one_unit_each_get_their_rows(self, books: Ledger) -> None:
        fund(books, WALLET, 100)
        seen: list[dict[str, Balance]] = []

        def two(tx: Ledger) -> list[Entry]:
            return [
                tx._post_with(
                    EntryDraft("gift", out_of(WALLET, amount, REVENUE), key(note)),
                    request=None,
                    codes=[WALLET],
                    rows=_event_rows(tx, seen, note=note),
                )
                for note, amount in (("a", 10), ("b", 5))
            ]

        first, second = books.atomic(two)
        # The second entry's rows see the first one's change too.
        assert [s[WALLET].posted_minor for s in seen] == [90, 85]
        events, lots = _written(books)
        assert [(e.dedupe_key, e.entry_id, e.payload["wallet"]) for e in events] == [
            (f"test.sent.a:{first.id}", first.id, 90),
            (f"test.sent.b:{second.id}", second.id, 85),
        ]
        assert [(lot.streamer_id, lot.gift_entry_id) for lot in lots] == [
            ("a", first.id),
            ("b", second.id),
        ]

    def test_idempotency_compares_the_request(self, books: Ledger) -> None:
        """With a request, a retry is the same call if its request is, whatever its draft."""
        fund(books, WALLET, 100)

        def post(amount: int, request: dict[str, Any]) -> Entry:
            draft = EntryDraft("gift", out_of(WALLET, amount, REVENUE), "gift:r1")
            return books._post_with(
                draft, request=request, codes=[WALLET], rows=_event_rows(books, [])
            )

        first = post(30, {"op": "gift", "n": 1})
        # Another draft (say, after a split change) under the same request: a replay.
        again = post(31, {"op": "gift", "n": 1})
        assert again.replayed and again.id == first.id
        with pytest.raises(IdempotencyConflict):
            post(30, {"op": "gift", "n": 2})
        assert state(books, [WALLET])[WALLET] == (70, 0, 0)
        assert len(_written(books)[0]) == 1

    def test_balances_read_in_the_unit_are_not_read_again(self, books: Ledger) -> None:
        """The rows are made from the unit's read plus its changes: no second select."""
        fund(books, WALLET, 100)
        selects: list[str] = []
        balances = books.tables.balances.name

        def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("SELECT") and balances in statement:
                selects.append(statement)

        def unit(tx: Ledger) -> Entry:
            tx.balances([WALLET, CLEARING])
            sa.event.listen(books.engine, "before_cursor_execute", seen)
            try:
                return tx._post_with(
                    EntryDraft("gift", out_of(WALLET, 30, REVENUE), key("once")),
                    request=None,
                    codes=[WALLET, CLEARING],
                    rows=_event_rows(tx, []),
                )
            finally:
                sa.event.remove(books.engine, "before_cursor_execute", seen)

        entry = books.atomic(unit)
        assert selects == []
        assert _written(books)[0][0].payload == {"entry_id": entry.id, "wallet": 70}

    def test_attached_rows_get_their_columns_checks(self, books: Ledger) -> None:
        """An attached row's values go through their columns' types, on PostgreSQL's
        one statement as in SQLite's insert (both prepared SQL): a naive datetime is
        refused, nothing written."""
        from datetime import datetime

        from spaktok_ledger._store._together import Attached

        fund(books, WALLET, 100)
        before = snapshot(books)
        naive = Attached(
            books.tables.earning_lots,
            {"streamer_id": "n", "amount_minor": 7, "matures_at": datetime(2026, 12, 2)},
            entry_id="gift_entry_id",
        )
        draft = EntryDraft("gift", out_of(WALLET, 30, REVENUE), key("naive"))
        with pytest.raises((InvalidInput, sa.exc.StatementError)) as info:
            books._post_with(draft, request=None, codes=[WALLET], rows=lambda _: [naive])
        # SQLAlchemy wraps a bind processor's error (a Core statement: another
        # driver); the prepared statement runs the processor before executing.
        refused = getattr(info.value, "orig", info.value)
        assert isinstance(refused, InvalidInput) and "timezone-aware" in str(refused)
        assert snapshot(books) == before

    def test_another_rows_integrity_error_is_not_an_unknown_account(self, books: Ledger) -> None:
        """Only the postings' account foreign key means ``UnknownAccount``: an attached
        row the database refuses (here an earning lot's CHECK) is its own error, on
        PostgreSQL's one statement as in SQLite's plain insert, and nothing is written."""
        from spaktok_ledger._store._together import Attached

        fund(books, WALLET, 100)
        before = snapshot(books)
        at = datetime(2026, 12, 2, tzinfo=UTC)
        empty_lot = Attached(
            books.tables.earning_lots,
            {"streamer_id": "n", "amount_minor": 0, "matures_at": at},
            entry_id="gift_entry_id",
        )
        draft = EntryDraft("gift", out_of(WALLET, 30, REVENUE), key("zero"))
        with pytest.raises(sa.exc.IntegrityError) as info:
            books._post_with(draft, request=None, codes=[WALLET], rows=lambda _: [empty_lot])
        assert "earning_lots_amount" in str(info.value)
        assert snapshot(books) == before
