"""The gift economy service: gifts, wallets, earnings, history, maturation, outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spaktok_ledger import (
    GiftEconomy,
    GiftRejected,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    SpendingBlocked,
    UnknownGift,
    UnknownStreamer,
    UnknownUser,
)
from tests.apis import APIS
from tests.service.conftest import fund


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Every test here runs against the sync API and the asyncio API."""
    return str(request.param)


@pytest.fixture
def world(economy: GiftEconomy) -> GiftEconomy:
    economy.open_user("alice")
    economy.open_user("carol")
    economy.register_streamer("bob")
    economy.register_streamer("dave", streamer_bps=5000)
    fund(economy, "alice", 10_000)
    return economy


def snapshot(economy: GiftEconomy) -> tuple:
    ledger = economy.ledger
    tb = ledger.trial_balance()
    return ledger.count_entries(), tb.rows, len(economy.outbox.pending(limit=10_000))


class TestSendGift:
    def test_split_40_60_in_one_entry(self, world: GiftEconomy) -> None:
        """A gift debits the sender and credits 40% to the streamer, 60% to the platform."""
        receipt = world.send_gift("alice", "bob", "heart", 3, idempotency_key="g1")
        assert receipt.gift.value_usd_minor == 297
        assert (receipt.gift.streamer_share_minor, receipt.gift.platform_share_minor) == (118, 179)
        assert (receipt.gift.streamer_bps, receipt.gift.platform_bps) == (4000, 6000)
        assert receipt.sender_wallet.coins == 10_000 - 297
        assert receipt.streamer_earnings.available_minor == 118
        entry = world.ledger.entry(receipt.entry_id)
        assert [p.amount_minor for p in entry.postings] == [297, -118, -179]
        assert entry.metadata["gift"]["streamer_bps"] == 4000
        assert world.ledger.balance("platform:gift_revenue").posted_minor == 179

    def test_per_streamer_split_override(self, world: GiftEconomy) -> None:
        """A partner streamer at 50% gets half; the split used is stored on the entry."""
        receipt = world.send_gift("alice", "dave", "rose", 1, idempotency_key="g1")
        assert (receipt.gift.streamer_share_minor, receipt.gift.platform_share_minor) == (5, 5)
        world.set_split("dave", None)
        again = world.send_gift("alice", "dave", "rose", 1, idempotency_key="g2")
        assert again.gift.streamer_bps == 4000
        assert world.ledger.entry(receipt.entry_id).metadata["gift"]["streamer_bps"] == 5000

    def test_replay_returns_the_original_receipt(self, world: GiftEconomy) -> None:
        """The same key and request returns the first receipt and writes nothing."""
        first = world.send_gift("alice", "bob", "rose", 2, idempotency_key="g1")
        world.send_gift("alice", "bob", "rose", 1, idempotency_key="g2")
        before = snapshot(world)
        again = world.send_gift("alice", "bob", "rose", 2, idempotency_key="g1")
        assert again == first and again.replayed and not first.replayed
        assert snapshot(world) == before

    def test_replay_after_the_split_changed_or_streamer_blocked(self, world: GiftEconomy) -> None:
        """A retry is recognised even if the split changed or the streamer was blocked since."""
        first = world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1")
        world.set_split("bob", 9000)
        assert world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1") == first
        world.block_streamer("bob", "terms violation")
        assert world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1") == first

    def test_same_key_different_gift(self, world: GiftEconomy) -> None:
        """Reusing a key for another gift is an IdempotencyConflict; nothing written."""
        world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1")
        before = snapshot(world)
        with pytest.raises(IdempotencyConflict):
            world.send_gift("alice", "bob", "rose", 2, idempotency_key="g1")
        assert snapshot(world) == before

    def test_keys_are_per_sender(self, world: GiftEconomy) -> None:
        """Two senders may use the same client key (keys are namespaced by sender)."""
        fund(world, "carol", 100)
        world.send_gift("alice", "bob", "rose", 1, idempotency_key="same")
        assert not world.send_gift("carol", "bob", "rose", 1, idempotency_key="same").replayed

    def test_insufficient_coins(self, world: GiftEconomy) -> None:
        """A gift worth more than the wallet is InsufficientFunds and writes nothing."""
        before = snapshot(world)
        with pytest.raises(InsufficientFunds):
            world.send_gift("alice", "bob", "rocket", 3, idempotency_key="g1")
        assert snapshot(world) == before
        # the key stays free for a corrected retry
        assert world.send_gift("alice", "bob", "rocket", 2, idempotency_key="g1").gift.quantity == 2

    @pytest.mark.parametrize(
        ("sender", "streamer", "gift", "quantity", "error"),
        [
            ("alice", "alice", "rose", 1, GiftRejected),
            ("bob", "bob", "rose", 1, GiftRejected),
            ("alice", "bob", "rose", 0, GiftRejected),
            ("alice", "bob", "rose", -1, GiftRejected),
            ("alice", "bob", "rose", 10_001, GiftRejected),
            ("alice", "bob", "rose", 1.0, GiftRejected),
            ("alice", "bob", "tulip", 1, UnknownGift),
            ("alice", "zed", "rose", 1, UnknownStreamer),
            ("nobody", "bob", "rose", 1, UnknownUser),
            ("alice", "bob b", "rose", 1, InvalidInput),
        ],
    )
    def test_refusals_write_nothing(self, world, sender, streamer, gift, quantity, error) -> None:
        """Self-gifts, bad quantities, unknown gifts/streamers/users: clear errors, no trace."""
        before = snapshot(world)
        with pytest.raises(error):
            world.send_gift(sender, streamer, gift, quantity, idempotency_key="bad")
        assert snapshot(world) == before

    def test_blocked_streamer(self, world: GiftEconomy) -> None:
        """A blocked streamer receives nothing until unblocked."""
        world.block_streamer("bob", "chargeback fraud under review")
        with pytest.raises(GiftRejected, match="chargeback fraud"):
            world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1")
        world.unblock_streamer("bob")
        assert world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1").entry_id
        with pytest.raises(InvalidInput):
            world.block_streamer("bob", "  ")

    def test_debt_blocks_spending(self, world: GiftEconomy) -> None:
        """A user who owes a refunded purchase gets SpendingBlocked, not InsufficientFunds."""
        from spaktok_ledger import EntryDraft, Posting

        world.ledger.post(
            EntryDraft(
                "refund",
                (
                    Posting.debit("user:carol:receivable", 50),
                    Posting.credit("platform:stripe_clearing", 50),
                ),
                "debt",
            )
        )
        with pytest.raises(SpendingBlocked):
            world.send_gift("carol", "bob", "rose", 1, idempotency_key="g1")
        credit = world.credit_purchase("carol", coins=80, price_usd_minor=80, idempotency_key="p")
        assert (credit.debt_repaid_usd_minor, credit.coins) == (50, 30)
        assert world.wallet("carol").debt_usd_minor == 0
        assert (
            world.send_gift("carol", "bob", "rose", 3, idempotency_key="g1").sender_wallet.coins
            == 0
        )


