"""A small world for scenario tests: a gift economy with Stripe payments and Connect payouts,
all against one FakeStripe on the test's clock, and the check that the books agree with Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from spaktok_ledger import (
    CoinPack,
    Gift,
    GiftCatalogue,
    GiftEconomy,
    Ledger,
    PackCatalogue,
    Payments,
    Payouts,
    Pricing,
    ReconcileReport,
    Reconciliation,
    StripeGateway,
)
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeClock, FakeStripe, signed_event, stripe_client

SECRET = "whsec_books_platform"
CONNECT_SECRET = "whsec_books_connect"
URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
PACKS = PackCatalogue(
    [
        CoinPack("starter", 499, 500, name="Starter"),
        CoinPack("big", 5000, 5000, name="Big"),
    ]
)
GIFTS = GiftCatalogue([Gift("rose", 10, "Rose"), Gift("rocket", 1000, "Rocket")])
RATES = {"EUR": Decimal("0.92"), "GBP": Decimal("0.79")}


@dataclass
class Books:
    """Everything a scenario needs, plus helpers that play Stripe's side."""

    ledger: Ledger
    clock: FakeClock
    fake: FakeStripe
    economy: GiftEconomy
    pricing: Pricing
    payments: Payments
    payouts: Payouts
    keys: dict[str, int] = field(default_factory=dict)

    def key(self, prefix: str) -> str:
        self.keys[prefix] = self.keys.get(prefix, 0) + 1
        return f"{prefix}-{self.keys[prefix]}"

    # -- deliveries ------------------------------------------------------------------

    def deliver(self, event: dict[str, Any]) -> str:
        """POST a platform event to the payments endpoint; returns the outcome."""
        return self.payments.handle_webhook(*signed_event(event, SECRET)).outcome

    def deliver_connect(self, event: dict[str, Any]) -> str:
        return self.payouts.handle_webhook(*signed_event(event, CONNECT_SECRET)).outcome

    # -- purchases -------------------------------------------------------------------

    def checkout(self, user: str = "alice", pack: str = "starter", currency: str = "USD"):
        quote = self.pricing.quote(pack, currency=currency, user_id=user)
        return self.payments.create_checkout(
            user, quote.id, idempotency_key=self.key(f"checkout-{user}"), **URLS
        )

    def buy(
        self,
        user: str = "alice",
        pack: str = "starter",
        *,
        currency: str = "USD",
        deliver: bool = True,
        **complete: Any,
    ):
        """A paid purchase (settled in USD unless told); returns the Purchase."""
        result = self.checkout(user, pack, currency)
        if (
            currency != "USD"
            and "exchange_rate" not in complete
            and "settle_currency" not in complete
        ):
            complete["exchange_rate"] = Decimal(1) / RATES[currency]
        event = self.fake.complete_checkout(result.checkout_session_id, **complete)
        if deliver:
            self.deliver(event)
        return self.payments.purchase(result.purchase_id)

    def charge_of(self, purchase_id: str) -> str:
        purchase = self.payments.purchase(purchase_id)
        if purchase.charge_id:
            return purchase.charge_id
        session = stripe_client(self.fake).v1.checkout.sessions.retrieve(
            purchase.checkout_session_id, params={"expand": ["payment_intent"]}
        )
        return str(session.payment_intent.latest_charge)

    # -- the check -------------------------------------------------------------------

    def ledger_stripe_balance(self, currency: str = "USD") -> int:
        code = "platform:stripe_balance" + ("" if currency == "USD" else f":{currency}")
        try:
            return self.ledger.balance(code).posted_minor
        except LookupError:
            return 0

    def stripe_balance(self, currency: str = "USD", account: str | None = None) -> int:
        available, pending = self.fake.balance(account).get(currency.lower(), (0, 0))
        return available + pending

    def reconcile(self) -> ReconcileReport:
        return Reconciliation(self.payments, self.payouts).run()

    def assert_books_match_stripe(self, currencies: tuple[str, ...] = ("USD",)) -> None:
        """The ledger's Stripe balance per currency is Stripe's (available + pending), and
        reconcile() finds nothing to repair and nothing left."""
        for currency in currencies:
            assert self.ledger_stripe_balance(currency) == self.stripe_balance(currency), currency
        report = self.reconcile()
        assert report.ok and not report.drift, report.to_dict()
        assert self.ledger.verify().ok


def make_books(
    ledger: Ledger,
    clock: FakeClock,
    fake: FakeStripe,
    *,
    hold_days: int = 0,
    manual_payouts: bool = False,
    **payment_options: Any,
) -> Books:
    economy = GiftEconomy(ledger, GIFTS, hold_days=hold_days, clock=clock)
    economy.setup()
    economy.register_streamer("bob")
    pricing = Pricing(ledger, PACKS, StaticRateProvider(RATES, clock=clock), clock=clock)
    gateway = StripeGateway(stripe_client(fake, timeout=10))
    payouts = Payouts(
        economy,
        gateway,
        connect_webhook_secret=CONNECT_SECRET,
        minimum_usd_minor=100,
        manual_payouts=manual_payouts,
        clock=clock,
    )
    payments = Payments(
        economy,
        pricing,
        gateway,
        webhook_secret=SECRET,
        clock=clock,
        transfer_events=payouts.handle_event,
        **payment_options,
    )
    return Books(ledger, clock, fake, economy, pricing, payments, payouts)
