"""Buying coins through Stripe: checkout, verified webhooks, refunds, disputes, fees, fraud.

Offline and real: the official ``stripe`` SDK talks to ``FakeStripe`` over
HTTP, and every webhook is signed as Stripe signs it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from spaktok_ledger import (
    AmountBelowMinimum,
    CoinPack,
    FraudRejected,
    GiftEconomy,
    IdempotencyConflict,
    InvalidInput,
    Ledger,
    PackCatalogue,
    PaymentProviderError,
    Payments,
    QuoteExpired,
    RefundPolicy,
    SpendingBlocked,
    StripeGateway,
    UnknownQuote,
    UnsupportedCurrency,
    VelocityLimits,
    WebhookPayloadError,
    WebhookVerificationError,
)
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, sign_payload, signed_event, stripe_client
from tests import apis
from tests.service.conftest import GIFTS

SECRET = "whsec_test_platform"
PACKS = PackCatalogue(
    [
        CoinPack("starter", 499, 500, name="Starter"),
        CoinPack("fan", 1999, 2000, bonus_coins=200, name="Fan"),
        CoinPack("tiny", 30, 30, name="Tiny"),
    ]
)
URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}


@pytest.fixture(params=apis.APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Every test here runs against the sync API and the asyncio API."""
    return str(request.param)


@pytest.fixture
def fake(clock) -> FakeStripe:
    """A Stripe that lives on the test's clock (checkout expiries are checked against it)."""
    with FakeStripe(clock=clock) as fake:
        yield fake


@pytest.fixture
def shop(ledger: Ledger, clock, fake: FakeStripe):
    economy = apis.gift_economy(ledger, GIFTS, hold_days=0, clock=clock)
    economy.setup()
    economy.register_streamer("bob")
    rates = StaticRateProvider(
        {"EUR": Decimal("0.934143"), "JPY": Decimal("160.6165"), "BTN": Decimal("83.4")},
        clock=clock,
    )
    pricing = apis.pricing(ledger, PACKS, rates, clock=clock)
    gateway = StripeGateway(stripe_client(fake, timeout=5))
    payments = apis.payments(economy, pricing, gateway, webhook_secret=SECRET, clock=clock)
    return economy, pricing, payments


def deliver(payments: Payments, event: dict):
    body, header = signed_event(event, SECRET)
    return payments.handle_webhook(body, header)


def checkout(shop, user="alice", pack="starter", currency="EUR", key="k1"):
    economy, pricing, payments = shop
    quote = pricing.quote(pack, currency=currency, user_id=user)
    return payments.create_checkout(user, quote.id, idempotency_key=key, **URLS)


def stripe_calls(fake: FakeStripe, path: str) -> int:
    return sum(1 for r in fake.requests if r.path.startswith(path) and r.method == "POST")


