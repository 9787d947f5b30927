"""FakeStripe where money is concerned: balances, availability, Connect currencies, refund
failures, disputes, idempotent errors. Each test pins a rule of Stripe's documentation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

stripe = pytest.importorskip("stripe")

from spaktok_ledger.testing import FakeClock, FakeStripe, stripe_client  # noqa: E402
from tests.testing.test_fake_stripe import session_params  # noqa: E402

DAY = 86_400


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))


@pytest.fixture
def fake(clock):
    with FakeStripe(clock=clock) as server:
        yield server


@pytest.fixture
def client(fake):
    return stripe_client(fake)


def pay(fake, client, amount=1000, currency="usd", **complete):
    """A paid Checkout Session; returns the charge (its balance transaction expanded)."""
    params = session_params()
    params["line_items"][0]["price_data"].update(currency=currency, unit_amount=amount)
    session = client.v1.checkout.sessions.create(params=params)
    fake.complete_checkout(session.id, settle_currency=currency, **complete)
    session = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge.balance_transaction"]}
    )
    return session.payment_intent.latest_charge


def account(fake, country="US", **options):
    return fake.create_account(country=country, onboarded=True, **options)["id"]


def balance(client, stripe_account=None):
    options = {"stripe_account": stripe_account} if stripe_account else {}
    found = client.v1.balance.retrieve(options=options)
    return {
        b.currency: (b.amount, next(p.amount for p in found.pending if p.currency == b.currency))
        for b in found.available
    }


class TestBalances:
    def test_charge_funds_are_pending_until_available_on(self, fake, client, clock):
        """A charge's net is pending for two days, then available; the balance is the sum."""
        charge = pay(fake, client, fee_minor=59)
        txn = charge.balance_transaction
        assert (txn.status, txn.available_on - txn.created) == ("pending", 2 * DAY)
        assert balance(client) == {"usd": (0, 941)}
        clock.advance(days=2)
        assert balance(client) == {"usd": (941, 0)}
        assert client.v1.balance_transactions.retrieve(txn.id).status == "available"

    def test_balance_transactions_list_filters_and_pages(self, fake, client, clock):
        """Newest first, by ``created``, ``type`` and ``source``; pagination sees every one."""
        first = pay(fake, client)
        clock.advance(hours=1)
        second = pay(fake, client)
        client.v1.refunds.create(params={"charge": second.id, "amount": 100})
        listed = client.v1.balance_transactions.list(params={"limit": 2})
        assert [t.type for t in listed.data] == ["refund", "charge"] and listed.has_more
        every = [t.source for t in listed.auto_paging_iter()]
        assert every[1:] == [second.id, first.id]
        since = int(clock().timestamp())
        recent = client.v1.balance_transactions.list(params={"created": {"gte": since}})
        assert {t.source for t in recent.data if t.type == "charge"} == {second.id}
        by_source = client.v1.balance_transactions.list(params={"source": first.id})
        assert [t.id for t in by_source.data] == [first.balance_transaction.id]
        assert [t.type for t in client.v1.balance_transactions.list(
            params={"type": "refund"}).data] == ["refund"]

    def test_top_up_is_available_at_once(self, fake, client):
        """A top-up adds to the available balance with a ``topup`` transaction."""
        topup = fake.top_up(50_000)
        assert balance(client) == {"usd": (50_000, 0)}
        txn = client.v1.balance_transactions.retrieve(
            client.v1.topups.retrieve(topup["id"]).balance_transaction
        )
        assert (txn.type, txn.amount, txn.status) == ("topup", 50_000, "available")

    def test_available_now_is_the_0077_card(self, fake, client):
        """``available_now`` puts a charge's funds in the available balance, like 4000...0077."""
        pay(fake, client, fee_minor=59, available_now=True)
        assert balance(client) == {"usd": (941, 0)}


