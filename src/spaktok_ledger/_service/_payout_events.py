"""Connect webhooks: ``account.updated``, ``payout.*`` and ``transfer.*`` events.

Verified on the raw body with the Connect endpoint's secret, deduplicated in
the effect's transaction, safe in any order: the object is fetched fresh from
Stripe (its balance transactions and any later status are only there) and its
facts merged forwards (``_payout_facts.py``). An event about a payout or
account this ledger does not know is parked, never lost.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Final

import sqlalchemy as sa

from spaktok_ledger._errors import LedgerError, PaymentProviderError
from spaktok_ledger._log import observed, webhook_fields
from spaktok_ledger._service._gateway import PayoutSnapshot, TransferSnapshot, WebhookEvent
from spaktok_ledger._service._payout_driver import _PayoutDriver
from spaktok_ledger._service._payout_rows import Facts
from spaktok_ledger._service._webhooks import (
    DuplicateDelivery,
    Endpoint,
    WebhookResult,
    acknowledged,
)
from spaktok_ledger._store import Ledger

PAYOUT_EVENTS: Final = frozenset(
    {"payout.created", "payout.updated", "payout.paid", "payout.failed", "payout.canceled"}
)
TRANSFER_EVENTS: Final = frozenset({"transfer.created", "transfer.updated", "transfer.reversed"})
CONNECT_EVENTS: Final = frozenset({"account.updated", *PAYOUT_EVENTS})
"""The Connect endpoint's events (``transfer.*`` arrive at the platform endpoint)."""


