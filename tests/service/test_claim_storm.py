"""Storms on PostgreSQL: duplicate deliveries claim before they fetch; several worker
processes drain one inbox (issue 12, items 2 and 3).

Purchases are paid at the fake Stripe; each event is delivered 1 to 5 times,
shuffled, by several processes at once, each with its own engine. A counting
gateway counts the calls that reach Stripe (one per gateway method call; the
FakeStripe's own request log counts the HTTP requests).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import traceback
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    CoinPack,
    GiftEconomy,
    Ledger,
    PackCatalogue,
    Payments,
    Pricing,
    StripeGateway,
    VelocityLimits,
    Worker,
    WorkerSchedule,
)
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "whsec_claim_storm"
PACKS = PackCatalogue([CoinPack("starter", 499, 500), CoinPack("fan", 1999, 2000, 200)])
URLS = {"success_url": "https://a.example/ok", "cancel_url": "https://a.example/no"}
QUIET = WorkerSchedule(
    expire_holds=None, mature_earnings=None, retry_refunds=None, reconcile_payouts=None, sweep=None
)
# Gateway methods that do not call Stripe.
LOCAL = {"parse_webhook", "parse_event", "transfer_arrival"}


class CountingGateway:
    """Forwards to a StripeGateway, counting each method call that reaches Stripe."""

    def __init__(self, inner: StripeGateway) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or name in LOCAL or name.startswith("_"):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted


def _services(url: str, prefix: str, fake_url: str) -> tuple[Ledger, GiftEconomy, Payments, CountingGateway]:
    ledger = Ledger(url, prefix=prefix)
    economy = GiftEconomy(ledger)
    pricing = Pricing(ledger, PACKS, StaticRateProvider({"EUR": Decimal("0.93")}))
    gateway = CountingGateway(StripeGateway(stripe_client(fake_url, timeout=60)))
    payments = Payments(
        economy, pricing, gateway, webhook_secret=SECRET, velocity=VelocityLimits(None, None)  # type: ignore[arg-type]
    )
    return ledger, economy, payments, gateway


def _sender(url: str, prefix: str, fake_url: str, events: list, fast: bool, queue: mp.Queue) -> None:
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    ledger, _, payments, gateway = _services(url, prefix, fake_url)
    try:
        for event in events:
            body, header = signed_event(event, SECRET)
            handle = payments.accept_webhook if fast else payments.handle_webhook
            outcomes[handle(body, header).outcome] += 1
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        ledger.close()
        queue.put({"outcomes": dict(outcomes), "errors": errors, "calls": dict(gateway.calls)})


def _worker(url: str, prefix: str, fake_url: str, queue: mp.Queue) -> None:
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    ledger, _, payments, gateway = _services(url, prefix, fake_url)
    try:
        worker = Worker(payments, schedule=QUIET, batch=10)
        idle = 0
        while idle < 3:  # three empty rounds in a row: the inbox is drained
            report = worker.run_once()
            outcomes.update(report.outcomes)
            errors.extend(report.errors)
            idle = idle + 1 if report.events == 0 else 0
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        ledger.close()
        queue.put({"outcomes": dict(outcomes), "errors": errors, "calls": dict(gateway.calls)})


def _paid(fake: FakeStripe, payments: Payments, count: int, rng: random.Random) -> tuple[list, list]:
    purchases, events = [], []
    for n in range(count):
        quote = payments.pricing.quote(rng.choice(["starter", "fan"]), currency="USD")
        purchases.append(
            payments.create_checkout(f"viewer{n % 40}", quote.id, idempotency_key=f"k{n}", **URLS)
        )
    for result in purchases:
        events.append(fake.complete_checkout(result.checkout_session_id))
    return purchases, events


def _run(ctx: Any, target: Any, args_list: list[tuple]) -> list[dict]:
    queue: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, queue)) for args in args_list]
    for p in procs:
        p.start()
    results = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors[0]
    return results


def _credits_once(ledger: Ledger, purchases: list) -> None:
    credits = Counter(
        e.metadata["purchase_id"] for e in ledger.iter_entries() if e.type == "purchase"
    )
    assert credits == Counter({r.purchase_id: 1 for r in purchases})


def test_duplicate_storm_calls_stripe_at_most_twice_per_applied_event(
    pg_database_url: str, prefix: str
) -> None:
    """Copies of an event claimed by another delivery answer without calling Stripe:
    under a storm of 1-5 copies per event from 4 processes, Stripe calls per applied
    event stay at most 2 (one purchase_state per event, plus a few lease takeovers),
    and so do the HTTP requests that reach Stripe (a purchase_state of a paid session
    with no refund or dispute is two: the session with its PaymentIntent, charge and
    balance transaction expanded, and the charge's early fraud warnings)."""
    rng = random.Random(1212)
    with FakeStripe() as fake:
        ledger, economy, payments, _ = _services(pg_database_url, prefix, fake.url)
        economy.setup()
        purchases, events = _paid(fake, payments, 120, rng)
        deliveries = [e for e in events for _ in range(rng.randint(1, 5))]
        rng.shuffle(deliveries)
        # Copies of one event arrive together, as Stripe's retries of a slow answer do.
        deliveries.sort(key=lambda e: events.index(e) // 8)
        gets_before = sum(1 for r in fake.requests if r.method == "GET")
        ctx = mp.get_context("spawn")
        results = _run(
            ctx,
            _sender,
            [(pg_database_url, prefix, fake.url, deliveries[i::4], False) for i in range(4)],
        )
        gets = sum(1 for r in fake.requests if r.method == "GET") - gets_before
        outcomes: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        for r in results:
            outcomes.update(r["outcomes"])
            calls.update(r["calls"])
        assert outcomes["credited"] == len(events)
        assert outcomes["duplicate"] + outcomes["in_progress"] == len(deliveries) - len(events)
        applied = len(events)
        per_event = sum(calls.values()) / applied
        print(f"\n{len(deliveries)} deliveries of {applied} events: {dict(outcomes)}; "
              f"Stripe calls {dict(calls)} = {per_event:.2f} per applied event; "
              f"{gets / applied:.2f} HTTP GETs per applied event")
        assert per_event <= 2
        assert gets / applied <= 2
        _credits_once(ledger, purchases)
        t = ledger.tables.webhook_events
        left = ledger.read(
            lambda conn: conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.status != "processed")
            ).scalar()
        )
        assert left == 0
        assert ledger.verify().ok
        ledger.close()


