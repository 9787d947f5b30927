"""Erasure of a party's personal data, and rotation of the keyring.

**Erasure** (GDPR article 17) without breaking the books: journal entries
and balances are never touched (history is append-only and the books must
be kept: article 17(3)(b) exempts what a legal obligation requires). What
personal data the ledger holds is either sealed with the party's data key
(sensitive metadata, even inside entries; connected-account details; the
identities screened) and becomes unreadable when that key is destroyed, or
stored in working rows that are scrubbed (streamer metadata, parked webhook
payloads). What is left are pseudonymous ids, which identify no one once
the host erases its own mapping from id to person.

**Rotation** moves everything to the keyring's active key, in batches, each
in its own transaction: data keys are re-wrapped (the data they seal is
never rewritten), parked webhook payloads re-sealed, and data stored before
a keyring was configured sealed now.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._audit import AuditAction, check_actor, write_audit
from spaktok_ledger._compliance._core import (
    Compliance,
    check_party_id,
    is_sealed_payload,
    open_payload,
)
from spaktok_ledger._compliance._crypto import token_key
from spaktok_ledger._compliance._vault import Vault, destroy_data_keys
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._store import Ledger

__all__ = ["ErasureReport", "RotationReport", "erase_user", "key_usage", "rotate_keys"]

Progress = Callable[[int, int], None]
_BATCH_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What ``erase_user`` destroyed, scrubbed and kept."""

    party_id: str
    data_keys_destroyed: int
    """Sealed values (sensitive metadata in entries, account details, identities) now unreadable."""
    streamer_metadata_scrubbed: bool
    account_details_scrubbed: bool
    screening_identities_removed: int
    webhook_payloads_removed: int
    links_removed: int
    """Declared links and screening results are AML records, kept unless asked."""
    entries_kept: int
    """Journal entries on the party's accounts: unchanged (``verify()`` stays clean)."""
    audit_id: int

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def erase_user(
    compliance: Compliance,
    party_id: str | int,
    *,
    actor: str,
    reason: str,
    request_id: str | None = None,
    include_aml_records: bool = False,
) -> ErasureReport:
    """Destroy a party's personal data; every entry and balance stays as it is.

    One transaction: the party's data key is destroyed, its streamer metadata
    emptied, its connected account's plain details blanked, the identities
    it was screened with removed, and the parked webhook payloads about it
    (its purchases, its payouts) deleted. ``include_aml_records`` also
    deletes its declared links and screening results, for when the AML
    retention period (five years after the business relationship in the EU,
    AMLD art. 40) is over. The erasure itself is audited.
    """
    party = check_party_id(party_id, "party_id")
    who = check_actor(actor)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("an erasure needs a reason (the request it answers)")
    t = compliance.ledger.tables
    c = t.compliance
    now = compliance.clock()

    def run(tx: Ledger) -> ErasureReport:
        conn = tx.connection()
        keys = destroy_data_keys(conn, t, party, now=now)
        streamer = conn.execute(
            t.streamers.update()
            .where(t.streamers.c.streamer_id == party)
            .values(metadata={}, updated_at=now)
        ).rowcount
        account = conn.execute(
            t.connected_accounts.update()
            .where(t.connected_accounts.c.streamer_id == party)
            .values(country=None, currently_due=[], past_due=[], disabled_reason=None)
        ).rowcount
        identities = conn.execute(
            c.screenings.update()
            .where(c.screenings.c.party_id == party, c.screenings.c.identity.is_not(None))
            .values(identity=None)
        ).rowcount
        payloads = _remove_payloads(compliance, conn, party, now)
        links = 0
        if include_aml_records:
            links = _remove_aml_records(conn, compliance, party)
        entries = _entries_on(conn, compliance.ledger, party)
        draft = ErasureReport(
            party_id=party,
            data_keys_destroyed=keys,
            streamer_metadata_scrubbed=bool(streamer),
            account_details_scrubbed=bool(account),
            screening_identities_removed=int(identities or 0),
            webhook_payloads_removed=payloads,
            links_removed=links,
            entries_kept=entries,
            audit_id=0,
        )
        result = draft.to_dict()
        del result["audit_id"], result["party_id"]
        audit_id = write_audit(
            conn,
            t,
            AuditAction.ERASE_USER,
            actor=who,
            subject=f"party:{party}",
            reason=reason,
            request={"party_id": party, "include_aml_records": include_aml_records},
            request_id=request_id,
            result=result,
            now=now,
        )
        return replace(draft, audit_id=audit_id)

    return compliance.ledger.atomic(run)