class TestCheckout:
    def test_session_charges_exactly_the_quote(self, shop, fake: FakeStripe) -> None:
        """The session is a one-time payment for the quoted amount, metadata on both objects."""
        _, pricing, payments = shop
        result = checkout(shop)
        assert (result.currency, result.amount_minor) == ("EUR", 466)
        request = [r for r in fake.requests if r.path == "/v1/checkout/sessions"][-1]
        assert request.params["mode"] == "payment"
        assert request.params["line_items"][0]["price_data"]["unit_amount"] == "466"
        assert (
            request.params["payment_intent_data"]["metadata"]["purchase_id"] == result.purchase_id
        )
        assert request.params["client_reference_id"] == result.purchase_id
        assert request.headers["Idempotency-Key"] == f"checkout:{result.purchase_id}"
        purchase = payments.purchase(result.purchase_id)
        assert (purchase.status, purchase.coins, purchase.price_usd_minor) == ("open", 500, 499)

    def test_retry_returns_the_same_session_without_calling_stripe(self, shop, fake) -> None:
        """The same key and request returns the first session; another quote conflicts."""
        economy, pricing, payments = shop
        quote = pricing.quote("starter", currency="EUR", user_id="alice")
        first = payments.create_checkout("alice", quote.id, idempotency_key="k", **URLS)
        calls = stripe_calls(fake, "/v1/checkout/sessions")
        again = payments.create_checkout("alice", quote.id, idempotency_key="k", **URLS)
        assert again == first and again.replayed
        assert stripe_calls(fake, "/v1/checkout/sessions") == calls
        other = pricing.quote("fan", currency="EUR", user_id="alice")
        with pytest.raises(IdempotencyConflict):
            payments.create_checkout("alice", other.id, idempotency_key="k", **URLS)

    def test_refusals_before_any_stripe_call(self, shop, fake, clock) -> None:
        """Bad quotes, currencies, minimums and velocity are refused with no Stripe call."""
        economy, pricing, payments = shop
        calls = stripe_calls(fake, "/v1/checkout/sessions")
        with pytest.raises(UnknownQuote):
            payments.create_checkout("alice", "quote_nope", idempotency_key="a", **URLS)
        expired = pricing.quote("starter", currency="EUR", user_id="alice")
        clock.advance(minutes=20)
        with pytest.raises(QuoteExpired):
            payments.create_checkout("alice", expired.id, idempotency_key="b", **URLS)
        mine = pricing.quote("starter", currency="EUR", user_id="alice")
        with pytest.raises(InvalidInput, match="another user"):
            payments.create_checkout("mallory", mine.id, idempotency_key="c", **URLS)
        btn = replace(mine, id="quote_btn", currency="BTN", local_amount_minor=41616)
        pricing.store.save(btn)
        with pytest.raises(UnsupportedCurrency):
            payments.create_checkout("alice", "quote_btn", idempotency_key="d", **URLS)
        tiny = replace(
            mine,
            id="quote_tiny",
            pack_id="tiny",
            coins=30,
            bonus_coins=0,
            usd_price_minor=30,
            face_value_usd_minor=30,
            local_amount_minor=28,
        )
        pricing.store.save(tiny)
        with pytest.raises(AmountBelowMinimum):
            payments.create_checkout("alice", "quote_tiny", idempotency_key="e", **URLS)
        with pytest.raises(InvalidInput):
            payments.create_checkout(
                "alice",
                mine.id,
                idempotency_key="f",
                success_url="javascript:alert(1)",
                cancel_url="x",
            )
        assert stripe_calls(fake, "/v1/checkout/sessions") == calls

    def test_velocity_limits(self, shop) -> None:
        """Purchases per hour and USD per day are capped per user."""
        economy, pricing, _ = shop
        payments = apis.payments(economy, pricing, shop[2].gateway, webhook_secret=SECRET,
                            velocity=VelocityLimits(max_purchases_per_hour=2,
                                                    max_usd_minor_per_day=3000),
                            clock=shop[2].clock)
        for key in ("v1", "v2"):
            quote = pricing.quote("starter", user_id="alice")
            payments.create_checkout("alice", quote.id, idempotency_key=key, **URLS)
        with pytest.raises(FraudRejected, match="an hour"):
            payments.create_checkout(
                "alice", pricing.quote("starter").id, idempotency_key="v3", **URLS
            )
        big = pricing.quote("fan", user_id="carol")
        payments.create_checkout("carol", big.id, idempotency_key="c1", **URLS)
        with pytest.raises(FraudRejected, match="in a day"):
            payments.create_checkout("carol", pricing.quote("fan").id, idempotency_key="c2", **URLS)

    def test_stripe_error_then_retry(self, shop, fake) -> None:
        """A Stripe refusal is a PaymentProviderError; a retry with the same key works."""
        _, pricing, payments = shop
        quote = pricing.quote("starter", currency="EUR", user_id="alice")
        fake.fail_next("POST", "/v1/checkout/sessions", status=500, error_type="api_error")
        with pytest.raises(PaymentProviderError) as info:
            payments.create_checkout("alice", quote.id, idempotency_key="err", **URLS)
        assert info.value.retryable
        result = payments.create_checkout("alice", quote.id, idempotency_key="err", **URLS)
        assert payments.purchase(result.purchase_id).status == "open"

    def test_timeout_then_retry_makes_one_session(self, shop, fake) -> None:
        """A lost answer, then a retry with the same key, yields one session, not two."""
        _, pricing, payments = shop
        quote = pricing.quote("starter", currency="EUR", user_id="alice")
        fake.drop_next("POST", "/v1/checkout/sessions")
        with pytest.raises(PaymentProviderError):
            payments.create_checkout("alice", quote.id, idempotency_key="t", **URLS)
        before = len([o for o in fake.events if o["type"] == "checkout.session.created"])
        result = payments.create_checkout("alice", quote.id, idempotency_key="t", **URLS)
        replayed = [r for r in fake.requests if r.path == "/v1/checkout/sessions"][-1]
        assert replayed.headers["Idempotency-Key"] == f"checkout:{result.purchase_id}"
        assert len([o for o in fake.events if o["type"] == "checkout.session.created"]) == before


