"""Converging a purchase on what Stripe shows: the purchase flow of :class:`Payments`.

Every event about a purchase, ``sync()`` and reconciliation end here: with a
fresh :class:`PurchaseSnapshot` (session, PaymentIntent, charge, every refund,
every dispute of the charge, early fraud warnings, balance transactions), the
purchase row and the ledger are moved, in one transaction, to the state those
facts call for:

1. paid and not yet decided: check amount and currency against the quote,
   ask the fraud policy, then credit the coins, hold them, or refuse them
   (Stripe's guidance: fulfil from the Checkout Session's ``payment_status``,
   https://docs.stripe.com/checkout/fulfillment);
2. refunds and disputes: claw coins back or give them back (``_clawbacks.py``);
3. what is owed back (refused, mismatched, warned of fraud): refund it, never
   more than the customer does not already have back;
4. balance transactions: settlement (``_settlement.py``).

Facts merge only forwards (a refund's status, a dispute's withdrawal), so
snapshots can arrive in any order and any number of times.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from spaktok_ledger._errors import InsufficientFunds, MonitoringRefused, PaymentProviderError
from spaktok_ledger._service._clawbacks import _Clawbacks
from spaktok_ledger._service._gateway import PurchaseSnapshot, WebhookEvent
from spaktok_ledger._service._purchase_rows import (
    EarlyFraudWarningPolicy,
    _State,
    disputed_amount,
    load_row,
    purchase_of,
)
from spaktok_ledger._service._settlement import _Settlement
from spaktok_ledger._service._webhooks import DuplicateDelivery, WebhookResult
from spaktok_ledger._store import Ledger

_OWED_BACK = ("refused", "mismatch")


class _PurchaseFlow(_Clawbacks, _Settlement):
    """Snapshot in, books out."""

    def _converge(
        self, event: WebhookEvent | None, purchase_id: str, snapshot: PurchaseSnapshot
    ) -> WebhookResult:
        now = self.clock()
        event_id = event.id if event else "sync"
        event_type = event.type if event else "sync"

        def run(tx: Ledger) -> _State:
            conn = tx.connection()
            row = load_row(conn, self._t, purchase_id, lock=True)
            assert row is not None
            if event is not None:
                self.inbox.record(
                    conn, event, "platform", outcome="applied", subject_id=purchase_id, now=now
                )
            row["version"] += 1
            state = _State(row)
            self._apply(tx, state, snapshot, event_type, now)
            self._save(conn, state, now)
            self._write_events(conn, state, now)
            outcome = state.outcomes[0] if state.outcomes else "no_change"
            if event is not None:
                wt = self.inbox._t  # the outcome is known only now
                conn.execute(wt.update().where(wt.c.event_id == event.id).values(outcome=outcome))
            return state

        for attempt in range(3):
            try:
                state = self.ledger.atomic(run)
                break
            except DuplicateDelivery:
                return WebhookResult(event_id, event_type, "duplicate", purchase_id, duplicate=True)
            except InsufficientFunds:
                # A gift or a credit moved the wallet between our read and our
                # write (the ledger's own guard caught it): converge again.
                if attempt == 2:
                    raise
        self._send_due_refund(state.row)
        outcome = state.outcomes[0] if state.outcomes else "no_change"
        return WebhookResult(event_id, event_type, outcome, purchase_id)

    def _write_events(self, conn: Connection, state: _State, now: datetime) -> None:
        row = state.row
        for index, (topic, payload) in enumerate(state.events):
            self.economy.outbox.write(
                conn,
                topic,
                f"{topic}:{row['id']}:{row['version']}:{index}",
                payload,
                entry_id=payload.get("entry_id"),
                now=now,
            )

    def _apply(
        self, tx: Ledger, s: _State, snap: PurchaseSnapshot, event_type: str, now: datetime
    ) -> None:
        row = s.row
        row["payment_intent_id"] = snap.payment_intent_id or row["payment_intent_id"]
        row["charge_id"] = snap.charge_id or row["charge_id"]
        if snap.risk_level is not None:
            row["risk_level"], row["risk_score"] = snap.risk_level, snap.risk_score
        if snap.paid:
            row["charged_stripe_amount"] = snap.stripe_amount
        status = row["status"]
        decided = status in ("credited", "held", "refused", "mismatch")
        if not snap.paid and status in ("failed", "expired"):
            return  # final: an older snapshot must not reopen it
        if not snap.paid and not decided:
            if snap.session_status == "expired":
                row["status"] = "expired"
                s.outcomes.append("expired")
            elif event_type == "checkout.session.async_payment_failed" or (
                snap.payment_intent_status in ("requires_payment_method", "canceled")
                and snap.session_status == "complete"
            ):
                row["status"] = "failed"
                s.outcomes.append("failed")
                s.events.append(("purchase.failed", {"purchase_id": row["id"]}))
            elif snap.session_status == "complete":
                row["status"] = "waiting"
                s.outcomes.append("waiting")
            return
        if snap.paid and not decided:
            self._credit(tx, s, snap, now)
        self._merge_claims(s, snap)
        self._fraud_warnings(s, snap)
        self._converge_clawback(tx, s, now)
        self._update_refund_due(s)
        fresh = [
            *snap.balance_transactions,
            *(t for d in snap.disputes for t in d.balance_transactions),
        ]
        self._settle(tx, s, fresh, now)

    def _credit(self, tx: Ledger, s: _State, snap: PurchaseSnapshot, now: datetime) -> None:
        from spaktok_ledger._service._payments import FraudDecision

        row = s.row
        if snap.currency != row["currency"] or snap.stripe_amount != row["stripe_amount"]:
            row["status"] = "mismatch"
            row["note"] = (
                f"Stripe charged {snap.stripe_amount} {snap.currency}, the quote was "
                f"{row['stripe_amount']} {row['currency']}: nothing credited"
                + (", refunded" if self.refund_mismatched else "")
            )[:1000]
            row["refund_due"] = self.refund_mismatched
            s.outcomes.append("amount_mismatch")
            s.events.append(
                (
                    "purchase.amount_mismatch",
                    {
                        "purchase_id": row["id"],
                        "charged": [snap.stripe_amount, snap.currency],
                        "quoted": [row["stripe_amount"], row["currency"]],
                    },
                )
            )
            return
        decision = self.fraud_policy.decide(purchase_of(row), snap.risk_level, snap.risk_score)
        if decision is FraudDecision.REFUSE:
            row["status"] = "refused"
            row["note"] = f"refused by the fraud policy (Radar: {snap.risk_level})"
            s.outcomes.append("refused")
            s.events.append(("purchase.refused", {"purchase_id": row["id"]}))
            row["refund_due"] = self.refund_refused
            return
        try:
            credit = self.economy.using(tx).credit_purchase(
                row["user_id"],
                coins=row["coins"],
                price_usd_minor=row["price_usd_minor"],
                idempotency_key=f"purchase:{row['id']}:credit",
                description=f"{row['coins']} coins ({row['pack_id']}), Stripe checkout",
                metadata=self._entry_metadata(row, snap),
                hold=decision is FraudDecision.HOLD,
            )
        except MonitoringRefused as exc:  # its case is recorded in this transaction
            row["status"] = "refused"
            row["note"] = f"refused by monitoring (case {exc.details.get('case_id')}): {exc}"[:1000]
            s.outcomes.append("refused")
            s.events.append(("purchase.refused", {"purchase_id": row["id"]}))
            row["refund_due"] = self.refund_refused
            return
        held = credit.held  # by the fraud policy, or by a monitoring rule
        row["credit_entry_id"] = credit.entry_id
        row["held"] = held
        row["status"] = "held" if held else "credited"
        if not held:
            row["clearing_usd_minor"] += row["price_usd_minor"]
        s.outcomes.append("held" if held else "credited")
        s.events.append(
            (
                "purchase.held" if held else "purchase.credited",
                {
                    "purchase_id": row["id"],
                    "user_id": row["user_id"],
                    "coins": row["coins"],
                    "entry_id": credit.entry_id,
                },
            )
        )

    def _entry_metadata(self, row: Mapping[str, Any], snap: PurchaseSnapshot) -> dict[str, Any]:
        return {
            "purchase_id": row["id"],
            "pack_id": row["pack_id"],
            "quote_id": row["quote_id"],
            "currency": row["currency"],
            "local_amount_minor": row["local_amount_minor"],
            "stripe": {
                "checkout_session": snap.session_id,
                "payment_intent": snap.payment_intent_id,
                "charge": snap.charge_id,
            },
            "counterparty": "stripe",
        }

    def _fraud_warnings(self, s: _State, snap: PurchaseSnapshot) -> None:
        """The first actionable early fraud warning: tell the host, and (policy) refund."""
        row = s.row
        if row["fraud_warning"] or not snap.early_fraud_warnings:
            return
        row["fraud_warning"] = snap.early_fraud_warnings[0]
        s.events.append(
            (
                "purchase.fraud_warning",
                {
                    "purchase_id": row["id"],
                    "user_id": row["user_id"],
                    "early_fraud_warning": row["fraud_warning"],
                    "policy": self.warning_policy.value,
                },
            )
        )
        if self.warning_policy is EarlyFraudWarningPolicy.REFUND and self._due(row) > 0:
            row["refund_due"] = True
            row["note"] = f"refunded after Radar early fraud warning {row['fraud_warning']}"
            s.outcomes.append("refunded")
        else:
            s.outcomes.append("fraud_warning")

    @staticmethod
    def _due(row: Mapping[str, Any]) -> int:
        """What the customer has not got back yet, in Stripe's units (refunds that did
        not fail, and chargebacks, already returned it)."""
        charged = int(row["charged_stripe_amount"] or row["stripe_amount"])
        return charged - int(row["refunded_stripe_amount"]) - disputed_amount(row["disputes"])

    def _update_refund_due(self, s: _State) -> None:
        """A refund stays due until Stripe shows it, the customer has the money back by a
        chargeback (refunding it again would pay them twice), or a refund failed (its card
        is gone: the host is told, ``purchase.refund_failed``, to pay back another way)."""
        row = s.row
        if not row["refund_due"]:
            return
        failed = any(r["status"] == "failed" for r in row["refunds"].values())
        if failed or self._due(row) <= 0:
            row["refund_due"] = False
            if failed and row["status"] in _OWED_BACK:
                row["note"] = "the refund failed: pay the customer back another way"

    def _send_due_refund(self, row: Mapping[str, Any]) -> None:
        """A due refund, after commit; kept due until Stripe shows it.

        A failure here is not fatal: ``refund_due`` stays set, and the next
        event about the purchase, ``sync()`` or ``retry_refunds()`` sends it
        again. The idempotency key names the amount, so Stripe refunds it once.
        """
        due = self._due(row)
        if not row["refund_due"] or not row["payment_intent_id"] or due <= 0:
            return
        kind = row["status"] if row["status"] in _OWED_BACK else "fraud_warning"
        try:
            self.gateway.refund(
                row["payment_intent_id"],
                due,
                idempotency_key=f"refund:{row['id']}:{kind}:{due}",
                reason="fraudulent" if kind == "fraud_warning" else None,
            )
        except PaymentProviderError as exc:
            t = self._t
            note = f"refund due, Stripe refused for now: {exc}"[:1000]
            self.ledger.atomic(
                lambda tx: tx.connection().execute(
                    t.update().where(t.c.id == row["id"]).values(note=note)
                )
            )
