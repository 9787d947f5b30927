"""Every public method, called with arbitrary values (issue 13), on SQLite and PostgreSQL.

Each example picks a public method of ``Ledger``, ``GiftEconomy`` or the
domain types and calls it with values drawn from ``st.from_type`` of its
parameters' types mixed with hostile ones (NUL, lone surrogates, very long
text, integers past int64, ``Decimal``, ``float``, ``bytes``, ``bool``, deep
nesting). The invariant: only a ``LedgerError`` subclass escapes, and when one
does, no row of any table changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    GiftEconomy,
    Ledger,
    LedgerError,
    Posting,
)
from tests.service.conftest import fund
from tests.service.test_hostile_input import snapshot

INT64 = 2**63


def _deep(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    top = node
    for _ in range(depth):
        node["x"] = {}
        node = node["x"]
    return top


hostile_text = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "x" * 256,
        "x" * 10_000,
        "user:1:wallet",
        "platform:gift_revenue",
        "rose",
        "alice",
        "bob",
        "é" * 70,
        "\n",
        "💸" * 100,
    ]
)
hostile_int = st.sampled_from(
    [0, 1, -1, 10, INT64 - 1, INT64, -INT64, -INT64 - 1, 2**70, -(2**70), 10**30]
)
hostile_other = st.sampled_from(
    [
        None,
        True,
        False,
        1.5,
        float("nan"),
        float("inf"),
        Decimal("5"),
        Decimal("1.5"),
        Decimal("NaN"),
        b"alice",
        b"\x00",
        [],
        ["a", 1],
        {},
        {"a": "\x00"},
        _deep(100_000),
        object(),
    ]
)
values = st.one_of(
    hostile_text,
    hostile_int,
    hostile_other,
    st.text(max_size=300),
    st.integers(),
    st.from_type(str),
    st.from_type(int),
    st.from_type(Decimal),
    st.from_type(bytes),
    st.from_type(float),
    st.from_type(bool),
    st.lists(st.text(max_size=20), max_size=5),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)
times = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(),  # naive
    values,
)


def postings(draw: st.DrawFn) -> Callable[[], Any]:
    """The postings argument, built when called (building them may raise: that is the test)."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        amount = draw(st.one_of(hostile_int, values))
        account = draw(st.one_of(st.just("test:a"), values))
        return lambda: [Posting(account, amount), Posting("test:b", -amount)]
    if choice == 1:
        anything = draw(values)
        return lambda: anything
    return lambda: [Posting("test:a", 5), Posting("test:b", -5)]


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Callable[[GiftEconomy], object]]:
    """One public call with drawn arguments (a name for the report, and a thunk)."""
    v = lambda: draw(values)  # noqa: E731 - a short alias keeps the table readable
    name = draw(
        st.sampled_from(
            [
                "entry",
                "entry_by_key",
                "hold_status",
                "reverse",
                "void_hold",
                "post_hold",
                "history",
                "entries_page",
                "balance",
                "balances",
                "account",
                "accounts",
                "open_account",
                "post",
                "hold",
                "iter_entries",
                "balance_as_of",
                "open_user",
                "register_streamer",
                "set_split",
                "block_streamer",
                "send_gift",
                "credit_purchase",
                "adjust",
                "repay_debt",
                "wallet",
                "earnings",
                "economy_history",
                "mature_earnings",
                "expire_holds",
            ]
        )
    )
    if name in ("entry", "hold_status"):
        arg = draw(st.one_of(hostile_int, values))
        return name, lambda e: getattr(e.ledger, name)(arg)
    if name == "entry_by_key":
        arg = v()
        return name, lambda e: e.ledger.entry_by_key(arg)
    if name in ("reverse", "void_hold", "post_hold"):
        entry_id = draw(st.one_of(st.just(1), hostile_int, values))
        key, description, metadata = (
            draw(st.one_of(st.none(), values)),
            draw(st.one_of(st.none(), values)),
            draw(st.one_of(st.none(), values)),
        )
        return name, lambda e: getattr(e.ledger, name)(
            entry_id, idempotency_key=key, description=description, metadata=metadata
        )
    if name in ("history", "entries_page"):
        account, limit, cursor, types = v(), draw(st.one_of(hostile_int, values)), v(), v()
        since, until = draw(st.one_of(st.none(), times)), draw(st.one_of(st.none(), times))
        target = account if name == "history" else [account]
        return name, lambda e: getattr(e.ledger, name)(
            target, limit=limit, cursor=cursor, types=types, since=since, until=until
        )
    if name in ("balance", "account"):
        arg = v()
        return name, lambda e: getattr(e.ledger, name)(arg)
    if name == "balances":
        args = draw(st.lists(values, max_size=3))
        return name, lambda e: e.ledger.balances(args)
    if name == "accounts":
        prefix = v()
        return name, lambda e: e.ledger.accounts(prefix=prefix)
    if name == "open_account":
        code, kind, currency, overdraft, shards, meta = v(), v(), v(), v(), v(), v()
        return name, lambda e: e.ledger.open_account(
            AccountSpec(code, kind, currency, overdraft, shards, meta)
        )
    if name in ("post", "hold"):
        legs = postings(draw)
        type_, key, description, meta = v(), v(), v(), v()
        at = draw(st.one_of(st.none(), times))
        return name, lambda e: getattr(e.ledger, name)(
            EntryDraft(type_, legs(), key, description, meta, at)
        )
    if name == "iter_entries":
        batch, after = draw(st.one_of(hostile_int, values)), draw(st.one_of(hostile_int, values))
        return name, lambda e: list(e.ledger.iter_entries(batch_size=batch, after_id=after))
    if name == "balance_as_of":
        account, at = v(), draw(times)
        return name, lambda e: e.ledger.balance_as_of(account, at)
    if name in ("open_user", "wallet", "earnings"):
        arg = v()
        return name, lambda e: getattr(e, name)(arg)
    if name == "register_streamer":
        sid, bps, meta = v(), draw(st.one_of(st.none(), hostile_int, values)), v()
        return name, lambda e: e.register_streamer(sid, streamer_bps=bps, metadata=meta)
    if name == "set_split":
        sid, bps = v(), draw(st.one_of(hostile_int, values))
        return name, lambda e: e.set_split(sid, bps)
    if name == "block_streamer":
        sid, reason, actor = v(), v(), draw(st.one_of(st.none(), values))
        return name, lambda e: e.block_streamer(sid, reason, actor=actor)
    if name == "send_gift":
        sender = draw(st.one_of(st.just("alice"), values))
        streamer = draw(st.one_of(st.just("bob"), values))
        gift = draw(st.one_of(st.just("rose"), values))
        quantity = draw(st.one_of(st.just(1), hostile_int, values))
        key = v()
        return name, lambda e: e.send_gift(sender, streamer, gift, quantity, idempotency_key=key)
    if name == "credit_purchase":
        user = draw(st.one_of(st.just("alice"), values))
        coins = draw(st.one_of(hostile_int, values))
        price = draw(st.one_of(hostile_int, values))
        key, description, meta = v(), draw(st.one_of(st.just(""), values)), v()
        return name, lambda e: e.credit_purchase(
            user,
            coins=coins,
            price_usd_minor=price,
            idempotency_key=key,
            description=description,
            metadata=meta,
        )
    if name == "adjust":
        user = draw(st.one_of(st.just("alice"), values))
        coins, reason, key = draw(st.one_of(hostile_int, values)), v(), v()
        return name, lambda e: e.adjust(user, coins, reason=reason, idempotency_key=key)
    if name == "repay_debt":
        user, key = draw(st.one_of(st.just("alice"), values)), v()
        return name, lambda e: e.repay_debt(user, key)
    if name == "economy_history":
        user, limit, cursor, types = v(), draw(st.one_of(hostile_int, values)), v(), v()
        return name, lambda e: e.history(user_id=user, limit=limit, cursor=cursor, types=types)
    now = draw(st.one_of(st.none(), times))
    limit = draw(st.one_of(hostile_int, values))
    if name == "expire_holds":
        return name, lambda e: e.ledger.expire_holds(now=now, limit=limit)
    return name, lambda e: e.mature_earnings(now=now, limit=limit)


