"""Hostile input (issue 13): a typed error naming the field, and nothing written.

One test per category of the 1,575-input battery that went wrong, on SQLite
and PostgreSQL alike: balances past int64, forged cursors, refusals that wrote
rows, raw driver/Python exceptions, derived keys over the column, webhook
bodies and timestamps.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    BalanceOverflow,
    EntryDraft,
    GiftEconomy,
    IdempotencyConflict,
    InvalidCursor,
    InvalidEntry,
    InvalidInput,
    Ledger,
    LedgerError,
    Payments,
    Payouts,
    Posting,
    Pricing,
    StripeGateway,
    UnknownEntry,
    WebhookPayloadError,
    WebhookVerificationError,
)
from spaktok_ledger._money import INT64_MAX
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, sign_payload, signed_event, stripe_client
from tests.service.conftest import GIFTS, fund
from tests.service.test_payments import PACKS, SECRET, URLS

MAX = INT64_MAX


def snapshot(ledger: Ledger) -> dict[str, Any]:
    """Row counts of every table of the ledger, and every balance row's contents."""
    tables = ledger.tables

    def read(conn: sa.Connection) -> dict[str, Any]:
        counts = {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables.metadata.sorted_tables
        }
        b = tables.balances
        rows = conn.execute(sa.select(b).order_by(b.c.account_id, b.c.shard)).all()
        return {"counts": counts, "balances": [tuple(r) for r in rows]}

    return ledger.read(read)


def refused(
    ledger: Ledger, call: Callable[[], object], error: type[LedgerError] = LedgerError
) -> LedgerError:
    """``call`` raises ``error`` (a LedgerError) and leaves every table as it was."""
    before = snapshot(ledger)
    with pytest.raises(error) as info:
        call()
    assert snapshot(ledger) == before
    return info.value


def open_pair(ledger: Ledger, *codes: str) -> None:
    ledger.open_accounts(
        AccountSpec(code, AccountKind.ASSET, allow_overdraft=True) for code in codes
    )


def move(ledger: Ledger, key: str, debit: str, credit: str, amount: int):
    return ledger.post(
        EntryDraft("transfer", [Posting(debit, amount), Posting(credit, -amount)], key)
    )


# -- 1. balances cannot overflow int64 ---------------------------------------------------


def test_post_past_int64_is_balance_overflow_and_writes_nothing(ledger: Ledger) -> None:
    """Postings each within int64 cannot add up past it: BalanceOverflow, nothing written."""
    open_pair(ledger, "test:a", "test:b")
    move(ledger, "k1", "test:a", "test:b", MAX)
    error = refused(ledger, lambda: move(ledger, "k2", "test:a", "test:b", 1), BalanceOverflow)
    assert error.code == "balance_overflow"
    assert ledger.balance("test:a").posted_minor == MAX
    assert ledger.verify().ok


def test_one_entry_summing_past_int64_on_one_account_is_refused(ledger: Ledger) -> None:
    """Two postings of one entry on the same account that sum past int64: refused."""
    open_pair(ledger, "test:a", "test:b")
    draft = EntryDraft(
        "transfer",
        [
            Posting("test:a", MAX),
            Posting("test:a", MAX),
            Posting("test:b", -MAX),
            Posting("test:b", -MAX),
        ],
        "double",
    )
    refused(ledger, lambda: ledger.post(draft), BalanceOverflow)


def test_lowest_balance_is_symmetric(ledger: Ledger) -> None:
    """A balance of -2**63 is refused too, so negating a balance always fits."""
    open_pair(ledger, "test:a", "test:b")
    move(ledger, "k1", "test:a", "test:b", MAX)  # b at -MAX
    refused(ledger, lambda: move(ledger, "k2", "test:a", "test:b", 1), BalanceOverflow)
    assert ledger.balance("test:b").posted_minor == -MAX


def test_holds_past_int64_are_refused(ledger: Ledger) -> None:
    """Pending amounts are checked like posted ones."""
    open_pair(ledger, "test:a", "test:b")
    draft = EntryDraft("transfer", [Posting("test:a", MAX), Posting("test:b", -MAX)], "h1")
    ledger.hold(draft)
    again = EntryDraft("transfer", [Posting("test:a", 5), Posting("test:b", -5)], "h2")
    refused(ledger, lambda: ledger.hold(again), BalanceOverflow)


