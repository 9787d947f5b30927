"""The contract FakeStripe keeps with Stripe: the same scenarios against the fake and, when
``STRIPE_TEST_SECRET_KEY`` holds a test-mode secret key (``sk_test_...``), against Stripe's
test mode. Without the key the Stripe runs are skipped (documented in docs/stripe.md);
the fake runs always.

Only behaviour the library depends on is pinned: idempotent replays (errors included),
``charge.refunds`` left out unless expanded, list pagination, balances and balance
transactions with pending funds, disputes listed by charge, no refund of a disputed
charge. Stripe-side steps differ (the fake's simulator, Stripe's test cards), the
assertions do not.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

stripe = pytest.importorskip("stripe")

from spaktok_ledger.testing import FakeStripe, stripe_client  # noqa: E402

KEY_VARIABLE = "STRIPE_TEST_SECRET_KEY"


class FakeTarget:
    """The fake: Stripe's side played by the simulator."""

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.client = stripe_client(fake)

    def paid_charge(self, amount: int, *, disputed: bool = False) -> str:
        session = self.client.v1.checkout.sessions.create(params=_session(amount))
        self.fake.complete_checkout(session.id)
        session = self.client.v1.checkout.sessions.retrieve(
            session.id, params={"expand": ["payment_intent"]}
        )
        charge = str(session.payment_intent.latest_charge)
        if disputed:
            dispute = self.fake.dispute(charge)["data"]["object"]["id"]
            self.fake.dispute_funds_withdrawn(dispute)
        return charge


class StripeTarget:
    """Stripe's test mode: Stripe's side played by its test cards."""

    def __init__(self, key: str) -> None:
        self.client = stripe.StripeClient(key, max_network_retries=2)

    def paid_charge(self, amount: int, *, disputed: bool = False) -> str:
        # Test cards: https://docs.stripe.com/testing#disputes
        intent = self.client.v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": "usd",
                "payment_method": "pm_card_createDispute" if disputed else "pm_card_visa",
                "payment_method_types": ["card"],
                "confirm": True,
            }
        )
        charge = str(intent.latest_charge)
        if disputed:  # Stripe opens the dispute a moment later
            for _ in range(60):
                if self.client.v1.disputes.list(params={"charge": charge}).data:
                    break
                time.sleep(1)
        return charge


@pytest.fixture(params=["fake", "stripe"])
def target(request) -> Iterator[Any]:
    if request.param == "fake":
        with FakeStripe() as fake:
            yield FakeTarget(fake)
        return
    key = os.environ.get(KEY_VARIABLE)
    if not key:
        pytest.skip(f"set {KEY_VARIABLE} to a Stripe test-mode secret key to run against Stripe")
    if not key.startswith(("sk_test_", "rk_test_")):
        pytest.fail(f"{KEY_VARIABLE} must be a test-mode key (sk_test_...), never a live one")
    yield StripeTarget(key)


def _session(amount: int, name: str = "contract") -> dict[str, Any]:
    return {
        "mode": "payment",
        "success_url": "https://example.com/ok",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": amount,
                    "product_data": {"name": name},
                },
            }
        ],
    }


def test_same_key_replays_other_params_conflict(target) -> None:
    """https://docs.stripe.com/api/idempotent_requests: a replay returns the first result;
    the same key with other parameters is an idempotency error."""
    key = f"contract-{uuid.uuid4()}"
    first = target.client.v1.checkout.sessions.create(
        params=_session(700), options={"idempotency_key": key}
    )
    again = target.client.v1.checkout.sessions.create(
        params=_session(700), options={"idempotency_key": key}
    )
    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        target.client.v1.checkout.sessions.create(
            params=_session(701), options={"idempotency_key": key}
        )


def test_a_refusal_is_replayed_under_its_key(target) -> None:
    """An error raised while the endpoint ran is saved and replayed to the same key."""
    charge = target.paid_charge(800)
    target.client.v1.refunds.create(params={"charge": charge})
    key = f"contract-{uuid.uuid4()}"
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as info:
            target.client.v1.refunds.create(
                params={"charge": charge}, options={"idempotency_key": key}
            )
        assert info.value.code == "charge_already_refunded"
    assert info.value.headers.get("Idempotent-Replayed") == "true"


def test_charge_refunds_only_when_expanded_and_lists_page(target) -> None:
    """https://docs.stripe.com/upgrades#2022-11-15: no ``refunds`` on a charge unless
    expanded; a refunds list pages with ``has_more`` and ``starting_after``."""
    charge = target.paid_charge(900)
    for _ in range(3):
        target.client.v1.refunds.create(params={"charge": charge, "amount": 100})
    plain = target.client.v1.charges.retrieve(charge)
    assert "refunds" not in plain and plain.amount_refunded == 300
    expanded = target.client.v1.charges.retrieve(charge, params={"expand": ["refunds"]})
    assert len(expanded.refunds.data) == 3
    page = target.client.v1.refunds.list(params={"charge": charge, "limit": 2})
    assert page.has_more and len(page.data) == 2
    rest = target.client.v1.refunds.list(
        params={"charge": charge, "limit": 2, "starting_after": page.data[-1].id}
    )
    assert [r.id for r in rest.data] not in ([], [r.id for r in page.data])


def test_charge_funds_start_pending(target) -> None:
    """A card charge's balance transaction is pending until ``available_on``; the balance
    lists available and pending amounts per currency."""
    charge = target.paid_charge(1000)
    txn = target.client.v1.charges.retrieve(
        charge, params={"expand": ["balance_transaction"]}
    ).balance_transaction
    assert (txn.type, txn.status) == ("charge", "pending")
    assert txn.available_on > txn.created and txn.net == txn.amount - txn.fee
    balance = target.client.v1.balance.retrieve()
    assert {b.currency for b in balance.pending} >= {"usd"}
    listed = target.client.v1.balance_transactions.list(params={"source": charge})
    assert [t.id for t in listed.data] == [txn.id]


def test_disputes_by_charge_and_no_refund_of_a_disputed_charge(target) -> None:
    """https://docs.stripe.com/api/disputes/list: disputes by charge; a charged-back payment
    cannot be refunded (https://docs.stripe.com/error-codes#charge-disputed)."""
    charge = target.paid_charge(1100, disputed=True)
    (dispute,) = target.client.v1.disputes.list(params={"charge": charge}).data
    assert dispute.charge == charge and dispute.amount == 1100
    assert any(t.amount < 0 for t in dispute.balance_transactions)
    with pytest.raises(stripe.InvalidRequestError) as info:
        target.client.v1.refunds.create(params={"charge": charge})
    assert info.value.code == "charge_disputed"
