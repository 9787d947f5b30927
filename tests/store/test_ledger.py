"""The ledger store, run on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from spaktok_ledger import (
    AccountConflict,
    AccountKind,
    AccountSpec,
    AlreadyReversed,
    CurrencyMismatch,
    EntryDraft,
    EntryPhase,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidCursor,
    InvalidEntry,
    InvalidInput,
    Ledger,
    Posting,
    UnknownAccount,
    UnknownEntry,
    head_revision,
)
from tests.apis import APIS

WALLET = "user:1:wallet"
CLEARING = "platform:stripe_clearing"
EARNINGS = "streamer:7:earnings"
REVENUE = "platform:gift_revenue"


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Every test here runs against the sync API and the asyncio API."""
    return str(request.param)


def accounts(ledger: Ledger, *, earnings_shards: int = 1) -> None:
    ledger.open_accounts(
        [
            AccountSpec(WALLET, AccountKind.LIABILITY),
            AccountSpec(CLEARING, AccountKind.ASSET),
            AccountSpec(EARNINGS, AccountKind.LIABILITY, balance_shards=earnings_shards),
            AccountSpec(REVENUE, AccountKind.REVENUE, allow_overdraft=True, balance_shards=8),
        ]
    )


def purchase(ledger: Ledger, amount: int, key: str) -> int:
    entry = ledger.post(
        EntryDraft(
            "purchase", (Posting.debit(CLEARING, amount), Posting.credit(WALLET, amount)), key
        )
    )
    return entry.id


def gift_draft(value: int, key: str) -> EntryDraft:
    streamer = value * 4 // 10
    return EntryDraft(
        "gift",
        (
            Posting.debit(WALLET, value),
            Posting.credit(EARNINGS, streamer),
            Posting.credit(REVENUE, value - streamer),
        ),
        key,
    )


def snapshot(ledger: Ledger) -> tuple:
    """Everything a write could change: entry count and every balance."""
    t = ledger.tables
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        entries = conn.execute(sa.select(sa.func.count()).select_from(t.entries)).scalar()
        postings = conn.execute(sa.select(sa.func.count()).select_from(t.postings)).scalar()
        balances = conn.execute(sa.select(t.balances).order_by("account_id", "shard")).all()
    return entries, postings, [tuple(r) for r in balances]


class TestAccounts:
    def test_open_is_idempotent(self, ledger: Ledger) -> None:
        """Opening the same account twice returns the same account."""
        spec = AccountSpec(WALLET, AccountKind.LIABILITY, metadata={"user_id": 1})
        first = ledger.open_account(spec)
        again = ledger.open_account(spec)
        assert first == again
        assert ledger.account(WALLET) == first

    def test_open_conflict(self, ledger: Ledger) -> None:
        """The same code with another definition is an AccountConflict."""
        ledger.open_account(AccountSpec(WALLET, AccountKind.LIABILITY))
        with pytest.raises(AccountConflict):
            ledger.open_account(AccountSpec(WALLET, AccountKind.ASSET))

    def test_unknown_account(self, ledger: Ledger) -> None:
        """Reading or posting to an account never opened raises UnknownAccount."""
        with pytest.raises(UnknownAccount):
            ledger.balance("user:404:wallet")
        accounts(ledger)
        with pytest.raises(UnknownAccount) as info:
            ledger.post(
                EntryDraft(
                    "x", (Posting.debit(CLEARING, 1), Posting.credit("user:404:wallet", 1)), "k"
                )
            )
        assert info.value.details["accounts"] == ["user:404:wallet"]

    def test_list_by_prefix(self, ledger: Ledger) -> None:
        """accounts(prefix=...) lists accounts by code."""
        accounts(ledger)
        assert [a.code for a in ledger.accounts(prefix="platform:")] == [REVENUE, CLEARING]


