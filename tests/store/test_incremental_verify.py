"""Incremental verify: a checkpoint that never hides a problem written after it."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    InsufficientFunds,
    Ledger,
    Posting,
)

CASH = "platform:cash"
WALLETS = ("user:1:wallet", "user:2:wallet", "user:3:wallet")
REVENUE = "platform:revenue"
_keys = itertools.count()


def open_books(ledger: Ledger) -> None:
    ledger.open_accounts(
        [
            AccountSpec(CASH, AccountKind.ASSET),
            *(AccountSpec(w, AccountKind.LIABILITY) for w in WALLETS),
            AccountSpec(REVENUE, AccountKind.REVENUE, balance_shards=2),
        ]
    )


def fund(ledger: Ledger, wallet: str, amount: int) -> int:
    draft = EntryDraft(
        "purchase", (Posting.debit(CASH, amount), Posting.credit(wallet, amount)), f"f{next(_keys)}"
    )
    return ledger.post(draft).id


def spend(ledger: Ledger, wallet: str, amount: int, *, hold: bool = False) -> int:
    draft = EntryDraft(
        "gift", (Posting.debit(wallet, amount), Posting.credit(REVENUE, amount)), f"s{next(_keys)}"
    )
    return (ledger.hold(draft) if hold else ledger.post(draft)).id


def checkpoint(ledger: Ledger) -> tuple[int, int] | None:
    c = ledger.tables.verify_checkpoint
    with ledger.engine.connect() as conn:  # type: ignore[union-attr]
        row = conn.execute(sa.select(c.c.entry_id, c.c.posting_id)).first()
    return None if row is None else (row.entry_id, row.posting_id)


def test_first_run_is_full_then_only_new_entries_are_checked(ledger: Ledger) -> None:
    """The first incremental run checks everything; the next ones only the entries since."""
    open_books(ledger)
    for _ in range(5):
        fund(ledger, WALLETS[0], 10)
    first = ledger.verify(incremental=True)
    assert first.ok and not first.incremental and first.entries_checked == 5
    assert checkpoint(ledger) is not None
    quiet = ledger.verify(incremental=True)
    assert quiet.ok and quiet.incremental and quiet.entries_checked == 0
    spend(ledger, WALLETS[0], 3)
    spend(ledger, WALLETS[0], 4)
    later = ledger.verify(incremental=True)
    assert later.ok and later.incremental
    assert (later.entries_checked, later.postings_checked) == (2, 4)


def test_holds_resolved_after_the_checkpoint_are_followed(ledger: Ledger) -> None:
    """A hold written before the checkpoint and resolved after it leaves the books consistent."""
    open_books(ledger)
    fund(ledger, WALLETS[0], 100)
    kept = spend(ledger, WALLETS[0], 30, hold=True)
    dropped = spend(ledger, WALLETS[0], 20, hold=True)
    assert ledger.verify(incremental=True).ok
    ledger.post_hold(kept)
    ledger.void_hold(dropped)
    late = spend(ledger, WALLETS[0], 5, hold=True)
    report = ledger.verify(incremental=True)
    assert report.ok, report.problems
    ledger.post_hold(late)
    report = ledger.verify(incremental=True)
    assert report.ok and report.entries_checked == 1, report.problems
    assert ledger.verify().ok


def test_tampered_balance_after_the_checkpoint_is_reported_until_fixed(ledger: Ledger) -> None:
    """A balance row changed after the checkpoint is reported, and the checkpoint stays put."""
    open_books(ledger)
    fund(ledger, WALLETS[1], 50)
    assert ledger.verify(incremental=True).ok
    before = checkpoint(ledger)
    fund(ledger, WALLETS[0], 10)  # new entries, but not on the tampered account
    b = ledger.tables.balances
    cash = ledger.account(CASH).id
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        conn.execute(b.update().where(b.c.account_id == cash).values(posted=b.c.posted + 1))
    for _ in range(2):
        report = ledger.verify(incremental=True)
        assert ("balances", CASH) in {(p.check, p.subject) for p in report.problems}
        assert checkpoint(ledger) == before
    assert not ledger.verify().ok  # and the full run says the same
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        conn.execute(b.update().where(b.c.account_id == cash).values(posted=b.c.posted - 1))
    assert ledger.verify(incremental=True).ok
    assert checkpoint(ledger) != before


def test_a_raw_unbalanced_posting_after_the_checkpoint_is_reported(ledger: Ledger) -> None:
    """A posting appended to an old entry behind the library's back is caught incrementally."""
    open_books(ledger)
    old = fund(ledger, WALLETS[0], 10)
    assert ledger.verify(incremental=True).ok
    p, b = ledger.tables.postings, ledger.tables.balances
    cash = ledger.account(CASH).id
    if ledger.dialect == "postgresql":
        # PostgreSQL's deferred trigger refuses the unbalanced entry at commit,
        # so there is nothing for verify to find: the guard is what is checked.
        with pytest.raises(sa.exc.DBAPIError), ledger.engine.begin() as conn:  # type: ignore[union-attr]
            conn.execute(
                p.insert(), {"entry_id": old, "account_id": cash, "amount": 7, "currency": "USD"}
            )
        assert ledger.verify(incremental=True).ok
        return
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        conn.execute(p.insert(), {"entry_id": old, "account_id": cash, "amount": 7, "currency": "USD"})
        conn.execute(b.update().where(b.c.account_id == cash).values(posted=b.c.posted + 7))
    report = ledger.verify(incremental=True)
    assert ("entries", f"entry #{old}") in {(q.check, q.subject) for q in report.problems}
    assert not ledger.verify().ok