class TestTransfers:
    def test_balance_insufficient_while_funds_are_pending(self, fake, client, clock):
        """A transfer needs available funds; the refusal is replayed to the same key."""
        destination = account(fake)
        pay(fake, client)
        params = {"amount": 500, "currency": "usd", "destination": destination}
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.transfers.create(params=params, options={"idempotency_key": "payout:1"})
        assert info.value.code == "balance_insufficient"
        clock.advance(days=2)
        with pytest.raises(stripe.InvalidRequestError) as again:
            client.v1.transfers.create(params=params, options={"idempotency_key": "payout:1"})
        assert again.value.code == "balance_insufficient" and fake.requests[-1].replayed
        made = client.v1.transfers.create(params=params, options={"idempotency_key": "payout:1:2"})
        assert made.amount == 500 and client.v1.transfers.list().data[0].id == made.id

    def test_source_transaction_draws_on_a_pending_charge(self, fake, client, clock):
        """With ``source_transaction`` the transfer succeeds at once, up to the charge's amount,
        and reaches the destination when the charge's funds become available."""
        destination = account(fake)
        charge = pay(fake, client, fee_minor=59)
        params = {"currency": "usd", "destination": destination, "source_transaction": charge.id}
        transfer = client.v1.transfers.create(params={**params, "amount": 600})
        assert transfer.source_transaction == charge.id
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.transfers.create(params={**params, "amount": 401})
        assert info.value.code == "balance_insufficient"
        assert balance(client) == {"usd": (0, 341)}
        assert balance(client, destination) == {"usd": (0, 600)}
        clock.advance(days=2)
        assert balance(client, destination) == {"usd": (600, 0)}

    def test_transfer_converts_into_the_accounts_currency(self, fake, client):
        """A USD transfer to a EUR account arrives in EUR at Stripe's rate, on its payment."""
        fake.top_up(100_000)
        fake.set_exchange_rate("usd", "eur", Decimal("0.9"))
        destination = account(fake, "DE")
        transfer = client.v1.transfers.create(
            params={"amount": 6000, "currency": "usd", "destination": destination},
            options={},
        )
        payment = client.v1.charges.retrieve(
            transfer.destination_payment,
            params={"expand": ["balance_transaction"]},
            options={"stripe_account": destination},
        )
        txn = payment.balance_transaction
        assert (txn.type, txn.amount, txn.currency) == ("payment", 5400, "eur")
        assert Decimal(str(txn.exchange_rate)) == Decimal("0.9")
        assert balance(client, destination) == {"eur": (0, 5400)}  # recipient: +24 hours

    def test_recipient_accounts_get_transfers_a_day_later(self, fake, client, clock):
        """Transfers to ``recipient`` accounts take an extra 24 hours to become available."""
        fake.top_up(10_000)
        destination = account(fake, "GB")
        client.v1.transfers.create(
            params={"amount": 1000, "currency": "usd", "destination": destination}
        )
        assert balance(client, destination)["gbp"][0] == 0
        clock.advance(days=1)
        assert balance(client, destination) == {"gbp": (790, 0)}

    def test_reversal_moves_money_back_on_both_sides(self, fake, client):
        """A reversal credits the platform and debits the destination; without funds there,
        it is refused."""
        fake.top_up(10_000)
        destination = account(fake)
        transfer = client.v1.transfers.create(
            params={"amount": 3000, "currency": "usd", "destination": destination}
        )
        client.v1.transfers.reversals.create(transfer.id, params={"amount": 1000})
        assert balance(client) == {"usd": (8000, 0)}
        assert balance(client, destination) == {"usd": (2000, 0)}
        client.v1.payouts.create(
            params={"amount": 2000, "currency": "usd"}, options={"stripe_account": destination}
        )
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.transfers.reversals.create(transfer.id)
        assert info.value.code == "balance_insufficient"