class TestPosting:
    def test_post_moves_balances(self, ledger: Ledger) -> None:
        """A purchase and a gift move balances in each account's normal sign."""
        accounts(ledger)
        purchase(ledger, 1000, "p1")
        ledger.post(gift_draft(100, "g1"))
        balances = ledger.balances([WALLET, CLEARING, EARNINGS, REVENUE])
        assert {code: b.posted_minor for code, b in balances.items()} == {
            WALLET: 900,
            CLEARING: 1000,
            EARNINGS: 40,
            REVENUE: 60,
        }

    def test_replay_returns_original(self, ledger: Ledger) -> None:
        """The same draft under the same key returns the first entry and writes nothing."""
        accounts(ledger)
        purchase(ledger, 500, "p1")
        first = ledger.post(gift_draft(100, "g1"))
        before = snapshot(ledger)
        again = ledger.post(gift_draft(100, "g1"))
        assert again == first
        assert snapshot(ledger) == before

    def test_replay_after_funds_are_gone_still_returns_original(self, ledger: Ledger) -> None:
        """A replay is recognised before the funds check: it returns the first result."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        first = ledger.post(gift_draft(100, "g1"))
        assert ledger.balance(WALLET).available_minor == 0
        assert ledger.post(gift_draft(100, "g1")) == first

    def test_same_key_different_request(self, ledger: Ledger) -> None:
        """A different draft under a used key is an IdempotencyConflict, nothing written."""
        accounts(ledger)
        purchase(ledger, 500, "p1")
        ledger.post(gift_draft(100, "g1"))
        before = snapshot(ledger)
        with pytest.raises(IdempotencyConflict):
            ledger.post(gift_draft(200, "g1"))
        assert snapshot(ledger) == before

    def test_insufficient_funds_leaves_no_trace(self, ledger: Ledger) -> None:
        """An overdraft is refused with the numbers, and the key stays free for a retry."""
        accounts(ledger)
        purchase(ledger, 50, "p1")
        before = snapshot(ledger)
        with pytest.raises(InsufficientFunds) as info:
            ledger.post(gift_draft(100, "g1"))
        assert info.value.details["available_minor"] == 50
        assert info.value.details["required_minor"] == 100
        assert snapshot(ledger) == before
        purchase(ledger, 50, "p2")
        assert ledger.post(gift_draft(100, "g1")).type == "gift"

    def test_currency_mismatch(self, ledger: Ledger) -> None:
        """A EUR posting to a USD account is refused before anything is written."""
        accounts(ledger)
        ledger.open_account(AccountSpec("platform:eur_clearing", AccountKind.ASSET, "EUR"))
        before = snapshot(ledger)
        with pytest.raises(CurrencyMismatch):
            ledger.post(
                EntryDraft(
                    "x",
                    (Posting.debit("platform:eur_clearing", 5, "EUR"), Posting.credit(WALLET, 5, "EUR")),
                    "k",
                )
            )
        assert snapshot(ledger) == before

    def test_multi_currency_entry(self, ledger: Ledger) -> None:
        """An entry may move two currencies if each balances."""
        ledger.open_accounts(
            [
                AccountSpec("fx:usd", AccountKind.ASSET, allow_overdraft=True),
                AccountSpec("fx:eur", AccountKind.ASSET, "EUR", allow_overdraft=True),
                AccountSpec("fx:usd_pos", AccountKind.EQUITY, allow_overdraft=True),
                AccountSpec("fx:eur_pos", AccountKind.EQUITY, "EUR", allow_overdraft=True),
            ]
        )
        ledger.post(
            EntryDraft(
                "fx",
                (
                    Posting.debit("fx:eur", 92, "EUR"),
                    Posting.credit("fx:eur_pos", 92, "EUR"),
                    Posting.debit("fx:usd_pos", 100),
                    Posting.credit("fx:usd", 100),
                ),
                "fx1",
            )
        )
        assert ledger.trial_balance().totals() == {"EUR": (92, 92), "USD": (100, 100)}
        assert ledger.verify().ok

    def test_effective_at_and_metadata_round_trip(self, ledger: Ledger, clock) -> None:
        """A stored entry reads back equal to what post() returned."""
        accounts(ledger)
        entry = ledger.post(
            EntryDraft(
                "purchase",
                (Posting.debit(CLEARING, 5), Posting.credit(WALLET, 5)),
                "p1",
                description="Pack of 500",
                metadata={"pack": "p500", "nested": {"a": [1, 2]}},
                effective_at=clock() - timedelta(days=3),
            )
        )
        assert ledger.entry(entry.id) == entry
        assert ledger.entry_by_key("p1") == entry
        with pytest.raises(UnknownEntry):
            ledger.entry(10_000)

    def test_wrong_argument_types(self, ledger: Ledger) -> None:
        """Passing something that is not a draft is an InvalidInput (a ValueError)."""
        with pytest.raises(InvalidInput):
            ledger.post({"type": "gift"})  # type: ignore[arg-type]


class TestHolds:
    def test_hold_counts_against_available_then_posts(self, ledger: Ledger) -> None:
        """A hold reduces available at once and moves posted only when posted."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        ledger.post(gift_draft(100, "g1"))  # earnings 40
        hold = ledger.hold(
            EntryDraft("payout", (Posting.debit(EARNINGS, 30), Posting.credit(CLEARING, 30)), "h1")
        )
        b = ledger.balance(EARNINGS)
        assert (b.posted_minor, b.pending_out_minor, b.available_minor) == (40, 30, 10)
        with pytest.raises(InsufficientFunds):
            ledger.hold(
                EntryDraft(
                    "payout", (Posting.debit(EARNINGS, 11), Posting.credit(CLEARING, 11)), "h2"
                )
            )
        posted = ledger.post_hold(hold.id)
        assert posted.hold_id == hold.id and posted.phase is EntryPhase.POSTED
        b = ledger.balance(EARNINGS)
        assert (b.posted_minor, b.pending_out_minor, b.available_minor) == (10, 0, 10)
        assert ledger.hold_status(hold.id) is EntryPhase.POSTED
        assert ledger.post_hold(hold.id) == posted  # replay
        with pytest.raises(HoldNotPending):
            ledger.void_hold(hold.id)
        assert ledger.verify().ok

    def test_void_returns_the_money(self, ledger: Ledger) -> None:
        """A voided hold frees its amount; the void is an entry without postings."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        hold = ledger.hold(gift_draft(60, "h1"))
        assert ledger.balance(WALLET).available_minor == 40
        void = ledger.void_hold(hold.id, metadata={"reason": "stream ended"})
        assert void.phase is EntryPhase.VOIDED and void.postings == ()
        assert ledger.balance(WALLET).available_minor == 100
        with pytest.raises(HoldNotPending):
            ledger.post_hold(hold.id)
        assert ledger.verify().ok

    def test_expiry(self, ledger: Ledger, clock) -> None:
        """Overdue holds expire in a batch; an expired hold cannot be posted."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        soon = ledger.hold(gift_draft(30, "h1"), expires_at=clock() + timedelta(minutes=5))
        later = ledger.hold(gift_draft(30, "h2"), expires_at=clock() + timedelta(hours=5))
        clock.advance(minutes=10)
        with pytest.raises(HoldNotPending, match="expired"):
            ledger.post_hold(soon.id)
        expired = ledger.expire_holds()
        assert [e.hold_id for e in expired] == [soon.id]
        assert expired[0].phase is EntryPhase.EXPIRED
        assert ledger.hold_status(later.id) is EntryPhase.PENDING
        assert ledger.balance(WALLET).available_minor == 70
        assert ledger.expire_holds() == []
        assert ledger.verify().ok

    def test_expiry_must_be_future(self, ledger: Ledger, clock) -> None:
        """A hold that would already be expired is refused."""
        accounts(ledger)
        with pytest.raises(InvalidEntry):
            ledger.hold(gift_draft(10, "h"), expires_at=clock() - timedelta(seconds=1))

    def test_resolve_a_non_hold(self, ledger: Ledger) -> None:
        """post_hold on a posted entry or a missing id is refused."""
        accounts(ledger)
        entry_id = purchase(ledger, 10, "p1")
        with pytest.raises(HoldNotPending):
            ledger.post_hold(entry_id)
        with pytest.raises(UnknownEntry):
            ledger.void_hold(999_999)

    def test_sharded_hold_spread_over_shards(self, ledger: Ledger) -> None:
        """Holds and posts on a sharded no-overdraft account keep every shard valid."""
        accounts(ledger, earnings_shards=4)
        purchase(ledger, 10_000, "p1")
        for i in range(20):
            ledger.post(gift_draft(100, f"g{i}"))  # 40 each to a random shard
        assert ledger.balance(EARNINGS).posted_minor == 800
        hold = ledger.hold(
            EntryDraft("payout", (Posting.debit(EARNINGS, 790), Posting.credit(CLEARING, 790)), "h")
        )
        with pytest.raises(InsufficientFunds):
            ledger.post(
                EntryDraft("payout", (Posting.debit(EARNINGS, 11), Posting.credit(CLEARING, 11)), "x")
            )
        ledger.post_hold(hold.id)
        assert ledger.balance(EARNINGS).available_minor == 10
        report = ledger.verify()
        assert report.ok, report.problems


