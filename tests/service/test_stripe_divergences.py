"""Issue 11: the flows in which the ledger and Stripe silently disagreed (R1-R7 and the
"also found" list), each replayed against a FakeStripe that behaves like Stripe and
checked against Stripe's documented semantics (cited in the library next to each rule).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from spaktok_ledger import GiftEconomy, InsufficientFunds, PaymentProviderError, SpendingBlocked
from spaktok_ledger.testing import FakeStripe, stripe_client
from tests.service.books import Books, make_books


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


def onboard(books: Books, streamer: str = "bob", country: str = "US") -> str:
    account = books.fake.create_account(country=country, onboarded=True)["id"]
    books.payouts.link_account(streamer, account)
    return account


def requests_to(fake: FakeStripe, path: str, method: str = "POST") -> list:
    return [r for r in fake.requests if r.path == path and r.method == method]


# -- R1: a failed manual payout leaves the money on the connected account -----------------


class TestR1FailedManualPayouts:
    def test_paid_then_failed_keeps_the_money_on_the_connected_account(self, manual) -> None:
        """Stripe returns a failed payout to the connected account's balance: the ledger keeps
        it there, the platform's balance agrees, and the streamer is re-paid from it without a
        second platform transfer."""
        books = manual
        account = onboard(books)
        books.buy(pack="big", available_now=True)
        books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g1")  # bob: 2000
        payout = books.payouts.request_payout("bob", 2000, idempotency_key="p1")
        assert payout.status == "in_transit"
        books.assert_books_match_stripe()
        books.deliver_connect(books.fake.pay_payout(payout.stripe_payout_id))
        books.deliver_connect(books.fake.fail_payout(payout.stripe_payout_id))
        assert books.stripe_balance(account=account) == 2000  # Stripe: back on the account
        books.assert_books_match_stripe()
        failed = books.payouts.payout(payout.payout_id)
        assert failed.status == "failed"
        earnings = books.economy.earnings("bob")
        assert (earnings.available_minor, earnings.in_payout_minor) == (0, 2000)
        with pytest.raises(InsufficientFunds):  # no second transfer of the same money
            books.payouts.request_payout("bob", 2000, idempotency_key="p2")
        again = books.payouts.repay(payout.payout_id)
        assert again.status == "in_transit" and again.stripe_payout_id != payout.stripe_payout_id
        assert len(requests_to(books.fake, "/v1/transfers")) == 1
        books.deliver_connect(books.fake.pay_payout(again.stripe_payout_id))
        assert books.payouts.payout(payout.payout_id).status == "paid"
        assert books.stripe_balance(account=account) == 0
        assert books.economy.earnings("bob").in_payout_minor == 0
        books.assert_books_match_stripe()

    def test_canceled_before_paid(self, manual) -> None:
        """A canceled payout (payout_cancel) also stays on the connected account."""
        books = manual
        account = onboard(books)
        books.buy(pack="big", available_now=True)
        books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g1")
        payout = books.payouts.request_payout("bob", 2000, idempotency_key="p1")
        books.deliver_connect(books.fake.cancel_payout(payout.stripe_payout_id))
        assert books.stripe_balance(account=account) == 2000
        books.assert_books_match_stripe()
        assert books.economy.earnings("bob").available_minor == 0


# -- R2: payout currency and service agreement -------------------------------------------


class TestR2CrossBorder:
    def test_express_accounts_abroad_use_the_recipient_agreement(self, books) -> None:
        """Cross-border accounts need tos_acceptance[service_agreement]=recipient."""
        books.economy.register_streamer("lena")
        created = books.payouts.create_express_account("lena", country="GB")
        assert created.country == "GB"
        request = requests_to(books.fake, "/v1/accounts")[-1]
        assert request.params["tos_acceptance"] == {"service_agreement": "recipient"}
        assert "card_payments" not in request.params.get("capabilities", {})
        domestic = books.payouts.create_express_account("bob", country="US")
        assert domestic.country == "US"
        assert "tos_acceptance" not in requests_to(books.fake, "/v1/accounts")[-1].params

    def test_manual_payout_in_the_accounts_currency(self, manual) -> None:
        """A EUR account receives the USD transfer in EUR; the bank payout is made in EUR for
        what arrived, and the books agree with Stripe."""
        books = manual
        books.fake.set_exchange_rate("usd", "eur", Decimal("0.9"))
        account = onboard(books, country="DE")
        books.buy(pack="big", available_now=True)
        books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g1")
        books.clock.advance(days=1)  # recipient accounts get transfers 24 hours later
        payout = books.payouts.request_payout("bob", 2000, idempotency_key="p1")
        books.clock.advance(days=1)
        payout = books.payouts.reconcile() and books.payouts.payout(payout.payout_id)
        assert (payout.payout_currency, payout.payout_stripe_amount) == ("EUR", 1800)
        bank = requests_to(books.fake, "/v1/payouts")[-1]
        assert (bank.params["currency"], bank.params["amount"]) == ("eur", "1800")
        books.deliver_connect(books.fake.pay_payout(payout.stripe_payout_id))
        assert books.payouts.payout(payout.payout_id).status == "paid"
        assert books.stripe_balance("EUR", account=account) == 0
        books.assert_books_match_stripe()


# -- R3: refunds that fail -----------------------------------------------------------------


class TestR3FailedRefunds:
    def test_failed_refund_gives_the_coins_back(self, books) -> None:
        """The money came back to Stripe's balance: the ledger books it and the viewer has
        the coins again (they have neither coins nor money otherwise)."""
        purchase = books.buy()
        books.fake.refund(purchase.charge_id, status="pending")
        refund_id = (
            stripe_client(books.fake)
            .v1.refunds.list(params={"charge": purchase.charge_id})
            .data[0]
            .id
        )
        assert books.deliver(books.fake.events[-2]) == "clawed_back"  # charge.refunded
        assert books.economy.wallet("alice").coins == 0
        assert books.deliver(books.fake.fail_refund(refund_id)) == "restored"
        assert books.economy.wallet("alice").coins == 500
        books.assert_books_match_stripe()
        assert any(e.topic == "purchase.refund_failed" for e in books.economy.outbox.pending())

    def test_failed_refund_of_a_refused_purchase_is_reported(self, books) -> None:
        """A refused purchase whose refund fails holds the customer's money again: booked,
        and reported for another way to pay it back."""
        purchase = books.buy(risk_level="highest")
        assert purchase.status == "refused"
        refund = (
            stripe_client(books.fake)
            .v1.refunds.list(params={"charge": books.charge_of(purchase.id)})
            .data[0]
        )
        books.deliver(books.fake.fail_refund(refund.id))
        books.assert_books_match_stripe()
        assert any(e.topic == "purchase.refund_failed" for e in books.economy.outbox.pending())
        assert books.ledger.balance("platform:unapplied_payments").posted_minor == 499


# -- R4: transfers refused with balance_insufficient --------------------------------------


class TestR4BalanceInsufficient:
    def test_pending_charge_funds_the_transfer(self, books) -> None:
        """Funds still pending: the transfer is made from the purchase's charge
        (source_transaction), not failed."""
        onboard(books)
        purchase = books.buy(pack="big")  # pending for two days
        books.economy.send_gift("alice", "bob", "rocket", 5, idempotency_key="g1")
        payout = books.payouts.request_payout("bob", 2000, idempotency_key="p1")
        assert (payout.status, payout.ledger_state) == ("transferred", "settled")
        transfer = requests_to(books.fake, "/v1/transfers")[-1]
        assert transfer.params["source_transaction"] == purchase.charge_id
        books.assert_books_match_stripe()

    def test_no_funds_is_reported_and_retried_with_a_new_key(self, books) -> None:
        """No charge can fund it: the payout waits (reported), and a later retry uses a new
        idempotency key (Stripe replays the refusal to the old one)."""
        onboard(books)
        books.economy.credit_purchase(
            "carol", coins=5000, price_usd_minor=5000, idempotency_key="outside-stripe"
        )
        books.economy.send_gift("carol", "bob", "rocket", 5, idempotency_key="g1")
        with pytest.raises(PaymentProviderError) as info:
            books.payouts.request_payout("bob", 2000, idempotency_key="p1")
        assert info.value.retryable
        waiting = books.payouts.payout(info.value.details["payout_id"])
        assert (waiting.status, waiting.ledger_state) == ("pending", "held")
        assert "balance_insufficient" in waiting.last_error
        books.fake.top_up(2000)
        (item,) = books.payouts.reconcile()
        assert item.resolved and books.payouts.payout(waiting.payout_id).status == "transferred"
        keys = [r.idempotency_key for r in requests_to(books.fake, "/v1/transfers")]
        assert len(set(keys)) == 2


# -- R5: chargebacks on spent coins ---------------------------------------------------------


class TestR5Chargebacks:
    def dispute_lost(self, books: Books, purchase) -> str:
        dispute = books.fake.dispute(purchase.charge_id)["data"]["object"]["id"]
        books.deliver(books.fake.events[-1])
        books.deliver(books.fake.dispute_funds_withdrawn(dispute))
        return dispute

    def test_default_hold_period(self, ledger) -> None:
        """A chosen default hold period (docs/gifts.md says why)."""
        assert GiftEconomy(ledger).hold_days == 7

    def test_loss_is_an_expense_and_held_shares_are_clawed_back(self, ledger, clock, fake) -> None:
        """Stripe withdrew the funds: the streamer share still in its hold period is clawed
        back with the platform's revenue from those gifts; nothing is parked as an asset."""
        books = make_books(ledger, clock, fake, hold_days=7)
        purchase = books.buy()
        books.economy.send_gift("alice", "bob", "rose", 50, idempotency_key="g1")  # all 500
        assert books.economy.earnings("bob").pending_minor == 200
        self.dispute_lost(books, purchase)
        assert books.economy.earnings("bob").pending_minor == 0
        assert books.ledger.balance("platform:gift_revenue").posted_minor == 0
        assert books.economy.wallet("alice").debt_usd_minor == 0
        books.assert_books_match_stripe()
        clock.advance(days=8)
        assert books.economy.mature_earnings() == []

    def test_debt_is_a_recoverable_with_an_allowance_and_a_write_off(self, books) -> None:
        """Shares already payable stay with the streamer: the spent value is an expense now,
        the viewer's debt a recoverable (net of its allowance), and write_off clears it."""
        purchase = books.buy()
        books.economy.send_gift("alice", "bob", "rose", 30, idempotency_key="g1")  # 300 spent
        self.dispute_lost(books, purchase)
        balances = books.ledger.balances(
            ["platform:refund_losses", "platform:receivables_allowance", "user:alice:receivable"]
        )
        assert balances["user:alice:receivable"].posted_minor == 300
        assert balances["platform:receivables_allowance"].posted_minor == -300
        assert balances["platform:refund_losses"].posted_minor == 300
        with pytest.raises(SpendingBlocked):
            books.economy.send_gift("alice", "bob", "rose", 1, idempotency_key="g2")
        written = books.payments.write_off("alice", reason="uncollectable", idempotency_key="w1")
        assert written.amount_usd_minor == 300
        assert (
            books.payments.write_off(
                "alice", reason="uncollectable", idempotency_key="w1"
            ).amount_usd_minor
            == 300
        )
        assert books.economy.wallet("alice").debt_usd_minor == 0
        assert books.ledger.balance("platform:receivables_allowance").posted_minor == 0
        books.assert_books_match_stripe()

    def test_recovery_releases_the_allowance(self, books) -> None:
        """A later purchase repays the debt: the allowance goes and the loss is recovered."""
        purchase = books.buy()
        books.economy.send_gift("alice", "bob", "rose", 30, idempotency_key="g1")
        self.dispute_lost(books, purchase)
        books.buy()
        balances = books.ledger.balances(
            ["platform:refund_losses", "platform:receivables_allowance", "user:alice:receivable"]
        )
        assert [b.posted_minor for b in balances.values()] == [0, 0, 0]
        assert books.economy.wallet("alice").coins == 200
        books.assert_books_match_stripe()

    def test_won_dispute_restores_the_clawed_gifts(self, ledger, clock, fake) -> None:
        """Funds reinstated: the gifts clawed back are given to the streamer again."""
        books = make_books(ledger, clock, fake, hold_days=7)
        purchase = books.buy()
        books.economy.send_gift("alice", "bob", "rose", 50, idempotency_key="g1")
        dispute = self.dispute_lost(books, purchase)
        assert books.deliver(books.fake.dispute_funds_reinstated(dispute)) == "restored"
        assert books.economy.earnings("bob").pending_minor == 200
        assert books.ledger.balance("platform:gift_revenue").posted_minor == 300
        books.assert_books_match_stripe()