class TestBalancesAndCredits:
    def test_wallet_and_unknown_user(self, world: GiftEconomy) -> None:
        """wallet() reports coins and face value; a user who never bought coins has none."""
        wallet = world.wallet("alice")
        assert (wallet.coins, wallet.usd_minor, wallet.debt_usd_minor) == (10_000, 10_000, 0)
        assert world.wallet("nobody").coins == 0
        assert world.history(user_id="nobody").items == ()
        with pytest.raises(UnknownStreamer):
            world.earnings("nobody")

    def test_purchase_with_bonus_coins_and_markup(self, world: GiftEconomy) -> None:
        """Bonus coins debit coin_pricing; a markup credits it; clearing gets the price."""
        world.credit_purchase("carol", coins=550, price_usd_minor=499, idempotency_key="p1")
        world.credit_purchase("carol", coins=100, price_usd_minor=120, idempotency_key="p2")
        ledger = world.ledger
        assert world.wallet("carol").coins == 650
        assert ledger.balance("platform:coin_pricing").posted_minor == -51 + 20
        assert world.credit_purchase(
            "carol", coins=550, price_usd_minor=499, idempotency_key="p1"
        ).replayed
        assert ledger.verify().ok

    def test_adjustment_needs_a_reason(self, world: GiftEconomy) -> None:
        """Admin adjustments credit or debit coins with a required reason; never below zero."""
        credit = world.adjust("carol", 25, reason="goodwill: stream outage", idempotency_key="a1")
        assert credit.wallet.coins == 25
        assert (
            world.adjust("carol", -5, reason="duplicate credit", idempotency_key="a2").wallet.coins
            == 20
        )
        with pytest.raises(InsufficientFunds):
            world.adjust("carol", -21, reason="too much", idempotency_key="a3")
        with pytest.raises(InvalidInput):
            world.adjust("carol", 5, reason="", idempotency_key="a4")
        entry = world.ledger.entry(credit.entry_id)
        assert entry.metadata["reason"] == "goodwill: stream outage"

    def test_adjustment_repays_debt_first(self, world: GiftEconomy) -> None:
        """Coins granted by an admin repay a debt before they can be spent."""
        from spaktok_ledger import EntryDraft, Posting

        world.ledger.post(
            EntryDraft(
                "refund",
                (
                    Posting.debit("user:carol:receivable", 30),
                    Posting.credit("platform:stripe_clearing", 30),
                ),
                "debt",
            )
        )
        credit = world.adjust("carol", 50, reason="goodwill", idempotency_key="a1")
        assert (credit.wallet.coins, credit.wallet.debt_usd_minor) == (20, 0)
        assert world.repay_debt("carol", "again") == 0


