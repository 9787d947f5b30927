"""Refunds and disputes: clawing coins back, and giving them back.

What a purchase's coins are worth follows what the customer keeps: the share
of the payment refunded (refunds that failed do not count: the money came
back, https://docs.stripe.com/refunds#failed-refunds) plus the share taken by
chargebacks whose funds Stripe withdrew and did not reinstate
(https://docs.stripe.com/disputes/how-disputes-work). When that share grows,
coins are clawed back; when it shrinks (a refund failed, a dispute was won),
they are given back.

Coins already spent follow the :class:`RefundPolicy`, and the spent value is
an expense when the money leaves (``platform:refund_losses``). A chargeback
(or a refund after a Radar early fraud warning) first claws back the gifts the
viewer sent with the disputed coins whose streamer share is still in its hold
period: the streamer's pending share and the platform's revenue from those
gifts are reversed, newest gift first, up to the spent value (they come back
if the dispute is won). Shares already payable stay with the streamer: the
hold period exists so that this is rare (see docs/gifts.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from spaktok_ledger._compliance._monitor import Movement, MovementKind
from spaktok_ledger._domain import EntryDraft, EntryType, Posting
from spaktok_ledger._service._debts import ALLOWANCE, REFUND_LOSSES, allowance_legs
from spaktok_ledger._service._gateway import PurchaseSnapshot
from spaktok_ledger._service._gifts import (
    CLEARING,
    COIN_PRICING,
    GIFT_REVENUE,
    earnings_account,
    receivable_account,
    wallet_account,
)
from spaktok_ledger._service._purchase_rows import (
    RefundPolicy,
    _PaymentsCore,
    _State,
    disputed_amount,
    merge_disputes,
    merge_refunds,
    refunded_amount,
    share,
)
from spaktok_ledger._store import Ledger

_REFUNDED_ENTRY = {True: EntryType.DISPUTE, False: EntryType.REFUND}


class _Clawbacks(_PaymentsCore):
    """The refunds-and-disputes part of :class:`~spaktok_ledger.Payments`."""

    def _merge_claims(self, s: _State, snap: PurchaseSnapshot) -> None:
        """Merge the refunds and disputes Stripe shows; report refunds that failed."""
        row = s.row
        row["refunds"] = merge_refunds(row["refunds"], snap.refunds)
        row["disputes"] = merge_disputes(row["disputes"], snap.disputes)
        row["refunded_stripe_amount"] = refunded_amount(row["refunds"])
        for refund_id, refund in sorted(row["refunds"].items()):
            if refund["status"] == "failed" and not refund.get("reported"):
                refund["reported"] = True
                s.events.append(
                    (
                        "purchase.refund_failed",
                        {
                            "purchase_id": row["id"],
                            "user_id": row["user_id"],
                            "refund_id": refund_id,
                            "stripe_amount": refund["amount"],
                            "currency": row["currency"],
                            "status": row["status"],
                        },
                    )
                )

    def _converge_clawback(self, tx: Ledger, s: _State, now: datetime) -> None:
        row = s.row
        if row["status"] not in ("credited", "held"):
            return
        refunded = row["refunded_stripe_amount"]
        disputed = disputed_amount(row["disputes"])
        target_local = min(refunded + disputed, row["stripe_amount"])
        target = share(row["coins"], target_local, row["stripe_amount"])
        if target == row["clawed_coins"]:
            return
        by_dispute = disputed > 0 and refunded < target_local
        if row["status"] == "held":
            self._release_held_after_refund(tx, s, target)
        elif target > row["clawed_coins"]:
            fraud = by_dispute or bool(row["fraud_warning"])
            self._claw_back(tx, s, target, by_dispute=by_dispute, fraud=fraud, now=now)
        else:
            self._restore(tx, s, target, now)

    def _claw_back(
        self, tx: Ledger, s: _State, target: int, *, by_dispute: bool, fraud: bool, now: datetime
    ) -> None:
        row = s.row
        user = row["user_id"]
        coins = target - row["clawed_coins"]
        value = coins * self.economy.coin_value_usd_minor
        list_price = self._list_price(row, target) - self._list_price(row, row["clawed_coins"])
        available = tx.balance(wallet_account(user)).available_minor
        from_wallet = min(value, available)
        rest = value - from_wallet
        legs = [Posting.debit(wallet_account(user), from_wallet)] if from_wallet else []
        gifts: list[dict[str, Any]] = []
        if rest and fraud and self.claw_back_gifts:
            gift_legs, gifts = self._claw_gifts(tx, row, rest)
            legs += gift_legs
            rest -= sum(g["value"] for g in gifts)
        if rest:
            if self.refund_policy is RefundPolicy.WALLET_DEBT:
                legs.append(Posting.debit(receivable_account(user), rest))
                legs += allowance_legs(rest)
            else:
                legs.append(Posting.debit(REFUND_LOSSES, rest))
            row["loss_usd_minor"] += rest
        if list_price != value:
            legs.append(Posting(COIN_PRICING, list_price - value))
        if list_price:
            legs.append(Posting.credit(CLEARING, list_price))
        entry = tx.post(
            EntryDraft(
                _REFUNDED_ENTRY[by_dispute],
                tuple(legs),
                f"purchase:{row['id']}:{row['version']}:clawback",
                description=(
                    f"{'chargeback' if by_dispute else 'refund'}: {coins} coins of "
                    f"purchase {row['id']} clawed back"
                ),
                metadata={
                    "purchase_id": row["id"],
                    "coins": coins,
                    "from_wallet_usd_minor": from_wallet,
                    "gifts_clawed_usd_minor": sum(g["value"] for g in gifts),
                    "spent_usd_minor": rest,
                    "policy": self.refund_policy.value,
                    "counterparty": "stripe",
                },
                effective_at=now,
            )
        )
        self._close_lots(tx, gifts, entry.id, now)
        row["gift_clawbacks"] = [*row["gift_clawbacks"], *gifts]
        row["clawed_coins"] = target
        row["clearing_usd_minor"] -= list_price
        if self.economy.compliance is not None:  # chargebacks feed the monitoring rules
            kind = MovementKind.DISPUTE if by_dispute else MovementKind.REFUND
            movement = Movement(kind, user, list_price, now, None, row["id"])
            self.economy.compliance.observe(tx, movement, entry_ids=(entry.id,))
        s.outcomes.append("clawed_back")
        s.events.append(
            (
                "wallet.debited",
                {
                    "purchase_id": row["id"],
                    "user_id": user,
                    "coins": coins,
                    "debt_usd_minor": rest if self.refund_policy is RefundPolicy.WALLET_DEBT else 0,
                    "gifts_clawed": [
                        {k: g[k] for k in ("gift_entry_id", "streamer_id", "value")} for g in gifts
                    ],
                    "entry_id": entry.id,
                },
            )
        )

    def _claw_gifts(
        self, tx: Ledger, row: dict[str, Any], limit: int
    ) -> tuple[list[Posting], list[dict[str, Any]]]:
        """Reverse gifts the viewer sent since the purchase whose streamer share is still in
        its hold period, newest first, up to ``limit`` US cents of gift value."""
        if row["credit_entry_id"] is None:
            return [], []
        t = self.ledger.tables
        lots, entries = t.earning_lots, t.entries
        credited_at = tx.entry(row["credit_entry_id"]).effective_at
        query = (
            sa.select(
                lots.c.id,
                lots.c.streamer_id,
                lots.c.gift_entry_id,
                lots.c.amount_minor,
                entries.c.metadata,
            )
            .join(entries, entries.c.id == lots.c.gift_entry_id)
            .where(
                lots.c.matured_at.is_(None),
                entries.c.type == EntryType.GIFT.value,
                entries.c.effective_at >= credited_at,
                entries.c.metadata["sender"].as_string() == row["user_id"],
            )
            .order_by(entries.c.id.desc())
        )
        conn = tx.connection()
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=lots)
        legs: list[Posting] = []
        clawed: list[dict[str, Any]] = []
        left = limit
        for lot in conn.execute(query):
            if left <= 0:
                break
            gift = lot.metadata.get("gift") or {}
            value, streamer_share = (
                gift.get("value_usd_minor", 0),
                gift.get("streamer_share_minor", 0),
            )
            if not value or not streamer_share:
                continue
            most = lot.amount_minor * value // streamer_share
            taken = min(most, left)
            if taken <= 0:
                continue
            to_streamer = lot.amount_minor if taken == most else share(streamer_share, taken, value)
            to_platform = taken - to_streamer
            if to_streamer:
                legs.append(
                    Posting.debit(
                        earnings_account(lot.streamer_id, "earnings_pending"), to_streamer
                    )
                )
            if to_platform:
                legs.append(Posting.debit(GIFT_REVENUE, to_platform))
            clawed.append(
                {
                    "lot_id": lot.id,
                    "gift_entry_id": lot.gift_entry_id,
                    "streamer_id": lot.streamer_id,
                    "value": taken,
                    "streamer_minor": to_streamer,
                    "platform_minor": to_platform,
                    "closes": to_streamer == lot.amount_minor,
                }
            )
            left -= taken
        return legs, clawed

    def _close_lots(
        self, tx: Ledger, gifts: list[dict[str, Any]], entry_id: int, now: datetime
    ) -> None:
        """The clawed shares leave their lots; an emptied lot is closed by the clawback."""
        lots = self.ledger.tables.earning_lots
        conn = tx.connection()
        for gift in gifts:
            gift["entry_id"] = entry_id
            if gift["closes"]:
                update = lots.update().values(matured_at=now, maturation_entry_id=entry_id)
            else:
                update = lots.update().values(
                    amount_minor=lots.c.amount_minor - gift["streamer_minor"]
                )
            conn.execute(update.where(lots.c.id == gift["lot_id"]))

    def _restore_gifts(
        self, tx: Ledger, row: dict[str, Any], limit: int
    ) -> tuple[list[Posting], int]:
        """Give clawed gift shares back (a dispute won), newest clawback first."""
        lots = self.ledger.tables.earning_lots
        conn = tx.connection()
        legs: list[Posting] = []
        kept: list[dict[str, Any]] = []
        given = 0
        for gift in reversed(row["gift_clawbacks"]):
            if given >= limit:
                kept.insert(0, gift)
                continue
            value = min(gift["value"], limit - given)
            to_streamer = (
                gift["streamer_minor"]
                if value == gift["value"]
                else share(gift["streamer_minor"], value, gift["value"])
            )
            to_platform = value - to_streamer
            lot = conn.execute(sa.select(lots).where(lots.c.id == gift["lot_id"])).first()
            bucket = "earnings"
            if lot is not None and to_streamer:
                if lot.matured_at is None:
                    conn.execute(
                        lots.update()
                        .where(lots.c.id == lot.id)
                        .values(amount_minor=lots.c.amount_minor + to_streamer)
                    )
                    bucket = "earnings_pending"
                elif lot.maturation_entry_id == gift.get("entry_id"):
                    conn.execute(
                        lots.update()
                        .where(lots.c.id == lot.id)
                        .values(amount_minor=to_streamer, matured_at=None, maturation_entry_id=None)
                    )
                    bucket = "earnings_pending"
            if to_streamer:
                legs.append(
                    Posting.credit(earnings_account(gift["streamer_id"], bucket), to_streamer)
                )
            if to_platform:
                legs.append(Posting.credit(GIFT_REVENUE, to_platform))
            given += value
            if value < gift["value"]:
                kept.insert(
                    0,
                    {
                        **gift,
                        "value": gift["value"] - value,
                        "streamer_minor": gift["streamer_minor"] - to_streamer,
                        "platform_minor": gift["platform_minor"] - to_platform,
                        "closes": False,
                    },
                )
        row["gift_clawbacks"] = kept
        return legs, given

    def _restore(self, tx: Ledger, s: _State, target: int, now: datetime) -> None:
        """The customer's share shrank (a dispute won, a refund failed): give back what the
        clawback took, in the reverse order: the loss (or debt), the gifts, the wallet."""
        row = s.row
        user = row["user_id"]
        coins = row["clawed_coins"] - target
        value = coins * self.economy.coin_value_usd_minor
        list_price = self._list_price(row, row["clawed_coins"]) - self._list_price(row, target)
        legs = [Posting.debit(CLEARING, list_price)] if list_price else []
        loss_back = min(row["loss_usd_minor"], value)
        to_wallet = value - loss_back
        if loss_back:
            if self.refund_policy is RefundPolicy.WALLET_DEBT:
                debt = tx.balance(receivable_account(user)).posted_minor
                debt_back = min(debt, loss_back)
                if debt_back:
                    legs += [
                        Posting.credit(receivable_account(user), debt_back),
                        Posting.debit(ALLOWANCE, debt_back),
                        Posting.credit(REFUND_LOSSES, debt_back),
                    ]
                # What the viewer repaid meanwhile (a recovery already booked) is theirs again.
                to_wallet += loss_back - debt_back
            else:
                legs.append(Posting.credit(REFUND_LOSSES, loss_back))
        gift_legs, given = self._restore_gifts(tx, row, min(value - loss_back, to_wallet))
        legs += gift_legs
        to_wallet -= given
        if to_wallet:
            legs.append(Posting.credit(wallet_account(user), to_wallet))
        if list_price != value:
            legs.append(Posting(COIN_PRICING, value - list_price))
        entry = tx.post(
            EntryDraft(
                EntryType.DISPUTE,
                tuple(legs),
                f"purchase:{row['id']}:{row['version']}:restore",
                description=f"{coins} coins of purchase {row['id']} restored",
                metadata={
                    "purchase_id": row["id"],
                    "coins": coins,
                    "gifts_restored_usd_minor": given,
                    "counterparty": "stripe",
                },
                effective_at=now,
            )
        )
        row["clawed_coins"] = target
        row["loss_usd_minor"] -= loss_back
        row["clearing_usd_minor"] += list_price
        s.outcomes.append("restored")
        s.events.append(
            (
                "wallet.credited",
                {"purchase_id": row["id"], "user_id": user, "coins": coins, "entry_id": entry.id},
            )
        )

    def _release_held_after_refund(self, tx: Ledger, s: _State, target: int) -> None:
        """A refund or chargeback on coins still held for review: void the hold and
        credit only what remains (the refunded coins were never spendable)."""
        row = s.row
        tx.void_hold(row["credit_entry_id"], metadata={"reason": "refunded while held"})
        remaining = row["coins"] - target
        row["held"] = False
        row["clawed_coins"] = target
        if remaining:
            credit = self.economy.using(tx).credit_purchase(
                row["user_id"],
                coins=remaining,
                price_usd_minor=self._list_price(row, remaining),
                idempotency_key=f"purchase:{row['id']}:{row['version']}:credit-rest",
                description=f"{remaining} coins of purchase {row['id']} (rest after a refund)",
                metadata={"purchase_id": row["id"], "counterparty": "stripe"},
            )
            row["credit_entry_id"] = credit.entry_id
            row["clearing_usd_minor"] += self._list_price(row, remaining)
            row["status"] = "credited"
        else:
            row["status"] = "refused"
        s.outcomes.append("clawed_back")