class TestReversals:
    def test_reverse_once(self, ledger: Ledger) -> None:
        """A reversal mirrors the entry; a second reversal is AlreadyReversed."""
        accounts(ledger)
        entry_id = purchase(ledger, 300, "p1")
        reversal = ledger.reverse(entry_id)
        assert reversal.reverses_id == entry_id
        assert [p.amount_minor for p in reversal.postings] == [-300, 300]
        assert ledger.balance(WALLET).posted_minor == 0
        assert ledger.reverse(entry_id) == reversal  # replay of the same request
        with pytest.raises(AlreadyReversed):
            ledger.reverse(entry_id, idempotency_key="another-key")
        assert ledger.verify().ok

    def test_reversal_cannot_overdraw(self, ledger: Ledger) -> None:
        """Reversing a purchase whose coins were spent is InsufficientFunds."""
        accounts(ledger)
        entry_id = purchase(ledger, 100, "p1")
        ledger.post(gift_draft(100, "g1"))
        with pytest.raises(InsufficientFunds):
            ledger.reverse(entry_id)

    def test_cannot_reverse_a_hold(self, ledger: Ledger) -> None:
        """Holds are voided, not reversed."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        hold = ledger.hold(gift_draft(10, "h"))
        with pytest.raises(InvalidEntry):
            ledger.reverse(hold.id)


class TestReads:
    def test_balance_as_of(self, ledger: Ledger, clock) -> None:
        """balance_as_of sums postings effective up to the given time."""
        accounts(ledger)
        t0 = clock()
        purchase(ledger, 100, "p1")
        clock.advance(hours=1)
        purchase(ledger, 50, "p2")
        assert ledger.balance_as_of(WALLET, t0 - timedelta(seconds=1)).posted_minor == 0
        assert ledger.balance_as_of(WALLET, t0).posted_minor == 100
        assert ledger.balance_as_of(WALLET, clock()).posted_minor == 150

    def test_history_pages_newest_first(self, ledger: Ledger, clock) -> None:
        """History pages are newest first, carry counterparties, and never repeat."""
        accounts(ledger)
        purchase(ledger, 1000, "p0")
        for i in range(7):
            clock.advance(minutes=1)
            ledger.post(gift_draft(10 + i, f"g{i}"))
        page = ledger.history(WALLET, limit=3)
        assert [i.amount_minor for i in page.items] == [16, 15, 14]
        assert page.items[0].counterparties == (EARNINGS, REVENUE)
        assert page.items[0].balance_change_minor == -16
        seen = [i.posting_id for i in page.items]
        # Entries arriving between pages do not shift or repeat items.
        ledger.post(gift_draft(99, "late"))
        while page.next_cursor:
            page = ledger.history(WALLET, limit=3, cursor=page.next_cursor)
            seen += [i.posting_id for i in page.items]
        assert len(seen) == len(set(seen)) == 8

    def test_history_filters(self, ledger: Ledger, clock) -> None:
        """History filters by entry type and by effective time."""
        accounts(ledger)
        purchase(ledger, 1000, "p0")
        t1 = clock.advance(hours=1)
        ledger.post(gift_draft(10, "g1"))
        clock.advance(hours=1)
        ledger.post(gift_draft(20, "g2"))
        gifts = ledger.history(WALLET, types=["gift"])
        assert [i.type for i in gifts.items] == ["gift", "gift"]
        window = ledger.history(WALLET, since=t1, until=t1 + timedelta(minutes=30))
        assert [i.amount_minor for i in window.items] == [10]

    def test_history_cursor_misuse(self, ledger: Ledger) -> None:
        """A garbage cursor, or one from another query, is InvalidCursor."""
        accounts(ledger)
        for i in range(3):
            purchase(ledger, 10, f"p{i}")
        page = ledger.history(WALLET, limit=1)
        assert page.next_cursor
        with pytest.raises(InvalidCursor):
            ledger.history(WALLET, cursor="not-a-cursor")
        with pytest.raises(InvalidCursor):
            ledger.history(CLEARING, cursor=page.next_cursor)
        with pytest.raises(InvalidInput):
            ledger.history(WALLET, limit=0)

    def test_history_shows_hold_status(self, ledger: Ledger) -> None:
        """A hold's posting in history says whether it is still pending."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        hold = ledger.hold(gift_draft(10, "h"))
        assert ledger.history(WALLET).items[0].hold_status is EntryPhase.PENDING
        ledger.void_hold(hold.id)
        assert ledger.history(WALLET).items[0].hold_status is EntryPhase.VOIDED

    def test_trial_balance(self, ledger: Ledger) -> None:
        """The trial balance's debits equal its credits."""
        accounts(ledger)
        purchase(ledger, 1000, "p1")
        ledger.post(gift_draft(100, "g1"))
        tb = ledger.trial_balance()
        assert tb.balanced
        assert tb.totals() == {"USD": (1000, 1000)}
        rows = {r.account: (r.debit_minor, r.credit_minor) for r in tb.rows}
        assert rows[WALLET] == (0, 900) and rows[CLEARING] == (1000, 0)

    def test_iter_entries(self, ledger: Ledger) -> None:
        """iter_entries yields every entry in id order across batches."""
        accounts(ledger)
        ids = [purchase(ledger, 1, f"p{i}") for i in range(5)]
        assert [e.id for e in ledger.iter_entries(batch_size=2)] == ids
        assert ledger.count_entries() == 5


