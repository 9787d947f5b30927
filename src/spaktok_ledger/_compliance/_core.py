"""The compliance wiring point: monitoring rules, the vault, screening, links, audit.

:class:`Compliance` is built once next to the gift economy and handed to it
(``GiftEconomy(..., compliance=compliance)``); the payments and payouts
services find it there. The services call its hooks inside the transaction
of each money movement; the host calls the rest (declare links, screen a
party, read the audit log, erase a user, rotate keys).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TextIO, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._clock import Clock
from spaktok_ledger._compliance._audit import (
    AuditAction,
    AuditRecord,
    audit_records,
    check_actor,
    to_enum,
    write_audit,
    write_records,
)
from spaktok_ledger._compliance._crypto import Keyring, Sensitive, is_token, token_key
from spaktok_ledger._compliance._links import LinkBasis, declare_link, linked_to, remove_link
from spaktok_ledger._compliance._monitor import (
    Check,
    Monitor,
    MonitoringRule,
    Movement,
    MovementKind,
    Outcome,
    Verdict,
)
from spaktok_ledger._compliance._rules import MonitoringConfig, default_rules
from spaktok_ledger._compliance._screening import (
    Identity,
    ScreeningMatch,
    ScreeningProvider,
    ScreeningResult,
    ScreeningStatus,
)
from spaktok_ledger._compliance._vault import Vault
from spaktok_ledger._domain import EntryPhase, Json
from spaktok_ledger._errors import (
    DataErased,
    EncryptionError,
    InvalidInput,
    MonitoringRefused,
    UnknownEntry,
)
from spaktok_ledger._store import Ledger

__all__ = [
    "Compliance",
    "ScreeningRecord",
    "check_sensitive_metadata",
    "fingerprint_metadata",
    "seal_metadata",
]

T = TypeVar("T")
_SEALED = "sealed"
_ACCOUNT_FIELDS = ("country", "currently_due", "past_due", "disabled_reason")
_ACCOUNT_BLANK: Mapping[str, Any] = {
    "country": None,
    "currently_due": [],
    "past_due": [],
    "disabled_reason": None,
}


@dataclass(frozen=True, slots=True)
class ScreeningRecord:
    """A screening as stored: the result, and the case it opened (if any)."""

    id: int
    party_id: str
    status: ScreeningStatus
    provider: str
    matches: tuple[ScreeningMatch, ...]
    checked_at: datetime
    case_id: int | None = None


def check_party_id(value: object, name: str) -> str:
    """The service layer's party-id check (imported late: the services import this module)."""
    from spaktok_ledger._service._ids import check_party_id as check

    return check(value, name)


def _has_sensitive(value: object) -> bool:
    if isinstance(value, Sensitive):
        return True
    if isinstance(value, Mapping):
        return any(_has_sensitive(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_sensitive(v) for v in value)
    return False


def _plain(value: Any, sensitive: Callable[[Any], Any]) -> Any:
    if isinstance(value, Sensitive):
        return sensitive(value.value)
    if isinstance(value, Mapping):
        return {k: _plain(v, sensitive) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, sensitive) for v in value]
    return value


