"""A Hypothesis state machine over the gift economy, on SQLite and PostgreSQL.

Random users and streamers, coin credits, gifts (valid and invalid), split
overrides, blocks, time passing and maturation. After every step the model's
balances equal the ledger's, every gift's split sums to its value, the
platform holds exactly the sum of its shares, and ``verify()`` is clean.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from spaktok_ledger import (
    GiftRejected,
    InsufficientFunds,
    UnknownGift,
    UnknownStreamer,
    UnknownUser,
)
from spaktok_ledger.testing import FakeClock
from tests.apis import APIS, dispose_engines, gift_economy, open_ledger
from tests.service.conftest import GIFTS

USERS = ["u1", "u2", "u3"]
STREAMERS = ["s1", "s2"]
_prefixes = itertools.count()


@dataclass
class Model:
    wallet: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USERS, 0))
    pending: dict[str, list[tuple[object, int]]] = field(
        default_factory=lambda: {s: [] for s in STREAMERS}
    )
    available: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMERS, 0))
    platform: int = 0
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMERS, 0))
    bps: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(STREAMERS, None))
    blocked: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(STREAMERS, False))


class GiftMachine(RuleBasedStateMachine):
    engine: sa.Engine
    api = "sync"  # or "async" (tests/apis.py)
    hold_days: int

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        ledger = open_ledger(self.api, self.engine, prefix=f"gm{next(_prefixes)}_", clock=self.clock)
        self.economy = gift_economy(ledger, GIFTS, hold_days=self.hold_days, clock=self.clock)
        self.economy.setup()
        self.model = Model()
        self.keys = itertools.count()
        self.receipts: list = []

    @initialize()
    def open_everyone(self) -> None:
        for user in USERS:
            self.economy.open_user(user)
        for streamer in STREAMERS:
            self.economy.register_streamer(streamer)

    @rule(user=st.sampled_from(USERS), coins=st.integers(min_value=1, max_value=3000))
    def credit(self, user: str, coins: int) -> None:
        credit = self.economy.credit_purchase(
            user, coins=coins, price_usd_minor=coins, idempotency_key=f"c{next(self.keys)}"
        )
        self.model.wallet[user] += coins
        assert credit.wallet.coins == self.model.wallet[user]

    @rule(
        sender=st.sampled_from(USERS),
        streamer=st.sampled_from(STREAMERS),
        gift=st.sampled_from([g.id for g in GIFTS]),
        quantity=st.integers(min_value=1, max_value=20),
    )
    def send(self, sender: str, streamer: str, gift: str, quantity: int) -> None:
        value = GIFTS.get(gift).coins * quantity
        key = f"g{next(self.keys)}"
        if self.model.blocked[streamer]:
            with pytest.raises(GiftRejected):
                self.economy.send_gift(sender, streamer, gift, quantity, idempotency_key=key)
            return
        if value > self.model.wallet[sender]:
            with pytest.raises(InsufficientFunds):
                self.economy.send_gift(sender, streamer, gift, quantity, idempotency_key=key)
            return
        receipt = self.economy.send_gift(sender, streamer, gift, quantity, idempotency_key=key)
        split = receipt.gift
        assert split.streamer_share_minor + split.platform_share_minor == value
        bps = self.model.bps[streamer]
        assert split.streamer_bps == (4000 if bps is None else bps)
        exact = value * split.streamer_bps
        assert abs(split.streamer_share_minor * 10_000 - exact) < 10_000
        self.model.wallet[sender] -= value
        self.model.platform += split.platform_share_minor
        self.model.received[streamer] += split.streamer_share_minor
        if self.hold_days and split.streamer_share_minor:
            self.model.pending[streamer].append((receipt.matures_at, split.streamer_share_minor))
        else:
            self.model.available[streamer] += split.streamer_share_minor
        self.receipts.append((receipt, key))

    @rule(data=st.data())
    def replay(self, data) -> None:
        if not self.receipts:
            return
        receipt, key = data.draw(st.sampled_from(self.receipts))
        again = self.economy.send_gift(
            receipt.sender_id,
            receipt.streamer_id,
            receipt.gift.gift_id,
            receipt.gift.quantity,
            idempotency_key=key,
        )
        assert again == receipt
        assert again.replayed

    @rule(
        sender=st.sampled_from([*USERS, "ghost"]),
        streamer=st.sampled_from([*STREAMERS, "nobody"]),
        gift=st.sampled_from(["rose", "unicorn"]),
        quantity=st.integers(min_value=-2, max_value=0),
    )
    def invalid(self, sender: str, streamer: str, gift: str, quantity: int) -> None:
        before = self.economy.ledger.count_entries()
        with pytest.raises((GiftRejected, UnknownGift, UnknownStreamer, UnknownUser)):
            self.economy.send_gift(sender, streamer, gift, quantity, idempotency_key="bad")
        assert self.economy.ledger.count_entries() == before

    @rule(streamer=st.sampled_from(STREAMERS), bps=st.sampled_from([None, 0, 3333, 5000, 10_000]))
    def set_split(self, streamer: str, bps: int | None) -> None:
        self.economy.set_split(streamer, bps)
        self.model.bps[streamer] = bps

    @rule(streamer=st.sampled_from(STREAMERS), block=st.booleans())
    def toggle_block(self, streamer: str, block: bool) -> None:
        if block:
            self.economy.block_streamer(streamer, "review")
        else:
            self.economy.unblock_streamer(streamer)
        self.model.blocked[streamer] = block

    @rule(days=st.integers(min_value=0, max_value=10))
    def time_passes_and_shares_mature(self, days: int) -> None:
        now = self.clock.advance(days=days)
        self.economy.mature_earnings()
        for streamer, lots in self.model.pending.items():
            due = [amount for matures_at, amount in lots if matures_at <= now]
            self.model.available[streamer] += sum(due)
            self.model.pending[streamer] = [lot for lot in lots if lot[0] > now]

    @invariant()
    def ledger_matches_model(self) -> None:
        for user in USERS:
            assert self.economy.wallet(user).coins == self.model.wallet[user]
        for streamer in STREAMERS:
            earnings = self.economy.earnings(streamer)
            pending = sum(amount for _, amount in self.model.pending[streamer])
            assert earnings.pending_minor == pending
            assert earnings.available_minor == self.model.available[streamer]
        ledger = self.economy.ledger
        assert ledger.balance("platform:gift_revenue").posted_minor == self.model.platform
        report = ledger.verify()
        assert report.ok, report.problems


@pytest.mark.slow
@pytest.mark.parametrize("hold_days", [0, 3])
@pytest.mark.parametrize("api", APIS)
def test_gift_economy_state_machine(engine: sa.Engine, hold_days: int, api: str) -> None:
    """Random gift-economy sessions keep the model and the ledger equal, on both backends
    and through both APIs."""
    GiftMachine.engine = engine
    GiftMachine.api = api
    GiftMachine.hold_days = hold_days
    try:
        run_state_machine_as_test(
            GiftMachine,
            settings=settings(
                settings.default,
                max_examples=max(10, settings.default.max_examples // 3),
                stateful_step_count=20,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            ),
        )
    finally:
        GiftMachine.api = "sync"  # subclasses (the payout machine) inherit the attribute
        dispose_engines()
