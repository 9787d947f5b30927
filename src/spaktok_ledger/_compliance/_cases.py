"""The review queue: cases opened by the monitoring rules, and their decisions.

A case is about one subject (a payer or a streamer) and one rule; it holds
what it stopped: a payout waiting in ``review``, a purchase's coins credited
as pending. Deciding it is final:

- ``RELEASE`` (a false positive): held coins become spendable; a payout in
  review goes on to its transfer once no other case about its streamer is
  open (without the payouts service here, ``reconcile-payouts`` makes it);
- ``REFUSE`` (suspicious): held coins are voided (and a Stripe purchase
  refunded), payouts in review are refused with their hold voided, so the
  money is back in the streamer's earnings; ``block=True`` also stops the
  streamer from receiving gifts. The case goes into the suspicious-activity
  report (:meth:`Cases.export`).

Every assignment and decision is in the audit log.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, Final, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._audit import (
    AuditAction,
    audit_records,
    check_actor,
    to_enum,
    write_audit,
)
from spaktok_ledger._domain import EntryPhase
from spaktok_ledger._errors import (
    CaseClosed,
    InvalidInput,
    LedgerError,
    UnknownCase,
    UnknownEntry,
    UnknownStreamer,
)
from spaktok_ledger._service._gifts import GiftEconomy
from spaktok_ledger._service._payments import Payments
from spaktok_ledger._service._payout_rows import record_of
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger._store import Ledger

__all__ = ["Case", "CaseDecision", "CaseHold", "CaseStatus", "Cases", "Decision"]

MAX_LIST: Final = 500
CSV_FIELDS: Final = (
    "case_id",
    "rule",
    "outcome",
    "subject_id",
    "subject_role",
    "movement",
    "reference",
    "status",
    "decision",
    "decided_by",
    "decided_at",
    "reason",
    "created_at",
    "entry_id",
    "entry_type",
    "effective_at",
    "entry_amount_minor",
    "currency",
    "accounts",
)


class CaseStatus(StrEnum):
    """Where a case stands: waiting for a reviewer, or decided."""

    OPEN = "open"
    CLOSED = "closed"


class Decision(StrEnum):
    """A reviewer's final word on a case."""

    RELEASE = "release"
    """A false positive: what the case held goes on."""
    REFUSE = "refuse"
    """Suspicious: what the case held is refused; report it."""


@dataclass(frozen=True, slots=True)
class CaseHold:
    """A movement a case holds."""

    kind: str
    """``payout`` (a payout in review), ``purchase`` (a Stripe purchase's coins held),
    ``credit`` (coins credited as pending by ``credit_purchase``)."""
    reference: str
    """The payout id, the purchase id, or the pending entry's id."""
    entry_id: int | None


