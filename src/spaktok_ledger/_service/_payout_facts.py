"""Booking what Stripe says about a payout: the transfer, its reversals, the bank payouts.

Facts from Stripe are merged into the payout's row (only ever forwards: a
reversed amount never shrinks, a bank payout's status never goes back) and the
ledger is brought to the state they call for. Every step has a ledger key
derived from the payout (and the bank payout attempt), so a fact reported
twice (a webhook, a retry, reconciliation) is booked once.

Automatic payouts (Stripe's schedule pays the bank): the transfer settles the
payout, the money is the streamer's from then on; a reversal brings part back.

Manual payouts (the platform creates each bank payout on the connected
account). The ledger follows the money where Stripe has it:

(``S:C`` is ``streamer:{id}:stripe_balance:C``, the connected account's balance in
its currency ``C``; ``T:C`` is ``streamer:{id}:bank_transit:C``, payouts on their way
to its bank; amounts: A in USD, Y in ``C``)

=====================  ==================================================================
fact                   entry
=====================  ==================================================================
transfer arrives       Dr ``S:C`` Y / Cr ``platform:stripe_balance`` A
bank payout created    Dr ``T:C`` Y / Cr ``S:C`` Y
bank payout paid       the hold posted; Dr ``payouts_in_flight`` A / Cr ``T:C`` Y
bank payout failed     (if it was paid: the previous line reversed) and Dr ``S:C`` Y /
(also after paid),     Cr ``T:C`` Y. Stripe returns the money to the *connected
or canceled            account's* balance (the payout's ``failure_balance_transaction``,
                       https://docs.stripe.com/api/payouts/object); it stays in flight
                       there until :meth:`Payouts.repay` pays it out again, never a
                       second platform transfer
transfer reversed R    Dr ``platform:stripe_balance`` R / Cr ``S:C``; Dr
                       ``payouts_in_flight`` R / Cr ``earnings`` R
=====================  ==================================================================

Across currencies (a USD transfer to a EUR account arrives in EUR: Stripe
converts into the account's currency, https://docs.stripe.com/connect/currencies)
each entry balances per currency through ``platform:currency_exchange``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spaktok_ledger._currency import from_stripe_amount, to_major
from spaktok_ledger._domain import (
    AccountKind,
    AccountSpec,
    EntryDraft,
    EntryPhase,
    EntryType,
    Posting,
)
from spaktok_ledger._errors import LedgerError
from spaktok_ledger._service._gateway import BalanceTxn
from spaktok_ledger._service._gifts import earnings_account
from spaktok_ledger._service._payout_rows import (
    BANK_RANK,
    STRIPE_BALANCE,
    Facts,
    PayoutRecord,
    _PayoutsCore,
    bank_minor,
    connected_balance_account,
    usd,
)
from spaktok_ledger._service._settlement import EXCHANGE, open_currency_accounts
from spaktok_ledger._service._stripe_index import record_booked
from spaktok_ledger._store import Ledger
from spaktok_ledger._store._units import expected_exponent


def _exchange(currency: str) -> str:
    return EXCHANGE if currency == "USD" else f"{EXCHANGE}:{currency}"


def move(debit: tuple[str, str, int], credit: tuple[str, str, int]) -> list[Posting]:
    """Dr ``debit`` / Cr ``credit`` (each ``(account, currency, minor units)``), through the
    currency-exchange accounts when the currencies differ."""
    debit_code, debit_currency, debit_minor = debit
    credit_code, credit_currency, credit_minor = credit
    legs = []
    if debit_minor:
        legs.append(Posting(debit_code, debit_minor, debit_currency))
    if credit_minor:
        legs.append(Posting(credit_code, -credit_minor, credit_currency))
    if debit_currency != credit_currency:
        if credit_minor:
            legs.append(Posting(_exchange(credit_currency), credit_minor, credit_currency))
        if debit_minor:
            legs.append(Posting(_exchange(debit_currency), -debit_minor, debit_currency))
    return legs


class _PayoutFacts(_PayoutsCore):
    """The facts-to-books part of :class:`Payouts`."""

    def _apply(self, payout_id: str, facts: Facts) -> PayoutRecord:
        now = self.clock()

        def run(tx: Ledger) -> PayoutRecord:
            self._merge_and_converge(tx, self._lock(tx.connection(), payout_id), facts, now)
            return self._load(tx.connection(), payout_id)

        return self.ledger.atomic(run)

    def _merge_and_converge(
        self, tx: Ledger, row: Any, facts: Facts, now: datetime
    ) -> tuple[str, str]:
        """Merge ``facts`` into the payout's row and book what they call for.

        Returns ``(status, outcome)``: the new status, and what happened
        (``paid``, ``failed``, ``canceled``, ``reversed``, ``returned``,
        ``recorded`` when only facts changed, ``unchanged``).
        """
        p = dict(row._mapping)
        before = dict(p)
        notes: list[str] = []
        transfer, bank, arrival = facts.transfer, facts.bank, facts.arrival
        if transfer is not None:
            if (
                transfer.destination != p["account_id"]
                or transfer.stripe_amount != p["amount_usd_minor"]
            ):
                notes.append(
                    f"transfer {transfer.id} does not match the payout "
                    f"({transfer.stripe_amount} to {transfer.destination}): review"
                )
            elif p["transfer_id"] in (None, transfer.id):
                p["transfer_id"] = transfer.id
                p["transfer_reversed_minor"] = max(
                    p["transfer_reversed_minor"], transfer.reversed_stripe_amount
                )
                p["source_transaction"] = transfer.source_transaction or p["source_transaction"]
            else:
                notes.append(f"a second transfer {transfer.id} exists for the payout: review")
        if arrival is not None and p["arrival_currency"] is None:
            p["arrival_currency"] = arrival.currency
            p["arrival_stripe_amount"] = arrival.amount_minor
            p["arrival_stripe_exponent"] = expected_exponent(arrival.currency, "stripe")
            p["arrival_exponent"] = expected_exponent(arrival.currency, "iso")
            if arrival.exchange_rate is not None:
                p["exchange_rate"] = str(arrival.exchange_rate)
        if bank is not None:
            if p["stripe_payout_id"] in (None, bank.id):
                p["stripe_payout_id"] = bank.id
                if BANK_RANK.get(bank.status, 0) >= BANK_RANK[p["stripe_payout_status"]]:
                    p["stripe_payout_status"] = bank.status
                p["payout_currency"] = bank.currency or p["payout_currency"]
                p["payout_stripe_amount"] = bank.stripe_amount
                p["payout_stripe_exponent"] = expected_exponent(p["payout_currency"], "stripe")
                txn = bank.balance_transaction
                if txn is not None and txn.exchange_rate is not None:
                    p["exchange_rate"] = str(txn.exchange_rate)
                if bank.status == "failed":
                    p["failure_code"] = bank.failure_code or p["failure_code"]
                    p["failure_message"] = bank.failure_message or p["failure_message"]
            elif bank.metadata.get("payout_id") != p["id"] or bank.status not in (
                "failed",
                "canceled",
            ):
                notes.append(f"a second bank payout {bank.id} exists for the payout: review")
            # else: an earlier attempt that failed, already booked: nothing new.
        if p["mode"] == "manual":
            outcome = self._converge_manual(tx, p, facts, now, notes)
        else:
            outcome = self._converge_automatic(tx, p, facts, now, notes)
        if notes:
            p["last_error"] = ("review: " + "; ".join(notes))[:1000]
        elif p["status"] != before["status"] and not str(p["last_error"]).startswith("review:"):
            p["last_error"] = None  # progress: an earlier transient error no longer applies
        changed = {k: v for k, v in p.items() if v != before[k]}
        if changed:
            self._update(tx.connection(), p["id"], now, **changed)
        if outcome == "unchanged" and changed:
            outcome = "recorded"
        return p["status"], outcome

    @staticmethod
    def _meta(p: dict[str, Any]) -> dict[str, Any]:
        return {
            "payout_id": p["id"],
            "streamer": p["streamer_id"],
            "account": p["account_id"],
            "stripe_transfer_id": p["transfer_id"],
            "stripe_payout_id": p["stripe_payout_id"],
        }

    def _book(
        self,
        tx: Ledger,
        p: dict[str, Any],
        key: str,
        legs: list[Posting],
        *,
        description: str,
        step: str,
        txns: list[BalanceTxn | None],
        now: datetime,
        **metadata: Any,
    ) -> int | None:
        """Post one step of the payout (once per key) and index its Stripe transactions."""
        if not legs:
            return None
        entry = tx.post(
            EntryDraft(
                EntryType.PAYOUT,
                tuple(legs),
                key,
                description=description,
                metadata={**self._meta(p), "step": step, **metadata},
            )
        )
        record_booked(
            tx.connection(),
            self.ledger.tables,
            [t for t in txns if t is not None],
            subject_id=p["id"],
            entry_id=entry.id,
            now=now,
        )
        return entry.id

    @staticmethod
    def _booked(tx: Ledger, key: str) -> bool:
        try:
            tx.entry_by_key(key)
        except LedgerError:
            return False
        return True

    # -- automatic payouts: the transfer settles ---------------------------------------

    def _converge_automatic(
        self, tx: Ledger, p: dict[str, Any], facts: Facts, now: datetime, notes: list[str]
    ) -> str:
        amount = p["amount_usd_minor"]
        moved = p["transfer_id"] is not None
        back = min(p["transfer_reversed_minor"], amount)
        if p["ledger_state"] == "voided" and not moved:
            return "unchanged"  # refused by Stripe before any money moved: final
        status: str = "reversed" if back >= amount else "transferred" if moved else "pending"
        p["status"] = status
        outcome = "unchanged"
        conn = tx.connection()
        payout_id = p["id"]
        transfer = facts.transfer
        in_flight = earnings_account(p["streamer_id"], "payouts_in_flight")
        if p["ledger_state"] == "held":
            if moved and back >= amount and not self._booked(tx, f"payout:{payout_id}:settle"):
                # Transferred and fully reversed before we booked either: nothing moved.
                tx.void_hold(
                    p["hold_entry_id"],
                    idempotency_key=f"payout:{payout_id}:void",
                    metadata={**self._meta(p), "step": status},
                )
                p["ledger_state"] = "voided"
                self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", p, now)
                return status
            if moved:
                tx.post_hold(
                    p["hold_entry_id"],
                    idempotency_key=f"payout:{payout_id}:post",
                    description=f"Payout {payout_id} sent: USD {usd(amount)}",
                    metadata={**self._meta(p), "step": "posted"},
                )
                p["settlement_entry_id"] = self._book(
                    tx,
                    p,
                    f"payout:{payout_id}:settle",
                    [Posting.debit(in_flight, amount), Posting.credit(STRIPE_BALANCE, amount)],
                    description=f"Payout {payout_id} transferred to Stripe account "
                    f"{p['account_id']}",
                    step="settled",
                    txns=[transfer.balance_transaction if transfer else None],
                    now=now,
                    mode="automatic",
                )
                p["ledger_state"] = "settled"
                self._announce(conn, "payout.paid", f"payout.paid:{payout_id}", p, now)
                outcome = "paid"
        if p["ledger_state"] == "settled" and back > p["returned_usd_minor"]:
            part = back - p["returned_usd_minor"]
            self._book(
                tx,
                p,
                f"payout:{payout_id}:return:{back}",
                [
                    Posting.debit(STRIPE_BALANCE, part),
                    Posting.credit(earnings_account(p["streamer_id"]), part),
                ],
                description=f"Payout {payout_id}: USD {usd(part)} returned to earnings (reversed)",
                step="returned",
                txns=list(transfer.reversal_transactions) if transfer else [],
                now=now,
                returned_usd_minor=part,
            )
            p["returned_usd_minor"] = back
            if back >= amount:
                self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", p, now)
                return status
            self._announce(conn, "payout.returned", f"payout.returned:{payout_id}:{back}", p, now)
            return "paid" if outcome == "paid" else "returned"
        return outcome

    # -- manual payouts: follow the money on the connected account ----------------------

    def _open_streamer_accounts(self, tx: Ledger, streamer: str, currency: str) -> None:
        tx.open_accounts(
            [
                AccountSpec(
                    connected_balance_account(streamer, currency, bucket),
                    AccountKind.ASSET,
                    currency,
                    allow_overdraft=True,
                )
                for bucket in ("stripe_balance", "bank_transit")
            ]
        )
        if currency != "USD":
            open_currency_accounts(tx, currency)

    def _converge_manual(
        self, tx: Ledger, p: dict[str, Any], facts: Facts, now: datetime, notes: list[str]
    ) -> str:
        if p["ledger_state"] == "voided" and p["transfer_id"] is None:
            return "unchanged"  # refused by Stripe before any money moved: final
        if p["transfer_id"] is None:
            return "unchanged"
        if p["arrival_currency"] is None:
            notes.append("the transfer's arrival on the connected account is not known yet")
            return "unchanged"
        self._open_streamer_accounts(tx, p["streamer_id"], p["arrival_currency"])
        self._to_account(tx, p, facts, now)
        outcome = self._bank_steps(tx, p, facts, now)
        back = min(p["transfer_reversed_minor"], p["amount_usd_minor"])
        if back > p["returned_usd_minor"]:
            outcome = self._manual_reversal(tx, p, facts, back, now) or outcome
        return outcome

    def _to_account(self, tx: Ledger, p: dict[str, Any], facts: Facts, now: datetime) -> None:
        """The transfer left the platform's balance and arrived on the connected account."""
        payout_id, currency, amount = p["id"], p["arrival_currency"], p["amount_usd_minor"]
        key = f"payout:{payout_id}:to_account"
        if self._booked(tx, key):
            return
        arrived = from_stripe_amount(p["arrival_stripe_amount"], currency)
        on_account = connected_balance_account(p["streamer_id"], currency)
        transfer = facts.transfer
        self._book(
            tx,
            p,
            key,
            move((on_account, currency, arrived), (STRIPE_BALANCE, "USD", amount)),
            description=f"Payout {payout_id}: USD {usd(amount)} transferred to Stripe account "
            f"{p['account_id']} ({to_major(arrived, currency)} {currency})",
            step="transferred",
            txns=[transfer.balance_transaction if transfer else None, facts.arrival],
            now=now,
        )
        p["on_account_minor"] += arrived
        if p["status"] == "pending":
            p["status"] = "transferred"

    def _bank_steps(self, tx: Ledger, p: dict[str, Any], facts: Facts, now: datetime) -> str:
        """The current bank payout: created, then paid, or failed/canceled (money back)."""
        payout_id, streamer, currency = p["id"], p["streamer_id"], p["arrival_currency"]
        attempt, state = p["bank_attempts"], p["stripe_payout_status"]
        sent = bank_minor(p["payout_stripe_amount"], p["payout_currency"])
        if p["stripe_payout_id"] is None or sent is None or state is None:
            return "unchanged"
        on_account = connected_balance_account(streamer, currency)
        transit = connected_balance_account(streamer, currency, "bank_transit")
        in_flight = earnings_account(streamer, "payouts_in_flight")
        bank, conn = facts.bank, tx.connection()
        label = f"bank payout {p['stripe_payout_id']} of {to_major(sent, currency)} {currency}"
        key = f"payout:{payout_id}:to_bank:{attempt}"
        if not self._booked(tx, key):
            self._book(
                tx,
                p,
                key,
                move((transit, currency, sent), (on_account, currency, sent)),
                description=f"Payout {payout_id}: {label}",
                step="to_bank",
                txns=[bank.balance_transaction if bank else None],
                now=now,
            )
            p["on_account_minor"] -= sent
            p["status"] = "in_transit"
        settle = f"payout:{payout_id}:settle:{attempt}"
        owed = p["amount_usd_minor"] - p["returned_usd_minor"]
        outcome = "unchanged"
        if state == "paid" and not self._booked(tx, settle):
            if p["ledger_state"] == "held" and self._hold_pending(tx, p):
                tx.post_hold(
                    p["hold_entry_id"],
                    idempotency_key=f"payout:{payout_id}:post",
                    description=f"Payout {payout_id} sent: USD {usd(p['amount_usd_minor'])}",
                    metadata={**self._meta(p), "step": "posted"},
                )
            p["settlement_entry_id"] = self._book(
                tx,
                p,
                settle,
                move((in_flight, "USD", owed), (transit, currency, sent)),
                description=f"Payout {payout_id} paid to the bank: "
                f"{to_major(sent, currency)} {currency}",
                step="settled",
                txns=[],
                now=now,
                mode="manual",
                payout_currency=p["payout_currency"],
                payout_stripe_amount=p["payout_stripe_amount"],
                payout_amount_minor=sent,
                exchange_rate=p["exchange_rate"],
            )
            p["ledger_state"], p["status"] = "settled", "paid"
            self._announce(conn, "payout.paid", f"payout.paid:{payout_id}:{attempt}", p, now)
            outcome = "paid"
        back = f"payout:{payout_id}:back:{attempt}"
        if state in ("failed", "canceled") and not self._booked(tx, back):
            legs = move((on_account, currency, sent), (transit, currency, sent))
            if self._booked(tx, settle):  # paid, then failed: undo the settlement
                legs += move((transit, currency, sent), (in_flight, "USD", owed))
                p["ledger_state"] = "held"
            why = f" ({p['failure_code']})" if p["failure_code"] else ""
            self._book(
                tx,
                p,
                back,
                legs,
                description=f"Payout {payout_id}: {label} {state}{why}; the money is back on "
                "the connected account",
                step=state,
                txns=[bank.failure_balance_transaction if bank else None],
                now=now,
                failure_code=p["failure_code"],
            )
            p["on_account_minor"] += sent
            p["status"] = state
            self._announce(conn, f"payout.{state}", f"payout.{state}:{payout_id}:{attempt}", p, now)
            outcome = state
        return outcome

    def _hold_pending(self, tx: Ledger, p: dict[str, Any]) -> bool:
        return tx.hold_status(p["hold_entry_id"]) is EntryPhase.PENDING

    def _manual_reversal(
        self, tx: Ledger, p: dict[str, Any], facts: Facts, back: int, now: datetime
    ) -> str | None:
        """Part of the transfer pulled back from the connected account to the platform."""
        amount, payout_id, streamer = p["amount_usd_minor"], p["id"], p["streamer_id"]
        currency = p["arrival_currency"]
        part = back - p["returned_usd_minor"]
        arrived = from_stripe_amount(p["arrival_stripe_amount"], currency)
        local = arrived * back // amount - arrived * p["returned_usd_minor"] // amount
        if back >= amount:
            local = p["on_account_minor"]  # all that is left of it comes back
        on_account = connected_balance_account(streamer, currency)
        legs = move((STRIPE_BALANCE, "USD", part), (on_account, currency, local))
        if p["ledger_state"] == "held" and self._hold_pending(tx, p) and back >= amount:
            tx.void_hold(
                p["hold_entry_id"],
                idempotency_key=f"payout:{payout_id}:void",
                metadata={**self._meta(p), "step": "reversed"},
            )
            p["ledger_state"] = "voided"
        else:
            if self._hold_pending(tx, p):
                tx.post_hold(
                    p["hold_entry_id"],
                    idempotency_key=f"payout:{payout_id}:post",
                    metadata={**self._meta(p), "step": "posted"},
                )
            legs += [
                Posting.debit(earnings_account(streamer, "payouts_in_flight"), part),
                Posting.credit(earnings_account(streamer), part),
            ]
            if back >= amount:
                p["ledger_state"] = "settled"
        transfer = facts.transfer
        self._book(
            tx,
            p,
            f"payout:{payout_id}:return:{back}",
            legs,
            description=f"Payout {payout_id}: USD {usd(part)} pulled back from the connected "
            "account",
            step="returned",
            txns=list(transfer.reversal_transactions) if transfer else [],
            now=now,
            returned_usd_minor=part,
        )
        p["returned_usd_minor"] = back
        p["on_account_minor"] -= local
        conn = tx.connection()
        if back >= amount:
            p["status"] = "reversed"
            self._announce(conn, "payout.failed", f"payout.failed:{payout_id}", p, now)
            return "reversed"
        self._announce(conn, "payout.returned", f"payout.returned:{payout_id}:{back}", p, now)
        return "returned"