class TestWebhooks:
    def test_paid_checkout_credits_once(self, shop, fake) -> None:
        """checkout.session.completed credits the pack's coins once; a redelivery is a duplicate."""
        economy, _, payments = shop
        result = checkout(shop, pack="fan")
        event = fake.complete_checkout(result.checkout_session_id, exchange_rate=Decimal("1.0705"))
        first = deliver(payments, event)
        assert (first.outcome, first.subject_id) == ("credited", result.purchase_id)
        again = deliver(payments, event)
        assert again.duplicate and again.outcome == "duplicate"
        assert economy.wallet("alice").coins == 2200
        assert economy.ledger.balance("platform:coin_pricing").posted_minor == -201  # bonus coins
        assert economy.ledger.verify().ok

    def test_fees_and_fx_settle_the_clearing_account(self, shop, fake) -> None:
        """Stripe's fee and the FX difference are booked: clearing ends at zero."""
        economy, _, payments = shop
        result = checkout(shop)  # 4.66 EUR for a 4.99 USD pack
        event = fake.complete_checkout(
            result.checkout_session_id, exchange_rate=Decimal("1.0921"), fee_minor=45
        )
        deliver(payments, event)
        b = economy.ledger.balances(
            [
                "platform:stripe_clearing",
                "platform:stripe_balance",
                "platform:payment_fees",
                "platform:fx_gain_loss",
            ]
        )
        settled = 509  # 466 EUR cents x 1.0921, half up
        assert b["platform:stripe_clearing"].posted_minor == 0
        assert b["platform:stripe_balance"].posted_minor == settled - 45
        assert b["platform:payment_fees"].posted_minor == 45
        assert b["platform:fx_gain_loss"].posted_minor == settled - 499  # an FX gain of 10 cents

    @pytest.mark.parametrize(
        ("header", "error"),
        [
            ("t=1,v1=deadbeef", WebhookVerificationError),
            ("", WebhookVerificationError),
        ],
    )
    def test_forged_signatures(self, shop, fake, header, error) -> None:
        """Forged or missing signatures are rejected before anything is read."""
        body = json.dumps({"id": "evt_x", "object": "event", "type": "x", "data": {"object": {}}})
        with pytest.raises(error):
            shop[2].handle_webhook(body.encode(), header)

    def test_tampered_stale_and_non_events(self, shop, fake) -> None:
        """A tampered body, a stale timestamp and a signed non-event are all refused."""
        payments = shop[2]
        result = checkout(shop)
        event = fake.complete_checkout(result.checkout_session_id, exchange_rate=Decimal("1.07"))
        body, header = signed_event(event, SECRET)
        with pytest.raises(WebhookVerificationError):
            payments.handle_webhook(body.replace(b'"paid"', b'"PAID"'), header)
        stale = sign_payload(body, SECRET, timestamp=int(time.time()) - 3600)
        with pytest.raises(WebhookVerificationError):
            payments.handle_webhook(body, stale)
        with pytest.raises(WebhookVerificationError):
            payments.handle_webhook(body, sign_payload(body, "whsec_other"))
        not_event = b'{"hello": "world"}'
        with pytest.raises(WebhookPayloadError):
            payments.handle_webhook(not_event, sign_payload(not_event, SECRET))
        assert payments.purchase(result.purchase_id).status == "open"  # nothing was applied

    def test_unknown_event_types_are_ignored(self, shop) -> None:
        """An event type the service does not handle is acknowledged, ignored, and not
        recorded (so the endpoint it was meant for can still apply it)."""
        event = {
            "id": "evt_ping",
            "object": "event",
            "type": "account.updated",
            "created": int(time.time()),
            "data": {"object": {"id": "acct_1"}},
        }
        assert deliver(shop[2], event).outcome == "ignored"
        assert shop[2].inbox.status("evt_ping") is None

    def test_transfer_events_are_handed_to_payouts(self, shop) -> None:
        """transfer.* events reaching the platform endpoint go to the transfer handler."""
        from spaktok_ledger import WebhookResult

        seen = []
        shop[2].transfer_events = lambda e: seen.append(e.id) or WebhookResult(e.id, e.type, "x")
        event = {
            "id": "evt_tr",
            "object": "event",
            "type": "transfer.reversed",
            "created": int(time.time()),
            "data": {"object": {"id": "tr_1"}},
        }
        assert deliver(shop[2], event).outcome == "x"
        assert seen == ["evt_tr"]

    def test_delayed_payment_methods(self, shop, fake) -> None:
        """An unpaid completion waits; async success credits; async failure fails."""
        economy, _, payments = shop
        ok = checkout(shop, key="sepa-ok")
        assert (
            deliver(
                payments,
                fake.complete_checkout(
                    ok.checkout_session_id, paid=False, exchange_rate=Decimal("1.07")
                ),
            ).outcome
            == "waiting"
        )
        assert not _has_wallet(economy, "alice") or economy.wallet("alice").coins == 0
        assert (
            deliver(payments, fake.async_payment_succeeded(ok.checkout_session_id)).outcome
            == "credited"
        )
        bad = checkout(shop, user="carol", key="sepa-bad")
        deliver(
            payments,
            fake.complete_checkout(
                bad.checkout_session_id, paid=False, exchange_rate=Decimal("1.07")
            ),
        )
        assert (
            deliver(payments, fake.async_payment_failed(bad.checkout_session_id)).outcome
            == "failed"
        )
        assert payments.purchase(bad.purchase_id).status == "failed"
        expiring = checkout(shop, user="carol", key="exp")
        assert (
            deliver(payments, fake.expire_checkout(expiring.checkout_session_id)).outcome
            == "expired"
        )

    def test_amount_mismatch_credits_nothing(self, shop, fake) -> None:
        """If Stripe charged something else than the quote, nothing is credited and it is reported."""
        economy, pricing, payments = shop
        quote = pricing.quote("starter", currency="EUR", user_id="alice")
        client = stripe_client(fake)
        metadata = {
            "purchase_id": "pur_forged",
            "user_id": "alice",
            "quote_id": quote.id,
            "pack_id": "starter",
        }
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "success_url": URLS["success_url"],
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "eur",
                            "unit_amount": 1,
                            "product_data": {"name": "x"},
                        },
                    }
                ],
            }
        )
        result = deliver(
            payments, fake.complete_checkout(session.id, exchange_rate=Decimal("1.07"))
        )
        assert result.outcome == "amount_mismatch"
        assert payments.purchase("pur_forged").status == "mismatch"
        assert economy.wallet("alice").coins == 0
        assert any(e.topic == "purchase.amount_mismatch" for e in economy.outbox.pending())


