"""Exports for auditors: JSON Lines and Beancount, on SQLite and PostgreSQL.

The Beancount file is checked by the real ``bean-check`` and loaded with
Beancount's own API, whose balances must equal the ledger's posted balances.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from beancount import loader
from beancount.core import account as bc_account
from beancount.core import data, realization
from hypothesis import given
from hypothesis import strategies as st

from spaktok_ledger import AccountKind, AccountSpec, EntryDraft, EntryPhase, Ledger, Posting
from spaktok_ledger._currency import currency_exponent
from spaktok_ledger._export import beancount_account_names, export_beancount, export_jsonl

BEAN_CHECK = Path(sys.executable).parent / "bean-check"

CLEARING = "platform:stripe_clearing"
BALANCE = "platform:stripe_balance"
BALANCE_EUR = "platform:stripe_balance_eur"
BALANCE_JPY = "platform:stripe_balance_jpy"
CAPITAL = "platform:owner_capital"
CAPITAL_EUR = "platform:owner_capital_eur"
CAPITAL_JPY = "platform:owner_capital_jpy"
WALLET_42 = "user:42:wallet"
WALLET_7 = "user:7:wallet"
PENDING = "streamer:abc-1:earnings_pending"
EARNINGS = "streamer:abc-1:earnings"
IN_FLIGHT = "streamer:abc-1:payouts_in_flight"
REVENUE = "platform:gift_revenue"
PRICING = "platform:coin_pricing"
FEES = "platform:payment_fees"
LOSSES = "platform:refund_losses"

BACKDATED = datetime(2026, 2, 20, 9, 30, tzinfo=UTC)
DESCRIPTIONS = [
    'Purchase of the "Starter" pack — 500 coins',
    "Achat de pièces ✨ für Zoë\nsecond line, a back\\slash and a\ttab",
    "Gift 🎁 «Rose» from user 42",
]


def open_book(ledger: Ledger) -> None:
    asset, liability, equity = AccountKind.ASSET, AccountKind.LIABILITY, AccountKind.EQUITY
    revenue, expense = AccountKind.REVENUE, AccountKind.EXPENSE
    ledger.open_accounts(
        [
            AccountSpec(CLEARING, asset, allow_overdraft=True),
            AccountSpec(BALANCE, asset, allow_overdraft=True),
            AccountSpec(BALANCE_EUR, asset, "EUR", allow_overdraft=True),
            AccountSpec(BALANCE_JPY, asset, "JPY", allow_overdraft=True),
            AccountSpec(CAPITAL, equity, allow_overdraft=True),
            AccountSpec(CAPITAL_EUR, equity, "EUR", allow_overdraft=True),
            AccountSpec(CAPITAL_JPY, equity, "JPY", allow_overdraft=True),
            AccountSpec(WALLET_42, liability),
            AccountSpec(WALLET_7, liability),
            AccountSpec(PENDING, liability),
            AccountSpec(EARNINGS, liability),
            AccountSpec(IN_FLIGHT, liability),
            AccountSpec(REVENUE, revenue, allow_overdraft=True, balance_shards=8),
            AccountSpec(PRICING, revenue, allow_overdraft=True),
            AccountSpec(FEES, expense, allow_overdraft=True),
            AccountSpec(LOSSES, expense, allow_overdraft=True),
        ]
    )


def post(ledger: Ledger, type_: str, key: str, *postings: Posting, **kwargs) -> int:
    return ledger.post(EntryDraft(type_, postings, key, **kwargs)).id


def gift(ledger: Ledger, wallet: str, value: int, key: str, description: str = "") -> int:
    streamer = value * 4 // 10  # the 40/60 default split
    return post(
        ledger,
        "gift",
        key,
        Posting.debit(wallet, value),
        Posting.credit(PENDING, streamer),
        Posting.credit(REVENUE, value - streamer),
        description=description,
        metadata={"gift_id": key, "split_bps": [4000, 6000]},
    )


def build_book(ledger: Ledger, clock) -> dict[str, int]:
    """A small realistic book over four days; returns a few entry ids."""
    open_book(ledger)
    ids: dict[str, int] = {}
    # Capital booked with an earlier effective date than the accounts' opening.
    ids["capital"] = post(
        ledger,
        "adjustment",
        "capital:1",
        Posting.debit(BALANCE, 100_000),
        Posting.credit(CAPITAL, 100_000),
        description="Owner's capital",
        effective_at=BACKDATED,
    )
    post(  # bonus coins: priced below face value
        ledger,
        "purchase",
        "cs_test_1",
        Posting.debit(CLEARING, 499),
        Posting.debit(PRICING, 1),
        Posting.credit(WALLET_42, 500),
        description=DESCRIPTIONS[0],
        metadata={"stripe": {"checkout_session": "cs_test_1"}, "coins": 500},
    )
    post(  # priced above face value
        ledger,
        "purchase",
        "cs_test_2",
        Posting.debit(CLEARING, 1099),
        Posting.credit(WALLET_7, 1000),
        Posting.credit(PRICING, 99),
        description=DESCRIPTIONS[1],
    )
    post(ledger, "fee", "txn_fee_1", Posting.debit(FEES, 45), Posting.credit(CLEARING, 45))
    clock.advance(days=1)
    gift(ledger, WALLET_42, 300, "gift:1", DESCRIPTIONS[2])
    ids["refunded_gift"] = gift(ledger, WALLET_7, 250, "gift:2")
    ids["reversal"] = ledger.reverse(ids["refunded_gift"], description="Gift refunded").id
    post(
        ledger,
        "maturation",
        "mature:1",
        Posting.debit(PENDING, 120),
        Posting.credit(EARNINGS, 120),
    )
    post(
        ledger,
        "transfer",
        "settle:1",
        Posting.debit(BALANCE, 1553),
        Posting.credit(CLEARING, 1553),
        description="Stripe settlement",
    )
    # Two currencies in one entry, balanced per currency.
    post(
        ledger,
        "adjustment",
        "capital:eur",
        Posting.debit(BALANCE_EUR, 9_200, "EUR"),
        Posting.credit(CAPITAL_EUR, 9_200, "EUR"),
        Posting.debit(BALANCE, 10_000),
        Posting.credit(CAPITAL, 10_000),
        description="Capital in euros",
    )
    post(
        ledger,
        "adjustment",
        "capital:jpy",
        Posting.debit(BALANCE_JPY, 1_500, "JPY"),
        Posting.credit(CAPITAL_JPY, 1_500, "JPY"),
    )
    clock.advance(days=1)
    payout = [Posting.debit(EARNINGS, 100), Posting.credit(IN_FLIGHT, 100)]
    ids["posted_hold"] = ledger.hold(EntryDraft("payout", payout, "payout:1")).id
    ledger.post_hold(ids["posted_hold"])
    post(
        ledger,
        "payout",
        "payout:1:paid",
        Posting.debit(IN_FLIGHT, 100),
        Posting.credit(BALANCE, 100),
    )
    small = [Posting.debit(EARNINGS, 5), Posting.credit(IN_FLIGHT, 5)]
    ids["voided_hold"] = ledger.hold(EntryDraft("payout", small, "payout:2")).id
    ledger.void_hold(ids["voided_hold"], metadata={"reason": "cancelled"})
    expiring = ledger.hold(
        EntryDraft("payout", small, "payout:3"), expires_at=clock() + timedelta(hours=1)
    )
    ids["expired_hold"] = expiring.id
    clock.advance(days=1)
    ledger.expire_holds()
    ids["open_hold"] = ledger.hold(EntryDraft("payout", small, "payout:4")).id
    return ids


def minor(number: Decimal, currency: str) -> int:
    scaled = number.scaleb(currency_exponent(currency))
    assert scaled == scaled.to_integral_value()
    return int(scaled)


def export_file(ledger: Ledger, path: Path, **kwargs) -> int:
    with path.open("w", encoding="utf-8") as out:
        return export_beancount(ledger, out, **kwargs)


def bean_check(path: Path) -> None:
    result = subprocess.run(
        [str(BEAN_CHECK), str(path)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def load(path: Path):
    entries, errors, options = loader.load_file(str(path))
    assert errors == []
    return entries, options


def beancount_balances(entries, names: dict[str, str], ledger: Ledger) -> dict[str, int]:
    """Each account's own balance in Beancount, back in the ledger's minor units."""
    root = realization.realize(entries)
    out = {}
    for account in ledger.accounts():
        real = realization.get(root, names[account.code])
        units = real.balance.get_currency_units(account.currency) if real is not None else None
        out[account.code] = minor(units.number, account.currency) if units else 0
    return out


def ledger_posted(ledger: Ledger) -> dict[str, int]:
    """Posted balances, debit-positive, the way Beancount shows them."""
    return {
        a.code: a.kind.normal_sign * ledger.balance(a.code).posted_minor for a in ledger.accounts()
    }


@pytest.fixture
def book(ledger: Ledger, clock) -> dict[str, int]:
    return build_book(ledger, clock)


class TestJsonl:
    def test_round_trip(self, ledger: Ledger, book) -> None:
        """Every line parses, one per entry in id order, and posted sums equal the balances."""
        out = io.StringIO()
        count = export_jsonl(ledger, out)
        lines = out.getvalue().splitlines()
        rows = [json.loads(line) for line in lines]
        assert count == len(rows) == ledger.count_entries()
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        assert {r["phase"] for r in rows} == {"posted", "pending", "voided", "expired"}
        totals: dict[str, int] = defaultdict(int)
        for r in rows:
            if r["phase"] == "posted":
                for p in r["postings"]:
                    totals[p["account"]] += p["amount_minor"]
        assert {code: totals[code] for code in ledger_posted(ledger)} == ledger_posted(ledger)

    def test_fields(self, ledger: Ledger, book) -> None:
        """Each object carries the entry's fields, UTC timestamps and text as is."""
        out = io.StringIO()
        export_jsonl(ledger, out)
        rows = {r["id"]: r for r in map(json.loads, out.getvalue().splitlines())}
        capital = rows[book["capital"]]
        assert set(capital) == {
            "id",
            "type",
            "phase",
            "idempotency_key",
            "description",
            "metadata",
            "effective_at",
            "recorded_at",
            "expires_at",
            "hold_id",
            "reverses_id",
            "postings",
        }
        assert capital["effective_at"] == "2026-02-20T09:30:00Z"
        assert capital["recorded_at"] == "2026-03-01T12:00:00Z"
        assert capital["postings"][0] == {
            "account": BALANCE,
            "amount_minor": 100_000,
            "currency": "USD",
        }
        assert {r["description"] for r in rows.values()} >= set(DESCRIPTIONS)
        assert rows[book["reversal"]]["reverses_id"] == book["refunded_gift"]
        expired = rows[book["expired_hold"]]
        assert datetime.fromisoformat(expired["expires_at"]).tzinfo is not None
        resolutions = [r for r in rows.values() if r["hold_id"] == book["voided_hold"]]
        assert [(r["phase"], r["postings"]) for r in resolutions] == [("voided", [])]
        assert rows[book["open_hold"]]["phase"] == "pending"

    def test_progress(self, ledger: Ledger, book) -> None:
        """Progress starts at (0, n), counts up by one and ends at (n, n)."""
        calls: list[tuple[int, int]] = []
        count = export_jsonl(ledger, io.StringIO(), on_progress=lambda *a: calls.append(a))
        assert calls == [(i, count) for i in range(count + 1)]
        assert count == ledger.count_entries()

    def test_host_connection(self, ledger: Ledger, book) -> None:
        """A ledger joined to a host's connection exports in the host's transaction."""
        out = io.StringIO()
        with ledger.engine.connect() as conn:  # type: ignore[union-attr]
            count = export_jsonl(ledger.using(conn), out)
        assert count == len(out.getvalue().splitlines()) == ledger.count_entries()

    def test_empty_ledger(self, ledger: Ledger) -> None:
        """An empty ledger exports nothing and reports (0, 0)."""
        calls: list[tuple[int, int]] = []
        out = io.StringIO()
        assert export_jsonl(ledger, out, on_progress=lambda *a: calls.append(a)) == 0
        assert (out.getvalue(), calls) == ("", [(0, 0)])


