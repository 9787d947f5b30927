"""Settlement: what Stripe's balance transactions of a purchase mean for the books.

Once Stripe reports a purchase's balance transactions (the charge, refunds and
refund failures, dispute withdrawals and reinstatements, each with its fee),
the ledger is brought to:

- ``platform:stripe_balance`` (USD) and ``platform:stripe_balance:{CUR}`` (any
  other currency Stripe settles in) hold the sum of their nets: the books'
  Stripe balance per currency is Stripe's
  (https://docs.stripe.com/api/balance_transactions/object);
- ``platform:payment_fees`` holds the fees (USD, other currencies valued at
  the purchase's quote);
- ``platform:stripe_clearing`` holds nothing for the purchase: what its coins
  accrued (list prices) has been settled;
- ``platform:unapplied_payments`` holds, for a purchase held for review,
  refused or mismatched, the customer's money Stripe still has: it is owed
  back (or becomes coins when released);
- ``platform:refund_losses`` takes what the customer got back twice (a
  chargeback of a payment already refunded: Stripe withdraws the funds even so,
  https://docs.stripe.com/disputes/how-disputes-work);
- ``platform:fx_gain_loss`` takes the rest: what Stripe settled against the
  USD list price.

Money in another currency enters the USD books through currency-exchange
(trading) accounts: ``platform:currency_exchange:{CUR}`` mirrors the foreign
amount and ``platform:currency_exchange`` its USD value at the quote's rate,
so every entry balances per currency and the later rate moves show as the
difference between the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Final

from spaktok_ledger._currency import stripe_exponent, to_minor
from spaktok_ledger._domain import AccountKind, AccountSpec, EntryDraft, EntryType, Posting
from spaktok_ledger._service._debts import REFUND_LOSSES
from spaktok_ledger._service._gateway import BalanceTxn
from spaktok_ledger._service._gifts import CLEARING
from spaktok_ledger._service._purchase_rows import (
    _PaymentsCore,
    _State,
    disputed_amount,
    share,
)
from spaktok_ledger._service._stripe_index import record_booked
from spaktok_ledger._store import Ledger

__all__ = ["stripe_balance_account"]

STRIPE_BALANCE: Final = "platform:stripe_balance"
PAYMENT_FEES: Final = "platform:payment_fees"
FX_GAIN_LOSS: Final = "platform:fx_gain_loss"
UNAPPLIED: Final = "platform:unapplied_payments"
EXCHANGE: Final = "platform:currency_exchange"
_UNAPPLIED_STATUSES: Final = ("held", "refused", "mismatch")


def stripe_balance_account(currency: str) -> str:
    """The ledger's account for the platform's Stripe balance in ``currency``."""
    return STRIPE_BALANCE if currency == "USD" else f"{STRIPE_BALANCE}:{currency}"


def open_currency_accounts(tx: Ledger, currency: str) -> None:
    """The Stripe balance and exchange accounts of a foreign currency (idempotent)."""
    tx.open_accounts(
        [
            AccountSpec(stripe_balance_account(currency), AccountKind.ASSET, currency, True),
            AccountSpec(f"{EXCHANGE}:{currency}", AccountKind.EQUITY, currency, True),
            AccountSpec(EXCHANGE, AccountKind.EQUITY, "USD", True),
        ]
    )


def _fields(value: Any) -> dict[str, Any]:
    """A seen transaction as stored (rows from before 0007 kept ``[net, fee, type]``)."""
    if isinstance(value, Mapping):
        return dict(value)
    net, fee, kind = value[0], value[1], value[2]
    return {"net": net, "fee": fee, "type": kind, "currency": "USD", "amount": net + fee}


def _merge_seen(stored: Mapping[str, Any], fresh: Sequence[BalanceTxn]) -> dict[str, Any]:
    """The purchase's balance transactions seen so far, with those of this snapshot."""
    seen = {k: _fields(v) for k, v in stored.items()}
    for t in fresh:
        seen.setdefault(
            t.id,
            {
                "net": t.net_minor,
                "fee": t.fee_minor,
                "type": t.type,
                "currency": t.currency,
                "amount": t.amount_minor,
                "rate": str(t.exchange_rate) if t.exchange_rate is not None else None,
            },
        )
    return seen


def _ledger_units(stripe_amount: int, currency: str) -> int:
    """A total of Stripe's integers in the ledger's minor units, rounded half-even."""
    major = Decimal(stripe_amount).scaleb(-stripe_exponent(currency))
    return to_minor(major, currency, rounding=ROUND_HALF_EVEN)


