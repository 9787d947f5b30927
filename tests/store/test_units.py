"""Stored amounts carry their units: migration 0006's back-fill, the start-up refusal, migrate-units."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import spaktok_ledger._currency as currency_module
from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    Gift,
    GiftCatalogue,
    GiftEconomy,
    Ledger,
    Posting,
    Quote,
    SchemaError,
    UnitsMismatch,
    current_revision,
    head_revision,
    migrate,
    migrate_units,
    to_stripe_amount,
)
from spaktok_ledger._service._quotes import QuoteStore
from spaktok_ledger._store._migrate import upgrade_schema

pytestmark = pytest.mark.money
_examples = itertools.count()

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def iso_table(monkeypatch):
    """Simulate another exponent table (a future ISO amendment, or 0.1.0's CLDR digits)."""

    def use(**overrides: int) -> None:
        table = {**currency_module.MINOR_UNITS, **overrides}
        monkeypatch.setattr(currency_module, "MINOR_UNITS", table)
        monkeypatch.setattr(currency_module, "_KNOWN", frozenset(table))
        currency_module._info.cache_clear()

    yield use
    currency_module._info.cache_clear()


@pytest.fixture
def cldr(monkeypatch):
    """Simulate a babel release's CLDR digits for HUF (2.18: 2, 2.19: 0)."""
    import babel.numbers

    def use(huf_digits: int) -> None:
        real = babel.numbers.get_currency_precision

        def precision(code: str) -> int:
            return huf_digits if code == "HUF" else real(code)

        monkeypatch.setattr(babel.numbers, "get_currency_precision", precision)
        monkeypatch.setattr("spaktok_ledger._format.get_currency_precision", precision)

    return use


def quote_json(quote_id: str, currency: str, local_amount_minor: int) -> dict:
    """A quote as 0.1.0 stored it (its JSON has no exponent)."""
    data = Quote(
        id=quote_id,
        pack_id="starter",
        coins=500,
        bonus_coins=0,
        usd_price_minor=499,
        face_value_usd_minor=500,
        currency="USD",
        local_amount_minor=499,
        rate=Decimal(1),
        markup_bps=0,
        rate_source="test",
        rate_published_at=NOW,
        rate_fetched_at=NOW,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
    ).to_dict()
    del data["exponent"]
    return data | {"currency": currency, "local_amount_minor": local_amount_minor}


def write_0_1_0_books(engine: sa.Engine, prefix: str) -> None:
    """Rows as spaktok-ledger 0.1.0 wrote them (revision 0005, babel 2.18's units).

    ALL was whole lek under CLDR (4 617 lek stored as 4617); HUF had two
    decimals (7 376,04 Ft stored as 737604); ISK was whole kronur.
    """
    assert migrate(engine, prefix, revision="0005") == "0005"
    md = sa.MetaData()
    with engine.begin() as conn:
        md.reflect(conn, only=[f"{prefix}{n}" for n in (
            "accounts", "balances", "transactions", "postings", "quotes", "purchases",
            "payouts",
        )])
        t = {name[len(prefix):]: table for name, table in md.tables.items()}
        ids = {}
        for code, kind, currency in [
            ("local:all:cash", "asset", "ALL"),
            ("local:all:owed", "liability", "ALL"),
            ("local:huf:cash", "asset", "HUF"),
            ("local:huf:owed", "liability", "HUF"),
            ("local:usd:cash", "liability", "USD"),
        ]:
            ids[code] = conn.execute(
                t["accounts"].insert().returning(t["accounts"].c.id),
                {"code": code, "kind": kind, "currency": currency, "allow_overdraft": True,
                 "balance_shards": 1, "metadata": {}, "created_at": NOW},
            ).scalar_one()
        for n, (debit, credit, amount, currency) in enumerate([
            ("local:all:cash", "local:all:owed", 4617, "ALL"),
            ("local:huf:cash", "local:huf:owed", 737604, "HUF"),
        ]):
            entry = conn.execute(
                t["transactions"].insert().returning(t["transactions"].c.id),
                {"type": "test", "phase": "posted", "idempotency_key": f"k{n}",
                 "request_hash": "h", "description": "", "metadata": {},
                 "effective_at": NOW, "recorded_at": NOW},
            ).scalar_one()
            conn.execute(t["postings"].insert(), [
                {"entry_id": entry, "account_id": ids[debit], "amount": amount,
                 "currency": currency},
                {"entry_id": entry, "account_id": ids[credit], "amount": -amount,
                 "currency": currency},
            ])
            for code, sign, posted in ((debit, 1, amount), (credit, -1, -amount)):
                conn.execute(t["balances"].insert(), {
                    "account_id": ids[code], "shard": 0, "normal_sign": sign,
                    "allow_overdraft": True, "posted": posted,
                })
        conn.execute(t["balances"].insert(), {
            "account_id": ids["local:usd:cash"], "shard": 0, "normal_sign": -1,
            "allow_overdraft": True, "posted": 0,
        })
        for quote_id, currency, amount in [("q_all", "ALL", 4617), ("q_huf", "HUF", 737604)]:
            conn.execute(t["quotes"].insert(), {
                "id": quote_id, "pack_id": "starter", "user_id": "alice", "currency": currency,
                "local_amount_minor": amount, "usd_price_minor": 499, "rate": "1",
                "quote": quote_json(quote_id, currency, amount), "created_at": NOW,
                "expires_at": NOW + timedelta(minutes=15),
            })
        conn.execute(t["purchases"].insert(), {
            "id": "pur_all", "user_id": "alice", "pack_id": "starter", "quote_id": "q_all",
            "request_hash": "h", "coins": 500, "face_value_usd_minor": 500,
            "price_usd_minor": 499, "currency": "ALL", "local_amount_minor": 4617,
            "stripe_amount": 461700, "status": "credited", "disputes": {}, "balance_txns": {},
            "created_at": NOW, "updated_at": NOW,
        })


def exponents(engine: sa.Engine, prefix: str) -> dict[str, set]:
    with engine.connect() as conn:
        return {
            "accounts": set(conn.exec_driver_sql(
                f"SELECT currency, exponent FROM {prefix}accounts").all()),
            "quotes": set(conn.exec_driver_sql(
                f"SELECT currency, local_exponent, local_amount_minor FROM {prefix}quotes").all()),
            "purchases": set(conn.exec_driver_sql(
                f"SELECT currency, local_exponent, local_amount_minor, stripe_exponent, "
                f"stripe_amount FROM {prefix}purchases").all()),
        }


def test_back_fill_records_what_0_1_0_used(engine, prefix):
    """Migration 0006 back-fills babel 2.18's digits (ALL 0, HUF 2), whatever is installed now."""
    write_0_1_0_books(engine, prefix)
    with engine.begin() as conn:
        assert upgrade_schema(conn, prefix) == head_revision()
    assert exponents(engine, prefix) == {
        "accounts": {("ALL", 0), ("HUF", 2), ("USD", 2)},
        "quotes": {("ALL", 0, 4617), ("HUF", 2, 737604)},
        "purchases": {("ALL", 0, 4617, 2, 461700)},
    }


def test_units_mismatch_refuses_start_and_leaves_the_database_alone(engine, prefix):
    """ALL was whole lek in 0.1.0 and has two ISO decimals: migrate() refuses, naming the fix."""
    write_0_1_0_books(engine, prefix)
    with pytest.raises(UnitsMismatch) as info:
        migrate(engine, prefix)
    message = str(info.value)
    assert "migrate-units" in message and "ALL" in message and "HUF" not in message
    assert isinstance(info.value, SchemaError)
    found = {(f["table"], f["column"], f["currency"]) for f in info.value.details["found"]}
    assert found == {
        ("accounts", "exponent", "ALL"),
        ("purchases", "local_exponent", "ALL"),
        ("quotes", "local_exponent", "ALL"),
    }
    assert current_revision(engine, prefix) == "0005"  # the refused upgrade rolled back
    economy = GiftEconomy(Ledger(engine, prefix=prefix), GiftCatalogue([Gift("rose", coins=10)]))
    with pytest.raises(UnitsMismatch):
        economy.setup()


def test_migrate_units_rescales_and_the_books_still_balance(engine, prefix):
    """migrate-units upgrades and rescales ALL x100 in one go; HUF and USD are untouched."""
    write_0_1_0_books(engine, prefix)
    lines: list[str] = []
    assert migrate_units(engine, prefix, dry_run=True, progress=lines.append)
    assert current_revision(engine, prefix) == "0005"  # a dry run changes nothing
    found = migrate_units(engine, prefix, progress=lines.append)
    assert {p.currency for p in found} == {"ALL"}
    assert any("rescaling" in line for line in lines) and lines[-1].startswith("done")
    assert exponents(engine, prefix) == {
        "accounts": {("ALL", 2), ("HUF", 2), ("USD", 2)},
        "quotes": {("ALL", 2, 461700), ("HUF", 2, 737604)},
        "purchases": {("ALL", 2, 461700, 2, 461700)},
    }
    assert migrate(engine, prefix) == head_revision()
    ledger = Ledger(engine, prefix=prefix)
    ledger.check_schema()
    assert ledger.balance("local:all:cash").posted_minor == 461700
    assert ledger.balance("local:huf:cash").posted_minor == 737604
    assert ledger.verify().ok and ledger.trial_balance().balanced
    quote = QuoteStore(ledger).get("q_all")
    assert (quote.local_amount_minor, quote.exponent, quote.stripe_amount) == (461700, 2, 461700)
    assert migrate_units(engine, prefix) == []  # idempotent
    with pytest.raises(sa.exc.DatabaseError):  # history is append-only again
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {prefix}postings SET amount = amount")


@pytest.mark.parametrize("huf_digits", [2, 0], ids=["babel-2.18", "babel-2.19"])
def test_huf_quote_from_babel_2_18_charges_the_same_stripe_amount(engine, prefix, cldr, huf_digits):
    """A HUF quote stored under babel 2.18 (737604 = 7 376,04 Ft) asks Stripe for 737604 under
    babel 2.18's and 2.19's CLDR alike (0.1.0 under 2.19 would have asked for 100x that)."""
    write_0_1_0_books(engine, prefix)
    migrate_units(engine, prefix)
    cldr(huf_digits)
    quote = QuoteStore(Ledger(engine, prefix=prefix)).get("q_huf")
    assert quote.local_amount_minor == 737604 and quote.exponent == 2
    assert quote.stripe_amount == to_stripe_amount(737604, "HUF") == 737604
    # What 0.1.0 did: scale by CLDR's digits. Under 2.19 that meant 737 604 Ft, x100 at Stripe.
    assert 737604 * 10 ** (2 - huf_digits) == (737604 if huf_digits == 2 else 73760400)


def test_a_table_change_is_refused_until_rescaled(ledger, engine, prefix, iso_table):
    """Simulated amendment (HUF to 0 decimals): start is refused; whole amounts rescale, others refuse."""
    ledger.open_accounts([AccountSpec("h:a", AccountKind.ASSET, currency="HUF"),
                          AccountSpec("h:b", AccountKind.LIABILITY, currency="HUF")])
    ledger.post(EntryDraft("t", [Posting.debit("h:a", 737600, "HUF"),
                                 Posting.credit("h:b", 737600, "HUF")], "k1"))
    iso_table(HUF=0)
    with pytest.raises(UnitsMismatch, match=r"accounts\.exponent: 2 row\(s\) in HUF at exponent 2"):
        ledger.migrate()
    with pytest.raises(UnitsMismatch):
        ledger.check_schema()
    assert [p.rows for p in migrate_units(engine, prefix)] == [2]
    ledger.check_schema()
    assert ledger.balance("h:a").posted_minor == 7376
    assert ledger.verify().ok


def test_a_rescale_that_would_round_changes_nothing(ledger, engine, prefix, iso_table):
    """7 376,04 Ft cannot become whole forints: migrate-units refuses and nothing is written."""
    ledger.open_accounts([AccountSpec("h:a", AccountKind.ASSET, currency="HUF"),
                          AccountSpec("h:b", AccountKind.LIABILITY, currency="HUF")])
    ledger.post(EntryDraft("t", [Posting.debit("h:a", 737604, "HUF"),
                                 Posting.credit("h:b", 737604, "HUF")], "k1"))
    iso_table(HUF=0)
    with pytest.raises(UnitsMismatch, match="without rounding"):
        migrate_units(engine, prefix)
    iso_table(HUF=2)
    ledger.check_schema()
    assert ledger.balance("h:a").posted_minor == 737604


def test_new_rows_record_the_librarys_units(ledger, engine, prefix):
    """Accounts and quotes written now carry the ISO exponent of their currency."""
    ledger.open_accounts([AccountSpec(f"x:{code}", AccountKind.ASSET, currency=code)
                          for code in ("USD", "JPY", "KWD", "IQD", "CLF")])
    store = QuoteStore(ledger)
    store.save(Quote.from_dict(quote_json("q1", "HUF", 737604)))
    with engine.connect() as conn:
        accounts = dict(conn.exec_driver_sql(f"SELECT currency, exponent FROM {prefix}accounts").all())
        quotes = conn.exec_driver_sql(f"SELECT local_exponent FROM {prefix}quotes").all()
    assert accounts == {"USD": 2, "JPY": 0, "KWD": 3, "IQD": 3, "CLF": 4}
    assert quotes == [(2,)]


@settings(max_examples=8)
@given(
    amounts=st.lists(st.integers(1, 10**9), min_size=1, max_size=4),
    shift=st.integers(1, 3),
)
def test_rescaling_keeps_every_major_value_and_the_invariants(engine, amounts, shift, iso_table):
    """For any postings and any finer exponent, rescaling keeps each balance's major value,
    and the books still balance and verify."""
    prefix = f"r{os.getpid()}_{next(_examples)}_"  # a fresh ledger for every example
    iso_table(KWD=3)
    ledger = Ledger(engine, prefix=prefix)
    ledger.migrate()
    ledger.open_accounts([AccountSpec("k:a", AccountKind.ASSET, currency="KWD"),
                          AccountSpec("k:b", AccountKind.LIABILITY, currency="KWD")])
    for n, amount in enumerate(amounts):
        ledger.post(EntryDraft("t", [Posting.debit("k:a", amount, "KWD"),
                                     Posting.credit("k:b", amount, "KWD")], f"k{n}"))
    before = ledger.balance("k:a").posted_minor
    iso_table(KWD=3 + shift)
    migrate_units(engine, prefix)
    assert ledger.balance("k:a").posted_minor == before * 10**shift
    assert Decimal(ledger.balance("k:a").posted_minor).scaleb(-(3 + shift)) == Decimal(
        before
    ).scaleb(-3)
    assert ledger.verify().ok and ledger.trial_balance().balanced


def test_cli_migrate_units(tmp_path):
    """`migrate` exits 4 naming the command; `migrate-units` reports progress and rescales."""
    import io
    import json

    from spaktok_ledger.cli import main

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    write_0_1_0_books(engine, "spaktok_")
    engine.dispose()

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--db", url, *args], out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, _, err = run("migrate")
    assert code == 4 and "migrate-units" in err and "ALL" in err
    code, out, err = run("migrate-units", "--dry-run")
    assert code == 0 and "dry run" in out and "rescaling" in err
    code, out, err = run("--json", "migrate-units")
    assert code == 0 and err.splitlines()[-1].startswith("migrate-units: done")
    assert {row["currency"] for row in json.loads(out)["rescaled"]} == {"ALL"}
    assert run("migrate")[0] == 0
    code, out, _ = run("migrate-units")
    assert code == 0 and "already" in out


@pytest.mark.parametrize("huf_digits", [2, 0], ids=["babel-2.18", "babel-2.19"])
def test_huf_quote_from_0_1_0_checks_out_at_the_same_stripe_amount(
    engine, prefix, cldr, huf_digits
):
    """End to end: the stored HUF quote becomes a Checkout Session of 737604 (Stripe's units)
    under babel 2.18's and 2.19's CLDR alike."""
    from spaktok_ledger import CoinPack, PackCatalogue, Payments, Pricing, StripeGateway
    from spaktok_ledger.fx import StaticRateProvider
    from spaktok_ledger.testing import FakeClock, FakeStripe, stripe_client

    write_0_1_0_books(engine, prefix)
    migrate_units(engine, prefix)
    cldr(huf_digits)
    clock = FakeClock(NOW + timedelta(minutes=1))
    ledger = Ledger(engine, prefix=prefix, clock=clock)
    economy = GiftEconomy(ledger, GiftCatalogue([Gift("rose", coins=10)]), clock=clock)
    economy.setup()
    pricing = Pricing(ledger, PackCatalogue([CoinPack("starter", 499, 500)]),
                      StaticRateProvider({"HUF": "1"}, clock=clock), clock=clock)
    with FakeStripe(clock=clock) as fake:
        payments = Payments(economy, pricing, StripeGateway(stripe_client(fake, timeout=5)),
                            webhook_secret="whsec_units", clock=clock)
        result = payments.create_checkout(
            "alice", "q_huf", idempotency_key="k", success_url="https://app.example/ok",
            cancel_url="https://app.example/no",
        )
        sent = [r for r in fake.requests if r.path == "/v1/checkout/sessions"][-1]
    assert (result.currency, result.amount_minor) == ("HUF", 737604)
    assert sent.params["line_items"][0]["price_data"]["unit_amount"] == "737604"


def test_a_bank_payout_records_stripe_units(ledger, engine, prefix):
    """A manual payout's bank amount is stored with its Stripe exponent, so start-up passes."""
    from spaktok_ledger import Payouts, StripeGateway
    from spaktok_ledger.testing import FakeStripe, stripe_client

    # hold_days=0: the gift's share is payable at once; the top-up is the money the
    # platform transfers (these gifts are funded without Stripe charges).
    economy = GiftEconomy(ledger, GiftCatalogue([Gift("rocket", coins=5000)]), hold_days=0)
    economy.setup()
    economy.open_user("alice")
    economy.credit_purchase("alice", coins=100_000, price_usd_minor=100_000,
                            idempotency_key="fund")
    economy.register_streamer("bob")
    economy.send_gift("alice", "bob", "rocket", 10, idempotency_key="g")
    with FakeStripe() as fake:
        fake.top_up(1_000_000)
        account = fake.create_account(onboarded=True)["id"]
        payouts = Payouts(economy, StripeGateway(stripe_client(fake, timeout=10)),
                          connect_webhook_secret="whsec_units", manual_payouts=True)
        payouts.link_account("bob", account)
        payout = payouts.request_payout("bob", 6000, idempotency_key="p1")
    assert payout.payout_currency is not None and payout.payout_stripe_amount is not None
    with engine.connect() as conn:
        recorded = conn.exec_driver_sql(
            f"SELECT payout_currency, payout_stripe_exponent FROM {prefix}payouts"
        ).all()
    assert recorded == [(payout.payout_currency, 2)]
    ledger.check_schema()


def test_the_units_example_runs(tmp_path, capsys):
    """examples/units.py prints each currency's units and finds nothing to rescale."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "units.py"
    argv = sys.argv
    sys.argv = [str(script), f"sqlite:///{tmp_path / 'example.db'}"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "HUF    2" in out and "737604" in out and "rows to rescale: 0" in out


def test_a_rescale_that_would_overflow_changes_nothing(ledger, engine, prefix, iso_table):
    """x10 on an amount near the int64 limit is refused (SQLite would turn it into a float)."""
    ledger.open_accounts([AccountSpec("k:a", AccountKind.ASSET, currency="KWD"),
                          AccountSpec("k:b", AccountKind.LIABILITY, currency="KWD")])
    ledger.post(EntryDraft("t", [Posting.debit("k:a", 2**62, "KWD"),
                                 Posting.credit("k:b", 2**62, "KWD")], "k1"))
    iso_table(KWD=4)
    with pytest.raises(UnitsMismatch, match="64-bit"):
        migrate_units(engine, prefix)
    iso_table(KWD=3)
    ledger.check_schema()
    assert ledger.balance("k:a").posted_minor == 2**62