class TestBeancount:
    def test_bean_check_accepts_it(self, ledger: Ledger, book, tmp_path: Path) -> None:
        """The real bean-check accepts the export, balance assertions included."""
        path = tmp_path / "books.beancount"
        export_file(ledger, path, title='Spaktok "audit" 2026')
        bean_check(path)
        text = path.read_text(encoding="utf-8")
        assert 'option "title" "Spaktok \\"audit\\" 2026"' in text
        assert 'option "operating_currency" "USD"' in text

    def test_balances_equal_the_ledger(self, ledger: Ledger, book, tmp_path: Path) -> None:
        """Beancount's balance of every account equals the ledger's posted balance."""
        path = tmp_path / "books.beancount"
        export_file(ledger, path)
        entries, _ = load(path)
        names = beancount_account_names(ledger.accounts())
        assert beancount_balances(entries, names, ledger) == ledger_posted(ledger)
        assert ledger_posted(ledger)[BALANCE_JPY] == 1_500  # a zero-decimal currency too

    def test_one_transaction_per_posted_entry(self, ledger: Ledger, book, tmp_path) -> None:
        """Only posted entries become transactions, with their id, type, key and text."""
        path = tmp_path / "books.beancount"
        count = export_file(ledger, path)
        entries, _ = load(path)
        txns = [e for e in entries if isinstance(e, data.Transaction)]
        posted = {e.id: e for e in ledger.iter_entries() if e.phase is EntryPhase.POSTED}
        assert count == len(txns) == len(posted)
        for txn in txns:
            entry = posted[int(txn.meta["entry-id"])]
            assert txn.flag == "*"
            assert txn.narration == entry.description
            assert txn.meta["entry-type"] == entry.type
            assert txn.meta["idempotency-key"] == entry.idempotency_key
            assert txn.date == entry.effective_at.astimezone(UTC).date()
            assert f"entry-{entry.id}" in txn.links
            assert entry.type in txn.tags
        by_id = {int(t.meta["entry-id"]): t for t in txns}
        reversal = by_id[book["reversal"]]
        assert f"entry-{book['refunded_gift']}" in reversal.links
        assert reversal.meta["reverses-id"] == book["refunded_gift"]
        posted_hold = [t for t in txns if t.meta.get("hold-id") == book["posted_hold"]]
        assert len(posted_hold) == 1
        for hold in ("posted_hold", "voided_hold", "expired_hold", "open_hold"):
            assert book[hold] not in by_id

    def test_opens_never_follow_a_posting(self, ledger: Ledger, book, tmp_path) -> None:
        """An account opens at its creation or its first posting, whichever is earlier."""
        path = tmp_path / "books.beancount"
        export_file(ledger, path)
        entries, _ = load(path)
        names = beancount_account_names(ledger.accounts())
        opens = {e.account: e for e in entries if isinstance(e, data.Open)}
        assert set(opens) == set(names.values())
        assert opens[names[BALANCE]].date == BACKDATED.date()
        assert opens[names[CAPITAL]].currencies == ["USD"]
        assert opens[names[LOSSES]].date == date(2026, 3, 1)  # never used
        assert opens[names[CAPITAL_EUR]].currencies == ["EUR"]
        for txn in (e for e in entries if isinstance(e, data.Transaction)):
            for posting in txn.postings:
                assert opens[posting.account].date <= txn.date

    def test_balance_assertions(self, ledger: Ledger, book, tmp_path: Path) -> None:
        """One balance assertion per account, the day after the last entry, from the store."""
        path = tmp_path / "books.beancount"
        export_file(ledger, path)
        entries, _ = load(path)
        names = beancount_account_names(ledger.accounts())
        last = max(e.date for e in entries if isinstance(e, data.Transaction))
        checks = {e.account: e for e in entries if isinstance(e, data.Balance)}
        assert set(checks) == set(names.values())
        posted = ledger_posted(ledger)
        for account in ledger.accounts():
            check = checks[names[account.code]]
            assert check.date == last + timedelta(days=1)
            assert check.amount.currency == account.currency
            assert minor(check.amount.number, account.currency) == posted[account.code]
            assert check.diff_amount is None  # Beancount found no difference

    def test_escaped_text_round_trips(self, ledger: Ledger, tmp_path: Path) -> None:
        """Quotes, backslashes, line breaks, control characters and emoji survive or are replaced."""
        open_book(ledger)
        tricky = 'a "quoted" \\ back\\slash\nnew line\r\tend \x01\x07 é 🎁'
        post(
            ledger,
            "purchase",
            'key "with" \\ quotes',
            Posting.debit(CLEARING, 1),
            Posting.credit(WALLET_42, 1),
            description=tricky,
            metadata={"note": 'he said "hi"\n'},
        )
        path = tmp_path / "books.beancount"
        export_file(ledger, path)
        bean_check(path)
        (txn,) = [e for e in load(path)[0] if isinstance(e, data.Transaction)]
        assert txn.narration == tricky.replace("\x01", "\ufffd").replace("\x07", "\ufffd")
        assert txn.meta["idempotency-key"] == 'key "with" \\ quotes'
        assert json.loads(txn.meta["entry-metadata"]) == {"note": 'he said "hi"\n'}
        assert b"\x07" not in path.read_bytes()

    def test_pending_holds_on_mirror_accounts(self, ledger: Ledger, book, tmp_path) -> None:
        """include_pending shows open holds as ! transactions without moving real balances."""
        path = tmp_path / "books.beancount"
        count = export_file(ledger, path, include_pending=True)
        bean_check(path)
        entries, _ = load(path)
        names = beancount_account_names(ledger.accounts())
        flagged = [e for e in entries if isinstance(e, data.Transaction) and e.flag == "!"]
        assert [int(t.meta["entry-id"]) for t in flagged] == [book["open_hold"]]
        assert count == sum(isinstance(e, data.Transaction) for e in entries)
        assert beancount_balances(entries, names, ledger) == ledger_posted(ledger)
        root = realization.realize(entries)
        mirror = realization.get(root, "Liabilities:Pending:Streamer:Abc-1:Earnings")
        assert mirror.balance.get_currency_units("USD").number == Decimal("0.05")
        balance = ledger.balance(EARNINGS)
        assert balance.pending_out_minor == 5
        assert "Liabilities:Pending:Streamer:Abc-1:Payouts-in-flight" in {
            e.account for e in entries if isinstance(e, data.Balance)
        }

    def test_progress(self, ledger: Ledger, book, tmp_path: Path) -> None:
        """Progress counts every entry read, from (0, n) to (n, n)."""
        calls: list[tuple[int, int]] = []
        export_file(ledger, tmp_path / "b.beancount", on_progress=lambda *a: calls.append(a))
        n = ledger.count_entries()
        assert calls == [(i, n) for i in range(n + 1)]

    def test_export_is_a_snapshot(self, ledger: Ledger, book, tmp_path: Path) -> None:
        """Entries written while the export runs are not in it, and its balances still agree."""
        before = ledger.count_entries()
        written: list[int] = []

        def write_meanwhile(done: int, total: int) -> None:
            if done == 1:
                written.append(
                    post(
                        ledger,
                        "purchase",
                        "during-export",
                        Posting.debit(CLEARING, 700),
                        Posting.credit(WALLET_42, 700),
                    )
                )

        path = tmp_path / "books.beancount"
        export_file(ledger, path, on_progress=write_meanwhile)
        assert written
        assert ledger.count_entries() == before + 1
        bean_check(path)
        entry_ids = {
            int(e.meta["entry-id"]) for e in load(path)[0] if isinstance(e, data.Transaction)
        }
        assert written[0] not in entry_ids

    def test_empty_ledger(self, ledger: Ledger, tmp_path: Path) -> None:
        """An empty ledger is a valid Beancount file with no transactions."""
        path = tmp_path / "empty.beancount"
        assert export_file(ledger, path) == 0
        bean_check(path)

    def test_colliding_and_nested_codes(self, ledger: Ledger, tmp_path: Path) -> None:
        """Codes that map alike stay apart and a parent account asserts its whole subtree."""
        codes = ["club:a-b:dues", "club:a_b:dues", "club:a.b:dues", "club:9", "club:9:dues"]
        ledger.open_accounts(
            [AccountSpec(code, AccountKind.LIABILITY, allow_overdraft=True) for code in codes]
        )
        ledger.open_account(AccountSpec(CLEARING, AccountKind.ASSET, allow_overdraft=True))
        for i, code in enumerate(codes, start=1):
            post(ledger, "purchase", f"k{i}", Posting.debit(CLEARING, i), Posting.credit(code, i))
        path = tmp_path / "books.beancount"
        export_file(ledger, path)
        bean_check(path)
        entries, _ = load(path)
        names = beancount_account_names(ledger.accounts())
        assert len({names[c] for c in codes}) == len(codes)
        assert beancount_balances(entries, names, ledger) == ledger_posted(ledger)
        checks = {e.account: e.amount.number for e in entries if isinstance(e, data.Balance)}
        assert checks[names["club:9"]] == Decimal("-0.09")  # its own 4 plus the child's 5


