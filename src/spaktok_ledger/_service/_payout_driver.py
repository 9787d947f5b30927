"""Driving Stripe for a payout, outside any database transaction.

The Transfer to the connected account, then (manual payouts) the Payout to
its bank, each under a deterministic idempotency key, each fact booked as it
arrives (``_payout_facts.py``). What Stripe's answers mean:

- an error raised while the endpoint ran is saved under its idempotency key
  and replayed to a retry with the same key
  (https://docs.stripe.com/api/idempotent_requests), so after a refusal the
  next attempt needs a new key: keys carry an attempt number;
- ``balance_insufficient`` on a transfer is not final: the platform's funds are
  still pending (or were swept by its own payouts). The transfer is retried
  with a ``source_transaction``, a recent charge whose funds cover it (Stripe
  then moves the money when that charge's funds become available,
  https://docs.stripe.com/connect/separate-charges-and-transfers#transfer-availability),
  or the payout waits, held and reported, for ``reconcile()`` to try again;
- another refusal (a 4xx, with no transfer in the payout's group) voids the
  hold; a timeout or a 5xx leaves the outcome unknown: the hold stays and the
  same key is used again.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from spaktok_ledger._currency import to_stripe_amount
from spaktok_ledger._errors import PaymentProviderError
from spaktok_ledger._service._gateway import TransferSnapshot
from spaktok_ledger._service._payout_facts import _PayoutFacts
from spaktok_ledger._service._payout_rows import Facts, PayoutRecord, refused, unknown_outcome
from spaktok_ledger._store import Ledger

_WAITING = "balance_insufficient"


def _insufficient(exc: PaymentProviderError) -> bool:
    return exc.details.get("stripe_code") == _WAITING


class _PayoutDriver(_PayoutFacts):
    """The Stripe calls a payout still needs."""

    def _advance(self, record: PayoutRecord) -> PayoutRecord:
        """Make the Stripe calls a payout still needs; each fact is booked as it arrives."""
        if record.status == "pending" and record.ledger_state == "held":
            transfer = self._create_transfer(record)
            arrival = self.gateway.transfer_arrival(transfer) if record.mode == "manual" else None
            record = self._apply(record.payout_id, Facts(transfer=transfer, arrival=arrival))
        if (
            record.mode == "manual"
            and record.status == "transferred"
            and record.stripe_payout_id is None
            and record.on_account_minor > 0
            and record.arrival_currency is not None
        ):
            record = self._create_bank_payout(record)
        return record

    def _transfer_key(self, record: PayoutRecord) -> str:
        attempt = record.transfer_attempts
        return (
            f"payout:{record.payout_id}"
            if attempt == 0
            else (f"payout:{record.payout_id}:transfer:{attempt}")
        )

    def _create_transfer(self, record: PayoutRecord) -> TransferSnapshot:
        if record.transfer_attempts:
            # An earlier attempt may have been made after all (its answer lost).
            found = self.gateway.find_transfers(record.transfer_group)
            if found:
                return found[0]
        try:
            return self.gateway.create_transfer(
                amount_usd_minor=record.amount_usd_minor,
                destination=record.account_id,
                transfer_group=record.transfer_group,
                metadata={"payout_id": record.payout_id, "streamer_id": record.streamer_id},
                idempotency_key=self._transfer_key(record),
                source_transaction=record.source_transaction,
            )
        except PaymentProviderError as exc:
            if _insufficient(exc):
                return self._waiting_for_funds(record, exc)
            if not refused(exc):
                self._note(record.payout_id, f"creating the transfer: {exc.message}")
                raise unknown_outcome(record, exc) from exc
            # Refused: void the hold, but only once Stripe confirms that no
            # transfer exists in the payout's group (an earlier attempt may have made it).
            try:
                found = self.gateway.find_transfers(record.transfer_group)
            except PaymentProviderError as lookup:
                self._note(record.payout_id, f"creating the transfer: {exc.message}")
                raise unknown_outcome(record, lookup) from exc
            if found:
                return found[0]
            self._refuse(record.payout_id, exc)
            raise PaymentProviderError(
                f"Stripe refused the transfer for payout {record.payout_id}: {exc.message}. "
                "Nothing was paid; the hold is released and the money is available again",
                retryable=False,
                payout_id=record.payout_id,
                status="failed",
                **{k: v for k, v in exc.details.items() if k not in ("payout_id", "status")},
            ) from exc

    def _waiting_for_funds(
        self, record: PayoutRecord, exc: PaymentProviderError
    ) -> TransferSnapshot:
        """``balance_insufficient``: try a charge as ``source_transaction`` (once per
        charge), else keep the payout held and report it; each new try gets a new key."""
        source = record.source_transaction or self._source_charge(record)
        retry = source is not None and source != record.source_transaction
        message = (
            f"{_WAITING}: the platform's available Stripe balance does not cover the transfer "
            + (f"; retrying from charge {source}" if retry else "; waiting for funds")
        )
        now = self.clock()
        self.ledger.atomic(
            lambda tx: self._update(
                tx.connection(),
                record.payout_id,
                now,
                transfer_attempts=record.transfer_attempts + 1,
                source_transaction=source,
                last_error=message[:1000],
            )
        )
        if retry:
            return self._create_transfer(self.payout(record.payout_id))
        raise PaymentProviderError(
            f"payout {record.payout_id} waits for funds: Stripe answered {_WAITING} "
            f"({exc.message}). The hold stays; reconcile() transfers it when the funds are "
            "available (a new idempotency key each time: Stripe replays a refusal)",
            retryable=True,
            payout_id=record.payout_id,
            status="pending",
            stripe_code=_WAITING,
        ) from exc

    def _source_charge(self, record: PayoutRecord) -> str | None:
        """A recent USD charge whose amount, less what earlier payouts already took from it,
        covers this payout: the transfer can draw on it while its funds are pending."""
        t = self._t
        purchases, payouts = t.purchases, t.payouts

        def candidates(conn: Any) -> list[Any]:
            recent = (
                sa.select(purchases.c.charge_id, purchases.c.balance_txns)
                .where(purchases.c.status == "credited", purchases.c.charge_id.is_not(None))
                .order_by(purchases.c.created_at.desc())
                .limit(200)
            )
            used = dict(
                conn.execute(
                    sa.select(payouts.c.source_transaction, sa.func.sum(payouts.c.amount_usd_minor))
                    .where(payouts.c.source_transaction.is_not(None))
                    .group_by(payouts.c.source_transaction)
                ).all()
            )
            return [(row, int(used.get(row.charge_id) or 0)) for row in conn.execute(recent)]

        for row, used in self.ledger.read(candidates):
            gross = sum(
                int(v["amount"])
                for v in (row.balance_txns or {}).values()
                if isinstance(v, dict) and v.get("type") == "charge" and v.get("currency") == "USD"
            )
            if gross - used >= record.amount_usd_minor:
                return str(row.charge_id)
        return None

    def _create_bank_payout(self, record: PayoutRecord) -> PayoutRecord:
        """Manual payouts: pay what is on the connected account out, in its currency
        (a connected account pays out only in a currency it has a bank account in,
        https://docs.stripe.com/connect/payouts-connected-accounts)."""
        assert record.arrival_currency is not None
        attempt = record.bank_attempts
        key = f"payout:{record.payout_id}:payout" + (f":{attempt}" if attempt else "")
        try:
            bank = self.gateway.create_payout(
                account=record.account_id,
                stripe_amount=to_stripe_amount(record.on_account_minor, record.arrival_currency),
                currency=record.arrival_currency,
                metadata={"payout_id": record.payout_id, "streamer_id": record.streamer_id},
                idempotency_key=key,
            )
        except PaymentProviderError as exc:
            note = f"creating the bank payout: {exc.message}"
            if not refused(exc):
                self._note(record.payout_id, note)
                raise PaymentProviderError(
                    f"Stripe could not be reached to create the bank payout of "
                    f"{record.payout_id}: {exc.message}. The transfer is done; retry with "
                    "the same idempotency key, or reconcile() will finish it",
                    retryable=True,
                    payout_id=record.payout_id,
                    status=record.status,
                ) from exc
            # Refused (the funds not available yet, payouts paused): the money is on the
            # connected account and stays in flight; reconcile() tries again, with a new
            # key since Stripe replays a refusal to the old one.
            now = self.clock()

            def refusal(tx: Ledger) -> None:
                self._update(
                    tx.connection(),
                    record.payout_id,
                    now,
                    bank_attempts=attempt + 1,
                    last_error=note[:1000],
                )

            self.ledger.atomic(refusal)
            return self.payout(record.payout_id)
        return self._apply(record.payout_id, Facts(bank=bank))

    def _refuse(self, payout_id: str, exc: PaymentProviderError) -> None:
        now = self.clock()

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            row = self._lock(conn, payout_id)
            if row.ledger_state != "held" or row.transfer_id is not None:
                return
            tx.void_hold(
                row.hold_entry_id,
                idempotency_key=f"payout:{payout_id}:void",
                metadata={"payout_id": payout_id, "step": "refused", "reason": exc.message},
            )
            code = exc.details.get("stripe_code")
            self._update(
                conn,
                payout_id,
                now,
                status="failed",
                ledger_state="voided",
                failure_code=str(code)[:100] if code else "transfer_refused",
                failure_message=exc.message[:1000],
            )
            self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", payout_id, now)

        self.ledger.atomic(run)
