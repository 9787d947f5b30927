"""Streamer payouts through Stripe Connect: KYC, thresholds, holds, webhooks, reconciliation.

:class:`Payouts` is built once at start-up next to the :class:`GiftEconomy`;
each payout endpoint of a host is one call::

    POST /api/payouts/request   -> payouts.request_payout(streamer, amount, idempotency_key=...)
    POST /api/payouts/webhook   -> payouts.handle_webhook(request.body, stripe_signature)
    GET  /api/payouts           -> payouts.payouts(streamer)

The accounting (USD minor units; ``A`` the payout, ``R`` a returned part):

======================  ==========================================================  ===========
step                    entries                                                     ledger call
======================  ==========================================================  ===========
request                 Dr ``earnings`` A / Cr ``payouts_in_flight`` A, pending      ``hold``
automatic: transferred  the hold posted; Dr ``payouts_in_flight`` A /               ``post_hold``
                        Cr ``platform:stripe_balance`` A                            + ``post``
manual                  the money follows Stripe: platform -> the connected         ``post``
                        account's balance -> on its way to the bank -> paid, and
                        back to the connected account when a bank payout fails
                        (``_payout_facts.py`` has the table)
refused by Stripe       the hold voided                                             ``void_hold``
partly reversed         Dr ``platform:stripe_balance`` R / Cr ``earnings`` R          ``post``
======================  ==========================================================  ===========

With Stripe's automatic payout schedule the Transfer settles the payout (the
money is then the streamer's, and Stripe pays their bank on its own
schedule). With manual payouts (``manual_payouts=True``) the platform pays
each bank payout out of the connected account, and a failed one leaves the
money there (:meth:`Payouts.repay`).

Every step is driven by *facts* from Stripe kept on the payout's row (the
transfer, its reversed amount, the bank payout's status), and the ledger is
brought to the state those facts call for (``_converge``). Facts only move
forward (a ``paid`` never overwrites a ``failed``; a reversed amount never
shrinks), so webhooks can arrive twice or in any order, and a retry, a
webhook and :meth:`Payouts.reconcile` can all report the same fact: it is
booked once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._clock import Clock
from spaktok_ledger._compliance._monitor import Movement, MovementKind
from spaktok_ledger._domain import EntryDraft, EntryType, Posting
from spaktok_ledger._errors import (
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    PayoutBelowMinimum,
    PayoutLimitExceeded,
    PayoutsNotEnabled,
    UnknownStreamer,
)
from spaktok_ledger._log import key_given, observed, payout_fields
from spaktok_ledger._money import check_minor
from spaktok_ledger._service._gateway import ConnectedAccountState, PaymentGateway
from spaktok_ledger._service._gifts import GiftEconomy, earnings_account
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._payout_reconcile import _PayoutReconcile
from spaktok_ledger._service._payout_rows import (
    _ACCOUNT_ID,
    DEFAULT_MINIMUM_USD_MINOR,
    MAX_LIST,
    ConnectedAccount,
    Facts,
    PayoutDiscrepancy,
    PayoutRecord,
    check_key,
    cross_border,
    record_of,
    replace_replayed,
    usd,
)
from spaktok_ledger._service._webhooks import WebhookInbox
from spaktok_ledger._store import Ledger

__all__ = ["ConnectedAccount", "PayoutDiscrepancy", "PayoutRecord", "Payouts"]

_COUNTRY = re.compile(r"[A-Za-z]{2}")


class Payouts(_PayoutReconcile):
    """Streamer payouts through Stripe Connect, over a :class:`GiftEconomy`.

    ``connect_webhook_secret`` is the signing secret of the Connect webhook
    endpoint (not the platform endpoint's). ``minimum_usd_minor`` (default
    USD 50.00) is the smallest payout; ``daily_cap_usd_minor`` and
    ``monthly_cap_usd_minor`` cap what one streamer may request per UTC day or
    calendar month. ``manual_payouts=True`` makes a Stripe Payout on the
    connected account after each Transfer (for accounts on a manual payout
    schedule); otherwise Stripe's automatic schedule pays the bank.
    ``platform_country`` (the platform's Stripe account's country) decides which
    streamers' accounts are cross-border.

    >>> payouts = Payouts(economy, StripeGateway(api_key=...),  # doctest: +SKIP
    ...                   connect_webhook_secret="whsec_...")
    """

    def __init__(
        self,
        economy: GiftEconomy,
        gateway: PaymentGateway,
        *,
        connect_webhook_secret: str,
        minimum_usd_minor: int = DEFAULT_MINIMUM_USD_MINOR,
        daily_cap_usd_minor: int | None = None,
        monthly_cap_usd_minor: int | None = None,
        manual_payouts: bool = False,
        platform_country: str = "US",
        tolerance_seconds: int = 300,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(economy, GiftEconomy):
            raise InvalidInput("economy must be a GiftEconomy")
        if not isinstance(connect_webhook_secret, str) or not connect_webhook_secret:
            raise InvalidInput("connect_webhook_secret is required (the Connect endpoint's secret)")
        minimum = check_minor(minimum_usd_minor, name="minimum_usd_minor")
        if minimum < 1:
            raise InvalidInput("minimum_usd_minor must be at least 1")
        for name, cap in (("daily", daily_cap_usd_minor), ("monthly", monthly_cap_usd_minor)):
            if cap is not None and check_minor(cap, name=f"{name}_cap_usd_minor") < minimum:
                raise InvalidInput(f"{name}_cap_usd_minor must be at least minimum_usd_minor")
        if not isinstance(manual_payouts, bool):
            raise InvalidInput("manual_payouts must be a bool")
        if not isinstance(platform_country, str) or not re.fullmatch(
            r"[A-Za-z]{2}", platform_country
        ):
            raise InvalidInput("platform_country must be an ISO 3166 alpha-2 code")
        if (
            isinstance(tolerance_seconds, bool)
            or not isinstance(tolerance_seconds, int)
            or tolerance_seconds < 1
        ):
            raise InvalidInput("tolerance_seconds must be a positive int")
        self.economy = economy
        self.ledger: Ledger = economy.ledger
        self.gateway = gateway
        self.minimum_usd_minor = minimum
        self.daily_cap_usd_minor = daily_cap_usd_minor
        self.monthly_cap_usd_minor = monthly_cap_usd_minor
        self.manual_payouts = manual_payouts
        self.platform_country = platform_country.upper()
        self.tolerance_seconds = tolerance_seconds
        self.clock: Clock = clock or economy.clock
        self.inbox = WebhookInbox(self.ledger, economy.compliance)
        self._secret = connect_webhook_secret
        self._t = self.ledger.tables

    def __repr__(self) -> str:  # never show the secret
        return f"Payouts(manual_payouts={self.manual_payouts}, minimum={self.minimum_usd_minor})"

    # -- connected accounts ------------------------------------------------------------

    def link_account(self, streamer_id: str | int, account_id: str) -> ConnectedAccount:
        """Link a registered streamer to an existing Connect account; fetches its KYC state.

        Linking again to the same account refreshes the state; an account
        already linked to another streamer is a ``Conflict``.
        """
        streamer = self._registered(streamer_id)
        if not isinstance(account_id, str) or not _ACCOUNT_ID.match(account_id):
            raise InvalidInput(
                f"account_id must be a Stripe account id (acct_...), got {account_id!r}"
            )
        state = self.gateway.retrieve_account(account_id)
        return self._store_account(streamer, state)

    def create_express_account(
        self, streamer_id: str | int, *, country: str, email: str | None = None
    ) -> ConnectedAccount:
        """Create an Express account for a streamer (once: later calls return the linked one).

        An account outside the platform's region is created under the ``recipient``
        service agreement, the only one cross-border payouts work with (it can
        receive transfers, not take payments), https://docs.stripe.com/connect/service-agreement-types.
        """
        streamer = self._registered(streamer_id)
        if not isinstance(country, str) or not re.fullmatch(r"[A-Za-z]{2}", country):
            raise InvalidInput(f"country must be an ISO 3166 alpha-2 code, got {country!r}")
        existing = self.account_status(streamer)
        if existing is not None:
            return existing
        country = country.upper()
        state = self.gateway.create_express_account(
            country=country,
            email=email,
            metadata={"streamer_id": streamer},
            idempotency_key=f"{self.ledger.prefix}express:{streamer}",
            service_agreement=(
                "recipient" if cross_border(self.platform_country, country) else "full"
            ),
        )
        return self._store_account(streamer, state)

    def onboarding_link(self, streamer_id: str | int, refresh_url: str, return_url: str) -> str:
        """A one-time Stripe-hosted onboarding URL for the streamer's account (KYC)."""
        account = self.account_status(streamer_id)
        if account is None:
            raise self._no_account(check_party_id(streamer_id, "streamer_id"))
        for name, url in (("refresh_url", refresh_url), ("return_url", return_url)):
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise InvalidInput(f"{name} must be an http(s) URL")
        return self.gateway.create_onboarding_link(account.account_id, refresh_url, return_url)

    def refresh_account(self, streamer_id: str | int) -> ConnectedAccount:
        """Fetch the account's KYC state from Stripe now (when a webhook may have been missed)."""
        account = self.account_status(streamer_id)
        if account is None:
            raise self._no_account(check_party_id(streamer_id, "streamer_id"))
        state = self.gateway.retrieve_account(account.account_id)
        return self._store_account(account.streamer_id, state)

    def account_status(self, streamer_id: str | int) -> ConnectedAccount | None:
        """The streamer's connected account and KYC state (None: none linked yet)."""
        streamer = check_party_id(streamer_id, "streamer_id")
        t = self._t.connected_accounts
        return self.ledger.read(
            lambda conn: self._account_row(
                conn, conn.execute(sa.select(t).where(t.c.streamer_id == streamer)).first()
            )
        )

    def _registered(self, streamer_id: str | int) -> str:
        return self.economy.streamer(streamer_id).streamer_id

    def _store_account(self, streamer: str, state: ConnectedAccountState) -> ConnectedAccount:
        t = self._t.connected_accounts
        now = self.clock()

        def run(tx: Ledger) -> ConnectedAccount:
            conn = tx.connection()
            owner = conn.execute(
                sa.select(t.c.streamer_id).where(t.c.account_id == state.id)
            ).scalar()
            if owner is not None and owner != streamer:
                raise Conflict(
                    f"Stripe account {state.id} is already linked to streamer {owner}",
                    account_id=state.id,
                    streamer_id=owner,
                )
            values = self._account_values(conn, streamer, state, now)
            current = conn.execute(
                sa.select(t.c.streamer_id).where(t.c.streamer_id == streamer).with_for_update()
            ).first()
            if current is None:
                conn.execute(
                    t.insert().values(
                        streamer_id=streamer,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                )
            else:
                conn.execute(
                    t.update().where(t.c.streamer_id == streamer).values(updated_at=now, **values)
                )
            found = self._account_row(
                conn, conn.execute(sa.select(t).where(t.c.streamer_id == streamer)).one()
            )
            assert found is not None
            return found

        account = self.ledger.atomic(run)
        self.wake([f"account:{state.id}"])  # account.updated events that came first
        return account

    @staticmethod
    def _no_account(streamer: str) -> PayoutsNotEnabled:
        return PayoutsNotEnabled(
            f"streamer {streamer} has no Stripe Connect account: create one "
            "(create_express_account) or link one (link_account) first",
            streamer_id=streamer,
            requirement="stripe_account",
        )

    # -- requesting a payout -----------------------------------------------------------

    @observed(
        "payouts", "request_payout", level=logging.INFO, describe=payout_fields, given=key_given
    )
    def request_payout(
        self,
        streamer_id: str | int,
        amount_usd_minor: int | Literal["all"],
        *,
        idempotency_key: str,
    ) -> PayoutRecord:
        """Pay ``amount_usd_minor`` (or ``"all"`` available) of a streamer's earnings out.

        Places a hold (earnings to ``payouts_in_flight``), then, outside any
        database transaction, makes the Stripe Transfer to the connected
        account (and the Payout, with ``manual_payouts``). Idempotent: the same
        key and request returns the same payout (``replayed=True``) and
        finishes what a timeout interrupted; another request under the key is
        an ``IdempotencyConflict``.

        Refusals write nothing: ``PayoutsNotEnabled`` (no account, or KYC not
        done: the error names the requirement due), ``PayoutBelowMinimum``,
        ``InsufficientFunds`` (more than the *available* earnings: matured and
        not already held), ``PayoutLimitExceeded`` (daily/monthly cap).
        ``PaymentProviderError``: Stripe refused the transfer (the hold is
        voided, ``retryable`` false), could not be reached, or has not the funds
        available yet (``balance_insufficient``, after trying a charge as
        ``source_transaction``) (``retryable``: the payout stays ``pending``;
        retry with the same key, or let :meth:`reconcile` finish it).
        """
        streamer = check_party_id(streamer_id, "streamer_id")
        key = check_key(idempotency_key)
        amount: int | None
        if amount_usd_minor == "all":
            amount = None
        else:
            amount = check_minor(amount_usd_minor, name="amount_usd_minor")
            if amount <= 0:
                raise InvalidInput("amount_usd_minor must be positive (or 'all')")
        # The checked amount (an integral Decimal is its int), so the request hashes.
        request = {"op": "request_payout", "streamer": streamer, "amount": amount or "all"}
        request_hash = hashlib.sha256(
            json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        payout_id = f"pyt_{secrets.token_hex(10)}"

        def place() -> PayoutRecord:
            return self.ledger.atomic(
                lambda tx: self._place(
                    tx,
                    streamer=streamer,
                    amount=amount,
                    key=key,
                    request_hash=request_hash,
                    payout_id=payout_id,
                )
            )

        compliance = self.economy.compliance
        record = compliance.guard(self.ledger, place) if compliance else place()
        if not record.is_open:
            return record
        advanced = self._advance(record)
        self.wake(self._payout_keys(advanced.payout_id))  # events that beat the answer
        return replace_replayed(advanced, record.replayed)

    def _place(
        self,
        tx: Ledger,
        *,
        streamer: str,
        amount: int | None,
        key: str,
        request_hash: str,
        payout_id: str,
    ) -> PayoutRecord:
        conn = tx.connection()
        accounts, payouts = self._t.connected_accounts, self._t.payouts
        # One streamer's requests queue on their account row (caps and "all" read
        # consistent totals); the ledger's no-overdraft check guards the money itself.
        account = conn.execute(
            sa.select(accounts).where(accounts.c.streamer_id == streamer).with_for_update()
        ).first()
        existing = conn.execute(
            sa.select(payouts).where(
                payouts.c.streamer_id == streamer, payouts.c.idempotency_key == key
            )
        ).first()
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was already used for a different payout request",
                    idempotency_key=key,
                    payout_id=existing.id,
                )
            return record_of(existing, replayed=True)
        streamers = self._t.streamers
        found = conn.execute(
            sa.select(streamers.c.status, streamers.c.blocked_reason).where(
                streamers.c.streamer_id == streamer
            )
        ).first()
        if found is None:
            raise UnknownStreamer(f"no streamer {streamer!r}", streamer_id=streamer)
        if found.status == "blocked":
            raise PayoutsNotEnabled(
                f"streamer {streamer} is blocked ({found.blocked_reason}): payouts are frozen",
                streamer_id=streamer,
                requirement="unblock",
            )
        if account is None:
            raise self._no_account(streamer)
        state = self._account_row(conn, account)
        assert state is not None
        if not state.payouts_enabled:
            due = state.requirements_due
            reason = state.disabled_reason or (
                "details not submitted" if not state.details_submitted else "verification pending"
            )
            raise PayoutsNotEnabled(
                f"Stripe account {state.account_id} of streamer {streamer} cannot receive "
                f"payouts yet ({reason})" + (f"; due: {', '.join(due)}" if due else ""),
                streamer_id=streamer,
                account_id=state.account_id,
                requirement=due[0] if due else reason,
                requirements_due=list(due),
                disabled_reason=state.disabled_reason,
            )
        available = tx.balance(earnings_account(streamer)).available_minor
        wanted = available if amount is None else amount
        if wanted < self.minimum_usd_minor:
            raise PayoutBelowMinimum(
                f"the minimum payout is {self.minimum_usd_minor} US cents; "
                f"{'available' if amount is None else 'requested'}: {wanted}",
                minimum_usd_minor=self.minimum_usd_minor,
                requested_usd_minor=wanted,
                available_usd_minor=available,
            )
        if wanted > available:
            raise InsufficientFunds(
                f"streamer {streamer} has {available} US cents available for payout "
                f"(matured earnings not already held); the request needs {wanted}",
                account=earnings_account(streamer),
                available_minor=available,
                required_minor=wanted,
                currency="USD",
            )
        now = self.clock()
        self._check_caps(conn, streamer, wanted, now)
        compliance = self.economy.compliance
        movement = Movement(MovementKind.PAYOUT, streamer, wanted, now, reference=payout_id)
        check = compliance.check(tx, movement) if compliance else None
        hold = tx.hold(
            EntryDraft(
                EntryType.PAYOUT,
                (
                    Posting.debit(earnings_account(streamer), wanted),
                    Posting.credit(earnings_account(streamer, "payouts_in_flight"), wanted),
                ),
                f"payout:{payout_id}:hold",
                description=f"Payout {payout_id} requested: USD {usd(wanted)}",
                metadata={
                    "payout_id": payout_id,
                    "streamer": streamer,
                    "account": state.account_id,
                    "mode": self._mode,
                    "step": "requested",
                },
                effective_at=now,
            )
        )
        conn.execute(
            payouts.insert().values(
                id=payout_id,
                streamer_id=streamer,
                idempotency_key=key,
                request_hash=request_hash,
                account_id=state.account_id,
                mode=self._mode,
                amount_usd_minor=wanted,
                # Held for review: no money moves until its cases are decided.
                status="review" if check is not None and check.holds else "pending",
                ledger_state="held",
                hold_entry_id=hold.id,
                created_at=now,
                updated_at=now,
            )
        )
        if compliance is not None and check is not None:
            holds = [("payout", payout_id, hold.id)] if check.holds else []
            compliance.record(tx, check, entry_ids=(hold.id,), holds=holds)
        record = self._load(conn, payout_id)
        self.economy.outbox.write(
            conn,
            "payout.requested",
            f"payout.requested:{payout_id}",
            record.to_dict(),
            entry_id=hold.id,
            now=now,
        )
        return record

    def _check_caps(self, conn: Connection, streamer: str, wanted: int, now: datetime) -> None:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        for window, cap, since in (
            ("daily", self.daily_cap_usd_minor, day),
            ("monthly", self.monthly_cap_usd_minor, month),
        ):
            if cap is None:
                continue
            used = self._used(conn, streamer, since)
            if used + wanted > cap:
                raise PayoutLimitExceeded(
                    f"the {window} payout cap is {cap} US cents; {used} already paid out or "
                    f"in flight since {since.date().isoformat()}, so at most "
                    f"{max(cap - used, 0)} more",
                    window=window,
                    cap_usd_minor=cap,
                    used_usd_minor=used,
                    remaining_usd_minor=max(cap - used, 0),
                    requested_usd_minor=wanted,
                )

    def _used(self, conn: Connection, streamer: str, since: datetime) -> int:
        p = self._t.payouts
        counted = sa.case(
            (p.c.ledger_state == "voided", 0),
            else_=p.c.amount_usd_minor - p.c.returned_usd_minor,
        )
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(counted), 0)).where(
                p.c.streamer_id == streamer, p.c.created_at >= since
            )
        ).scalar_one()
        return int(total)

    # -- manual payouts: the money back on the connected account -----------------------

    def repay(self, payout_id: str) -> PayoutRecord:
        """Pay a failed or canceled bank payout out again, from the connected account.

        Stripe returned the money to the connected account's balance (not the
        platform's), so it is paid out from there: a new bank payout (a new
        idempotency key), never a second transfer. Call it once the streamer has
        fixed their bank details (``account.updated``). ``InvalidInput`` unless
        the payout is awaiting repayment.
        """
        record = self.payout(payout_id)
        if not record.awaiting_repayment:
            raise InvalidInput(
                f"payout {payout_id} is {record.status} ({record.ledger_state}): "
                "only a failed or canceled bank payout can be paid out again",
                payout_id=payout_id,
            )
        now = self.clock()

        def run(tx: Ledger) -> None:
            row = self._lock(tx.connection(), payout_id)
            if not record_of(row).awaiting_repayment:
                return  # a concurrent repay() got here first
            self._update(
                tx.connection(),
                payout_id,
                now,
                status="transferred",
                stripe_payout_id=None,
                stripe_payout_status=None,
                payout_stripe_amount=None,
                bank_attempts=row.bank_attempts + 1,
                failure_code=None,
                failure_message=None,
                last_error=None,
            )

        self.ledger.atomic(run)
        return self._advance(self.payout(payout_id))

    def recall(self, payout_id: str, *, idempotency_key: str) -> PayoutRecord:
        """Pull a manual payout's money back from the connected account to the platform
        (a transfer reversal) and return it to the streamer's earnings; for money
        that waits there after a failed bank payout, when it will not be re-paid."""
        record = self.payout(payout_id)
        if record.transfer_id is None or not record.awaiting_repayment:
            raise InvalidInput(
                f"payout {payout_id} has no money waiting on the connected account",
                payout_id=payout_id,
            )
        key = check_key(idempotency_key)
        transfer = self.gateway.reverse_transfer(
            record.transfer_id, None, f"payout:{payout_id}:recall:{key}"
        )
        return self._apply(payout_id, Facts(transfer=transfer))

    # -- reading -----------------------------------------------------------------------

    def payouts(
        self, streamer_id: str | int, *, limit: int = 50, status: str | None = None
    ) -> list[PayoutRecord]:
        """A streamer's payouts, newest first (``GET /api/payouts``)."""
        streamer = check_party_id(streamer_id, "streamer_id")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST}")
        p = self._t.payouts
        query = (
            sa.select(p)
            .where(p.c.streamer_id == streamer)
            .order_by(p.c.created_at.desc(), p.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(p.c.status == status)
        return self.ledger.read(lambda conn: [record_of(r) for r in conn.execute(query)])
