"""A local Stripe for running the example apps offline: ``python -m examples.common.fake_stripe``.

Starts the library's ``FakeStripe`` (the slice of Stripe's API the library
uses) on a fixed local port, prints the environment variables that point an
example app at it, then plays Stripe's side, like ``stripe listen
--forward-to`` plus a very quick customer:

- every open Checkout Session is paid at once (settled in USD);
- a Connect account whose onboarding link was requested completes onboarding;
- a bank payout on a connected account (``SPAKTOK_PAYOUT_MODE=manual``) is paid;
- every event is signed with the endpoint's secret and POSTed to the app:
  platform events to ``/api/payments/webhook``, Connect events (those with an
  ``account``) to ``/api/payouts/webhook``; failed deliveries are retried.

For local development only: it is a test double, it accepts only ``sk_test_``
keys, and it keeps everything in memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from examples.common.services import DEFAULT_STATIC_RATES

from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client

DEFAULT_PORT = 12111
API_KEY = "sk_test_example"
WEBHOOK_SECRET = "whsec_example_platform"
CONNECT_WEBHOOK_SECRET = "whsec_example_connect"


@dataclass(slots=True)
class Simulator:
    """Stripe's side of the story, driven by polling the fake."""

    fake: FakeStripe
    client: Any
    """A ``stripe.StripeClient`` on the fake (to list open Checkout Sessions)."""
    app_url: str
    secret: str
    connect_secret: str
    seen_events: int = 0
    seen_requests: int = 0
    paid_sessions: set[str] = field(default_factory=set)
    onboarded: set[str] = field(default_factory=set)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def step(self) -> None:
        self._pay_open_sessions()
        self._finish_onboarding()
        while True:
            events = self.fake.events
            fresh = events[self.seen_events :]
            if not fresh:
                break
            self.seen_events = len(events)
            for event in fresh:
                self.outbox.append(event)
                if event["type"] == "payout.created":  # its payout.paid comes next round
                    payout = event["data"]["object"]
                    self.fake.pay_payout(payout["id"])
                    say(f"bank paid payout {payout['id']}")
        self._deliver()

    def _pay_open_sessions(self) -> None:
        sessions = self.client.v1.checkout.sessions.list(params={"status": "open", "limit": 100})
        for session in sessions.data:
            if session.id in self.paid_sessions:
                continue
            self.paid_sessions.add(session.id)
            currency = str(session.currency).upper()
            rate = DEFAULT_STATIC_RATES.get(currency)
            if currency == "USD" or rate is None:
                self.fake.complete_checkout(
                    session.id, settle_currency=currency.lower(), available_now=True
                )
            else:  # USD per unit of the customer's currency
                usd_per_unit = (Decimal(1) / rate).quantize(Decimal("0.000001"))
                # Funds available at once (Stripe's 0077 test card), so payouts need
                # not wait the two days a card payment's funds are pending.
                self.fake.complete_checkout(
                    session.id, exchange_rate=usd_per_unit, available_now=True
                )
            say(f"customer paid checkout session {session.id} ({session.amount_total} {currency})")

    def _finish_onboarding(self) -> None:
        requests = self.fake.requests
        for recorded in requests[self.seen_requests :]:
            account = recorded.params.get("account")
            if (
                recorded.path == "/v1/account_links"
                and recorded.status == 200
                and isinstance(account, str)
                and account not in self.onboarded
            ):
                self.onboarded.add(account)
                self.fake.onboard_account(account)
                say(f"streamer finished onboarding of {account}")
        self.seen_requests = len(requests)

    def _deliver(self) -> None:
        waiting = []
        for event in self.outbox:
            connect = "account" in event
            path = "/api/payouts/webhook" if connect else "/api/payments/webhook"
            body, signature = signed_event(event, self.connect_secret if connect else self.secret)
            request = urllib.request.Request(
                self.app_url + path,
                data=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    outcome = json.loads(response.read()).get("outcome")
                    say(f"-> {path} {event['type']}: {response.status} {outcome}")
            except urllib.error.HTTPError as exc:
                say(f"-> {path} {event['type']}: {exc.code} {exc.read()[:200]!r} (will retry)")
                waiting.append(event)
            except OSError as exc:
                say(f"-> {path} {event['type']}: app not reachable ({exc}); will retry")
                waiting.append(event)
        self.outbox = waiting


def say(message: str) -> None:
    print(f"[fake-stripe] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.common.fake_stripe")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--forward-to",
        default="http://127.0.0.1:8000",
        help="the example app's base URL (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    fake = FakeStripe(port=args.port).start()
    print(
        "FakeStripe is listening. Point an example app at it with:\n\n"
        f"export STRIPE_API_BASE={fake.url}\n"
        f"export STRIPE_SECRET_KEY={API_KEY}\n"
        f"export STRIPE_WEBHOOK_SECRET={WEBHOOK_SECRET}\n"
        f"export STRIPE_CONNECT_WEBHOOK_SECRET={CONNECT_WEBHOOK_SECRET}\n\n"
        f"Webhooks go to {args.forward_to}. Ctrl-C stops.",
        flush=True,
    )
    simulator = Simulator(
        fake,
        stripe_client(fake, API_KEY, timeout=5),
        args.forward_to.rstrip("/"),
        WEBHOOK_SECRET,
        CONNECT_WEBHOOK_SECRET,
    )
    try:
        while True:
            simulator.step()
            time.sleep(0.3)
    except KeyboardInterrupt:
        return 0
    finally:
        fake.stop()


if __name__ == "__main__":
    sys.exit(main())