class _Settlement(_PaymentsCore):
    """Books Stripe's fees, FX and balance movements for a purchase."""

    def _usd_value(self, row: Mapping[str, Any], amount: int, txn: Mapping[str, Any]) -> int:
        """US cents for ``amount`` of a transaction in another currency: the share of the
        list price it stands for (back through Stripe's rate if it was converted)."""
        if txn["currency"] == "USD":
            return amount
        local = Decimal(amount)
        rate = txn.get("rate")
        if rate and txn["currency"] != row["currency"]:
            local = local / Decimal(rate)
        charged = int(local.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return share(row["price_usd_minor"], charged, row["stripe_amount"])

    def _foreign_totals(
        self, row: Mapping[str, Any], seen: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, list[int]]:
        """{currency: [net in the ledger's units, its USD value]} for non-USD settlement."""
        foreign: dict[str, list[int]] = {}
        for v in seen.values():
            if v["currency"] != "USD":
                totals = foreign.setdefault(v["currency"], [0, 0])
                totals[0] += v["net"]
                totals[1] += self._usd_value(row, v["net"], v)
        for currency, totals in foreign.items():
            # Stripe's integers for the currency (ISK: two-decimal) to the ledger's
            # (ISO 4217: ISK has none). The running total is converted, so a
            # fraction the ledger cannot hold is rounded once, never accumulated.
            totals[0] = _ledger_units(totals[0], currency)
        return foreign

    def _settle(self, tx: Ledger, s: _State, fresh: Sequence[BalanceTxn], now: datetime) -> None:
        """Bring the books to the targets above (deltas only: Stripe's figures only ever
        accumulate, so a snapshot older than one already booked cannot take it back)."""
        row = s.row
        new = sorted(t.id for t in fresh if t.id not in row["balance_txns"])
        seen = _merge_seen(row["balance_txns"], fresh)
        row["balance_txns"] = seen
        if not any(v["type"] == "charge" for v in seen.values()):
            return
        if row["status"] not in ("credited", *_UNAPPLIED_STATUSES):
            return
        net_usd = sum(v["net"] for v in seen.values() if v["currency"] == "USD")
        fee_usd = sum(self._usd_value(row, v["fee"], v) for v in seen.values())
        foreign = self._foreign_totals(row, seen)
        charged = row["charged_stripe_amount"] or row["stripe_amount"]
        twice = max(row["refunded_stripe_amount"] + disputed_amount(row["disputes"]) - charged, 0)
        over = share(row["price_usd_minor"], twice, row["stripe_amount"])
        unapplied = 0
        if row["status"] in _UNAPPLIED_STATUSES:
            # What Stripe still holds of the customer's money; a second return of the
            # same money is the loss above, not something the customer owes.
            unapplied = over + sum(self._usd_value(row, v["amount"], v) for v in seen.values())
        d_net = net_usd - row["settled_net_usd_minor"]
        d_fee = fee_usd - row["settled_fee_usd_minor"]
        d_clear = row["clearing_usd_minor"] - row["settled_clearing_usd_minor"]
        d_unapplied = unapplied - row["unapplied_usd_minor"]
        d_over = over - row["over_returned_usd_minor"]
        booked = row["settled_foreign"]
        legs: list[Posting] = []
        d_exchange = 0
        for currency, (net, value) in sorted(foreign.items()):
            d_local = net - booked.get(currency, [0, 0])[0]
            d_exchange += value - booked.get(currency, [0, 0])[1]
            if d_local:
                open_currency_accounts(tx, currency)
                legs.append(Posting(stripe_balance_account(currency), d_local, currency))
                legs.append(Posting(f"{EXCHANGE}:{currency}", -d_local, currency))
        fx = d_clear + d_unapplied - d_net - d_fee - d_exchange - d_over
        if d_exchange:
            open_currency_accounts(tx, next(iter(foreign)))
        legs += [
            Posting(code, amount)
            for code, amount in (
                (STRIPE_BALANCE, d_net),
                (PAYMENT_FEES, d_fee),
                (CLEARING, -d_clear),
                (UNAPPLIED, -d_unapplied),
                (REFUND_LOSSES, d_over),
                (EXCHANGE, d_exchange),
                (FX_GAIN_LOSS, fx),
            )
            if amount
        ]
        entry_id = None
        if legs:
            entry = tx.post(
                EntryDraft(
                    EntryType.FEE,
                    tuple(legs),
                    f"purchase:{row['id']}:{row['version']}:settle",
                    description=f"Stripe settlement of purchase {row['id']}: fees and FX",
                    metadata={
                        "purchase_id": row["id"],
                        "net_usd_minor": d_net,
                        "fee_usd_minor": d_fee,
                        "fx_usd_minor": -fx,
                        "unapplied_usd_minor": d_unapplied,
                        "balance_transactions": new,
                        "counterparty": "stripe",
                    },
                    effective_at=now,
                )
            )
            entry_id = entry.id
            s.outcomes.append("settled")
        row["settled_net_usd_minor"] = net_usd
        row["settled_fee_usd_minor"] = fee_usd
        row["settled_clearing_usd_minor"] = row["clearing_usd_minor"]
        row["unapplied_usd_minor"] = unapplied
        row["over_returned_usd_minor"] = over
        row["settled_foreign"] = {c: [n, u] for c, (n, u) in foreign.items()}
        record_booked(
            tx.connection(),
            self.ledger.tables,
            fresh,
            subject_id=row["id"],
            entry_id=entry_id,
            now=now,
        )