class TestRefundsAndDisputes:
    def buy_and_spend(self, shop, fake, spend_coins: int):
        economy, _, payments = shop
        result = checkout(shop)
        event = fake.complete_checkout(result.checkout_session_id, exchange_rate=Decimal("1.0705"))
        deliver(payments, event)
        if spend_coins:
            economy.send_gift("alice", "bob", "rose", spend_coins // 10, idempotency_key="spend")
        return result, payments.purchase(result.purchase_id)

    def test_full_refund_of_unspent_coins(self, shop, fake) -> None:
        """A full refund claws back every coin and leaves the books settled."""
        economy, _, payments = shop
        _, purchase = self.buy_and_spend(shop, fake, 0)
        assert deliver(payments, fake.refund(purchase.charge_id)).outcome == "clawed_back"
        assert economy.wallet("alice").coins == 0
        assert payments.purchase(purchase.id).clawed_coins == 500
        assert economy.ledger.verify().ok

    def test_partial_refunds_claw_back_proportionally(self, shop, fake) -> None:
        """Two partial refunds claw back their share each; together, everything."""
        economy, _, payments = shop
        _, purchase = self.buy_and_spend(shop, fake, 0)
        deliver(payments, fake.refund(purchase.charge_id, amount_minor=233))  # half of 466
        assert economy.wallet("alice").coins == 250
        deliver(payments, fake.refund(purchase.charge_id, amount_minor=233))
        assert economy.wallet("alice").coins == 0

    def test_spent_coins_become_debt_by_default(self, shop, fake) -> None:
        """Under the default policy, spent coins become a debt that blocks spending."""
        economy, _, payments = shop
        _, purchase = self.buy_and_spend(shop, fake, 300)
        deliver(payments, fake.refund(purchase.charge_id))
        wallet = economy.wallet("alice")
        assert (wallet.coins, wallet.debt_usd_minor) == (0, 300)
        with pytest.raises(SpendingBlocked):
            economy.send_gift("alice", "bob", "rose", 1, idempotency_key="after")
        assert economy.ledger.verify().ok

    def test_platform_loss_policy(self, shop, fake) -> None:
        """Under PLATFORM_LOSS, spent coins are the platform's loss, not the user's debt."""
        economy, pricing, payments = shop
        lossy = apis.payments(economy, pricing, payments.gateway, webhook_secret=SECRET,
                         refund_policy=RefundPolicy.PLATFORM_LOSS, clock=payments.clock)
        result = checkout(shop, key="loss")
        deliver(
            lossy, fake.complete_checkout(result.checkout_session_id, exchange_rate=Decimal("1.07"))
        )
        economy.send_gift("alice", "bob", "rose", 20, idempotency_key="spend")
        deliver(lossy, fake.refund(lossy.purchase(result.purchase_id).charge_id))
        assert economy.wallet("alice").debt_usd_minor == 0
        assert economy.ledger.balance("platform:refund_losses").posted_minor == 200

    def test_dispute_lost_then_won(self, shop, fake) -> None:
        """Funds withdrawn claw back the coins and book the fee; reinstated funds restore them."""
        economy, _, payments = shop
        _, purchase = self.buy_and_spend(shop, fake, 100)
        created = fake.dispute(purchase.charge_id)
        dispute_id = created["data"]["object"]["id"]
        deliver(payments, created)
        assert deliver(payments, fake.dispute_funds_withdrawn(dispute_id)).outcome == "clawed_back"
        wallet = economy.wallet("alice")
        assert (wallet.coins, wallet.debt_usd_minor) == (0, 100)
        assert economy.ledger.balance("platform:payment_fees").posted_minor > 1500
        assert deliver(payments, fake.dispute_funds_reinstated(dispute_id)).outcome == "restored"
        wallet = economy.wallet("alice")
        assert (wallet.coins, wallet.debt_usd_minor) == (400, 0)
        assert deliver(payments, fake.close_dispute(dispute_id, status="won")).outcome in (
            "no_change",
            "settled",
        )
        assert economy.ledger.balance("platform:stripe_clearing").posted_minor == 0
        assert economy.ledger.verify().ok

    def test_refund_before_completion(self, shop, fake) -> None:
        """A refund that arrives before the completion event still credits, then claws back."""
        economy, _, payments = shop
        result = checkout(shop)
        completed = fake.complete_checkout(
            result.checkout_session_id, exchange_rate=Decimal("1.07")
        )
        charge = payments.gateway.purchase_state(result.checkout_session_id).charge_id
        refunded = fake.refund(charge)
        assert deliver(payments, refunded).outcome == "credited"
        assert economy.wallet("alice").coins == 0
        assert payments.purchase(result.purchase_id).clawed_coins == 500
        assert deliver(payments, completed).outcome == "no_change"
        assert economy.wallet("alice").coins == 0

    def test_unknown_purchase_is_found_from_stripe(self, shop, fake) -> None:
        """An event about a purchase the database does not know yet is resolved from Stripe
        (the PaymentIntent's Checkout Session and its metadata), not parked."""
        economy, pricing, payments = shop
        quote = pricing.quote("starter", currency="EUR", user_id="dora")
        client = stripe_client(fake)
        metadata = {
            "purchase_id": "pur_lost",
            "user_id": "dora",
            "quote_id": quote.id,
            "pack_id": "starter",
        }
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "success_url": URLS["success_url"],
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "eur",
                            "unit_amount": 466,
                            "product_data": {"name": "x"},
                        },
                    }
                ],
            }
        )
        completed = fake.complete_checkout(session.id, exchange_rate=Decimal("1.07"))
        charge = payments.gateway.purchase_state(session.id).charge_id
        refund = fake.refund(charge, amount_minor=100)
        assert deliver(payments, refund).outcome == "credited"  # adopted, then clawed back
        assert payments.purchase("pur_lost").refunded_stripe_amount == 100
        assert deliver(payments, completed).outcome == "no_change"
        assert economy.wallet("dora").coins == 500 - 107
        assert payments.retry_parked() == []

    def test_event_about_no_purchase_is_parked(self, shop, fake) -> None:
        """A refund of a payment that came from no Checkout Session is parked, not lost."""
        _, _, payments = shop
        event = {
            "id": "evt_foreign",
            "object": "event",
            "type": "charge.refunded",
            "created": int(time.time()),
            "data": {
                "object": {"id": "ch_foreign", "object": "charge", "payment_intent": "pi_foreign"}
            },
        }
        assert deliver(payments, event).outcome == "parked"
        assert [r.outcome for r in payments.retry_parked()] == ["parked"]