class _PayoutEvents(_PayoutDriver):
    """The Connect endpoint of :class:`Payouts`."""

    _secret: str
    tolerance_seconds: int

    # -- webhooks ----------------------------------------------------------------------

    @observed("payouts", "webhook", refusal_level=logging.WARNING)
    def handle_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Verify and apply one delivery to the Connect endpoint (``POST /api/payouts/webhook``).

        ``payload`` is the raw request body, ``signature_header`` the
        ``Stripe-Signature`` header. A forged, tampered or stale delivery raises
        ``WebhookVerificationError`` (answer 400). Otherwise answer 200 with
        the result: duplicates, stale and unknown events are answered too
        (unknown payouts are parked, not lost: :meth:`retry_parked`). A
        ``PaymentProviderError`` while re-fetching from Stripe means: answer
        5xx, Stripe delivers again later.
        """
        event = self.gateway.parse_webhook(
            payload, signature_header, self._secret, self.tolerance_seconds
        )
        return self.handle_event(event)

    @observed("payouts", "webhook_event", level=logging.INFO, describe=webhook_fields)
    def handle_event(self, event: WebhookEvent) -> WebhookResult:
        """Apply an already verified event (e.g. ``transfer.*`` events that arrive at
        the platform endpoint and are handed on). Deduplicated like ``handle_webhook``,
        and claimed before any Stripe call (a concurrent copy: ``in_progress``)."""
        if self.inbox.status(event.id) in ("processed", "ignored"):
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)
        if event.type not in CONNECT_EVENTS and event.type not in TRANSFER_EVENTS:
            # Not a payout event: nothing to do, and nothing recorded, so that an
            # event meant for the platform endpoint is never marked as handled here.
            return WebhookResult(event.id, event.type, "ignored")
        return self.inbox.handle_claimed(event, "connect", self._handle_claimed, self.clock)

    def accept_webhook(self, payload: bytes, signature_header: str) -> WebhookResult:
        """Verify a Connect delivery and store it for the :class:`Worker` (the fast
        acknowledgement, as :meth:`Payments.accept_webhook`): outcome ``queued``."""
        event, endpoint = self._verify_for_inbox(payload, signature_header)
        stored = endpoint and self.inbox.accept(event, endpoint, now=self.clock())
        return acknowledged(event, stored)

    def _verify_for_inbox(
        self, payload: bytes, signature_header: str
    ) -> tuple[WebhookEvent, Endpoint | None]:
        """As ``Payments._verify_for_inbox``, for the Connect endpoint's events."""
        event = self.gateway.parse_webhook(
            payload, signature_header, self._secret, self.tolerance_seconds
        )
        if event.type in CONNECT_EVENTS or event.type in TRANSFER_EVENTS:
            return event, "connect"
        return event, None

    def wake(self, keys: Iterable[str | None]) -> list[WebhookResult]:
        """Apply the parked Connect events waiting for one of ``keys``
        (``account:{id}``, ``payout:{id}``, ``transfer:{id}``, ``stripe_payout:{id}``)."""
        results = []
        for payload in self.inbox.woken(keys):
            try:
                results.append(self.handle_event(self.gateway.parse_event(payload)))
            except LedgerError:
                continue  # stays parked: the worker retries it after a backoff
        return results

    def _handle_claimed(self, event: WebhookEvent) -> WebhookResult:
        try:
            if event.type == "account.updated":
                return self._on_account_updated(event)
            if event.type in PAYOUT_EVENTS:
                return self._on_payout_event(event)
            return self._on_transfer_event(event)
        except DuplicateDelivery:
            return WebhookResult(event.id, event.type, "duplicate", duplicate=True)

    def retry_parked(self, *, limit: int = 100) -> list[WebhookResult]:
        """Handle parked Connect events again (run periodically, or after linking accounts)."""
        return [
            self.handle_event(self.gateway.parse_event(payload))
            for payload in self.inbox.parked("connect", limit=limit)
        ]

    def _ignore(self, event: WebhookEvent, outcome: str, subject: str | None) -> WebhookResult:
        now = self.clock()
        self.ledger.atomic(
            lambda tx: self.inbox.record(
                tx.connection(),
                event,
                "connect",
                outcome=outcome,
                subject_id=subject,
                now=now,
                ignored=True,
            )
        )
        return WebhookResult(event.id, event.type, outcome, subject)

    def _park(
        self, event: WebhookEvent, reason: str, subject: str | None, wake_key: str | None
    ) -> WebhookResult:
        self.inbox.park(
            event, "connect", reason=reason, subject_id=subject, now=self.clock(), wake_key=wake_key
        )
        return WebhookResult(event.id, event.type, "parked", subject)

    def _on_account_updated(self, event: WebhookEvent) -> WebhookResult:
        account_id = event.account or event.subject.id
        t = self._t.connected_accounts
        row = self.ledger.read(
            lambda conn: conn.execute(sa.select(t).where(t.c.account_id == account_id)).first()
        )
        if row is None:
            return self._park(
                event,
                f"no streamer is linked to account {account_id}",
                account_id,
                f"account:{account_id}",
            )
        # Fetch the current state: it is newer than any event, so the order in which
        # account.updated deliveries arrive cannot matter.
        try:
            state = self.gateway.retrieve_account(account_id)
        except PaymentProviderError:
            if event.created < row.stripe_updated or event.subject.account is None:
                return self._ignore(event, "stale", account_id)
            state = event.subject.account
        now = self.clock()
        streamer = row.streamer_id

        def run(tx: Ledger) -> None:
            conn = tx.connection()
            self.inbox.record(
                conn, event, "connect", outcome="kyc_updated", subject_id=account_id, now=now
            )
            conn.execute(
                t.update()
                .where(t.c.streamer_id == streamer)
                .values(
                    stripe_updated=sa.func.max(t.c.stripe_updated, event.created)
                    if conn.dialect.name == "sqlite"
                    else sa.func.greatest(t.c.stripe_updated, event.created),
                    updated_at=now,
                    **self._account_values(conn, streamer, state, now),
                )
            )

        self.ledger.atomic(run)
        return WebhookResult(event.id, event.type, "kyc_updated", account_id)

    def _find(
        self,
        *,
        payout_id: str | None = None,
        transfer_id: str | None = None,
        stripe_payout_id: str | None = None,
    ) -> Any:
        p = self._t.payouts
        conditions = []
        if payout_id:
            conditions.append(p.c.id == payout_id)
        if transfer_id:
            conditions.append(p.c.transfer_id == transfer_id)
        if stripe_payout_id:
            conditions.append(p.c.stripe_payout_id == stripe_payout_id)
        if not conditions:
            return None
        query = sa.select(p).where(sa.or_(*conditions)).limit(1)
        return self.ledger.read(lambda conn: conn.execute(query).first())

    def _on_payout_event(self, event: WebhookEvent) -> WebhookResult:
        snap = event.subject.payout
        if snap is None:
            return WebhookResult(event.id, event.type, "ignored")
        ours = snap.metadata.get("payout_id")
        row = self._find(payout_id=ours, stripe_payout_id=snap.id)
        if row is None:
            if not ours and event.account and self._known_account(event.account):
                # A payout Stripe made on the account's automatic schedule: it
                # names none of our payouts (their transfers were the settlement).
                return self._ignore(event, "automatic_payout", snap.id)
            return self._park(
                event,
                f"no payout matches Stripe payout {snap.id}",
                snap.id,
                f"payout:{ours}" if ours else f"stripe_payout:{snap.id}",
            )
        if event.account is not None and event.account != row.account_id:
            return self._ignore(event, "account_mismatch", row.id)
        # Re-fetch: the object's balance transactions (and a later failure) are only on
        # the current object; the event's snapshot may be old.
        try:
            bank = self.gateway.retrieve_payout(row.account_id, snap.id)
        except PaymentProviderError:
            bank = snap
        transfer = self._missing_transfer(row)
        return self._apply_event(event, row.id, self._facts(row, transfer=transfer, bank=bank))

    def _on_transfer_event(self, event: WebhookEvent) -> WebhookResult:
        snap = event.subject.transfer
        if snap is None:
            return WebhookResult(event.id, event.type, "ignored")
        ours = snap.metadata.get("payout_id")
        if not ours and snap.transfer_group and snap.transfer_group.startswith("payout:"):
            ours = snap.transfer_group.removeprefix("payout:")
        row = self._find(payout_id=ours, transfer_id=snap.id)
        if row is None:
            return self._park(
                event,
                f"no payout matches transfer {snap.id}",
                snap.id,
                f"payout:{ours}" if ours else f"transfer:{snap.id}",
            )
        with contextlib.suppress(PaymentProviderError):  # the current object, with its txns
            snap = self.gateway.retrieve_transfer(snap.id)
        return self._apply_event(event, row.id, self._facts(row, transfer=snap))

    def _facts(
        self,
        row: Any,
        *,
        transfer: TransferSnapshot | None = None,
        bank: PayoutSnapshot | None = None,
    ) -> Facts:
        """Facts, with the transfer's arrival on the connected account when the ledger
        does not know it yet (manual payouts follow the money there)."""
        arrival = None
        if row.mode == "manual" and row.arrival_currency is None:
            known = transfer
            if known is None and row.transfer_id is not None:
                known = self.gateway.retrieve_transfer(row.transfer_id)
            if known is not None:
                transfer = transfer or known
                arrival = self.gateway.transfer_arrival(known)
        return Facts(transfer=transfer, bank=bank, arrival=arrival)

    def _missing_transfer(self, row: Any) -> TransferSnapshot | None:
        """A bank-payout event for a payout whose transfer we never recorded: fetch it."""
        if row.transfer_id is not None:
            return None
        found = self.gateway.find_transfers(f"payout:{row.id}")
        return found[0] if len(found) == 1 else None

    def _apply_event(self, event: WebhookEvent, payout_id: str, facts: Facts) -> WebhookResult:
        now = self.clock()

        def run(tx: Ledger) -> str:
            conn = tx.connection()
            row = self._lock(conn, payout_id)
            _status, outcome = self._merge_and_converge(tx, row, facts, now)
            self.inbox.record(
                conn, event, "connect", outcome=outcome, subject_id=payout_id, now=now
            )
            return outcome

        outcome = self.ledger.atomic(run)
        self.wake(self._payout_keys(payout_id))
        return WebhookResult(event.id, event.type, outcome, payout_id)

    def _payout_keys(self, payout_id: str) -> list[str | None]:
        """The wake keys a payout answers to (its id, transfer and bank payout)."""
        row = self._find(payout_id=payout_id)
        if row is None:
            return [f"payout:{payout_id}"]
        return [
            f"payout:{payout_id}",
            f"transfer:{row.transfer_id}" if row.transfer_id else None,
            f"stripe_payout:{row.stripe_payout_id}" if row.stripe_payout_id else None,
        ]

    def _known_account(self, account_id: str) -> bool:
        t = self._t.connected_accounts
        return (
            self.ledger.read(
                lambda conn: conn.execute(
                    sa.select(t.c.streamer_id).where(t.c.account_id == account_id)
                ).first()
            )
            is not None
        )