def test_large_purchases_overflow_with_a_typed_error(economy: GiftEconomy) -> None:
    """credit_purchase calls whose sum passes int64 (on the wallet, or a shard of the
    sharded clearing account): BalanceOverflow, nothing written, the books still verify."""
    quarter = MAX // 4
    overflowed = False
    for n in range(5):  # the 5th at the latest takes the wallet past -int64
        before = snapshot(economy.ledger)
        try:
            economy.credit_purchase(
                "u1", coins=quarter, price_usd_minor=quarter, idempotency_key=f"p{n}"
            )
        except BalanceOverflow:
            assert snapshot(economy.ledger) == before
            overflowed = True
            break
    assert overflowed
    assert economy.ledger.verify().ok
    assert 0 < economy.ledger.balance("user:u1:wallet").posted_minor <= MAX
    assert 0 < economy.ledger.balance("platform:stripe_clearing").posted_minor <= MAX


def test_verify_and_trial_balance_do_not_crash_near_int64(ledger: Ledger) -> None:
    """Balances that are each in range but whose running sum is not: verify() still answers."""
    open_pair(ledger, "test:a", "test:b", "test:c", "test:d")
    draft = EntryDraft(
        "transfer",
        [
            Posting("test:a", MAX),
            Posting("test:c", MAX),
            Posting("test:b", -MAX),
            Posting("test:d", -MAX),
        ],
        "k1",
    )
    ledger.post(draft)  # the entry's running sum passes int64; each balance does not
    move(ledger, "k2", "test:a", "test:b", -MAX)
    move(ledger, "k3", "test:a", "test:b", MAX)
    report = ledger.verify()
    assert report.ok, report.problems
    totals = ledger.trial_balance().totals()
    assert totals["USD"][0] == totals["USD"][1]


# -- 2. cursors are tamper-evident and bounded --------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_forged_cursors_are_invalid_cursor(ledger: Ledger) -> None:
    """A forged cursor (old unsigned format, huge ids, garbage, NUL, non-str) is InvalidCursor."""
    open_pair(ledger, "test:a", "test:b")
    for n in range(3):
        move(ledger, f"k{n}", "test:a", "test:b", 1)
    page = ledger.history("test:a", limit=1)
    assert page.next_cursor is not None
    good = page.next_cursor
    assert len(ledger.history("test:a", limit=1, cursor=good).items) == 1
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for cursor in [
        _b64({"p": 2**70, "q": "0" * 16}),
        _b64({"p": 5, "q": "0" * 16}),
        tampered,
        "x" * 10_000,
        "abc\x00def",
        "%%%",
        "",
    ]:
        with pytest.raises(InvalidCursor):
            ledger.history("test:a", limit=1, cursor=cursor)
        with pytest.raises(InvalidCursor):
            ledger.entries_page(["test:a"], limit=1, cursor=cursor)
    for cursor in [b"abc", 12, ["x"]]:
        with pytest.raises(InvalidCursor):
            ledger.history("test:a", limit=1, cursor=cursor)  # type: ignore[arg-type]
    other = ledger.history("test:b", limit=1).next_cursor
    with pytest.raises(InvalidCursor):
        ledger.history("test:a", limit=1, cursor=other)


def test_forged_cursor_in_the_service_history(economy: GiftEconomy) -> None:
    """GiftEconomy.history refuses a forged cursor with InvalidCursor, never a driver error."""
    fund(economy, "alice", 100)
    with pytest.raises(InvalidCursor):
        economy.history(user_id="alice", cursor=_b64({"p": 2**70, "q": "0" * 16}))


# -- 3. a refusal writes nothing ---------------------------------------------------------


def test_credit_purchase_with_another_users_key_opens_nothing(economy: GiftEconomy) -> None:
    """A key another user already used: IdempotencyConflict, and no accounts for the new user."""
    economy.credit_purchase("u1", coins=10, price_usd_minor=10, idempotency_key="shared")
    refused(
        economy.ledger,
        lambda: economy.credit_purchase(
            "newcomer", coins=10, price_usd_minor=10, idempotency_key="shared"
        ),
        IdempotencyConflict,
    )
    assert not economy.ledger.accounts(prefix="user:newcomer:")


# -- 4. raw exceptions become the library's errors ---------------------------------------

NUL = "a\x00b"