class TestGuards:
    def test_history_is_append_only(self, ledger: Ledger) -> None:
        """The database rejects UPDATE and DELETE on entries and postings."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        t = ledger.tables
        for statement in (
            t.postings.update().values(amount=1),
            t.postings.delete(),
            t.entries.update().values(description="edited"),
            t.entries.delete(),
            t.accounts.update().values(kind="asset"),
        ):
            with pytest.raises(sa.exc.DBAPIError, match="not allowed"):
                with ledger.engine.begin() as conn:  # type: ignore[union-attr]
                    conn.execute(statement)
        assert ledger.verify().ok

    def test_check_constraint_guards_overdraft(self, ledger: Ledger) -> None:
        """Even raw SQL cannot push a no-overdraft balance row below zero."""
        accounts(ledger)
        b = ledger.tables.balances
        account_id = ledger.account(WALLET).id
        with pytest.raises(sa.exc.IntegrityError):
            with ledger.engine.begin() as conn:  # type: ignore[union-attr]
                conn.execute(b.update().where(b.c.account_id == account_id).values(posted=1))

    def test_verify_reports_tampering(self, ledger: Ledger, backend: str) -> None:
        """verify() reports a balance row that no longer matches its postings."""
        accounts(ledger)
        purchase(ledger, 100, "p1")
        b = ledger.tables.balances
        account_id = ledger.account(CLEARING).id
        with ledger.engine.begin() as conn:  # type: ignore[union-attr]
            conn.execute(b.update().where(b.c.account_id == account_id).values(posted=b.c.posted + 1))
        report = ledger.verify()
        assert not report.ok
        checks = {(p.check, p.subject) for p in report.problems}
        assert ("balances", CLEARING) in checks
        assert ("totals", "USD") in checks

    def test_verify_reports_a_missing_guard(self, ledger: Ledger) -> None:
        """verify() notices when an append-only trigger was dropped."""
        name = f"{ledger.prefix}postings_no_update" if ledger.dialect == "sqlite" else (
            f"{ledger.prefix}postings_append_only"
        )
        on = "" if ledger.dialect == "sqlite" else f" ON {ledger.prefix}postings"
        with ledger.engine.begin() as conn:  # type: ignore[union-attr]
            conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
        assert [(p.check, p.subject) for p in ledger.verify().problems] == [("guards", name)]

    @pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
    def test_postgres_rejects_unbalanced_entry_at_commit(self, ledger: Ledger) -> None:
        """PostgreSQL's deferred trigger refuses an entry whose raw postings do not balance."""
        accounts(ledger)
        t = ledger.tables
        wallet = ledger.account(WALLET).id
        with pytest.raises(sa.exc.IntegrityError, match="does not balance"):  # noqa: PT012
            with ledger.engine.begin() as conn:  # type: ignore[union-attr]
                entry_id = conn.execute(
                    t.entries.insert().returning(t.entries.c.id),
                    {
                        "type": "x", "phase": "posted", "idempotency_key": "raw",
                        "request_hash": "-", "description": "", "metadata": {},
                        "effective_at": ledger.now(), "recorded_at": ledger.now(),
                    },
                ).scalar_one()
                conn.execute(
                    t.postings.insert(),
                    {"entry_id": entry_id, "account_id": wallet, "amount": 5, "currency": "USD"},
                )
        assert ledger.count_entries() == 0

    def test_foreign_key_refuses_posting_in_other_currency(self, ledger: Ledger) -> None:
        """The (account, currency) foreign key refuses a raw posting in the wrong currency."""
        accounts(ledger)
        purchase(ledger, 1, "p1")
        t = ledger.tables
        with pytest.raises(sa.exc.IntegrityError):
            with ledger.engine.begin() as conn:  # type: ignore[union-attr]
                conn.execute(
                    t.postings.insert(),
                    {"entry_id": 1, "account_id": ledger.account(WALLET).id, "amount": 5,
                     "currency": "EUR"},
                )