def test_a_dropped_guard_is_reported_incrementally(ledger: Ledger) -> None:
    """The append-only triggers the checkpoint relies on are checked on every run."""
    open_books(ledger)
    fund(ledger, WALLETS[0], 10)
    assert ledger.verify(incremental=True).ok
    name = (
        f"{ledger.prefix}postings_no_update"
        if ledger.dialect == "sqlite"
        else f"{ledger.prefix}postings_append_only"
    )
    on = "" if ledger.dialect == "sqlite" else f" ON {ledger.prefix}postings"
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
    report = ledger.verify(incremental=True)
    assert [(q.check, q.subject) for q in report.problems] == [("guards", name)]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["fund", "spend", "hold", "post_hold", "void_hold", "reverse", "verify"]),
        st.integers(0, 2),
        st.integers(1, 40),
    ),
    max_size=25,
)
TAMPER = st.sampled_from([None, "balance", "shard", "revenue"])


@settings(max_examples=12)
@given(ops=OPS, tamper=TAMPER, tamper_at=st.integers(0, 25))
def test_incremental_agrees_with_full(ledger: Ledger, ops, tamper, tamper_at) -> None:
    """Whatever happens between runs, an incremental verify finds a problem iff a full one does.

    Histories mix postings, holds posted or voided later, reversals and
    intermediate incremental runs (each moving the checkpoint); a balance row
    tampered at any point, before or after a checkpoint, is reported by both.
    """
    ledger = Ledger(ledger.engine, prefix=f"{ledger.prefix}{next(_keys)}_")  # type: ignore[arg-type]
    ledger.migrate()
    open_books(ledger)
    holds: list[int] = []
    posted: list[int] = []
    tampered = False
    for step, (op, who, amount) in enumerate(ops):
        wallet = WALLETS[who]
        if step == tamper_at and tamper is not None:
            _tamper(ledger, tamper, wallet)
            tampered = True
        if op == "fund":
            posted.append(fund(ledger, wallet, amount))
        elif op in ("spend", "hold") and ledger.balance(wallet).available_minor >= amount:
            entry = spend(ledger, wallet, amount, hold=op == "hold")
            (holds if op == "hold" else posted).append(entry)
        elif op in ("post_hold", "void_hold") and holds:
            hold_id = holds.pop(amount % len(holds))
            if op == "post_hold":
                ledger.post_hold(hold_id)
            else:
                ledger.void_hold(hold_id)
        elif op == "reverse" and posted:
            entry_id = posted.pop(amount % len(posted))
            with contextlib.suppress(InsufficientFunds):  # a reversal may overdraw: refused
                ledger.reverse(entry_id)
        elif op == "verify":
            assert ledger.verify(incremental=True).ok is not tampered
    if tamper is not None and not tampered:
        _tamper(ledger, tamper, WALLETS[0])
        tampered = True
    incremental = ledger.verify(incremental=True)
    full = ledger.verify()
    assert incremental.ok == full.ok == (not tampered), (incremental.problems, full.problems)
    assert {(p.check, p.subject) for p in incremental.problems} == {
        (p.check, p.subject) for p in full.problems
    }


def _tamper(ledger: Ledger, how: str, wallet: str) -> None:
    """Move money on a balance row behind the library's back (within the CHECKs)."""
    b = ledger.tables.balances
    code = {"balance": CASH, "shard": REVENUE, "revenue": REVENUE}[how]
    if how == "balance":
        code = CASH
    account_id = ledger.account(code).id
    shard = 1 if how == "shard" else 0
    with ledger.engine.begin() as conn:  # type: ignore[union-attr]
        conn.execute(
            b.update()
            .where(b.c.account_id == account_id, b.c.shard == shard)
            .values(posted=b.c.posted + (1 if how == "balance" else -1))
        )