class TestFraud:
    def test_elevated_risk_is_held_then_released(self, shop, fake) -> None:
        """Radar 'elevated' credits coins as pending; release makes them spendable."""
        economy, _, payments = shop
        result = checkout(shop)
        event = fake.complete_checkout(
            result.checkout_session_id, risk_level="elevated", exchange_rate=Decimal("1.07")
        )
        assert deliver(payments, event).outcome == "held"
        wallet = economy.wallet("alice")
        assert (wallet.coins, wallet.pending_coins) == (0, 500)
        payments.release(result.purchase_id)
        assert economy.wallet("alice").coins == 500
        assert economy.ledger.verify().ok

    def test_highest_risk_is_refused_and_refunded(self, shop, fake) -> None:
        """Radar 'highest' credits nothing and asks Stripe for a refund."""
        economy, _, payments = shop
        result = checkout(shop)
        event = fake.complete_checkout(
            result.checkout_session_id, risk_level="highest", exchange_rate=Decimal("1.07")
        )
        assert deliver(payments, event).outcome == "refused"
        refund = [r for r in fake.requests if r.path == "/v1/refunds"][-1]
        # The key names what is refunded: a retry refunds it once.
        assert refund.headers["Idempotency-Key"] == f"refund:{result.purchase_id}:refused:466"
        assert not _has_wallet(economy, "alice") or economy.wallet("alice").coins == 0

    def test_held_then_refused(self, shop, fake) -> None:
        """A held purchase refused after review voids its pending coins."""
        economy, _, payments = shop
        result = checkout(shop)
        deliver(
            payments,
            fake.complete_checkout(
                result.checkout_session_id, risk_level="elevated", exchange_rate=Decimal("1.07")
            ),
        )
        assert payments.refuse(result.purchase_id).status == "refused"
        assert economy.wallet("alice").pending_coins == 0
        with pytest.raises(InvalidInput):
            payments.release(result.purchase_id)