def test_several_worker_processes_drain_one_inbox(pg_database_url: str, prefix: str) -> None:
    """Deliveries acknowledged fast by 4 processes are applied by 3 worker processes:
    each event exactly once (SKIP LOCKED claims), every purchase credited once."""
    rng = random.Random(1213)
    with FakeStripe() as fake:
        ledger, economy, payments, _ = _services(pg_database_url, prefix, fake.url)
        economy.setup()
        purchases, events = _paid(fake, payments, 90, rng)
        deliveries = [e for e in events for _ in range(rng.randint(1, 3))]
        rng.shuffle(deliveries)
        ctx = mp.get_context("spawn")
        acks = _run(
            ctx,
            _sender,
            [(pg_database_url, prefix, fake.url, deliveries[i::4], True) for i in range(4)],
        )
        acked: Counter[str] = Counter()
        for r in acks:
            acked.update(r["outcomes"])
            assert r["calls"] == {}  # a fast acknowledgement never calls Stripe
        assert acked == Counter({"queued": len(deliveries)})
        assert economy.wallet("viewer0").coins == 0
        results = _run(ctx, _worker, [(pg_database_url, prefix, fake.url) for _ in range(3)])
        handled: Counter[str] = Counter()
        for r in results:
            handled.update(r["outcomes"])
        assert handled == Counter({"credited": len(events)})
        assert sum(1 for r in results if r["outcomes"]) >= 2  # the work was shared
        _credits_once(ledger, purchases)
        assert ledger.verify().ok
        ledger.close()