def check_sensitive_metadata(
    compliance: Compliance | None, metadata: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Validate metadata that may hold :class:`Sensitive` values (kept as they are).

    ``InvalidInput`` when it is not JSON once the values are unwrapped, or when
    it holds a sensitive value and no keyring is configured to seal it.
    """
    from spaktok_ledger._domain import check_json
    from spaktok_ledger._validate import check_metadata_shape

    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be a mapping", field="metadata")
    check_metadata_shape(metadata or {})  # bounded depth before anything recurses
    meta = dict(metadata or {})
    plain = check_json(_plain(meta, lambda v: v))
    if not _has_sensitive(meta):
        return plain  # a JSON-safe copy, as before there were sensitive values
    if compliance is None or compliance.vault is None:
        raise InvalidInput(
            "metadata marked Sensitive needs a keyring to be sealed with: "
            "GiftEconomy(..., compliance=Compliance(ledger, keyring=Keyring.from_env()))"
        )
    return meta


def fingerprint_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata for an idempotency fingerprint: sensitive values stand in as a marker
    (a retry seals them again with a new nonce, and their value is not hashed)."""
    return dict(_plain(metadata, lambda _v: "<sensitive>"))


def seal_metadata(
    compliance: Compliance | None,
    conn: Connection,
    party_id: str,
    metadata: Mapping[str, Any],
    *,
    now: datetime,
) -> dict[str, Any]:
    """``metadata`` ready to store: sensitive values sealed with the party's data key."""
    if not _has_sensitive(metadata):
        return dict(metadata)
    vault = compliance.vault if compliance is not None else None
    if vault is None:  # check_sensitive_metadata refused this before the transaction
        raise InvalidInput("metadata marked Sensitive needs a keyring to be sealed with")
    return vault.seal_metadata(conn, party_id, metadata, now=now)


class Compliance:
    """Transaction monitoring, encryption at rest, screening and the operator audit log.

    ``keyring`` turns encryption at rest on (see :class:`Keyring`); ``config``
    sets the shipped rules' thresholds, ``rules`` replaces the rule set (for
    example ``[*default_rules(config), MyRule()]``); ``screening`` is the
    sanctions screening provider::

        compliance = Compliance(ledger, keyring=Keyring.from_env(),
                                screening=MyScreeningVendor())
        economy = GiftEconomy(ledger, gifts, compliance=compliance)

    The gift economy, payments and payouts then run every movement through
    the rules in its own transaction, seal personal data, and record manual
    actions in the audit log.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        keyring: Keyring | None = None,
        config: MonitoringConfig | None = None,
        rules: Sequence[MonitoringRule] | None = None,
        screening: ScreeningProvider | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(ledger, Ledger):
            raise InvalidInput("ledger must be a Ledger")
        if keyring is not None and not isinstance(keyring, Keyring):
            raise InvalidInput("keyring must be a Keyring")
        if config is not None and not isinstance(config, MonitoringConfig):
            raise InvalidInput("config must be a MonitoringConfig")
        if screening is not None and not isinstance(screening, ScreeningProvider):
            raise InvalidInput("screening must be a ScreeningProvider (name, screen)")
        self.ledger = ledger
        self.config = config or MonitoringConfig()
        self.monitor = Monitor(
            default_rules(self.config) if rules is None else rules, ledger.tables
        )
        self.keyring = keyring
        self.vault = Vault(keyring, ledger.tables) if keyring is not None else None
        self.screening = screening
        self.clock: Clock = clock or ledger.now
        self._t = ledger.tables

    def __repr__(self) -> str:
        return (
            f"Compliance(rules={[r.name for r in self.rules]}, "
            f"encryption={'on' if self.vault else 'off'})"
        )

    @property
    def rules(self) -> tuple[MonitoringRule, ...]:
        return self.monitor.rules

    # -- hooks: called by the services inside the movement's transaction -------------

    def check(self, tx: Ledger, movement: Movement) -> Check:
        """Run the rules on a movement about to be written (``MonitoringRefused`` if refused:
        run the service call through :meth:`guard` so that the refusal's case is recorded)."""
        return self.monitor.check(tx.connection(), movement)

    def record(
        self,
        tx: Ledger,
        check: Check,
        *,
        entry_ids: Sequence[int] = (),
        holds: Sequence[tuple[str, str, int | None]] = (),
    ) -> tuple[int, ...]:
        """Count the written movement and open the cases its verdicts call for."""
        return self.monitor.record(tx.connection(), check, entry_ids=entry_ids, holds=holds)

    def check_credit(
        self,
        tx: Ledger,
        *,
        user: str,
        price_usd_minor: int,
        idempotency_key: str,
        purchase_id: object,
        now: datetime,
    ) -> tuple[Check | None, bool]:
        """The rules' verdict on a purchase credit, and whether it must be held.

        A replay is answered as it was first booked (credited or held, whatever
        the rules would say today), so it is looked up first: ``(None, held)``.
        """
        try:
            first = tx.entry_by_key(idempotency_key)
        except UnknownEntry:
            reference = purchase_id if isinstance(purchase_id, str) else idempotency_key
            movement = Movement(MovementKind.PURCHASE, user, price_usd_minor, now, None, reference)
            check = self.check(tx, movement)
            return check, check.holds
        return None, first.phase is EntryPhase.PENDING

    def observe(
        self, tx: Ledger, movement: Movement, *, entry_ids: Sequence[int] = ()
    ) -> tuple[int, ...]:
        """Check and record a movement that cannot be refused (a refund, a dispute)."""
        return self.record(tx, self.check(tx, movement), entry_ids=entry_ids)

    def guard(self, ledger: Ledger, call: Callable[[], T]) -> T:
        """Run a service call; when a rule refused its movement (and its transaction
        rolled back), record the refusal's case and raise ``MonitoringRefused``."""
        try:
            return call()
        except MonitoringRefused as refused:
            check = refused.pending
            if not isinstance(check, Check):
                raise
            case_ids = ledger.atomic(
                lambda tx: self.monitor.record(tx.connection(), check, count_activity=False)
            )
            raise MonitoringRefused(
                refused.message,
                rule=refused.details["rule"],
                subject_id=refused.details["subject_id"],
                case_id=case_ids[0] if case_ids else None,
                case_ids=list(case_ids),
            ) from None

    # -- sealing (inside the services' transactions) ----------------------------------

    def seal_payload(self, payload: Mapping[str, Any], *, event_id: str) -> dict[str, Any]:
        """A webhook payload as it is parked: sealed by the keyring, when there is one."""
        if self.vault is None:
            return dict(payload)
        return {_SEALED: self.vault.seal_system(dict(payload), purpose=_payload_purpose(event_id))}

    def open_payload(self, stored: Mapping[str, Any], *, event_id: str) -> dict[str, Any]:
        return open_payload(self, stored, event_id=event_id)

    def seal_account(
        self, conn: Connection, streamer_id: str, values: Mapping[str, Any], *, now: datetime
    ) -> dict[str, Any]:
        """Connected-account values to store: the personal details sealed (with a keyring)."""
        if self.vault is None:
            return {**values, _SEALED: None}
        details = {name: values[name] for name in _ACCOUNT_FIELDS}
        token = self.vault.seal(conn, streamer_id, details, now=now)
        return {**values, **_ACCOUNT_BLANK, _SEALED: token}

    # -- reading sealed data ------------------------------------------------------------

    def reveal(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Metadata with its sealed values opened (``"[erased]"`` where they were erased)."""
        vault = self._vault()
        return self.ledger.read(lambda conn: vault.reveal(conn, metadata))

    def open(self, token: str) -> Json:
        """One sealed value (``DataErased`` if it was erased)."""
        vault = self._vault()
        return self.ledger.read(lambda conn: vault.open(conn, token))

    def _vault(self) -> Vault:
        if self.vault is None:
            raise InvalidInput("no keyring configured: Compliance(ledger, keyring=...)")
        return self.vault

    # -- linked accounts ----------------------------------------------------------------

    def link_accounts(
        self,
        party_a: str | int,
        party_b: str | int,
        *,
        basis: LinkBasis | str,
        actor: str,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> frozenset[str]:
        """Declare two accounts linked (same device, IP or card); returns ``party_a``'s group.

        Gifts between accounts of one group, and payouts funded by them, are
        then held for review (``linked_accounts`` rule).
        """
        a, b = check_party_id(party_a, "party_a"), check_party_id(party_b, "party_b")
        kind = to_enum(LinkBasis, basis, "basis")
        who = check_actor(actor)
        now = self.clock()

        def run(tx: Ledger) -> frozenset[str]:
            conn = tx.connection()
            new = declare_link(conn, self._t, a, b, kind, actor=who, now=now)
            write_audit(
                conn,
                self._t,
                AuditAction.LINK_ACCOUNTS,
                actor=who,
                subject=f"party:{a}",
                reason=reason,
                request={"party_a": a, "party_b": b, "basis": kind.value},
                request_id=request_id,
                result={"new": new},
                now=now,
            )
            return linked_to(conn, self._t, a)

        return self.ledger.atomic(run)

    def unlink_accounts(
        self,
        party_a: str | int,
        party_b: str | int,
        *,
        actor: str,
        basis: LinkBasis | str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> int:
        """Remove a declared link (all bases unless ``basis``); returns how many went."""
        a, b = check_party_id(party_a, "party_a"), check_party_id(party_b, "party_b")
        kind = to_enum(LinkBasis, basis, "basis") if basis is not None else None
        who = check_actor(actor)
        now = self.clock()

        def run(tx: Ledger) -> int:
            conn = tx.connection()
            removed = remove_link(conn, self._t, a, b, kind)
            write_audit(
                conn,
                self._t,
                AuditAction.UNLINK_ACCOUNTS,
                actor=who,
                subject=f"party:{a}",
                reason=reason,
                request={"party_a": a, "party_b": b, "basis": kind.value if kind else None},
                request_id=request_id,
                result={"removed": removed},
                now=now,
            )
            return removed

        return self.ledger.atomic(run)

    def linked_accounts(self, party_id: str | int) -> frozenset[str]:
        """The accounts declared linked to ``party_id`` (directly or through others)."""
        party = check_party_id(party_id, "party_id")
        return self.ledger.read(lambda conn: linked_to(conn, self._t, party))

    # -- screening ---------------------------------------------------------------------

    def screen(
        self,
        party_id: str | int,
        identity: Identity,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> ScreeningRecord:
        """Screen a party (a streamer before payouts) with the configured provider.

        The result is stored (the identity sealed with the party's data key, or
        not kept at all without a keyring); a match or a potential match opens
        a ``sanctions_screening`` case. Payouts to a match are refused, to a
        potential match held, until the case is decided.
        """
        party = check_party_id(party_id, "party_id")
        if not isinstance(identity, Identity):
            raise InvalidInput("identity must be an Identity")
        if self.screening is None:
            raise InvalidInput("no screening provider configured: Compliance(screening=...)")
        result = self.screening.screen(identity)
        if not isinstance(result, ScreeningResult):
            raise InvalidInput("the screening provider must return a ScreeningResult")
        now = self.clock()
        who = check_actor(actor)
        s = self._t.compliance.screenings

        def run(tx: Ledger) -> ScreeningRecord:
            conn = tx.connection()
            sealed = (
                self.vault.seal(conn, party, identity.to_dict(), now=now)
                if self.vault is not None
                else None
            )
            screening_id = conn.execute(
                s.insert()
                .values(
                    party_id=party,
                    status=result.status.value,
                    provider=result.provider[:64],
                    matches=[m.to_dict() for m in result.matches],
                    identity=sealed,
                    checked_at=now,
                )
                .returning(s.c.id)
            ).scalar_one()
            case_id = None
            if result.status is not ScreeningStatus.CLEAR:
                outcome = Outcome.REFUSE if result.status is ScreeningStatus.MATCH else Outcome.HOLD
                listed = ", ".join(f"{m.listed_name} ({m.list_name})" for m in result.matches)
                verdict = Verdict(
                    outcome,
                    "sanctions_screening",
                    party,
                    f"screening by {result.provider}: {result.status.value}: {listed}",
                    subject_role="party",
                    facts={"screening_id": int(screening_id), "status": result.status.value},
                )
                movement = Movement(MovementKind.SCREENING, party, 0, now)
                (case_id,) = self.monitor.record(
                    conn, Check(movement, (verdict,)), count_activity=False
                )
            write_audit(
                conn,
                self._t,
                AuditAction.SCREEN_PARTY,
                actor=who,
                subject=f"party:{party}",
                reason=None,
                request={"party_id": party, "provider": result.provider},
                request_id=request_id,
                result={"status": result.status.value, "case_id": case_id},
                now=now,
            )
            return ScreeningRecord(
                int(screening_id),
                party,
                result.status,
                result.provider,
                result.matches,
                now,
                case_id,
            )

        return self.ledger.atomic(run)

    def screenings(self, party_id: str | int) -> list[ScreeningRecord]:
        """A party's screenings, newest first."""
        party = check_party_id(party_id, "party_id")
        s = self._t.compliance.screenings
        rows = self.ledger.read(
            lambda conn: conn.execute(
                sa.select(s).where(s.c.party_id == party).order_by(s.c.id.desc())
            ).all()
        )
        return [
            ScreeningRecord(
                r.id,
                r.party_id,
                ScreeningStatus(r.status),
                r.provider,
                tuple(ScreeningMatch(**m) for m in r.matches),
                r.checked_at,
            )
            for r in rows
        ]

    def screened_identity(self, screening_id: int) -> Identity:
        """The identity a screening checked (``DataErased`` once its party is erased)."""
        vault = self._vault()
        s = self._t.compliance.screenings

        def run(conn: Connection) -> Identity:
            row = conn.execute(
                sa.select(s.c.party_id, s.c.identity).where(s.c.id == screening_id)
            ).first()
            if row is None:
                raise InvalidInput(f"no screening {screening_id}")
            if row.identity is None:
                raise DataErased(f"the identity screened for {row.party_id} was erased")
            data = vault.open(conn, row.identity)
            born = data.get("birth_date")
            return Identity(
                data["full_name"], date.fromisoformat(born) if born else None, data.get("country")
            )

        return self.ledger.read(run)

    # -- the audit log ---------------------------------------------------------------------

    def audit_log(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Operator actions, oldest first (page with ``after_id`` = the last id seen)."""
        return self.ledger.read(
            lambda conn: audit_records(
                conn,
                self._t,
                subject=subject,
                action=action,
                actor=actor,
                since=since,
                until=until,
                after_id=after_id,
                limit=limit,
            )
        )

    def export_audit(
        self,
        out: TextIO,
        *,
        fmt: str = "jsonl",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write the whole audit log (JSON Lines or CSV, oldest first); returns the count."""
        t = self._t.compliance.audit_log
        total = self.ledger.read(
            lambda conn: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
        )
        done = [0]

        def records() -> Any:
            last = 0
            while True:
                page = self.audit_log(after_id=last, limit=500)
                if not page:
                    return
                yield from page
                last = page[-1].id

        def tick() -> None:
            done[0] += 1
            if on_progress is not None:
                on_progress(done[0], max(total, done[0]))

        if on_progress is not None:
            on_progress(0, total)
        return write_records(records(), out, fmt, tick)


def _payload_purpose(event_id: str) -> str:
    return f"webhook:{event_id}"


def is_sealed_payload(stored: object) -> bool:
    return (
        isinstance(stored, Mapping)
        and set(stored) == {_SEALED}
        and is_token(stored[_SEALED])
        and token_key(stored[_SEALED])[0] == "k"
    )


def open_payload(
    compliance: Compliance | None, stored: Mapping[str, Any], *, event_id: str
) -> dict[str, Any]:
    """A parked payload as stored -> the event's JSON (opened if it was sealed)."""
    if not is_sealed_payload(stored):
        return dict(stored)
    if compliance is None or compliance.vault is None:
        raise EncryptionError(
            f"parked event {event_id} is sealed: configure the keyring that sealed it"
        )
    opened = compliance.vault.open_system(stored[_SEALED], purpose=_payload_purpose(event_id))
    return dict(opened)


def open_account_values(
    compliance: Compliance | None, conn: Connection, row: Any
) -> dict[str, Any]:
    """A connected-account row with its sealed details opened (blank once erased)."""
    values = dict(row._mapping)
    token = values.pop(_SEALED, None)
    if token is None:
        return values
    if compliance is None or compliance.vault is None:
        raise EncryptionError("connected-account details are sealed: configure the keyring")
    try:
        details = compliance.vault.open(conn, token)
    except DataErased:
        return {**values, **_ACCOUNT_BLANK}
    return {**values, **details}