class TestHostTransactions:
    @pytest.fixture
    def api(self) -> str:
        """Sync host Sessions and Connections: the AsyncSession twins are in tests/test_async.py."""
        return "sync"

    def test_joins_host_session_and_rolls_back_with_it(self, ledger: Ledger, engine) -> None:
        """Through using(session), writes commit or roll back with the host's transaction."""
        accounts(ledger)
        with Session(engine) as session:
            with session.begin():
                ledger.using(session).post(
                    EntryDraft("purchase", (Posting.debit(CLEARING, 5), Posting.credit(WALLET, 5)), "a")
                )
                session.rollback()
        assert ledger.balance(WALLET).posted_minor == 0
        with Session(engine) as session, session.begin():
            ledger.using(session).post(
                EntryDraft("purchase", (Posting.debit(CLEARING, 5), Posting.credit(WALLET, 5)), "a")
            )
        assert ledger.balance(WALLET).posted_minor == 5

    def test_failed_call_does_not_poison_host_transaction(self, ledger: Ledger, engine) -> None:
        """A refused call rolls back to its savepoint; the host's transaction carries on."""
        accounts(ledger)
        with engine.connect() as conn:
            bound = ledger.using(conn)
            bound.post(
                EntryDraft("purchase", (Posting.debit(CLEARING, 5), Posting.credit(WALLET, 5)), "a")
            )
            with pytest.raises(InsufficientFunds):
                bound.post(gift_draft(100, "g"))
            assert bound.balance(WALLET).posted_minor == 5
            conn.commit()
        assert ledger.balance(WALLET).posted_minor == 5
        assert ledger.verify().ok

    def test_account_opened_in_rolled_back_host_transaction(self, ledger: Ledger, engine) -> None:
        """An account whose opening the host rolled back is unknown afterwards."""
        accounts(ledger)
        with engine.connect() as conn:
            bound = ledger.using(conn)
            bound.open_account(AccountSpec("user:2:wallet", AccountKind.LIABILITY))
            bound.post(
                EntryDraft(
                    "purchase", (Posting.debit(CLEARING, 5), Posting.credit("user:2:wallet", 5)), "a"
                )
            )
            conn.rollback()
        with pytest.raises(UnknownAccount):
            ledger.post(
                EntryDraft(
                    "purchase", (Posting.debit(CLEARING, 5), Posting.credit("user:2:wallet", 5)), "b"
                )
            )

    def test_atomic_commits_all_or_nothing(self, ledger: Ledger) -> None:
        """atomic() runs several calls in one transaction; an error undoes all of them."""
        accounts(ledger)

        def buy_then_overspend(tx: Ledger) -> None:
            purchase(tx, 10, "p1")
            tx.post(gift_draft(100, "g1"))

        with pytest.raises(InsufficientFunds):
            ledger.atomic(buy_then_overspend)
        assert ledger.count_entries() == 0
        result = ledger.atomic(lambda tx: (purchase(tx, 10, "p1"), tx.balance(WALLET))[1])
        assert result.posted_minor == 10

    def test_atomic_rollback_forgets_opened_accounts(self, ledger: Ledger) -> None:
        """Accounts opened inside a rolled-back atomic() are not remembered."""

        def open_and_fail(tx: Ledger) -> None:
            accounts(tx)
            purchase(tx, 10, "p1")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            ledger.atomic(open_and_fail)
        with pytest.raises(UnknownAccount):
            purchase(ledger, 10, "p1")