def _remove_payloads(compliance: Compliance, conn: Connection, party: str, now: Any) -> int:
    """Parked webhook payloads about the party: its purchases, its payouts, its account."""
    t = compliance.ledger.tables
    w, pur, pay = t.webhook_events, t.purchases, t.payouts
    own = set(conn.execute(sa.select(pur.c.id).where(pur.c.user_id == party)).scalars())
    own |= set(conn.execute(sa.select(pay.c.id).where(pay.c.streamer_id == party)).scalars())
    account = conn.execute(
        sa.select(t.connected_accounts.c.account_id).where(
            t.connected_accounts.c.streamer_id == party
        )
    ).scalar()
    removed = 0
    for event_id, subject, stored in conn.execute(
        sa.select(w.c.event_id, w.c.subject_id, w.c.payload).where(
            w.c.status == "parked", w.c.payload.is_not(None)
        )
    ).all():
        if subject not in own:
            event = open_payload(compliance, stored, event_id=event_id)
            obj = (event.get("data") or {}).get("object") or {}
            meta = obj.get("metadata") if isinstance(obj, Mapping) else None
            meta = meta if isinstance(meta, Mapping) else {}
            about = {meta.get("user_id"), meta.get("streamer_id"), obj.get("client_reference_id")}
            if party not in about and (account is None or event.get("account") != account):
                continue
        conn.execute(
            w.update()
            .where(w.c.event_id == event_id)
            .values(
                payload=None,
                status="ignored",
                outcome="erased",
                processed_at=now,
                last_error="payload erased with its party",
            )
        )
        removed += 1
    return removed


def _remove_aml_records(conn: Connection, compliance: Compliance, party: str) -> int:
    from spaktok_ledger._compliance._links import remove_link

    c = compliance.ledger.tables.compliance
    pairs = conn.execute(
        sa.select(c.links.c.party_a, c.links.c.party_b).where(
            sa.or_(c.links.c.party_a == party, c.links.c.party_b == party)
        )
    ).all()
    removed = sum(remove_link(conn, compliance.ledger.tables, a, b, None) for a, b in set(pairs))
    conn.execute(c.screenings.delete().where(c.screenings.c.party_id == party))
    return removed