def _world(economy: GiftEconomy) -> GiftEconomy:
    ledger: Ledger = economy.ledger
    ledger.open_accounts(
        AccountSpec(code, AccountKind.ASSET, allow_overdraft=True) for code in ("test:a", "test:b")
    )
    ledger.post(EntryDraft("transfer", [Posting("test:a", 5), Posting("test:b", -5)], "seed"))
    fund(economy, "alice", 1000)
    economy.register_streamer("bob")
    return economy


@pytest.fixture
def world(economy: GiftEconomy) -> GiftEconomy:
    return _world(economy)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(call=calls())
def test_only_ledger_errors_escape_and_refusals_write_nothing(world, call) -> None:
    """Any public call with any values: success, or a LedgerError that changed no row."""
    name, thunk = call
    before = snapshot(world.ledger)
    try:
        thunk(world)
    except LedgerError:
        assert snapshot(world.ledger) == before, f"{name} wrote rows before refusing"
    except Exception as exc:
        raise AssertionError(f"{name} raised {type(exc).__name__}: {exc!r}"[:2000]) from exc
    assert world.ledger.verify().ok


def test_the_strategy_reaches_every_method() -> None:
    """The fuzz table names every public method it claims to cover (a typo would skip one)."""
    ledger_methods = {
        "entry", "entry_by_key", "hold_status", "reverse", "void_hold", "post_hold", "history",
        "entries_page", "balance", "balances", "account", "accounts", "open_account", "post",
        "hold", "iter_entries", "balance_as_of", "expire_holds",
    }  # fmt: skip
    economy_methods = {
        "open_user", "register_streamer", "set_split", "block_streamer", "send_gift",
        "credit_purchase", "adjust", "repay_debt", "wallet", "earnings", "mature_earnings",
    }  # fmt: skip
    assert all(callable(getattr(Ledger, m)) for m in ledger_methods)
    assert all(callable(getattr(GiftEconomy, m)) for m in economy_methods)
    assert datetime.now(UTC).tzinfo is UTC
