"""The demo behind ``spaktok-ledger demo`` (and ``python3 dev.py demo``).

It tells the gift economy's story on a fresh embedded SQLite file, through the
library's public API only, and prints what an operator would look at.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from spaktok_ledger._catalogue import CoinPack, Gift, GiftCatalogue, PackCatalogue
from spaktok_ledger._cli_base import money, table
from spaktok_ledger._errors import InsufficientFunds
from spaktok_ledger._format import format_price
from spaktok_ledger._service import GiftEconomy, Payments, Payouts, Pricing
from spaktok_ledger._store import Ledger
from spaktok_ledger._stripe import StripeGateway
from spaktok_ledger.cli import print_trial_balance
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeClock, FakeStripe, signed_event, stripe_client

__all__ = ["run_demo"]

PACKS = PackCatalogue(
    (
        CoinPack("starter", usd_price_minor=499, coins=500, name="Starter"),
        CoinPack("fan", usd_price_minor=1999, coins=2000, bonus_coins=200, name="Fan"),
    )
)
GIFTS = GiftCatalogue(
    (
        Gift("rose", 10, "Rose"),
        Gift("heart", 99, "Heart"),
        Gift("crown", 499, "Crown"),
    )
)
VIEWERS = ("alice", "amir", "yuki")
STREAMERS = ("bob", "lena")
WEBHOOK_SECRET = "whsec_demo"  # noqa: S105 - the fake Stripe's test secret
CONNECT_SECRET = "whsec_demo_connect"  # noqa: S105 - the Connect endpoint's, in the fake
# Sample ECB-derived rates (USD -> currency) so the demo runs offline; a real
# deployment uses CachedRateProvider(ECBRateProvider()).
DEMO_RATES = {"EUR": Decimal("0.934143"), "JPY": Decimal("160.6165"), "BRL": Decimal("5.5035")}


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            candidate.unlink()


def run_demo(file: str, out: TextIO) -> int:
    """Run the demo on ``file`` (deleted and recreated: the demo owns it)."""
    path = Path(file)
    _fresh(path)
    out.write(f"spaktok-ledger demo on {path} (embedded SQLite, created fresh)\n\n")
    # One clock for the ledger and the fake Stripe, so the story can let days pass:
    # card funds become available after two days, gift shares mature after the hold.
    clock = FakeClock()
    with Ledger(f"sqlite:///{path}", clock=clock) as ledger:
        economy = GiftEconomy(ledger, GIFTS, clock=clock)
        economy.setup()
        economy.register_streamer("bob")
        economy.register_streamer("lena", streamer_bps=5000)
        out.write(
            "1. schema migrated; platform accounts opened; streamers bob (default 40/60\n"
            "   split) and lena (partner: 50/50)\n"
        )

        with FakeStripe(clock=clock) as fake:
            pricing = Pricing(ledger, PACKS, StaticRateProvider(DEMO_RATES, clock=clock))
            gateway = StripeGateway(stripe_client(fake, timeout=10))
            payments = Payments(
                economy, pricing, gateway, webhook_secret=WEBHOOK_SECRET, clock=clock
            )
            _buy_coins(out, fake, pricing, payments)
            out.write("\n3. a burst of gifts during two streams\n")
            _gift_burst(out, economy)
            _refund_partly_spent(out, fake, economy, payments)
            payouts = Payouts(
                economy,
                gateway,
                connect_webhook_secret=CONNECT_SECRET,
                manual_payouts=True,
                minimum_usd_minor=500,  # USD 5.00 for the demo (the default is USD 50.00)
                clock=clock,
            )
            payments.transfer_events = payouts.handle_event
            _cash_out(out, fake, clock, economy, payouts)
        _report(out, ledger, economy)
        report = ledger.verify()
        out.write(f"\nverify: {'ok' if report.ok else report.problems}\n")
        return 0 if report.ok else 1


def _buy_coins(out: TextIO, fake: FakeStripe, pricing: Pricing, payments: Payments) -> None:
    out.write(
        "\n2. viewers buy coins through Stripe Checkout (the real stripe SDK against a local\n"
        "   fake Stripe; webhooks signed with a test secret)\n"
    )
    purchases = [
        ("alice", "fan", "de_DE"),
        ("amir", "starter", "pt_BR"),
        ("yuki", "starter", "ja_JP"),
        ("yuki", "fan", "ja_JP"),
    ]
    for n, (viewer, pack_id, locale) in enumerate(purchases):
        quote = pricing.quote(pack_id, locale=locale, user_id=viewer)
        checkout = payments.create_checkout(
            viewer,
            quote.id,
            success_url="https://spaktok.example/paid",
            cancel_url="https://spaktok.example/store",
            idempotency_key=f"demo-checkout-{n}",
        )
        rate = None if quote.currency == "USD" else (1 / quote.rate).quantize(Decimal("0.000001"))
        event = fake.complete_checkout(checkout.checkout_session_id, exchange_rate=rate)
        body, signature = signed_event(event, WEBHOOK_SECRET)
        result = payments.handle_webhook(body, signature)
        again = payments.handle_webhook(body, signature)
        out.write(
            f"   {viewer:<5} {pack_id:<7} quoted {quote.display:>9} ({locale}), "
            f"checkout {checkout.checkout_session_id[:14]}..., webhook: {result.outcome}"
            f"{'' if n else f' (redelivered: {again.outcome})'}\n"
        )


def _gift_burst(out: TextIO, economy: GiftEconomy) -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible story, not secrets
    sent = refused = 0
    for n in range(40):
        viewer, streamer = rng.choice(VIEWERS), rng.choice(STREAMERS)
        gift = rng.choices(GIFTS.gifts, weights=(6, 3, 1))[0]
        try:
            economy.send_gift(
                viewer, streamer, gift.id, rng.randint(1, 2), idempotency_key=f"demo:{n}"
            )
            sent += 1
        except InsufficientFunds:
            refused += 1
    out.write(f"   {sent} gifts sent, {refused} refused for insufficient coins\n")
    richest = max(VIEWERS, key=lambda v: economy.wallet(v).coins)
    first = economy.send_gift(richest, "bob", "heart", 1, idempotency_key="demo:retry")
    again = economy.send_gift(richest, "bob", "heart", 1, idempotency_key="demo:retry")
    out.write(
        f"   a retried request returns the original receipt #{again.entry_id}: "
        f"replayed={again.replayed}, same={again == first}\n"
    )
    split = first.gift
    out.write(
        f"   e.g. 1 Heart = {money(split.value_usd_minor)}: "
        f"{money(split.streamer_share_minor)} to bob, "
        f"{money(split.platform_share_minor)} to the platform\n"
    )


def _refund_partly_spent(
    out: TextIO, fake: FakeStripe, economy: GiftEconomy, payments: Payments
) -> None:
    """Amir spent part of his pack, then the payment is refunded in full."""
    purchase = payments.purchases("amir")[0]
    before = economy.wallet("amir")
    assert purchase.charge_id is not None
    event = fake.refund(purchase.charge_id)
    body, signature = signed_event(event, WEBHOOK_SECRET)
    result = payments.handle_webhook(body, signature)
    after = economy.wallet("amir")
    out.write(
        f"\n4. amir's {format_price(purchase.local_amount_minor, purchase.currency, 'pt_BR')} "
        f"purchase is refunded after he spent {purchase.coins - before.coins} of its "
        f"{purchase.coins} coins\n"
        f"   webhook: {result.outcome}; wallet {before.coins} -> {after.coins} coins, "
        f"debt {money(after.debt_usd_minor)} (default policy: spending blocked until repaid)\n"
    )


def _connect(fake: FakeStripe, payouts: Payouts, event: dict[str, object]) -> str:
    """Deliver a Connect event as Stripe would (signed for the Connect endpoint)."""
    body, signature = signed_event(event, CONNECT_SECRET)
    return payouts.handle_webhook(body, signature).outcome


def _cash_out(
    out: TextIO, fake: FakeStripe, clock: FakeClock, economy: GiftEconomy, payouts: Payouts
) -> None:
    out.write("\n5. bob cashes out through Stripe Connect (manual bank payouts)\n")
    days = max(economy.hold_days, 2)
    clock.advance(days=days)
    matured = sum(m.amount_minor for m in economy.mature_earnings())
    out.write(
        f"   {days} days later: the card payments' funds are available at Stripe, and "
        f"{money(matured)} of gift shares matured (a {economy.hold_days}-day hold period "
        "against chargeback fraud)\n"
    )
    account = payouts.create_express_account("bob", country="DE", email="bob@example.com")
    out.write(
        f"   Express account {account.account_id} in DE (cross-border: the recipient service "
        f"agreement): KYC {account.kyc_status}, payouts enabled: {account.payouts_enabled}\n"
    )
    outcome = _connect(fake, payouts, fake.onboard_account(account.account_id))
    status = payouts.account_status("bob")
    assert status is not None
    out.write(f"   account.updated -> {outcome}: KYC {status.kyc_status}\n")
    first = payouts.request_payout("bob", 500, idempotency_key="demo-payout-1")
    out.write(
        f"   payout {first.payout_id} of {money(500)} requested: transfer made, it arrives "
        f"as {first.arrival_stripe_amount} {first.arrival_currency} cents; "
        f"in payout {money(economy.earnings('bob').in_payout_minor)}\n"
    )
    clock.advance(days=1)  # transfers to recipient accounts are available a day later
    payouts.reconcile()  # the periodic job makes the bank payout, in the account's currency
    first = payouts.payout(first.payout_id)
    assert first.stripe_payout_id is not None
    outcome = _connect(fake, payouts, fake.pay_payout(first.stripe_payout_id))
    out.write(
        f"   a day later: bank payout of {first.payout_stripe_amount} {first.payout_currency} "
        f"cents; payout.paid -> {outcome}\n"
    )
    second = payouts.request_payout("bob", 600, idempotency_key="demo-payout-2")
    clock.advance(days=1)
    payouts.reconcile()
    second = payouts.payout(second.payout_id)
    assert second.stripe_payout_id is not None
    outcome = _connect(
        fake, payouts, fake.fail_payout(second.stripe_payout_id, failure_code="account_closed")
    )
    waiting = payouts.payout(second.payout_id)
    out.write(
        f"   a second payout of {money(600)} fails at the bank (account_closed) -> {outcome}: "
        f"Stripe returned {waiting.on_account_minor} {waiting.arrival_currency} cents to the "
        "connected account, where it waits\n"
    )
    again = payouts.repay(second.payout_id)
    assert again.stripe_payout_id is not None
    outcome = _connect(fake, payouts, fake.pay_payout(again.stripe_payout_id))
    out.write(
        f"   bob fixes his bank details; repay() pays it out again from the account (no second "
        f"transfer) -> payout.paid -> {outcome}\n"
    )


def _report(out: TextIO, ledger: Ledger, economy: GiftEconomy) -> None:
    out.write("\nwallets\n")
    table(
        out,
        ["viewer", "coins", "face value", "debt"],
        [
            [v, w.coins, money(w.usd_minor), money(w.debt_usd_minor)]
            for v, w in ((v, economy.wallet(v)) for v in VIEWERS)
        ],
        right=[1, 2, 3],
    )
    out.write("\nstreamer earnings\n")
    table(
        out,
        ["streamer", "split", "gifts", "available", "in payout"],
        [
            [
                s,
                "50/50" if s == "lena" else "40/60",
                len(economy.history(streamer_id=s, types=["gift"], limit=500).items),
                money(e.available_minor),
                money(e.in_payout_minor),
            ]
            for s, e in ((s, economy.earnings(s)) for s in STREAMERS)
        ],
        right=[2, 3, 4],
    )
    revenue = ledger.balance("platform:gift_revenue").posted_minor
    out.write(f"\nplatform gift revenue: {money(revenue)}\n")
    out.write("\ntrial balance\n")
    print_trial_balance(out, ledger.trial_balance())
