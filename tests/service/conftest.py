"""Fixtures for the service tests: a set-up gift economy on each backend."""

from __future__ import annotations

import pytest

from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy, Ledger
from tests.apis import gift_economy

GIFTS = GiftCatalogue(
    [Gift("rose", 10, "Rose"), Gift("heart", 99, "Heart"), Gift("rocket", 5000, "Rocket")]
)


@pytest.fixture
def economy(ledger: Ledger, clock) -> GiftEconomy:
    economy = gift_economy(ledger, GIFTS, hold_days=0, clock=clock)  # shares payable at once
    economy.setup()
    return economy


@pytest.fixture
def held_economy(ledger: Ledger, clock) -> GiftEconomy:
    """A gift economy whose streamer shares wait 7 days before they can be paid out."""
    economy = gift_economy(ledger, GIFTS, hold_days=7, clock=clock)
    economy.setup()
    return economy


def fund(economy: GiftEconomy, user: str, coins: int, key: str | None = None) -> None:
    """Credit coins as if a purchase at face value was confirmed."""
    economy.credit_purchase(
        user, coins=coins, price_usd_minor=coins, idempotency_key=key or f"fund:{user}:{coins}"
    )
