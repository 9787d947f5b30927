"""A replay storm: thousands of webhook deliveries, duplicated and shuffled, from four processes.

Hundreds of purchases are paid (and some partly refunded) at the fake Stripe;
every event is then delivered one to five times, in random order, by four
worker processes at once, each with its own engine, as Stripe's retries and
several app servers would. Every purchase must be credited exactly once, and
every wallet must equal the model computed from Stripe's final state.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import traceback
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import pytest

from spaktok_ledger import (
    CoinPack,
    GiftEconomy,
    Ledger,
    PackCatalogue,
    Payments,
    Pricing,
    StripeGateway,
    VelocityLimits,
)
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "whsec_storm"
PACKS = PackCatalogue([CoinPack("starter", 499, 500), CoinPack("fan", 1999, 2000, 200)])
RATES = {"EUR": Decimal("0.934143"), "BRL": Decimal("5.5035")}
URLS = {"success_url": "https://a.example/ok", "cancel_url": "https://a.example/no"}


def _services(url: str, prefix: str, fake_url: str) -> tuple[Ledger, GiftEconomy, Payments]:
    ledger = Ledger(url, prefix=prefix)
    economy = GiftEconomy(ledger)
    pricing = Pricing(ledger, PACKS, StaticRateProvider(RATES))
    gateway = StripeGateway(stripe_client(fake_url, timeout=30))
    payments = Payments(
        economy, pricing, gateway, webhook_secret=SECRET, velocity=VelocityLimits(None, None)
    )
    return ledger, economy, payments


def _worker(url: str, prefix: str, fake_url: str, events: list, queue: mp.Queue) -> None:
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    ledger, _, payments = _services(url, prefix, fake_url)
    try:
        for event in events:
            body, header = signed_event(event, SECRET)
            outcomes[payments.handle_webhook(body, header).outcome] += 1
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        ledger.close()
        queue.put({"outcomes": dict(outcomes), "errors": errors})


def test_replay_storm(pg_database_url: str, prefix: str) -> None:
    """Shuffled duplicate deliveries from 4 processes credit every purchase exactly once."""
    rng = random.Random(20261126)
    with FakeStripe() as fake:
        ledger, economy, payments = _services(pg_database_url, prefix, fake.url)
        economy.setup()
        purchases = []
        for n in range(600):
            user = f"viewer{n % 70}"
            currency = rng.choice(["EUR", "BRL", "USD"])
            quote = payments.pricing.quote(rng.choice(["starter", "fan"]), currency=currency)
            purchases.append(
                payments.create_checkout(user, quote.id, idempotency_key=f"k{n}", **URLS)
            )
        events = []
        charges = {}
        for result in purchases:
            rate = None if result.currency == "USD" else Decimal("1.0705")
            events.append(fake.complete_checkout(result.checkout_session_id, exchange_rate=rate))
            session = fake.get_object(result.checkout_session_id)
            charges[result.purchase_id] = fake.get_object(session["payment_intent"])[
                "latest_charge"
            ]
        for result in rng.sample(purchases, 180):
            part = rng.choice([None, result.amount_minor // 2])
            events.append(fake.refund(charges[result.purchase_id], amount_minor=part))
        deliveries = [e for e in events for _ in range(rng.randint(1, 5))]
        rng.shuffle(deliveries)
        assert len(deliveries) > 2000

        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()
        chunks = [deliveries[i::4] for i in range(4)]
        procs = [
            ctx.Process(target=_worker, args=(pg_database_url, prefix, fake.url, chunk, queue))
            for chunk in chunks
        ]
        for p in procs:
            p.start()
        results = [queue.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        errors = [e for r in results for e in r["errors"]]
        assert not errors, errors[0]
        outcomes = Counter()
        for r in results:
            outcomes.update(r["outcomes"])
        # A copy that arrives while another delivery holds the event's claim answers
        # in_progress (the claimant applies it); later copies are duplicates.
        assert outcomes["duplicate"] + outcomes["in_progress"] == len(deliveries) - len(events)

        # Exactly one credit per purchase, and wallets equal Stripe's final state.
        credits = Counter(
            e.metadata["purchase_id"] for e in ledger.iter_entries() if e.type == "purchase"
        )
        assert credits == Counter({r.purchase_id: 1 for r in purchases})
        expected: Counter[str] = Counter()
        for result in purchases:
            purchase = payments.purchase(result.purchase_id)
            charge = fake.get_object(charges[result.purchase_id])
            clawed = int(
                Fraction(purchase.coins * charge["amount_refunded"], charge["amount"])
                + Fraction(1, 2)
            )
            assert purchase.clawed_coins == clawed
            expected[purchase.user_id] += purchase.coins - clawed
        for user, coins in expected.items():
            assert economy.wallet(user).coins == coins
        assert ledger.balance("platform:stripe_clearing").posted_minor == 0
        report = ledger.verify()
        assert report.ok, report.problems
        ledger.close()
