"""reconcile(): the books against Stripe's balance transactions and balances, the sweep for
events that never arrived, repairs, drift reports, cursors, the CLI command."""

from __future__ import annotations

import io
import json

import pytest

from spaktok_ledger import EntryDraft, EntryType, Posting, Reconciliation
from spaktok_ledger.cli import main
from spaktok_ledger.testing import FakeStripe, stripe_client
from tests.service.books import Books, make_books


@pytest.fixture
def fake(clock):
    with FakeStripe(clock=clock) as fake:
        yield fake


@pytest.fixture
def books(ledger, clock, fake) -> Books:
    return make_books(ledger, clock, fake)


def kinds(report) -> list[tuple[str, bool]]:
    return [(d.kind, d.repaired) for d in report.drift]


def test_clean_books_reconcile_with_nothing_to_say(books: Books) -> None:
    """Purchases, a refund and a dispute all delivered: no drift, balances equal."""
    first = books.buy()
    books.buy(pack="big")
    books.deliver(books.fake.refund(first.charge_id, amount_minor=100))
    report = books.reconcile()
    assert report.ok and report.drift == ()
    (usd,) = report.balances
    assert (usd.stripe_account, usd.currency, usd.difference_minor) == ("platform", "USD", 0)
    assert usd.ledger_minor == usd.stripe_available_minor + usd.stripe_pending_minor > 0
    assert usd.stripe_pending_minor > 0  # card funds wait two days
    assert report.transactions_checked == 3
    assert json.dumps(report.to_dict())


def test_events_that_never_arrived_are_swept(books: Books) -> None:
    """A completion and a chargeback whose webhooks never came are found and applied."""
    result = books.checkout()
    books.fake.complete_checkout(result.checkout_session_id)  # not delivered
    charge = books.charge_of(result.purchase_id)
    dispute = books.fake.dispute(charge)["data"]["object"]["id"]
    books.fake.dispute_funds_withdrawn(dispute)  # not delivered either
    report = books.reconcile()
    assert report.ok, report.to_dict()
    applied = {e.type for e in report.events_applied}
    assert {"checkout.session.completed", "charge.dispute.funds_withdrawn"} <= applied
    assert books.payments.purchase(result.purchase_id).clawed_coins == 500
    assert books.reconcile().events_applied == ()  # the cursor moved on, nothing new


def test_money_of_unknown_origin_is_reported(books: Books) -> None:
    """A charge the ledger knows nothing about (no purchase, no metadata) is missing in the
    ledger, and the balance differs: reported, not guessed."""
    client = stripe_client(books.fake)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "success_url": "https://a.example/ok",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 700,
                        "product_data": {"name": "elsewhere"},
                    },
                }
            ],
        }
    )
    books.fake.complete_checkout(session.id, fee_minor=50)
    report = books.reconcile()
    assert not report.ok
    assert kinds(report) == [("missing_in_ledger", False), ("balance_difference", False)]
    missing, difference = report.drift
    assert (missing.type, missing.stripe_minor, missing.ledger_minor) == ("charge", 650, None)
    assert (difference.ledger_minor, difference.stripe_minor) == (0, 650)
    again = books.reconcile()  # still listed on the next (incremental) run
    assert [d.kind for d in again.unresolved] == ["missing_in_ledger", "balance_difference"]


def test_an_entry_without_stripe_money_is_a_balance_difference(books: Books) -> None:
    """Something booked to the Stripe balance that Stripe never saw shows as a difference."""
    books.buy()
    books.ledger.post(
        EntryDraft(
            EntryType.ADJUSTMENT,
            (Posting("platform:stripe_balance", 1000), Posting("platform:adjustments", -1000)),
            "made-up",
        )
    )
    report = books.reconcile()
    (drift,) = report.unresolved
    assert (drift.kind, drift.ledger_minor - drift.stripe_minor) == ("balance_difference", 1000)


def test_missing_at_stripe_and_amount_mismatch(books: Books) -> None:
    """Booked transactions Stripe does not list, or lists with another amount, are reported."""
    purchase = books.buy()
    t = books.ledger.tables.stripe_txns
    with books.ledger.engine.begin() as conn:
        conn.execute(t.update().where(t.c.type == "charge").values(booked_net_minor=1))
        conn.execute(
            t.insert().values(
                txn_id="txn_ghost",
                stripe_account="platform",
                type="refund",
                source_id="re_ghost",
                subject_id=purchase.id,
                currency="USD",
                booked_net_minor=-5,
                stripe_created=0,
            )
        )
    report = Reconciliation(books.payments, books.payouts).run()
    assert sorted(kinds(report)) == [("amount_mismatch", False), ("missing_at_stripe", False)]