@dataclass(frozen=True, slots=True)
class Case:
    """A review case (``GET /admin/cases/{id}``)."""

    id: int
    rule: str
    outcome: str
    """What the rule asked for: ``hold`` or ``refuse``."""
    subject_id: str
    subject_role: str
    movement: str
    """The kind of movement that opened it (``gift``, ``payout``, ``purchase``...)."""
    reference: str | None
    reason: str
    evidence_entry_ids: tuple[int, ...]
    facts: Mapping[str, Any]
    status: CaseStatus
    assignee: str | None
    assigned_at: datetime | None
    decision: Decision | None
    decided_by: str | None
    decision_reason: str | None
    decided_at: datetime | None
    created_at: datetime
    updated_at: datetime
    holds: tuple[CaseHold, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "outcome": self.outcome,
            "subject_id": self.subject_id,
            "subject_role": self.subject_role,
            "movement": self.movement,
            "reference": self.reference,
            "reason": self.reason,
            "evidence_entry_ids": list(self.evidence_entry_ids),
            "facts": dict(self.facts),
            "status": self.status.value,
            "assignee": self.assignee,
            "assigned_at": _iso(self.assigned_at),
            "decision": self.decision.value if self.decision else None,
            "decided_by": self.decided_by,
            "decision_reason": self.decision_reason,
            "decided_at": _iso(self.decided_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "holds": [
                {"kind": h.kind, "reference": h.reference, "entry_id": h.entry_id}
                for h in self.holds
            ],
        }


@dataclass(frozen=True, slots=True)
class CaseDecision:
    """What deciding a case did."""

    case: Case
    released_payouts: tuple[str, ...] = ()
    """Out of review, on their way to the transfer."""
    refused_payouts: tuple[str, ...] = ()
    waiting_payouts: tuple[str, ...] = ()
    """Still in review: another case about the streamer is open."""
    released_purchases: tuple[str, ...] = ()
    refused_purchases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """What could not be done now (a transfer Stripe did not make yet...)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case.to_dict(),
            "released_payouts": list(self.released_payouts),
            "refused_payouts": list(self.refused_payouts),
            "waiting_payouts": list(self.waiting_payouts),
            "released_purchases": list(self.released_purchases),
            "refused_purchases": list(self.refused_purchases),
            "notes": list(self.notes),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(slots=True)
class _Outcome:
    released_payouts: list[str] = field(default_factory=list)
    refused_payouts: list[str] = field(default_factory=list)
    waiting_payouts: list[str] = field(default_factory=list)
    purchases: list[str] = field(default_factory=list)
    credits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Cases:
    """List, assign and decide review cases; export them for a suspicious-activity report.

    ``payments`` and ``payouts`` let a decision finish what the case held at
    once (release or refund a Stripe purchase, make a payout's transfer);
    without them the ledger side is done and the rest is left to
    ``payments.release``/``refuse`` and ``reconcile-payouts``.
    """

    def __init__(
        self,
        economy: GiftEconomy,
        *,
        payments: Payments | None = None,
        payouts: Payouts | None = None,
    ) -> None:
        if not isinstance(economy, GiftEconomy):
            raise InvalidInput("economy must be a GiftEconomy")
        self.economy = economy
        self.ledger: Ledger = economy.ledger
        self.payments = payments
        self.payouts = payouts
        self.clock = economy.clock
        self._t = self.ledger.tables
        self._c = self._t.compliance

    # -- reading ----------------------------------------------------------------------

    def find(
        self,
        *,
        status: CaseStatus | str | None = CaseStatus.OPEN,
        subject_id: str | None = None,
        rule: str | None = None,
        assignee: str | None = None,
        after_id: int = 0,
        limit: int = 50,
    ) -> list[Case]:
        """Cases oldest first (the queue's order); ``status=None`` for all."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST}")
        c = self._c.cases
        query = sa.select(c).where(c.c.id > after_id).order_by(c.c.id).limit(limit)
        if status is not None:
            query = query.where(c.c.status == to_enum(CaseStatus, status, "status").value)
        if subject_id is not None:
            query = query.where(c.c.subject_id == subject_id)
        if rule is not None:
            query = query.where(c.c.rule == rule)
        if assignee is not None:
            query = query.where(c.c.assignee == assignee)
        return self.ledger.read(lambda conn: self._cases(conn, conn.execute(query).all()))

    def get(self, case_id: int) -> Case:
        """One case (``UnknownCase`` if none)."""
        return self.ledger.read(lambda conn: self._load(conn, case_id))

    def _load(self, conn: Connection, case_id: int) -> Case:
        c = self._c.cases
        if isinstance(case_id, bool) or not isinstance(case_id, int):
            raise InvalidInput("case_id must be an int")
        row = conn.execute(sa.select(c).where(c.c.id == case_id)).first()
        if row is None:
            raise UnknownCase(f"no case {case_id}", case_id=case_id)
        return self._cases(conn, [row])[0]

    def _cases(self, conn: Connection, rows: Iterable[Any]) -> list[Case]:
        rows = list(rows)
        h = self._c.case_holds
        holds: dict[int, list[CaseHold]] = {}
        if rows:
            for r in conn.execute(
                sa.select(h).where(h.c.case_id.in_([row.id for row in rows])).order_by(h.c.kind)
            ):
                holds.setdefault(r.case_id, []).append(CaseHold(r.kind, r.reference, r.entry_id))
        return [
            Case(
                id=row.id,
                rule=row.rule,
                outcome=row.outcome,
                subject_id=row.subject_id,
                subject_role=row.subject_role,
                movement=row.movement,
                reference=row.reference,
                reason=row.reason,
                evidence_entry_ids=tuple(row.evidence.get("entry_ids", ())),
                facts=row.evidence.get("facts", {}),
                status=CaseStatus(row.status),
                assignee=row.assignee,
                assigned_at=row.assigned_at,
                decision=Decision(row.decision) if row.decision else None,
                decided_by=row.decided_by,
                decision_reason=row.decision_reason,
                decided_at=row.decided_at,
                created_at=row.created_at,
                updated_at=row.updated_at,
                holds=tuple(holds.get(row.id, ())),
            )
            for row in rows
        ]

    # -- assigning ---------------------------------------------------------------------

    def assign(
        self, case_id: int, reviewer: str, *, actor: str, request_id: str | None = None
    ) -> Case:
        """Give an open case to a reviewer (again: hands it over)."""
        who = check_actor(actor)
        if reviewer is None:
            raise InvalidInput("assign a case to a reviewer")
        reviewer = check_actor(reviewer)
        now = self.clock()
        c = self._c.cases

        def run(tx: Ledger) -> Case:
            conn = tx.connection()
            row = self._lock(conn, case_id)
            conn.execute(
                c.update()
                .where(c.c.id == row.id)
                .values(assignee=reviewer, assigned_at=now, updated_at=now)
            )
            write_audit(
                conn,
                self._t,
                AuditAction.ASSIGN_CASE,
                actor=who,
                subject=f"case:{row.id}",
                reason=None,
                request={"case_id": row.id, "reviewer": reviewer},
                request_id=request_id,
                result={"previous_assignee": row.assignee},
                now=now,
            )
            return self._load(conn, row.id)

        return self.ledger.atomic(run)

    def _lock(self, conn: Connection, case_id: int) -> Any:
        c = self._c.cases
        if isinstance(case_id, bool) or not isinstance(case_id, int):
            raise InvalidInput("case_id must be an int")
        row = conn.execute(sa.select(c).where(c.c.id == case_id).with_for_update()).first()
        if row is None:
            raise UnknownCase(f"no case {case_id}", case_id=case_id)
        if row.status == CaseStatus.CLOSED.value:
            raise CaseClosed(
                f"case {case_id} was already decided ({row.decision} by {row.decided_by})",
                case_id=case_id,
                decision=row.decision,
            )
        return row

    # -- deciding ----------------------------------------------------------------------

    def decide(
        self,
        case_id: int,
        decision: Decision | str,
        *,
        actor: str,
        reason: str,
        request_id: str | None = None,
        block: bool = False,
    ) -> CaseDecision:
        """Decide an open case (final): release or refuse what it holds; see the module doc."""
        verdict = to_enum(Decision, decision, "decision")
        who = check_actor(actor)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("a decision needs a reason")
        if block and verdict is not Decision.REFUSE:
            raise InvalidInput("block=True goes with a refusal")
        now = self.clock()

        def run(tx: Ledger) -> _Outcome:
            conn = tx.connection()
            row = self._lock(conn, case_id)
            c = self._c.cases
            conn.execute(
                c.update()
                .where(c.c.id == row.id)
                .values(
                    status=CaseStatus.CLOSED.value,
                    decision=verdict.value,
                    decided_by=who,
                    decision_reason=reason[:1000],
                    decided_at=now,
                    updated_at=now,
                )
            )
            done = _Outcome()
            held = self._held(conn, row)
            if verdict is Decision.REFUSE:
                for payout in held["payout"]:
                    self._refuse_payout(tx, payout, row.id, reason, now)
                    done.refused_payouts.append(payout.id)
                for hold in held["credit"]:
                    tx.void_hold(
                        int(hold.reference),
                        idempotency_key=f"case:{row.id}:void:{hold.reference}",
                        metadata={"case_id": row.id, "reason": "refused after review"},
                    )
                    done.credits.append(hold.reference)
                if block:
                    try:
                        self.economy.using(tx).block_streamer(
                            row.subject_id,
                            f"case {row.id}: {reason}",
                            actor=who,
                            request_id=request_id,
                        )
                    except UnknownStreamer:
                        done.notes.append(f"{row.subject_id} is not a streamer: nothing blocked")
            else:
                for payout in held["payout"]:
                    if self._still_held(conn, payout.id, payout.streamer_id):
                        done.waiting_payouts.append(payout.id)
                        continue
                    p = self._t.payouts
                    conn.execute(
                        p.update()
                        .where(p.c.id == payout.id, p.c.status == "review")
                        .values(status="pending", updated_at=now)
                    )
                    done.released_payouts.append(payout.id)
                for hold in held["credit"]:
                    if self._still_held(conn, hold.reference, None, kind="credit"):
                        continue
                    entry = tx.post_hold(
                        int(hold.reference),
                        idempotency_key=f"case:{row.id}:post:{hold.reference}",
                    )
                    user = entry.metadata.get("user")
                    if isinstance(user, str):
                        self.economy.using(tx).repay_debt(user, f"case:{row.id}:{hold.reference}")
                    done.credits.append(hold.reference)
            done.purchases = [
                h.reference
                for h in held["purchase"]
                if verdict is Decision.REFUSE
                or not self._still_held(conn, h.reference, None, kind="purchase")
            ]
            write_audit(
                conn,
                self._t,
                AuditAction.DECIDE_CASE,
                actor=who,
                subject=f"case:{row.id}",
                reason=reason,
                request={"case_id": row.id, "decision": verdict.value, "block": block},
                request_id=request_id,
                result={
                    "subject_id": row.subject_id,
                    "released_payouts": done.released_payouts,
                    "refused_payouts": done.refused_payouts,
                    "waiting_payouts": done.waiting_payouts,
                    "credits": done.credits,
                    "purchases": done.purchases,
                },
                now=now,
            )
            return done

        done = self.ledger.atomic(run)
        released, refused = self._finish_purchases(verdict, done)
        self._advance_payouts(done)
        return CaseDecision(
            self.get(case_id),
            released_payouts=tuple(done.released_payouts),
            refused_payouts=tuple(done.refused_payouts),
            waiting_payouts=tuple(done.waiting_payouts),
            released_purchases=released,
            refused_purchases=refused,
            notes=tuple(done.notes),
        )

    def _held(self, conn: Connection, case: Any) -> dict[str, list[Any]]:
        """What the case holds that is still held: payouts in review (the case's own,
        and every other of its subject's when it is about a streamer), pending credits,
        purchases."""
        h, p = self._c.case_holds, self._t.payouts
        holds = conn.execute(sa.select(h).where(h.c.case_id == case.id)).all()
        payout_ids = [x.reference for x in holds if x.kind == "payout"]
        payouts = conn.execute(
            sa.select(p)
            .where(
                p.c.status == "review",
                sa.or_(p.c.id.in_(payout_ids), p.c.streamer_id == case.subject_id),
            )
            .order_by(p.c.created_at, p.c.id)
            .with_for_update()
        ).all()
        credits = []
        for x in holds:
            if x.kind == "credit" and x.entry_id is not None:
                try:
                    status = self.ledger.using(conn).hold_status(x.entry_id)
                except UnknownEntry:  # pragma: no cover - a foreign key guards it
                    continue
                if status is EntryPhase.PENDING:
                    credits.append(x)
        return {
            "payout": list(payouts),
            "credit": credits,
            "purchase": [x for x in holds if x.kind == "purchase"],
        }

    def _still_held(
        self, conn: Connection, reference: str, streamer: str | None, *, kind: str = "payout"
    ) -> bool:
        """Another open case holds this item (or, for a payout, is about its streamer)."""
        c, h = self._c.cases, self._c.case_holds
        linked = conn.execute(
            sa.select(h.c.case_id)
            .join(c, c.c.id == h.c.case_id)
            .where(h.c.kind == kind, h.c.reference == reference, c.c.status == "open")
            .limit(1)
        ).first()
        if linked is not None:
            return True
        if streamer is None:
            return False
        return (
            conn.execute(
                sa.select(c.c.id).where(c.c.subject_id == streamer, c.c.status == "open").limit(1)
            ).first()
            is not None
        )

    def _refuse_payout(
        self, tx: Ledger, payout: Any, case_id: int, reason: str, now: datetime
    ) -> None:
        conn = tx.connection()
        tx.void_hold(
            payout.hold_entry_id,
            idempotency_key=f"payout:{payout.id}:void",
            metadata={"payout_id": payout.id, "step": "refused", "case_id": case_id},
        )
        p = self._t.payouts
        conn.execute(
            p.update()
            .where(p.c.id == payout.id)
            .values(
                status="refused",
                ledger_state="voided",
                failure_code="compliance_refused",
                failure_message=f"case {case_id}: {reason}"[:1000],
                updated_at=now,
            )
        )
        row = conn.execute(sa.select(p).where(p.c.id == payout.id)).one()
        self.economy.outbox.write(
            conn,
            "payout.failed",
            f"payout.failed:{payout.id}",
            record_of(row).to_dict(),
            entry_id=None,
            now=now,
        )

    def _finish_purchases(
        self, verdict: Decision, done: _Outcome
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        released: list[str] = []
        refused: list[str] = []
        for purchase_id in done.purchases:
            if self.payments is None:
                done.notes.append(
                    f"purchase {purchase_id} is still held: payments.{verdict.value}() it"
                )
                continue
            try:
                current = self.payments.purchase(purchase_id)
                if current.status != "held":
                    done.notes.append(f"purchase {purchase_id} is {current.status}, not held")
                elif verdict is Decision.RELEASE:
                    self.payments.release(purchase_id)
                    released.append(purchase_id)
                else:
                    self.payments.refuse(purchase_id, refund=True)
                    refused.append(purchase_id)
            except LedgerError as exc:
                done.notes.append(f"purchase {purchase_id}: {exc}")
        return tuple(released), tuple(refused)

    def _advance_payouts(self, done: _Outcome) -> None:
        if not done.released_payouts:
            return
        if self.payouts is None:
            done.notes.append(
                "released payouts wait for their transfer: run `spaktok-ledger reconcile-payouts`"
            )
            return
        for payout_id in done.released_payouts:
            try:
                self.payouts._advance(self.payouts.payout(payout_id))
            except LedgerError as exc:
                done.notes.append(f"payout {payout_id}: {exc} (reconcile-payouts retries it)")

    # -- the suspicious-activity report -------------------------------------------------

    def export(
        self,
        out: TextIO,
        *,
        fmt: str = "jsonl",
        status: CaseStatus | str | None = None,
        decision: Decision | str | None = None,
        case_ids: Iterable[int] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write cases with their evidence for a suspicious-activity report; returns the count.

        ``jsonl``: one case per line with its evidence entries (id, type, time,
        description, postings) and its audit trail. ``csv``: one row per
        evidence entry (a case without evidence has one row). Filter by
        ``status``, ``decision`` (``refuse``: the confirmed ones) or ``case_ids``.
        """
        if fmt not in ("jsonl", "csv"):
            raise InvalidInput("the case export format is jsonl or csv")
        wanted = sorted(set(case_ids)) if case_ids is not None else None
        c = self._c.cases
        query = sa.select(c.c.id).order_by(c.c.id)
        if status is not None:
            query = query.where(c.c.status == to_enum(CaseStatus, status, "status").value)
        if decision is not None:
            query = query.where(c.c.decision == to_enum(Decision, decision, "decision").value)
        if wanted is not None:
            query = query.where(c.c.id.in_(wanted))
        ids = self.ledger.read(lambda conn: list(conn.execute(query).scalars()))
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_FIELDS)
        if on_progress is not None:
            on_progress(0, len(ids))
        for done, case_id in enumerate(ids, start=1):
            report = self.ledger.read(partial(self._report, case_id=case_id))
            if writer is not None:
                for row in _csv_rows(report):
                    writer.writerow(row)
            else:
                out.write(json.dumps(report, ensure_ascii=False, sort_keys=True) + "\n")
            if on_progress is not None:
                on_progress(done, len(ids))
        return len(ids)

    def _report(self, conn: Connection, *, case_id: int) -> dict[str, Any]:
        case = self._load(conn, case_id)
        view = self.ledger.using(conn)
        evidence = []
        for entry_id in case.evidence_entry_ids:
            try:
                entry = view.entry(entry_id)
            except UnknownEntry:
                continue
            evidence.append(
                {
                    "entry_id": entry.id,
                    "type": entry.type,
                    "phase": entry.phase.value,
                    "effective_at": entry.effective_at.isoformat(),
                    "description": entry.description,
                    "postings": [
                        {
                            "account": p.account,
                            "amount_minor": p.amount_minor,
                            "currency": p.currency,
                        }
                        for p in entry.postings
                    ],
                }
            )
        trail = audit_records(conn, self._t, subject=f"case:{case_id}", limit=1000)
        return {
            "case": case.to_dict(),
            "evidence": evidence,
            "audit": [record.to_dict() for record in trail],
        }


def _csv_rows(report: Mapping[str, Any]) -> Iterator[list[Any]]:
    case = report["case"]
    head = [
        case["id"],
        case["rule"],
        case["outcome"],
        case["subject_id"],
        case["subject_role"],
        case["movement"],
        case["reference"] or "",
        case["status"],
        case["decision"] or "",
        case["decided_by"] or "",
        case["decided_at"] or "",
        case["reason"],
        case["created_at"],
    ]
    if not report["evidence"]:
        yield [*head, "", "", "", "", "", ""]
        return
    for entry in report["evidence"]:
        postings = entry["postings"]
        size = sum(p["amount_minor"] for p in postings if p["amount_minor"] > 0)
        yield [
            *head,
            entry["entry_id"],
            entry["type"],
            entry["effective_at"],
            size,
            postings[0]["currency"] if postings else "",
            " ".join(sorted({p["account"] for p in postings})),
        ]
