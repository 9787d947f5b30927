"""Test doubles the library ships, so host apps can test without a network.

- :class:`FakeStripe`: a local HTTP server speaking the slice of Stripe's API
  v1 the library uses, with a simulator for Stripe's side of checkout,
  refunds, disputes and Connect payouts that returns the webhook events.
- :func:`stripe_client`: a real ``stripe.StripeClient`` pointed at it.
- :func:`sign_payload`, :func:`event_payload`, :func:`signed_event`: webhook
  bodies and ``Stripe-Signature`` headers, exactly as Stripe signs them.
- :class:`FakeClock`: a clock that moves only when told to.

Importing this package needs only the standard library; ``stripe`` is
imported by :func:`stripe_client` when it builds a client.

Example::

    from decimal import Decimal
    from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client

    with FakeStripe() as fake:
        client = stripe_client(fake)
        session = client.v1.checkout.sessions.create(params={...})
        event = fake.complete_checkout(session.id, exchange_rate=Decimal("1.08"))
        body, signature = signed_event(event, "whsec_test")

The Stripe objects come from Stripe's own fixtures (``stripe_fixtures.json``,
a subset of ``openapi/fixtures3.json`` from github.com/stripe/openapi),
Copyright (c) 2011- Stripe, Inc., under the MIT License reproduced in
``STRIPE_FIXTURES_LICENSE`` in this package.
"""

from spaktok_ledger.testing._client import stripe_client
from spaktok_ledger.testing._clock import FakeClock
from spaktok_ledger.testing._fake_stripe import FakeStripe, RecordedRequest
from spaktok_ledger.testing._webhooks import event_payload, sign_payload, signed_event

__all__ = [
    "FakeClock",
    "FakeStripe",
    "RecordedRequest",
    "event_payload",
    "sign_payload",
    "signed_event",
    "stripe_client",
]