def _entries_on(conn: Connection, ledger: Ledger, party: str) -> int:
    t = ledger.tables
    a, p = t.accounts, t.postings
    ids = [
        row.id
        for row in conn.execute(
            sa.select(a.c.id).where(
                sa.or_(
                    a.c.code.startswith(f"user:{party}:", autoescape=True),
                    a.c.code.startswith(f"streamer:{party}:", autoescape=True),
                )
            )
        )
    ]
    if not ids:
        return 0
    return int(
        conn.execute(
            sa.select(sa.func.count(sa.distinct(p.c.entry_id))).where(p.c.account_id.in_(ids))
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What ``rotate_keys`` moved to the active key."""

    active_key_id: str
    data_keys_rewrapped: int
    payloads_sealed: int
    """Parked webhook payloads re-sealed (or sealed for the first time)."""
    accounts_sealed: int
    """Connected accounts whose details were stored before a keyring existed."""
    usage: Mapping[str, int]
    """Keys still in use afterwards (key id -> items): only the active key, when done."""
    audit_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **{n: getattr(self, n) for n in self.__dataclass_fields__},
            "usage": dict(self.usage),
        }


def key_usage(compliance: Compliance) -> dict[str, int]:
    """How many live data keys and parked payloads each keyring key protects."""
    c, w = compliance.ledger.tables.compliance, compliance.ledger.tables.webhook_events

    def run(conn: Connection) -> dict[str, int]:
        usage: Counter[str] = Counter()
        for key_id, count in conn.execute(
            sa.select(c.data_keys.c.wrapped_by, sa.func.count())
            .where(c.data_keys.c.destroyed_at.is_(None))
            .group_by(c.data_keys.c.wrapped_by)
        ):
            usage[str(key_id)] += int(count)
        for stored in conn.execute(
            sa.select(w.c.payload).where(w.c.status == "parked", w.c.payload.is_not(None))
        ).scalars():
            if is_sealed_payload(stored):
                usage[token_key(stored["sealed"])[1]] += 1
        return dict(usage)

    return compliance.ledger.read(run)


class _Rotation:
    """One run of ``rotate_keys``: three kinds of rows, each moved in batches."""

    def __init__(
        self, compliance: Compliance, vault: Vault, batch_size: int, on_progress: Progress | None
    ) -> None:
        self.compliance = compliance
        self.vault = vault
        self.ledger = compliance.ledger
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.active = vault.keyring.active_key_id
        self.done = 0
        self.total = self.ledger.read(
            lambda conn: (
                vault.pending_rewrap(conn)
                + len(self._stale_payloads(conn, ""))
                + len(self._plain_accounts(conn))
            )
        )
        if on_progress is not None:
            on_progress(0, self.total)

    def _step(self, count: int) -> None:
        self.done += count
        if self.on_progress is not None:
            self.on_progress(self.done, max(self.total, self.done))

    def _stale_payloads(self, conn: Connection, after: str) -> list[tuple[str, Any]]:
        w = self.ledger.tables.webhook_events
        rows = conn.execute(
            sa.select(w.c.event_id, w.c.payload)
            .where(w.c.status == "parked", w.c.payload.is_not(None), w.c.event_id > after)
            .order_by(w.c.event_id)
        ).all()
        return [
            (event_id, stored)
            for event_id, stored in rows
            if not (is_sealed_payload(stored) and token_key(stored["sealed"])[1] == self.active)
        ]

    def _plain_accounts(self, conn: Connection) -> list[Any]:
        a = self.ledger.tables.connected_accounts
        return list(conn.execute(sa.select(a).where(a.c.sealed.is_(None))).all())

    def rewrap(self) -> int:
        total = 0
        while count := self.ledger.atomic(
            lambda tx: self.vault.rewrap(tx.connection(), limit=self.batch_size)
        ):
            total += count
            self._step(count)
        return total

    def payloads(self) -> int:
        w = self.ledger.tables.webhook_events

        def batch(tx: Ledger, after: str) -> tuple[int, str]:
            conn = tx.connection()
            rows = self._stale_payloads(conn, after)[: self.batch_size]
            for event_id, stored in rows:
                plain = open_payload(self.compliance, stored, event_id=event_id)
                conn.execute(
                    w.update()
                    .where(w.c.event_id == event_id)
                    .values(payload=self.compliance.seal_payload(plain, event_id=event_id))
                )
            return len(rows), rows[-1][0] if rows else after

        total, last = 0, ""
        while True:
            count, last = self.ledger.atomic(partial(batch, after=last))
            if not count:
                return total
            total += count
            self._step(count)

    def accounts(self) -> int:
        a = self.ledger.tables.connected_accounts
        now = self.compliance.clock()

        def batch(tx: Ledger) -> int:
            conn = tx.connection()
            rows = self._plain_accounts(conn)[: self.batch_size]
            for row in rows:
                values = {
                    "country": row.country,
                    "currently_due": list(row.currently_due),
                    "past_due": list(row.past_due),
                    "disabled_reason": row.disabled_reason,
                }
                conn.execute(
                    a.update()
                    .where(a.c.streamer_id == row.streamer_id)
                    .values(**self.compliance.seal_account(conn, row.streamer_id, values, now=now))
                )
            return len(rows)

        total = 0
        while count := self.ledger.atomic(batch):
            total += count
            self._step(count)
        return total


def rotate_keys(
    compliance: Compliance,
    *,
    actor: str,
    batch_size: int = 500,
    on_progress: Progress | None = None,
    request_id: str | None = None,
) -> RotationReport:
    """Re-encrypt everything under the keyring's active key, ``batch_size`` rows per
    transaction; ``on_progress(done, total)`` after each batch. Safe to interrupt and
    run again (each batch commits on its own; what is done is not redone)."""
    if compliance.vault is None:
        raise InvalidInput("rotate-keys needs a keyring (SPAKTOK_KEYRING)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InvalidInput("batch_size must be an int")
    if not 1 <= batch_size <= _BATCH_MAX:
        raise InvalidInput(f"batch_size must be from 1 to {_BATCH_MAX}")
    who = check_actor(actor)
    run = _Rotation(compliance, compliance.vault, batch_size, on_progress)
    rewrapped, sealed, accounts = run.rewrap(), run.payloads(), run.accounts()
    usage = key_usage(compliance)
    result = {
        "active_key_id": run.active,
        "data_keys_rewrapped": rewrapped,
        "payloads_sealed": sealed,
        "accounts_sealed": accounts,
        "usage": usage,
    }
    audit_id = compliance.ledger.atomic(
        lambda tx: write_audit(
            tx.connection(),
            compliance.ledger.tables,
            AuditAction.ROTATE_KEYS,
            actor=who,
            subject="keyring",
            reason=None,
            request={"batch_size": batch_size, "key_ids": list(compliance.vault.keyring.key_ids)}
            if compliance.vault
            else {},
            request_id=request_id,
            result=result,
            now=compliance.clock(),
        )
    )
    return RotationReport(run.active, rewrapped, sealed, accounts, usage, audit_id)