class TestPayouts:
    def test_payouts_only_in_a_currency_the_account_can_receive(self, fake, client):
        """A EUR account pays out in EUR; USD needs a USD bank account."""
        fake.top_up(100_000)
        destination = account(fake, "FR", service_agreement="recipient")
        client.v1.transfers.create(
            params={"amount": 6000, "currency": "usd", "destination": destination}
        )
        options = {"stripe_account": destination}
        with pytest.raises(stripe.InvalidRequestError, match="external accounts in that currency"):
            client.v1.payouts.create(params={"amount": 1000, "currency": "usd"}, options=options)

    def test_payout_needs_available_funds_and_a_failure_returns_them(self, fake, client, clock):
        """Payouts draw the available balance; a failure (even after paid) puts it back."""
        fake.top_up(10_000)
        destination = account(fake)
        options = {"stripe_account": destination}
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.payouts.create(params={"amount": 100, "currency": "usd"}, options=options)
        assert info.value.code == "balance_insufficient"
        client.v1.transfers.create(
            params={"amount": 5000, "currency": "usd", "destination": destination}
        )
        payout = client.v1.payouts.create(
            params={"amount": 5000, "currency": "usd"}, options=options
        )
        assert balance(client, destination) == {"usd": (0, 0)}
        fake.pay_payout(payout.id)
        failed = fake.fail_payout(payout.id)["data"]["object"]
        back = client.v1.balance_transactions.retrieve(
            failed["failure_balance_transaction"], options=options
        )
        assert (back.type, back.amount) == ("payout_failure", 5000)
        assert balance(client, destination) == {"usd": (5000, 0)}
        assert balance(client) == {"usd": (5000, 0)}


class TestRefundsAndDisputes:
    def test_pending_refund_that_fails(self, fake, client):
        """A pending refund fails: money back in the balance, the charge's amount_refunded down,
        and the events Stripe sends."""
        charge = pay(fake, client, available_now=True, fee_minor=0)
        fake.refund(charge.id, amount_minor=400, status="pending")
        refund = client.v1.refunds.list(params={"charge": charge.id}).data[0]
        assert (refund.status, refund.pending_reason) == ("pending", "processing")
        assert balance(client) == {"usd": (600, 0)}
        mark = len(fake.events)
        updated = fake.fail_refund(refund.id, reason="lost_or_stolen_card")
        assert [e["type"] for e in fake.events[mark:]] == [
            "charge.refund.updated",
            "refund.updated",
            "refund.failed",
        ]
        failed = updated["data"]["object"]
        assert (failed["status"], failed["failure_reason"]) == ("failed", "lost_or_stolen_card")
        txn = client.v1.balance_transactions.retrieve(failed["failure_balance_transaction"])
        assert (txn.type, txn.amount) == ("refund_failure", 400)
        assert balance(client) == {"usd": (1000, 0)}
        assert client.v1.charges.retrieve(charge.id).amount_refunded == 0
        with pytest.raises(ValueError, match="failed"):
            fake.settle_refund(refund.id)

    def test_pending_refund_that_succeeds(self, fake, client):
        """``settle_refund`` moves a pending refund to succeeded with charge.refund.updated."""
        charge = pay(fake, client)
        fake.refund(charge.id, status="pending")
        refund = client.v1.refunds.list(params={"charge": charge.id}).data[0]
        event = fake.settle_refund(refund.id)
        assert (event["type"], event["data"]["object"]["status"]) == (
            "charge.refund.updated",
            "succeeded",
        )
        assert client.v1.charges.retrieve(charge.id).amount_refunded == 1000

    def test_refunds_page_through_the_list(self, fake, client):
        """A charge with more than ten refunds shows ten when expanded; the list pages on."""
        charge = pay(fake, client)
        for _ in range(12):
            fake.refund(charge.id, amount_minor=10)
        expanded = client.v1.charges.retrieve(charge.id, params={"expand": ["refunds"]})
        assert (len(expanded.refunds.data), expanded.refunds.has_more) == (10, True)
        listed = client.v1.refunds.list(params={"charge": charge.id, "limit": 5})
        assert len(list(listed.auto_paging_iter())) == 12

    def test_a_charged_back_payment_cannot_be_refunded(self, fake, client):
        """Lost dispute: no refund; won dispute: refunds allowed again."""
        lost = pay(fake, client)
        dispute = fake.dispute(lost.id)["data"]["object"]
        fake.dispute_funds_withdrawn(dispute["id"])
        fake.close_dispute(dispute["id"], status="lost")
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.refunds.create(params={"charge": lost.id})
        assert info.value.code == "charge_disputed"
        won = pay(fake, client)
        other = fake.dispute(won.id)["data"]["object"]
        fake.dispute_funds_withdrawn(other["id"])
        fake.dispute_funds_reinstated(other["id"])
        fake.close_dispute(other["id"], status="won")
        assert client.v1.refunds.create(params={"charge": won.id}).status == "succeeded"

    def test_disputes_and_warnings_listed_by_charge(self, fake, client):
        """Disputes and early fraud warnings can be found from the charge or PaymentIntent."""
        charge = pay(fake, client)
        other = pay(fake, client)
        warning = fake.early_fraud_warning(charge.id)
        assert warning["type"] == "radar.early_fraud_warning.created"
        assert warning["data"]["object"]["actionable"] is True
        dispute = fake.dispute(charge.id)["data"]["object"]
        fake.dispute(other.id)
        by_charge = client.v1.disputes.list(params={"charge": charge.id})
        assert [d.id for d in by_charge.data] == [dispute["id"]]
        by_intent = client.v1.disputes.list(params={"payment_intent": charge.payment_intent})
        assert [d.id for d in by_intent.data] == [dispute["id"]]
        warnings = client.v1.radar.early_fraud_warnings.list(params={"charge": charge.id})
        assert [w.fraud_type for w in warnings.data] == ["unauthorized_use_of_card"]


