"""The operator audit log: who did what, why, when, and with which request.

Every manual action (an adjustment, a debt write-off, a refund, a purchase
released or refused after review, a streamer blocked or unblocked, a case
assigned or decided, accounts linked, a party screened, keys rotated, a user
erased) writes one row in the same database transaction as its effect, so
an action is in the log if and only if it happened. The table is
append-only: triggers reject ``UPDATE`` and ``DELETE`` on both backends
(migration 0009), and ``verify()`` checks that they are installed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, TextIO, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._domain import check_json
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._store._schema import LedgerTables

__all__ = [
    "UNSPECIFIED_ACTOR",
    "AuditAction",
    "AuditRecord",
    "audit_records",
    "check_actor",
    "to_enum",
    "write_audit",
    "write_records",
]

UNSPECIFIED_ACTOR: Final = "unspecified"
"""Recorded when a manual action is called without ``actor=`` (older call sites)."""
MAX_LIST: Final = 1000


class AuditAction(StrEnum):
    """The manual actions the audit log records."""

    ADJUST = "adjust"
    WRITE_OFF = "write_off"
    REFUND = "refund"
    RELEASE_PURCHASE = "release_purchase"
    REFUSE_PURCHASE = "refuse_purchase"
    BLOCK_STREAMER = "block_streamer"
    UNBLOCK_STREAMER = "unblock_streamer"
    ASSIGN_CASE = "assign_case"
    DECIDE_CASE = "decide_case"
    LINK_ACCOUNTS = "link_accounts"
    UNLINK_ACCOUNTS = "unlink_accounts"
    SCREEN_PARTY = "screen_party"
    ROTATE_KEYS = "rotate_keys"
    ERASE_USER = "erase_user"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One operator action."""

    id: int
    at: datetime
    actor: str
    """Who did it: the operator's id as the host knows it (never a password or token)."""
    action: str
    subject: str | None
    """What it was done to: ``user:alice``, ``streamer:bob``, ``case:12``, ``purchase:pur_...``."""
    reason: str | None
    request: Mapping[str, Any]
    """The call's arguments (amounts, ids, options)."""
    request_id: str | None
    """The host's id of the request that made the call (to find it in the host's logs)."""
    result: Mapping[str, Any]
    """What the action did (entry ids, counts)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "reason": self.reason,
            "request": dict(self.request),
            "request_id": self.request_id,
            "result": dict(self.result),
        }


E = TypeVar("E", bound=StrEnum)


def to_enum(cls: type[E], value: object, name: str) -> E:
    """``cls(value)``, or ``InvalidInput`` naming the values allowed."""
    try:
        return cls(value)  # type: ignore[arg-type]  # any value: refused below if not one
    except ValueError as exc:
        allowed = ", ".join(member.value for member in cls)
        raise InvalidInput(f"{name} must be one of {allowed}, not {value!r}") from exc


def check_actor(actor: object) -> str:
    """An actor is a non-empty id of at most 200 characters (``None``: unspecified)."""
    if actor is None:
        return UNSPECIFIED_ACTOR
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise InvalidInput("actor must be a non-empty string of at most 200 characters")
    return actor.strip()


def _check_request_id(request_id: object) -> str | None:
    if request_id is None:
        return None
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 255:
        raise InvalidInput("request_id must be a non-empty string of at most 255 characters")
    return request_id


def write_audit(
    conn: Connection,
    tables: LedgerTables,
    action: AuditAction,
    *,
    actor: str | None,
    subject: str | None,
    reason: str | None,
    request: Mapping[str, Any],
    request_id: str | None,
    result: Mapping[str, Any] | None = None,
    now: datetime,
) -> int:
    """Append one action to the audit log, in the caller's transaction; returns its id."""
    t = tables.compliance.audit_log
    return int(
        conn.execute(
            t.insert()
            .values(
                at=now,
                actor=check_actor(actor),
                action=AuditAction(action).value,
                subject=subject[:255] if subject else None,
                reason=reason[:1000] if reason else None,
                request=check_json(request, name="request"),
                request_id=_check_request_id(request_id),
                result=check_json(result or {}, name="result"),
            )
            .returning(t.c.id)
        ).scalar_one()
    )


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        reason=row.reason,
        request=row.request,
        request_id=row.request_id,
        result=row.result,
    )


def audit_records(
    conn: Connection,
    tables: LedgerTables,
    *,
    subject: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[AuditRecord]:
    """Audit records in id order (oldest first), filtered; page with ``after_id``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST}")
    t = tables.compliance.audit_log
    query = sa.select(t).where(t.c.id > after_id).order_by(t.c.id).limit(limit)
    if subject is not None:
        query = query.where(t.c.subject == subject)
    if action is not None:
        query = query.where(t.c.action == to_enum(AuditAction, action, "action").value)
    if actor is not None:
        query = query.where(t.c.actor == actor)
    if since is not None:
        query = query.where(t.c.at >= since)
    if until is not None:
        query = query.where(t.c.at < until)
    return [_record(row) for row in conn.execute(query)]


AUDIT_CSV_FIELDS: Final = (
    "id",
    "at",
    "actor",
    "action",
    "subject",
    "reason",
    "request",
    "request_id",
    "result",
)


def write_records(
    records: Iterator[AuditRecord],
    out: TextIO,
    fmt: str,
    on_record: Callable[[], None] | None = None,
) -> int:
    """Write audit records as JSON Lines (``jsonl``) or CSV (``csv``); returns the count."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput("the audit export format is jsonl or csv")
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(AUDIT_CSV_FIELDS)
    count = 0
    for record in records:
        data = record.to_dict()
        if writer is not None:
            writer.writerow(
                [
                    json.dumps(data[name], ensure_ascii=False, sort_keys=True)
                    if isinstance(data[name], dict)
                    else ("" if data[name] is None else data[name])
                    for name in AUDIT_CSV_FIELDS
                ]
            )
        else:
            out.write(json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
        if on_record is not None:
            on_record()
    return count