class TestHoldPeriod:
    def test_shares_mature_after_the_hold(self, held_economy: GiftEconomy, clock) -> None:
        """With a 7-day hold, shares sit in pending and move to available when mature."""
        economy = held_economy
        economy.open_user("alice")
        economy.register_streamer("bob")
        fund(economy, "alice", 1000)
        receipt = economy.send_gift("alice", "bob", "heart", 1, idempotency_key="g1")
        assert receipt.matures_at == clock() + timedelta(days=7)
        assert receipt.streamer_earnings.pending_minor == 39
        assert receipt.streamer_earnings.available_minor == 0
        clock.advance(days=3)
        economy.send_gift("alice", "bob", "heart", 1, idempotency_key="g2")
        clock.advance(days=4)
        matured = economy.mature_earnings()
        assert [(m.streamer_id, m.amount_minor, m.lots) for m in matured] == [("bob", 39, 1)]
        assert economy.mature_earnings() == []  # each share matures once
        earnings = economy.earnings("bob")
        assert (earnings.pending_minor, earnings.available_minor) == (39, 39)
        clock.advance(days=3)
        assert economy.mature_earnings()[0].amount_minor == 39
        assert economy.earnings("bob").available_minor == 78
        assert economy.ledger.verify().ok


class TestHistoryAndOutbox:
    def test_history_for_user_and_streamer(self, world: GiftEconomy, clock) -> None:
        """Statements are newest first, with counterparty, amounts and the split."""
        for i in range(5):
            clock.advance(minutes=1)
            world.send_gift("alice", "bob", "rose", i + 1, idempotency_key=f"g{i}")
        page = world.history(user_id="alice", limit=2)
        assert [i.gift.quantity for i in page.items] == [5, 4]
        first = page.items[0]
        assert (first.counterparty, first.change_minor, first.type) == ("streamer:bob", -50, "gift")
        assert first.gift.streamer_share_minor == 20
        rest = world.history(user_id="alice", cursor=page.next_cursor)
        assert [i.type for i in rest.items] == ["gift", "gift", "gift", "purchase"]
        bob = world.history(streamer_id="bob", types=["gift"])
        assert [i.change_minor for i in bob.items] == [20, 16, 12, 8, 4]
        assert bob.items[0].counterparty == "user:alice"
        assert bob.items[0].to_dict()["gift"]["platform_bps"] == 6000
        with pytest.raises(InvalidInput):
            world.history()
        with pytest.raises(UnknownStreamer):
            world.history(streamer_id="nobody")

    def test_history_time_filter(self, world: GiftEconomy, clock) -> None:
        """since/until select a window of effective time."""
        start = clock.advance(hours=1)
        world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1")
        clock.advance(hours=1)
        world.send_gift("alice", "bob", "rose", 2, idempotency_key="g2")
        window = world.history(user_id="alice", since=start, until=start + timedelta(minutes=1))
        assert [i.gift.quantity for i in window.items] == [1]

    def test_outbox_events_in_the_same_transaction(self, world: GiftEconomy) -> None:
        """Each gift and credit leaves one event; refused gifts leave none; ack hides them."""
        receipt = world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1")
        with pytest.raises(InsufficientFunds):
            world.send_gift("alice", "bob", "rocket", 10, idempotency_key="g2")
        world.send_gift("alice", "bob", "rose", 1, idempotency_key="g1")  # replay
        events = world.outbox.pending()
        assert [e.topic for e in events] == ["wallet.credited", "gift.sent"]
        assert events[1].payload == receipt.to_dict()
        assert world.outbox.ack([e.id for e in events]) == 2
        assert world.outbox.ack([e.id for e in events]) == 0
        assert world.outbox.pending() == []