class TestCheckoutAndIdempotency:
    def test_adaptive_pricing_is_on_unless_turned_off(self, fake, client):
        """Sessions use Adaptive Pricing by default; ``adaptive_pricing[enabled]=false`` stops it."""
        on = client.v1.checkout.sessions.create(params=session_params())
        off = client.v1.checkout.sessions.create(
            params=session_params(adaptive_pricing={"enabled": False})
        )
        assert (on.adaptive_pricing.enabled, off.adaptive_pricing.enabled) == (True, False)
        fake.complete_checkout(on.id, exchange_rate=Decimal("1.08"), presentment_currency="gbp")
        with pytest.raises(ValueError, match="Adaptive Pricing disabled"):
            fake.complete_checkout(
                off.id, exchange_rate=Decimal("1.08"), presentment_currency="gbp"
            )

    def test_errors_raised_while_executing_are_replayed(self, fake, client):
        """A stored error is replayed to the same key; an unstored one is not."""
        fake.fail_next("POST", "/v1/accounts", status=500, stored=True)
        params = {"type": "express"}
        for _ in range(2):
            with pytest.raises(stripe.APIError):
                client.v1.accounts.create(params=params, options={"idempotency_key": "a-1"})
        assert fake.requests[-1].replayed
        assert client.v1.accounts.create(
            params=params, options={"idempotency_key": "a-2"}
        ).id.startswith("acct_")

    def test_cross_border_rules(self, fake, client):
        """A US platform: US accounts under ``full``, others need ``recipient``, which cannot
        request card payments."""
        with pytest.raises(stripe.InvalidRequestError, match="card_payments"):
            client.v1.accounts.create(
                params={
                    "type": "express",
                    "country": "DE",
                    "capabilities": {"card_payments": {"requested": True}},
                    "tos_acceptance": {"service_agreement": "recipient"},
                }
            )
        us = client.v1.accounts.create(params={"type": "express", "country": "US"})
        assert us.tos_acceptance.service_agreement == "full"
        with FakeStripe(platform_country="FR") as european:
            other = stripe_client(european).v1.accounts.create(
                params={"type": "express", "country": "DE"}
            )
            assert other.tos_acceptance.service_agreement == "full"