def test_entry_ids_beyond_int64_are_invalid_input(ledger: Ledger) -> None:
    """entry/reverse/void_hold/post_hold/hold_status with ids past int64, or not ints."""
    calls = [ledger.entry, ledger.reverse, ledger.void_hold, ledger.post_hold, ledger.hold_status]
    for call in calls:
        for bad in (2**63, 2**70, -(2**70), 0, -1, Decimal(5), 5.0, True, b"5", "5"):
            refused(ledger, lambda call=call, bad=bad: call(bad), InvalidInput)
    with pytest.raises(UnknownEntry):
        ledger.entry(MAX)


def test_nul_in_keys_and_descriptions_is_refused_identically(ledger: Ledger) -> None:
    """NUL (and lone surrogates) in keys and descriptions: InvalidInput on both backends."""
    open_pair(ledger, "test:a", "test:b")
    entry = move(ledger, "k1", "test:a", "test:b", 5)
    for text in (NUL, "\ud800"):
        with pytest.raises(InvalidEntry):
            EntryDraft("transfer", [Posting("test:a", 1), Posting("test:b", -1)], text)
        with pytest.raises(InvalidEntry):
            EntryDraft(
                "transfer", [Posting("test:a", 1), Posting("test:b", -1)], "k", description=text
            )
        refused(ledger, lambda t=text: ledger.reverse(entry.id, idempotency_key=t), InvalidInput)
        refused(ledger, lambda t=text: ledger.reverse(entry.id, description=t), InvalidInput)
        refused(ledger, lambda t=text: ledger.entry_by_key(t), InvalidInput)
        refused(ledger, lambda t=text: ledger.accounts(prefix=t), InvalidInput)
    refused(ledger, lambda: ledger.entry_by_key(b"k1"), InvalidInput)  # type: ignore[arg-type]


def test_history_types_must_be_strings(ledger: Ledger) -> None:
    """Non-string history types (ints, bytes, a bare string, NUL) are InvalidInput."""
    open_pair(ledger, "test:a", "test:b")
    move(ledger, "k1", "test:a", "test:b", 5)
    for types in ([1], [b"gift"], "gift", [NUL], 5, [None]):
        with pytest.raises(InvalidInput):
            ledger.history("test:a", types=types)  # type: ignore[arg-type]
    assert len(ledger.history("test:a", types=["transfer"]).items) == 1


def test_entry_draft_postings_none_is_invalid_entry() -> None:
    """EntryDraft(postings=None) (or a number, a string) is InvalidEntry, not TypeError."""
    for postings in (None, 5, "postings", {"a": 1}):
        with pytest.raises(InvalidEntry):
            EntryDraft("transfer", postings, "k")  # type: ignore[arg-type]