# -- R6: disputes nobody told us about ------------------------------------------------------


class TestR6Discovery:
    def test_sync_finds_a_dispute_by_charge(self, books) -> None:
        """sync() lists the charge's disputes at Stripe (no webhook ever arrived)."""
        purchase = books.buy()
        dispute = books.fake.dispute(purchase.charge_id)["data"]["object"]["id"]
        books.fake.dispute_funds_withdrawn(dispute)
        assert books.payments.sync(purchase.id).clawed_coins == 500
        books.assert_books_match_stripe()


# -- R7: disputes on held and refused purchases -------------------------------------------------


class TestR7HeldAndRefused:
    def test_dispute_on_a_held_purchase(self, books) -> None:
        """A chargeback on coins held for review voids them and reaches the books."""
        purchase = books.buy(risk_level="elevated")
        assert purchase.status == "held"
        dispute = books.fake.dispute(purchase.charge_id)["data"]["object"]["id"]
        books.deliver(books.fake.dispute_funds_withdrawn(dispute))
        assert books.economy.wallet("alice").pending_coins == 0
        books.assert_books_match_stripe()

    def test_dispute_on_a_refused_purchase_is_not_refunded_again(self, ledger, clock, fake) -> None:
        """Refused, refund not sent yet, then charged back: the books follow the withdrawal and
        no refund is ever sent (the cardholder already has the money back)."""
        books = make_books(ledger, clock, fake)
        fake.fail_next("POST", "/v1/refunds", status=500)
        purchase = books.buy(risk_level="highest")
        dispute = books.fake.dispute(books.charge_of(purchase.id))["data"]["object"]["id"]
        books.deliver(books.fake.events[-1])
        books.deliver(books.fake.dispute_funds_withdrawn(dispute))
        books.deliver(books.fake.close_dispute(dispute, status="lost"))
        before = len(requests_to(fake, "/v1/refunds"))
        books.payments.retry_refunds()
        assert len(requests_to(fake, "/v1/refunds")) == before
        assert not books.payments.purchase(purchase.id).to_dict().get("refund_due")
        books.assert_books_match_stripe()