def test_bind_types(tmp_path) -> None:
    """A ledger takes a URL, an Engine, a Connection or a Session, nothing else."""
    with pytest.raises(InvalidInput):
        Ledger(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Ledger("mysql://localhost/x")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with Ledger(url) as ledger:
        assert ledger.migrate() == head_revision()
        assert ledger.dialect == "sqlite"


class TestRequestsAndPages:
    def test_replayed_flag(self, ledger: Ledger) -> None:
        """A replay says so (replayed=True) and still compares equal to the original."""
        accounts(ledger)
        first = ledger.post(
            EntryDraft("purchase", (Posting.debit(CLEARING, 5), Posting.credit(WALLET, 5)), "p")
        )
        again = ledger.post(
            EntryDraft("purchase", (Posting.debit(CLEARING, 5), Posting.credit(WALLET, 5)), "p")
        )
        assert (first.replayed, again.replayed) == (False, True)
        assert again == first

    def test_request_fingerprint_overrides_the_draft(self, ledger: Ledger) -> None:
        """With request=..., idempotency compares requests: a changed derivation replays."""
        accounts(ledger)
        purchase(ledger, 1000, "p")
        request = {"op": "send_gift", "gift": "rose", "quantity": 1}
        first = ledger.post(gift_draft(100, "g"), request=request)
        again = ledger.post(gift_draft(120, "g"), request=request)  # e.g. the split changed
        assert again.replayed and again == first
        with pytest.raises(IdempotencyConflict):
            ledger.post(gift_draft(100, "g"), request={**request, "quantity": 2})

    def test_entries_page_across_accounts(self, ledger: Ledger, clock) -> None:
        """entries_page lists each entry touching the accounts once, newest first."""
        accounts(ledger)
        purchase(ledger, 1000, "p")
        ids = [ledger.post(gift_draft(100 + i, f"g{i}")).id for i in range(5)]
        hold = ledger.hold(
            EntryDraft("payout", (Posting.debit(EARNINGS, 30), Posting.credit(CLEARING, 30)), "h")
        )
        page = ledger.entries_page([EARNINGS, REVENUE], limit=4)
        assert [e.id for e in page.entries] == [hold.id, *reversed(ids[-3:])]
        assert page.hold_status == {hold.id: EntryPhase.PENDING}
        rest = ledger.entries_page([EARNINGS, REVENUE], limit=4, cursor=page.next_cursor)
        assert [e.id for e in rest.entries] == list(reversed(ids[:2]))
        assert rest.next_cursor is None
        assert [e.id for e in ledger.entries_page([EARNINGS], types=["payout"]).entries] == [hold.id]
        with pytest.raises(UnknownAccount):
            ledger.entries_page(["user:404:wallet"])
        with pytest.raises(InvalidCursor):
            ledger.entries_page([EARNINGS], cursor=page.next_cursor)


def test_caught_refusal_inside_atomic_rolls_back(ledger: Ledger) -> None:
    """A refusal caught inside atomic() cannot commit a half-written entry."""
    accounts(ledger)
    purchase(ledger, 10, "p1")

    def swallow(tx: Ledger) -> None:
        try:
            tx.post(gift_draft(100, "g1"))
        except InsufficientFunds:
            pass

    with pytest.raises(InvalidInput, match="rolled back"):
        ledger.atomic(swallow)
    assert ledger.count_entries() == 1
    assert ledger.verify().ok