def test_deep_or_huge_metadata_is_invalid_input(ledger: Ledger) -> None:
    """100,000-deep metadata is InvalidInput (no RecursionError); so is oversized metadata."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["x"] = {}
        node = node["x"]
    legs = [Posting("test:a", 1), Posting("test:b", -1)]
    for metadata in (deep, {"x": [[[[]]]] * 1} | {"y": "z" * 70_000}, {"n": 2**70}, {"k": NUL}):
        with pytest.raises(InvalidInput):
            EntryDraft("transfer", legs, "k", metadata=metadata)
    open_pair(ledger, "test:a", "test:b")
    entry = move(ledger, "k1", "test:a", "test:b", 5)
    refused(ledger, lambda: ledger.reverse(entry.id, metadata=deep), InvalidInput)
    ok = {"a": {"b": {"c": [1, 2, {"d": "e"}]}}}
    assert EntryDraft("transfer", legs, "k", metadata=ok).metadata == ok


def test_service_ids_and_keys_with_nul(economy: GiftEconomy) -> None:
    """NUL in user ids, streamer ids, gift ids and keys: a LedgerError, nothing written."""
    fund(economy, "alice", 1000)
    economy.register_streamer("bob")
    ledger = economy.ledger
    refused(ledger, lambda: economy.send_gift("alice", "bob", "rose", idempotency_key=NUL))
    refused(ledger, lambda: economy.send_gift(NUL, "bob", "rose", idempotency_key="k"))
    refused(ledger, lambda: economy.send_gift("alice", NUL, "rose", idempotency_key="k"))
    refused(ledger, lambda: economy.send_gift("alice", "bob", NUL, idempotency_key="k"))
    refused(ledger, lambda: economy.send_gift("alice", "bob", "rose", 2**70, idempotency_key="k"))
    refused(
        ledger,
        lambda: economy.send_gift("alice", "bob", "rose", Decimal(1), idempotency_key="k"),
    )
    refused(
        ledger,
        lambda: economy.credit_purchase("alice", coins=1, price_usd_minor=1, idempotency_key=NUL),
    )
    refused(
        ledger,
        lambda: economy.adjust("alice", 5, reason="r", idempotency_key="\ud800"),
    )
    refused(ledger, lambda: economy.repay_debt("alice", NUL))
    refused(ledger, lambda: economy.wallet(NUL))


# -- 5. derived keys always fit ----------------------------------------------------------


def test_longest_documented_keys_fit_when_derived(economy: GiftEconomy) -> None:
    """A 64-character sender with a 200-character key sends and replays (gift:{sender}:{key})."""
    sender = "s" * 64
    fund(economy, sender, 1000)
    economy.register_streamer("bob")
    key = "k" * 200
    first = economy.send_gift(sender, "bob", "rose", idempotency_key=key)
    again = economy.send_gift(sender, "bob", "rose", idempotency_key=key)
    assert again.replayed and again.entry_id == first.entry_id
    other = economy.send_gift(sender, "bob", "rose", idempotency_key="k" * 199 + "j")
    assert other.entry_id != first.entry_id
    # A short key keeps its readable form (entries recorded before keep replaying).
    short = economy.send_gift(sender, "bob", "rose", idempotency_key="plain")
    assert economy.ledger.entry(short.entry_id).idempotency_key == f"gift:{sender}:plain"


def test_adjust_with_a_200_character_key_repays_debt(economy: GiftEconomy) -> None:
    """adjust() with the longest documented key works, including its debt repayment."""
    economy.open_user("carol")
    credit = economy.adjust("carol", 50, reason="goodwill", idempotency_key="a" * 200)
    assert credit.wallet.coins == 50
    again = economy.adjust("carol", 50, reason="goodwill", idempotency_key="a" * 200)
    assert again.replayed


# -- 6. payments, payouts and webhooks ---------------------------------------------------


@pytest.fixture
def shop(ledger: Ledger, clock):
    with FakeStripe(clock=clock) as fake:
        economy = GiftEconomy(ledger, GIFTS, hold_days=0, clock=clock)
        economy.setup()
        rates = StaticRateProvider({"EUR": Decimal("0.9")}, clock=clock)
        pricing = Pricing(ledger, PACKS, rates, clock=clock)
        gateway = StripeGateway(stripe_client(fake, timeout=5))
        yield (
            economy,
            pricing,
            Payments(economy, pricing, gateway, webhook_secret=SECRET, clock=clock),
        )


def test_checkout_with_bad_quote_ids(shop) -> None:
    """A bytes quote id, NUL in a quote id, a huge one: a LedgerError, nothing written."""
    economy, pricing, payments = shop
    quote = pricing.quote("starter", currency="USD", user_id="alice")
    for quote_id in (quote.id.encode(), quote.id + "\x00", "q" * 10_000, None, 5):
        refused(
            economy.ledger,
            lambda q=quote_id: payments.create_checkout("alice", q, idempotency_key="c1", **URLS),
        )
    refused(economy.ledger, lambda: pricing.store.get("q\x00"), InvalidInput)
    refused(
        economy.ledger,
        lambda: payments.create_checkout(
            "alice", quote.id, idempotency_key="c2", customer_email="a\x00@b", **URLS
        ),
        InvalidInput,
    )


def _event(obj: dict, *, event_id: str = "evt_1", type_: str = "checkout.session.completed"):
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def test_malformed_signed_events_are_webhook_payload_errors(shop) -> None:
    """Signed events with data.object = {}, long or NUL ids: WebhookPayloadError, nothing written."""
    economy, _, payments = shop
    bad = [
        _event({}),
        _event({}, type_="charge.refunded"),
        _event({}, type_="charge.dispute.created"),
        _event({"object": "checkout.session", "id": "cs_" + "x" * 300}),
        _event({"object": "checkout.session", "id": "cs_\x00"}),
        _event({"object": "checkout.session", "id": 5}),
        _event({"object": "checkout.session", "id": "cs_1"}, event_id="evt_" + "x" * 300),
        _event({"object": "checkout.session", "id": "cs_1"}, event_id="evt_\x00"),
        _event({"object": "checkout.session", "id": "cs_1"}, type_="x" * 300),
    ]
    for event in bad:
        body, header = signed_event(event, SECRET)
        refused(
            economy.ledger,
            lambda b=body, h=header: payments.handle_webhook(b, h),
            WebhookPayloadError,
        )


def test_deep_signed_json_is_a_payload_error(shop) -> None:
    """A signed but 100,000-deep JSON body: WebhookPayloadError, not RecursionError."""
    economy, _, payments = shop
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    refused(
        economy.ledger,
        lambda: payments.handle_webhook(body, sign_payload(body, SECRET)),
        WebhookPayloadError,
    )


def test_oversized_webhook_body_is_refused_before_verification(shop) -> None:
    """A body past the cap is refused before its signature is even looked at."""
    economy, _, payments = shop
    body = b" " * (payments.gateway.max_body_bytes + 1)
    refused(
        economy.ledger,
        lambda: payments.handle_webhook(body, "t=1,v1=00"),
        WebhookPayloadError,
    )


def test_webhook_signed_in_the_future_is_refused(shop) -> None:
    """A signature dated past the tolerance in the future is WebhookVerificationError."""
    economy, _, payments = shop
    body, _ = signed_event(_event({"object": "checkout.session", "id": "cs_1"}), SECRET)
    future = sign_payload(body, SECRET, timestamp=int(time.time()) + 3600)
    refused(economy.ledger, lambda: payments.handle_webhook(body, future), WebhookVerificationError)
    near = sign_payload(body, SECRET, timestamp=int(time.time()) + 60)
    payments.handle_webhook(body, near)  # within the tolerance: accepted


def test_payout_amount_as_integral_decimal_is_not_a_type_error(economy: GiftEconomy) -> None:
    """Decimal(6000) as a payout amount: the library's answer (here: no account linked),
    never a raw TypeError; a fractional Decimal or a float is InvalidAmount."""
    with FakeStripe() as fake:
        payouts = Payouts(
            economy, StripeGateway(stripe_client(fake, timeout=5)), connect_webhook_secret=SECRET
        )
        economy.register_streamer("bob")
        for amount in (Decimal(6000), Decimal("60.5"), 60.0, b"60", 2**70, True, "60"):
            refused(
                economy.ledger,
                lambda a=amount: payouts.request_payout("bob", a, idempotency_key="p1"),
            )
        refused(economy.ledger, lambda: payouts.request_payout("bob", 6000, idempotency_key=NUL))


def test_quote_expiry_is_unaffected(shop) -> None:
    """Sanity: a valid checkout still works after the checks."""
    economy, pricing, payments = shop
    quote = pricing.quote("starter", currency="USD", user_id="alice")
    result = payments.create_checkout("alice", quote.id, idempotency_key="ok", **URLS)
    assert not result.replayed
    assert timedelta(0) < quote.expires_at - quote.created_at


def test_balance_range_check_guards_raw_sql(ledger: Ledger) -> None:
    """The CHECK of migration 0013 refuses an out-of-range balance written by raw SQL too,
    and the table keeps its DELETE guard after SQLite's table rebuild."""
    open_pair(ledger, "test:a", "test:b")
    move(ledger, "k1", "test:a", "test:b", MAX)
    b = ledger.tables.balances
    engine = ledger.engine
    assert engine is not None
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(b.update().values(posted=b.c.posted + 1).where(b.c.posted == MAX))
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(b.update().values(posted=-MAX - 1).where(b.c.posted == -MAX))
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(b.delete())
    assert ledger.balance("test:a").posted_minor == MAX


def test_purchase_and_payout_lookups_with_hostile_ids(shop, economy: GiftEconomy) -> None:
    """purchase()/sync()/release() and payout() with NUL, huge or non-str ids: typed errors."""
    from spaktok_ledger import UnknownPurchase

    _, _, payments = shop
    for bad in ("pur_\x00", "p" * 10_000, b"pur_1", 5):
        refused(payments.economy.ledger, lambda b=bad: payments.purchase(b), UnknownPurchase)
        refused(payments.economy.ledger, lambda b=bad: payments.sync(b), UnknownPurchase)
    with FakeStripe() as fake:
        payouts = Payouts(
            economy, StripeGateway(stripe_client(fake, timeout=5)), connect_webhook_secret=SECRET
        )
        for bad in ("pyt_\x00", "p" * 10_000, b"pyt_1"):
            refused(economy.ledger, lambda b=bad: payouts.payout(b), InvalidInput)