def _has_wallet(economy: GiftEconomy, user: str) -> bool:
    try:
        economy.wallet(user)
    except LookupError:
        return False
    return True


def test_checkout_ttl_bounds(shop) -> None:
    """Stripe only accepts sessions expiring 30 minutes to 24 hours ahead."""
    economy, pricing, payments = shop
    with pytest.raises(InvalidInput):
        apis.payments(economy, pricing, payments.gateway, webhook_secret=SECRET,
                 checkout_ttl=timedelta(minutes=5))


class TestOrderAndRetryEdgeCases:
    """Scenarios from the review of the purchase flow: each once broke the books."""

    def paid(self, shop, fake, **kw):
        _, _, payments = shop
        result = checkout(shop)
        deliver(
            payments,
            fake.complete_checkout(
                result.checkout_session_id, exchange_rate=Decimal("1.0705"), **kw
            ),
        )
        return result, payments.purchase(result.purchase_id)

    def test_dispute_won_with_fee_returned_restores(self, shop, fake) -> None:
        """Totals that come back to earlier values do not collide with earlier entries."""
        economy, _, payments = shop
        _, purchase = self.paid(shop, fake, fee_minor=45)
        dispute = fake.dispute(purchase.charge_id)
        dispute_id = dispute["data"]["object"]["id"]
        deliver(payments, dispute)
        deliver(payments, fake.dispute_funds_withdrawn(dispute_id))
        result = deliver(
            payments, fake.dispute_funds_reinstated(dispute_id, fee_returned_minor=1500)
        )
        assert result.outcome == "restored"
        assert economy.wallet("alice").coins == 500
        assert payments.sync(purchase.id).clawed_coins == 0
        assert economy.ledger.verify().ok

    def test_refund_after_a_dispute_was_won(self, shop, fake) -> None:
        """Lost, then won, then refunded: the refund still claws the coins back."""
        economy, _, payments = shop
        _, purchase = self.paid(shop, fake)
        dispute = fake.dispute(purchase.charge_id)
        dispute_id = dispute["data"]["object"]["id"]
        deliver(payments, dispute)
        deliver(payments, fake.dispute_funds_withdrawn(dispute_id))
        deliver(payments, fake.dispute_funds_reinstated(dispute_id))
        deliver(payments, fake.close_dispute(dispute_id, status="won"))
        assert deliver(payments, fake.refund(purchase.charge_id)).outcome == "clawed_back"
        assert economy.wallet("alice").coins == 0
        assert economy.ledger.verify().ok

    def test_an_older_snapshot_cannot_undo_settlement(self, shop, fake) -> None:
        """Two refund webhooks racing: the one holding the older snapshot commits last."""
        economy, _, payments = shop
        result, purchase = self.paid(shop, fake, fee_minor=45)
        first = fake.refund(purchase.charge_id, amount_minor=100)
        stale = payments.gateway.purchase_state(result.checkout_session_id)
        deliver(payments, fake.refund(purchase.charge_id, amount_minor=100))
        payments._converge(payments.gateway.parse_event(first), purchase.id, stale)
        state = payments.gateway.purchase_state(result.checkout_session_id)
        net = sum(t.net_minor for t in state.balance_transactions)
        books = economy.ledger.balances(["platform:stripe_balance", "platform:stripe_clearing"])
        assert books["platform:stripe_balance"].posted_minor == net
        assert books["platform:stripe_clearing"].posted_minor == 0
        assert economy.wallet("alice").coins == 500 - 215  # two refunds of 100 of 466 cents

    def test_sync_twice(self, shop, fake) -> None:
        """Reconciling by sync() after each of two missed refunds works both times."""
        _, _, payments = shop
        _, purchase = self.paid(shop, fake)
        fake.refund(purchase.charge_id, amount_minor=100)
        assert payments.sync(purchase.id).clawed_coins == 107
        fake.refund(purchase.charge_id, amount_minor=100)
        assert payments.sync(purchase.id).clawed_coins == 215

    def test_checkout_retry_after_the_clock_moved(self, shop, fake, clock) -> None:
        """A retry seconds later sends Stripe the same parameters (the stored expiry)."""
        _, pricing, payments = shop
        quote = pricing.quote("starter", currency="EUR", user_id="alice")
        fake.drop_next("POST", "/v1/checkout/sessions")
        with pytest.raises(PaymentProviderError):
            payments.create_checkout("alice", quote.id, idempotency_key="t", **URLS)
        clock.advance(seconds=3)
        result = payments.create_checkout("alice", quote.id, idempotency_key="t", **URLS)
        assert payments.purchase(result.purchase_id).status == "open"

    def test_refused_purchase_refund_is_retried(self, shop, fake) -> None:
        """If refunding a refused purchase fails once, sync() sends it again, once."""
        _, _, payments = shop
        result = checkout(shop)
        event = fake.complete_checkout(
            result.checkout_session_id, risk_level="highest", exchange_rate=Decimal("1.07")
        )
        fake.fail_next("POST", "/v1/refunds", status=500, error_type="api_error")
        assert deliver(payments, event).outcome == "refused"
        assert deliver(payments, event).outcome == "duplicate"
        payments.retry_refunds()
        state = payments.gateway.purchase_state(result.checkout_session_id)
        assert state.amount_refunded == state.stripe_amount
        payments.sync(result.purchase_id)
        assert payments.retry_refunds() == []

    def test_released_coins_repay_a_debt_first(self, shop, fake) -> None:
        """A user in debt whose held purchase is released repays before spending."""
        economy, _, payments = shop
        _, purchase = self.paid(shop, fake)
        economy.send_gift("alice", "bob", "rose", 30, idempotency_key="spend")
        deliver(payments, fake.refund(purchase.charge_id))
        assert economy.wallet("alice").debt_usd_minor == 300
        second = checkout(shop, key="k2")
        deliver(
            payments,
            fake.complete_checkout(
                second.checkout_session_id, risk_level="elevated", exchange_rate=Decimal("1.07")
            ),
        )
        payments.release(second.purchase_id)
        wallet = economy.wallet("alice")
        assert (wallet.coins, wallet.debt_usd_minor) == (200, 0)
        assert economy.ledger.verify().ok