class TestAccountNames:
    def test_examples(self) -> None:
        """Kinds pick the root; parts are capitalised and underscores become dashes."""
        names = beancount_account_names(
            [
                ("platform:gift_revenue", AccountKind.REVENUE),
                ("user:42:wallet", AccountKind.LIABILITY),
                ("streamer:abc-1:earnings_pending", AccountKind.LIABILITY),
                ("platform:stripe_clearing", AccountKind.ASSET),
                ("platform:owner_capital", AccountKind.EQUITY),
                ("platform:payment_fees", AccountKind.EXPENSE),
                ("user:a@b.c:_x", AccountKind.ASSET),
            ]
        )
        assert names == {
            "platform:gift_revenue": "Income:Platform:Gift-revenue",
            "user:42:wallet": "Liabilities:User:42:Wallet",
            "streamer:abc-1:earnings_pending": "Liabilities:Streamer:Abc-1:Earnings-pending",
            "platform:stripe_clearing": "Assets:Platform:Stripe-clearing",
            "platform:owner_capital": "Equity:Platform:Owner-capital",
            "platform:payment_fees": "Expenses:Platform:Payment-fees",
            "user:a@b.c:_x": "Assets:User:A-b-c:X-x",
        }

    def test_collisions_are_made_unique(self) -> None:
        """Parts that read alike under one parent all get a hash suffix, never merged."""
        codes = ["user:a_b:wallet", "user:a-b:wallet", "user:A_b:wallet", "user:ab:wallet"]
        names = beancount_account_names([(c, AccountKind.LIABILITY) for c in codes])
        assert len(set(names.values())) == len(codes)
        assert names["user:ab:wallet"] == "Liabilities:User:Ab:Wallet"
        for code in codes[:3]:
            assert names[code].startswith("Liabilities:User:A-b-")
            assert names[code].endswith(":Wallet")
        # The same codes in another order get the same names.
        again = beancount_account_names([(c, AccountKind.LIABILITY) for c in reversed(codes)])
        assert again == names

    def test_no_collision_across_roots(self) -> None:
        """The same code shape under two kinds needs no suffix: the roots differ."""
        names = beancount_account_names(
            [("user:a_b:x", AccountKind.ASSET), ("user:a-b:y", AccountKind.LIABILITY)]
        )
        assert names == {"user:a_b:x": "Assets:User:A-b:X", "user:a-b:y": "Liabilities:User:A-b:Y"}

    def test_pending_is_reserved(self) -> None:
        """A ``pending`` namespace never reads as the mirror tree of open holds."""
        names = beancount_account_names([("pending:x", AccountKind.LIABILITY)])
        assert names["pending:x"].startswith("Liabilities:Pending-")

    @given(
        st.lists(
            st.tuples(
                st.from_regex(r"[ab][ab_]{0,2}(:[aAb1_.@\-]{1,3}){1,3}", fullmatch=True),
                st.sampled_from(list(AccountKind)),
            ),
            max_size=30,
            unique_by=lambda pair: pair[0],
        )
    )
    def test_names_are_valid_and_distinct(self, accounts) -> None:
        """Any set of codes maps to valid Beancount names, one per code."""
        names = beancount_account_names(accounts)
        assert len(set(names.values())) == len(accounts)
        for code, kind in accounts:
            assert bc_account.is_valid(names[code])
            assert names[code].count(":") == code.count(":") + 1
            assert names[code].startswith(
                {"asset": "Assets:", "liability": "Liabilities:", "equity": "Equity:"}.get(
                    kind.value, "Income:" if kind is AccountKind.REVENUE else "Expenses:"
                )
            )
