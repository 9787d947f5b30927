"""Stored amounts carry their units, for what reconciliation with Stripe stores (0015).

Migration 0015 gave units to the amounts 0007 added: a payout's arrival on the
connected account, the balance-transaction index, and (with its accounts) what
purchases settled in currencies other than USD. A simulated table change (the
same kind of change as babel 2.19's HUF) must be refused at start and rescaled
by ``migrate_units`` without changing what any amount means.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import spaktok_ledger._currency as currency_module
from spaktok_ledger import UnitsMismatch, from_stripe_amount, migrate_units
from spaktok_ledger.testing import FakeStripe
from tests.service.books import Books, make_books

pytestmark = pytest.mark.money


@pytest.fixture
def fake(clock):
    with FakeStripe(clock=clock) as fake:
        yield fake


@pytest.fixture
def books(ledger, clock, fake) -> Books:
    return make_books(ledger, clock, fake)


@pytest.fixture
def manual(ledger, clock, fake) -> Books:
    return make_books(ledger, clock, fake, manual_payouts=True)


@pytest.fixture
def tables_change(monkeypatch):
    """Simulate an amendment: ``code`` gets ``iso`` digits in ISO 4217 and/or becomes
    three-decimal at Stripe (``stripe=3``)."""

    def use(code: str, *, iso: int | None = None, stripe: int | None = None) -> None:
        if iso is not None:
            monkeypatch.setattr(
                currency_module, "MINOR_UNITS", {**currency_module.MINOR_UNITS, code: iso}
            )
        if stripe == 3:
            monkeypatch.setattr(
                currency_module,
                "STRIPE_THREE_DECIMAL_CURRENCIES",
                currency_module.STRIPE_THREE_DECIMAL_CURRENCIES | {code},
            )
        currency_module._info.cache_clear()

    yield use
    currency_module._info.cache_clear()


def rows(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql).all()]


def test_a_settlement_in_isk_is_booked_in_the_ledgers_units(books) -> None:
    """Stripe sends ISK as two-decimal integers (700 ISK is 70000); the ledger's ISK
    account has no minor unit (ISO 4217): it books 700, and reconcile() agrees."""
    books.buy(settle_currency="isk", settle_amount_minor=70_000, fee_minor=0)
    stripe = books.stripe_balance("ISK")
    assert stripe == 70_000
    assert books.ledger_stripe_balance("ISK") == from_stripe_amount(stripe, "ISK") == 700
    report = books.reconcile()
    assert report.ok and not report.drift, report.to_dict()


def test_a_foreign_settlement_rescales_with_its_accounts(
    books, engine, prefix, tables_change
) -> None:
    """EUR settlement, then ISO 4217 gives EUR three decimals (Stripe unchanged): refused
    until rescaled; after, the Stripe balance account and what purchases booked to it
    moved together, so settling the purchase again books nothing."""
    purchase = books.buy(currency="EUR", settle_currency="eur")
    before = books.ledger_stripe_balance("EUR")
    assert before > 0
    entries = rows(engine, f"SELECT count(*) FROM {prefix}transactions")

    tables_change("EUR", iso=3)
    with pytest.raises(UnitsMismatch):
        books.ledger.check_schema()
    migrate_units(engine, prefix)
    books.ledger.check_schema()
    assert books.ledger_stripe_balance("EUR") == before * 10
    (settled,) = rows(engine, f"SELECT settled_foreign FROM {prefix}purchases")[0]
    if isinstance(settled, str):
        settled = json.loads(settled)
    assert settled["EUR"][0] == before * 10
    books.payments.sync(purchase.id)
    assert rows(engine, f"SELECT count(*) FROM {prefix}transactions") == entries
    assert books.ledger_stripe_balance("EUR") == before * 10
    assert books.ledger.verify().ok


def test_the_balance_transaction_index_records_and_rescales_its_units(
    books, engine, prefix, tables_change
) -> None:
    """What the ledger booked and what reconcile() saw carry Stripe's exponent; a change
    of Stripe's units is refused at start and rescaled."""
    books.buy(currency="EUR", settle_currency="eur")
    books.reconcile()  # records what Stripe shows next to what was booked
    query = (
        f"SELECT booked_net_minor, exponent, stripe_net_minor, stripe_exponent "
        f"FROM {prefix}stripe_txns WHERE currency = 'EUR'"
    )
    index = rows(engine, query)
    assert index and all(r[1] == 2 and r[3] == 2 for r in index)

    tables_change("EUR", stripe=3)
    with pytest.raises(UnitsMismatch) as refused:
        books.ledger.check_schema()
    found = {(p["table"], p["column"]) for p in refused.value.details["found"]}
    assert {("stripe_txns", "exponent"), ("stripe_txns", "stripe_exponent")} <= found
    migrate_units(engine, prefix)
    books.ledger.check_schema()
    assert rows(engine, query) == [(b * 10, 3, s * 10, 3) for b, _, s, _ in index]


def test_a_payouts_arrival_records_and_rescales_its_units(
    manual, engine, prefix, tables_change
) -> None:
    """A manual payout to a EUR account: the arrival (Stripe's units) and what the ledger
    holds on the connected account (ISO units) carry their exponents and rescale."""
    books = manual
    account = books.fake.create_account(country="DE", onboarded=True)["id"]
    books.payouts.link_account("bob", account)
    books.buy(pack="big", available_now=True)
    books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g1")  # bob: 2000
    payout = books.payouts.request_payout("bob", 2000, idempotency_key="p1")
    # A cross-border (recipient) account gets the funds a day later: the bank payout
    # waits, and the arrival is what the ledger holds on the connected account.
    assert payout.status == "transferred"
    recorded = rows(
        engine,
        f"SELECT arrival_currency, arrival_stripe_amount, arrival_stripe_exponent, "
        f"arrival_exponent FROM {prefix}payouts",
    )
    assert recorded == [("EUR", recorded[0][1], 2, 2)] and recorded[0][1] > 0
    books.ledger.check_schema()
    (on_account,) = rows(engine, f"SELECT on_account_minor FROM {prefix}payouts")[0]

    tables_change("EUR", iso=3, stripe=3)
    with pytest.raises(UnitsMismatch):
        books.ledger.check_schema()
    migrate_units(engine, prefix)
    books.ledger.check_schema()
    assert rows(
        engine,
        f"SELECT arrival_stripe_amount, arrival_stripe_exponent, on_account_minor, "
        f"arrival_exponent FROM {prefix}payouts",
    ) == [(recorded[0][1] * 10, 3, on_account * 10, 3)]
    assert on_account > 0