def test_top_ups_are_booked(books: Books) -> None:
    """Money the platform added to its Stripe balance is booked (platform:stripe_topups)."""
    books.fake.top_up(25_000)
    report = books.reconcile()
    assert kinds(report) == [("missing_in_ledger", True)] and report.ok
    assert books.ledger.balance("platform:stripe_balance").posted_minor == 25_000
    assert books.reconcile().drift == ()


def test_a_lost_transfer_answer_is_repaired(books: Books) -> None:
    """A transfer made at Stripe whose answer never came is found and booked."""
    books.fake.create_account(onboarded=True)
    account = books.fake.create_account(onboarded=True)["id"]
    books.payouts.link_account("bob", account)
    books.buy(pack="big", available_now=True)
    books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g")
    books.fake.drop_next("POST", "/v1/transfers")
    with pytest.raises(Exception):
        books.payouts.request_payout("bob", 2000, idempotency_key="p")
    report = books.reconcile()
    assert report.ok, report.to_dict()
    assert books.ledger.balance("platform:stripe_balance").posted_minor == books.stripe_balance()


def test_manual_payouts_reconcile_the_connected_accounts(ledger, clock, fake) -> None:
    """With manual payouts each connected account's balance is the ledger's mirror of it."""
    books = make_books(ledger, clock, fake, manual_payouts=True)
    account = fake.create_account(onboarded=True)["id"]
    books.payouts.link_account("bob", account)
    books.buy(pack="big", available_now=True)
    books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g")
    payout = books.payouts.request_payout("bob", 2000, idempotency_key="p")
    books.deliver_connect(fake.pay_payout(payout.stripe_payout_id))
    fake.fail_payout(payout.stripe_payout_id)  # never delivered
    report = books.reconcile()
    assert report.ok, report.to_dict()
    accounts = {(b.stripe_account, b.currency): b.ledger_minor for b in report.balances}
    assert accounts == {("platform", "USD"): books.stripe_balance(), (account, "USD"): 2000}
    assert books.payouts.payout(payout.payout_id).awaiting_repayment
    assert "payout.failed" in {e.type for e in report.events_applied}
    assert [p.problem for p in report.payouts] == ["awaiting_repayment"]  # for a person


def test_cli_reconcile(books: Books, monkeypatch, prefix) -> None:
    """`spaktok-ledger reconcile` prints progress on stderr and exits 1 on drift."""
    books.buy()
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli")
    monkeypatch.setenv("STRIPE_API_BASE", books.fake.url)
    url = books.ledger.engine.url.render_as_string(hide_password=False)

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--db", url, "--prefix", prefix, *args], out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = run("reconcile")
    assert code == 0, out + err
    assert "the books agree with Stripe" in out and "transactions platform" in err
    books.ledger.post(
        EntryDraft(
            EntryType.ADJUSTMENT,
            (Posting("platform:stripe_balance", 7), Posting("platform:adjustments", -7)),
            "drift",
        )
    )
    code, out, _ = run("--json", "-q", "reconcile")
    assert code == 1
    assert [d["kind"] for d in json.loads(out)["drift"]] == ["balance_difference"]


def test_cli_debts_and_write_off(books: Books, prefix) -> None:
    """`debts` lists what viewers owe; `write-off` gives a debt up, once per key."""
    purchase = books.buy()
    books.economy.send_gift("alice", "bob", "rose", 30, idempotency_key="spent")
    books.deliver(books.fake.refund(purchase.charge_id))
    url = books.ledger.engine.url.render_as_string(hide_password=False)

    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main(["--db", url, "--prefix", prefix, "--json", *args], out=out, err=io.StringIO())
        return code, out.getvalue()

    code, out = run("debts")
    assert (code, json.loads(out)) == (0, {"debts": [{"user_id": "alice", "debt_usd_minor": 300}]})
    args = ("write-off", "alice", "--reason", "refund of spent coins", "--idempotency-key", "w1")
    code, out = run(*args)
    assert code == 0 and json.loads(out)["amount_usd_minor"] == 300
    code, out = run(*args)
    assert code == 0 and json.loads(out)["amount_usd_minor"] == 300
    assert json.loads(run("debts")[1]) == {"debts": []}
    assert books.economy.wallet("alice").debt_usd_minor == 0
