"""Payout reconciliation: each open (or lately settled) payout against Stripe.

For each payout, Stripe's state is fetched: the transfer (by id, or by
``transfer_group`` when none was recorded), its arrival on the connected
account and, with manual payouts, the bank payout. Facts the ledger missed
are booked; a transfer that was never made (or refused for lack of funds) is
made; a missing bank payout is created. What no rule can decide is reported
with ``resolved=False``. The books-level check (every Stripe balance
transaction against the ledger) is :class:`~spaktok_ledger.Reconciliation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa

from spaktok_ledger._errors import InvalidInput, PaymentProviderError
from spaktok_ledger._service._gateway import BalanceTxn, PayoutSnapshot, TransferSnapshot
from spaktok_ledger._service._payout_events import _PayoutEvents
from spaktok_ledger._service._payout_rows import (
    BANK_RANK,
    MAX_LIST,
    OPEN_STATUSES,
    Facts,
    PayoutDiscrepancy,
    PayoutRecord,
    progress,
    record_of,
)


class _PayoutReconcile(_PayoutEvents):
    """``Payouts.reconcile``."""

    def reconcile(
        self, *, limit: int = 100, settled_within_days: int = 14
    ) -> list[PayoutDiscrepancy]:
        """Compare open (and recently settled) payouts with Stripe; fix the safe cases.

        For each payout, Stripe's state is fetched: the transfer (by id, or by
        ``transfer_group`` when none was recorded) and, with manual payouts,
        the bank payout. Facts the ledger missed (a transfer whose response
        timed out, a ``paid``/``failed`` without a webhook, a reversal) are
        booked; a transfer that was never made is made (same idempotency key,
        so never twice); a missing bank payout is created. What cannot be
        decided safely (two transfers in one group, amounts that do not
        match, money paid out after it was returned) is reported with
        ``resolved=False``. Returns only payouts that disagreed.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST}")
        now = self.clock()
        cutoff = now - timedelta(days=settled_within_days)
        p = self._t.payouts
        query = (
            sa.select(p)
            .where(
                sa.or_(
                    p.c.status.in_(OPEN_STATUSES),
                    sa.and_(p.c.ledger_state == "settled", p.c.updated_at >= cutoff),
                    # manual payouts whose bank payout failed: the money waits on the account
                    sa.and_(p.c.status.in_(["failed", "canceled"]), p.c.ledger_state == "held"),
                    p.c.last_error.startswith("review:"),
                )
            )
            .order_by(p.c.updated_at, p.c.id)
            .limit(limit)
        )
        rows = self.ledger.read(lambda conn: list(conn.execute(query)))
        found = []
        for row in rows:
            item = self._reconcile_one(record_of(row))
            if item is not None:
                found.append(item)
        return found

    def reconcile_payout(self, payout_id: str) -> PayoutDiscrepancy | None:
        """Compare one payout with Stripe and fix the safe cases (None: it agreed)."""
        return self._reconcile_one(self.payout(payout_id))

    def _reconcile_one(self, record: PayoutRecord) -> PayoutDiscrepancy | None:
        def item(
            problem: str, detail: str, resolved: bool, stripe: str | None
        ) -> PayoutDiscrepancy:
            after = self.payout(record.payout_id).status if resolved else record.status
            return PayoutDiscrepancy(
                record.payout_id,
                record.streamer_id,
                problem,
                detail,
                record.status,
                after,
                stripe,
                resolved,
            )

        try:
            transfers = self._transfers_of(record)
            if len(transfers) > 1:
                ids = ", ".join(t.id for t in transfers)
                return item("multiple_transfers", f"transfers {ids} share the group", False, None)
            transfer = transfers[0] if transfers else None
            bank, arrival = self._bank_side(record, transfer)
        except PaymentProviderError as exc:
            return item("stripe_error", exc.message, False, None)

        if transfer is not None and (
            transfer.stripe_amount != record.amount_usd_minor
            or transfer.destination != record.account_id
        ):
            detail = f"transfer {transfer.id}: {transfer.stripe_amount} to {transfer.destination}"
            return item("transfer_mismatch", detail, False, "transferred")
        stripe_status = bank.status if bank is not None else "transferred" if transfer else None
        problem: str | None = None
        if record.last_error and record.last_error.startswith("review:"):
            return item("needs_review", record.last_error, False, stripe_status)
        if transfer is None:
            if record.status != "pending":
                return item("needs_review", "Stripe has no transfer for this payout", False, None)
            if record.transfer_attempts:
                problem = "transfer_waiting_for_funds"
                detail = "Stripe refused the transfer for lack of available funds: tried again"
            else:
                problem, detail = "transfer_missing", "no transfer at Stripe: made it now"
        elif record.transfer_id is None:
            problem, detail = "transfer_not_recorded", f"transfer {transfer.id} found at Stripe"
        elif transfer.reversed_stripe_amount > record.transfer_reversed_minor:
            problem = "transfer_reversed"
            detail = (
                f"{transfer.reversed_stripe_amount} of transfer {transfer.id} reversed at Stripe"
            )
        elif arrival is not None:
            problem = "transfer_not_recorded"
            detail = f"transfer {transfer.id} arrived as {arrival.amount_minor} {arrival.currency}"
        elif record.awaiting_repayment:
            return item(
                "awaiting_repayment",
                f"bank payout {record.stripe_payout_id} {record.status}"
                + (f" ({record.failure_code})" if record.failure_code else "")
                + ": the money is on the connected account; repay() once the bank details "
                "are fixed",
                False,
                record.status,
            )
        elif record.mode == "manual" and bank is None:
            problem, detail = "bank_payout_missing", "no bank payout at Stripe: made it now"
        elif bank is not None and record.stripe_payout_id is None:
            problem, detail = "bank_payout_not_recorded", f"bank payout {bank.id} found at Stripe"
        elif (
            bank is not None
            and BANK_RANK.get(bank.status, 0) > BANK_RANK[record.stripe_payout_status]
        ):
            problem = "bank_status_changed"
            detail = f"bank payout {bank.id} is {bank.status} at Stripe"
        if problem is None:
            return None
        try:
            if transfer is not None:
                facts = Facts(transfer=transfer, bank=bank, arrival=arrival)
                self._apply(record.payout_id, facts)
            self._advance(self.payout(record.payout_id))
        except PaymentProviderError as exc:
            detail = f"{detail}; {exc.message}"
        after = self.payout(record.payout_id)
        if progress(record) == progress(after):
            return item(
                problem, f"{detail}; {after.last_error or 'no change'}", False, stripe_status
            )
        return item(problem, detail, True, stripe_status)

    def _transfers_of(self, record: PayoutRecord) -> Sequence[TransferSnapshot]:
        if record.transfer_id is not None:
            return [self.gateway.retrieve_transfer(record.transfer_id)]
        return self.gateway.find_transfers(record.transfer_group)

    def _bank_side(
        self, record: PayoutRecord, transfer: TransferSnapshot | None
    ) -> tuple[PayoutSnapshot | None, BalanceTxn | None]:
        """Manual payouts: the current bank payout, and the transfer's arrival if unknown."""
        if record.mode != "manual" or transfer is None:
            return None, None
        arrival = None
        if record.arrival_currency is None:
            arrival = self.gateway.transfer_arrival(transfer)
        if record.stripe_payout_id is not None:
            return self.gateway.retrieve_payout(record.account_id, record.stripe_payout_id), arrival
        current = (
            b
            for b in self.gateway.list_payouts(record.account_id)
            if b.metadata.get("payout_id") == record.payout_id
            and b.status not in ("failed", "canceled")  # earlier attempts, already booked
        )
        return next(current, None), arrival
