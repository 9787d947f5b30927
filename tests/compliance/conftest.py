"""Fixtures for the compliance tests: a keyring, a monitored gift economy, payouts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy, Ledger, StripeGateway
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger.compliance import Compliance, Keyring, MonitoringConfig
from spaktok_ledger.testing import FakeClock, FakeStripe, signed_event, stripe_client

GIFTS = GiftCatalogue(
    [Gift("rose", 10, "Rose"), Gift("heart", 99, "Heart"), Gift("rocket", 5000, "Rocket")]
)
CONNECT_SECRET = "whsec_compliance_connect"
KEY_1 = bytes(range(32))
KEY_2 = bytes(range(32, 64))

# Thresholds that stay out of the way, so a test turns on the one rule it is about.
QUIET = MonitoringConfig(
    max_purchases=None,
    max_purchase_usd_minor=None,
    max_gifts=None,
    max_gift_usd_minor=None,
    max_payouts=None,
    max_payout_usd_minor=None,
    structuring_threshold_usd_minor=None,
    rapid_min_usd_minor=10**12,
    concentration_min_usd_minor=10**12,
    payout_review_usd_minor=None,
    payer_min_disputes=10**6,
    streamer_disputed_min_usd_minor=10**12,
)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k1": KEY_1})


def build(ledger: Ledger, clock: FakeClock, **options) -> tuple[Compliance, GiftEconomy]:
    """A compliance object (QUIET unless ``config`` is given) and its gift economy."""
    options.setdefault("config", QUIET)
    hold_days = options.pop("hold_days", 0)  # shares payable at once unless a test says so
    compliance = Compliance(ledger, clock=clock, **options)
    economy = GiftEconomy(
        ledger, GIFTS, clock=clock, compliance=compliance, hold_days=hold_days
    )
    economy.setup()
    return compliance, economy


def fund(economy: GiftEconomy, user: str, coins: int, key: str | None = None, **options):
    """Credit coins as if a purchase at face value was confirmed."""
    return economy.credit_purchase(
        user,
        coins=coins,
        price_usd_minor=coins,
        idempotency_key=key or f"fund:{user}:{coins}:{economy.clock().isoformat()}",
        **options,
    )


def age(clock: FakeClock, days: int = 20) -> None:
    """Let the accounts opened so far grow older than the rules' "new payer" age."""
    clock.advance(timedelta(days=days))


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeStripe]:
    """A Stripe on the test's clock (checkout expiries are checked against it), with
    money on the platform's balance for transfers."""
    with FakeStripe(clock=clock) as fake:
        fake.top_up(10_000_000)
        yield fake


@dataclass
class PayoutWorld:
    compliance: Compliance
    economy: GiftEconomy
    payouts: Payouts
    fake: FakeStripe
    clock: FakeClock

    def link(self, streamer: str) -> str:
        self.economy.register_streamer(streamer)
        account = self.fake.create_account(onboarded=True)["id"]
        self.payouts.link_account(streamer, account)
        return account

    def transfers(self) -> list[dict]:
        return [e["data"]["object"] for e in self.fake.events if e["type"] == "transfer.created"]

    def deliver(self, event: dict):
        return self.payouts.handle_webhook(*signed_event(event, CONNECT_SECRET))


def payout_world(
    ledger: Ledger, clock: FakeClock, fake: FakeStripe, **options
) -> PayoutWorld:
    compliance, economy = build(ledger, clock, **options)
    gateway = StripeGateway(stripe_client(fake, timeout=10))
    payouts = Payouts(
        economy, gateway, connect_webhook_secret=CONNECT_SECRET, minimum_usd_minor=100
    )
    return PayoutWorld(compliance, economy, payouts, fake, clock)


PLATFORM_SECRET = "whsec_compliance_platform"


@dataclass
class Shop:
    """Coin purchases through FakeStripe on a monitored economy."""

    compliance: Compliance
    economy: GiftEconomy
    payments: object
    pricing: object
    fake: FakeStripe

    def buy(self, user: str, key: str, *, pack: str = "starter", **completion) -> str:
        """Check out and pay a pack; returns the purchase id (the webhook applied)."""
        quote = self.pricing.quote(pack, currency="USD", user_id=user)
        result = self.payments.create_checkout(
            user,
            quote.id,
            idempotency_key=key,
            success_url="https://app.example/ok",
            cancel_url="https://app.example/no",
        )
        self.deliver(self.fake.complete_checkout(result.checkout_session_id, **completion))
        return result.purchase_id

    def deliver(self, event: dict):
        return self.payments.handle_webhook(*signed_event(event, PLATFORM_SECRET))


def shop(ledger: Ledger, clock: FakeClock, fake: FakeStripe, **options) -> Shop:
    from spaktok_ledger import CoinPack, PackCatalogue, Payments, Pricing
    from spaktok_ledger.fx import StaticRateProvider

    compliance, economy = build(ledger, clock, **options)
    packs = PackCatalogue(
        [CoinPack("starter", 499, 500, name="Starter"), CoinPack("big", 9_900, 10_000)]
    )
    pricing = Pricing(ledger, packs, StaticRateProvider({}, clock=clock), clock=clock)
    gateway = StripeGateway(stripe_client(fake, timeout=10))
    payments = Payments(economy, pricing, gateway, webhook_secret=PLATFORM_SECRET, clock=clock)
    return Shop(compliance, economy, payments, pricing, fake)