# -- also found ------------------------------------------------------------------------------


class TestAlsoFound:
    def test_dispute_before_completion_is_applied(self, books) -> None:
        """A dispute event that beats its purchase's completion is applied, not parked."""
        result = books.checkout()
        completed = books.fake.complete_checkout(result.checkout_session_id)
        charge = books.charge_of(result.purchase_id)
        created = books.fake.dispute(charge)
        withdrawn = books.fake.dispute_funds_withdrawn(created["data"]["object"]["id"])
        assert books.deliver(withdrawn) != "parked"
        books.deliver(completed)
        assert books.payments.purchase(result.purchase_id).clawed_coins == 500
        books.assert_books_match_stripe()

    def test_admin_refund_before_the_webhook(self, books) -> None:
        """Stripe shows the purchase paid, the webhook has not arrived: the refund goes."""
        result = books.checkout()
        books.fake.complete_checkout(result.checkout_session_id)
        refund_id = books.payments.refund(result.purchase_id, idempotency_key="r1")
        assert refund_id.startswith("re_")

    def test_mismatch_is_refunded(self, books) -> None:
        """Stripe charged another amount than the quote: nothing credited, money refunded, the
        books agree with Stripe."""
        quote = books.pricing.quote("starter", user_id="alice")
        metadata = {
            "purchase_id": "pur_odd",
            "user_id": "alice",
            "quote_id": quote.id,
            "pack_id": "starter",
        }
        session = stripe_client(books.fake).v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "success_url": "https://a.example/ok",
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 100,
                            "product_data": {"name": "x"},
                        },
                    }
                ],
            }
        )
        assert books.deliver(books.fake.complete_checkout(session.id)) == "amount_mismatch"
        assert len(requests_to(books.fake, "/v1/refunds")) == 1
        books.deliver(books.fake.events[-2])  # charge.refunded
        books.assert_books_match_stripe()

    def test_non_usd_settlement_is_booked(self, books) -> None:
        """A EUR charge settled in EUR (a EUR bank account): booked in the EUR Stripe balance."""
        purchase = books.buy(currency="EUR", settle_currency="eur")
        assert purchase.status == "credited"
        assert purchase.note is None
        books.assert_books_match_stripe(("USD", "EUR"))

    def test_many_refunds_are_all_seen(self, books) -> None:
        """Twelve partial refunds: every refund's balance transaction reaches the books."""
        purchase = books.buy(pack="big")
        for _ in range(12):
            books.fake.refund(purchase.charge_id, amount_minor=10)
        books.payments.sync(purchase.id)
        books.assert_books_match_stripe()

    def test_adaptive_pricing_is_disabled(self, books) -> None:
        """The quote is already in the viewer's currency: sessions turn Adaptive Pricing off."""
        books.checkout()
        request = requests_to(books.fake, "/v1/checkout/sessions")[-1]
        assert request.params["adaptive_pricing"] == {"enabled": "false"}

    def test_early_fraud_warning_refunds(self, books) -> None:
        """An actionable early fraud warning refunds the purchase (documented policy)."""
        purchase = books.buy()
        assert books.deliver(books.fake.early_fraud_warning(purchase.charge_id)) == "refunded"
        assert len(requests_to(books.fake, "/v1/refunds")) == 1
        books.deliver(books.fake.events[-2])
        assert books.economy.wallet("alice").coins == 0
        books.assert_books_match_stripe()

    def test_chargeback_of_a_refunded_payment_is_a_loss(self, books) -> None:
        """Found by the scenario machine: refunded, then charged back anyway. Stripe takes
        the money twice; the second time is a loss, not an FX result."""
        purchase = books.buy()
        books.deliver(books.fake.refund(purchase.charge_id))
        dispute = books.fake.dispute(purchase.charge_id)["data"]["object"]["id"]
        books.deliver(books.fake.dispute_funds_withdrawn(dispute))
        loss = books.ledger.balances(["platform:refund_losses", "platform:fx_gain_loss"])
        assert (
            loss["platform:refund_losses"].posted_minor,
            loss["platform:fx_gain_loss"].posted_minor,
        ) == (499, 0)
        books.assert_books_match_stripe()

    def test_chargeback_of_a_refunded_refused_payment(self, books) -> None:
        """Found by the scenario machine: refused and refunded, then charged back anyway."""
        purchase = books.buy(risk_level="highest")
        books.deliver(books.fake.events[-2])  # charge.refunded
        charge = books.charge_of(purchase.id)
        dispute = books.fake.dispute(charge)["data"]["object"]["id"]
        books.deliver(books.fake.dispute_funds_withdrawn(dispute))
        balances = books.ledger.balances(
            ["platform:refund_losses", "platform:fx_gain_loss", "platform:unapplied_payments"]
        )
        assert balances["platform:refund_losses"].posted_minor == 499
        assert balances["platform:fx_gain_loss"].posted_minor == 0
        assert balances["platform:unapplied_payments"].posted_minor == 0
        books.assert_books_match_stripe()
