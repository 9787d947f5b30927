"""Bulk ingest: import many posted entries (from another ledger, a migration) at once.

``Ledger.ingest(drafts)`` writes the entries of each batch with one multi-row
``INSERT`` for the entries, one for their postings and one pass over the
balance rows (each account once, in ascending ``(account, shard)`` order),
in one transaction per batch. What stays the same as ``post``:

* every draft is validated (balanced, known accounts, matching currencies);
* idempotency keys: a draft whose key is already recorded for the same
  request is skipped (counted as replayed); the same key for another request
  raises ``IdempotencyConflict`` and nothing of that batch is written;
* no-overdraft accounts: the batch is refused with ``InsufficientFunds`` (and
  nothing of it written) if it would leave one below zero. The rule is checked
  on each account's balance at the end of the batch, not between its entries:
  order the drafts (or size the batches) accordingly.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._domain import EntryDraft
from spaktok_ledger._errors import CurrencyMismatch, IdempotencyConflict, InvalidInput

if TYPE_CHECKING:
    from spaktok_ledger._store._ledger import Ledger, _Delta, _Op

__all__ = ["IngestReport", "ingest"]

MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What ``Ledger.ingest`` did."""

    inserted: int
    """Entries written."""
    replayed: int
    """Drafts skipped because their idempotency key was already recorded for the same request."""
    entry_ids: tuple[int, ...]
    """Ids of the entries written, in the order of their drafts."""


def ingest(ledger: Ledger, drafts: Iterable[EntryDraft], batch_size: int) -> IngestReport:
    """See ``Ledger.ingest``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InvalidInput("batch_size must be an int")
    if not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInput(f"batch_size must be from 1 to {MAX_BATCH}")
    ops = [ledger._op_from_draft("post", draft, None) for draft in drafts]
    inserted = replayed = 0
    ids: list[int] = []
    for start in range(0, len(ops), batch_size):
        batch = ops[start : start + batch_size]
        new_ids, skipped = ledger._write(functools.partial(_write_batch, ledger, ops=batch))
        ids.extend(new_ids)
        inserted += len(new_ids)
        replayed += skipped
    return IngestReport(inserted, replayed, tuple(ids))


class KeysTaken(Exception):
    """A key of a batch expected to hold only new keys is recorded (group commit:
    a retried gift, or the same gift sent elsewhere at once). The batch's
    transaction is rolled back and its gifts are sent one by one."""


def _write_batch(
    ledger: Ledger, conn: Connection, *, ops: Sequence[_Op], keys_new: bool = False
) -> tuple[list[int], int]:
    """Write ``ops`` (posted entries) in a few statements; their ids and how many
    were skipped as replays. ``keys_new``: the caller expects no key of ``ops``
    to be recorded and none repeated (group commit): one that is raises
    ``KeysTaken`` instead of being skipped.

    Which keys are recorded: on PostgreSQL the entries go in with ``ON CONFLICT
    (idempotency_key) DO NOTHING`` and only the keys that were not inserted are
    read (to tell a replay from a conflict), so a batch of new keys reads none,
    and a key another transaction is recording at that moment is waited for
    (read first, it was missed, and the insert failed on the unique key).
    PostgreSQL also plans a statement it has run a few times once for good
    (psycopg prepares it): a select of keys first planned on a near-empty table
    kept its sequential scan, so a storm's key check grew with the table
    (issue 14; docs/operations.md, "A batch's key check"). On SQLite, where writers queue and
    nothing changes between the read and the insert, the keys are read first.
    The accounts are checked before the keys, as ``post`` checks them.
    """
    from spaktok_ledger._store._ledger import _op_deltas

    t = ledger._tables
    on_conflict = conn.dialect.name == "postgresql"
    # Idempotency: keys repeated inside the batch, then keys already recorded.
    fresh: list[_Op] = []
    hashes: dict[str, str] = {}
    for op in ops:
        known = hashes.get(op.key)
        if known is None:
            hashes[op.key] = op.request_hash
            fresh.append(op)
        elif keys_new:
            raise KeysTaken(op.key)
        else:
            _check_replay(op, known)
    accounts = ledger._resolve(conn, {p.account for op in fresh for p in op.postings})
    for op in fresh:
        for p in op.postings:
            acct = accounts[p.account]
            if p.currency != acct.currency:
                raise CurrencyMismatch(
                    f"posting of {p.currency} to account {acct.code} held in {acct.currency}",
                    account=acct.code,
                    posting_currency=p.currency,
                    account_currency=acct.currency,
                )
    if not on_conflict:
        recorded = _recorded(conn, t.entries, [op.key for op in fresh])
        if recorded and keys_new:
            raise KeysTaken(next(iter(recorded)))
        for op in fresh:
            if op.key in recorded:
                _check_replay(op, recorded[op.key])
        fresh = [op for op in fresh if op.key not in recorded]
    if fresh:
        fresh, entry_ids = _insert_entries(ledger, conn, fresh, on_conflict, keys_new)
    if not fresh:
        return [], len(ops)
    ledger._insert_many(
        conn,
        t.postings,
        [
            {
                "entry_id": entry_id,
                "account_id": accounts[p.account].id,
                "amount": p.amount_minor,
                "currency": p.currency,
            }
            for entry_id, op in zip(entry_ids, fresh, strict=True)
            for p in op.postings
        ],
        core=ledger._stmts["insert_postings"],
    )
    total: dict[int, _Delta] = defaultdict(_new_delta)
    for op in fresh:
        for account_id, d in _op_deltas(op, accounts).items():
            t_d = total[account_id]
            t_d.posted += d.posted
    by_id = {a.id: a for a in accounts.values()}
    if ledger._mode == "unit":
        ledger._collect(conn, total, by_id)
    else:
        ledger._apply_deltas(conn, total, by_id)
    return entry_ids, len(ops) - len(fresh)


def _insert_entries(
    ledger: Ledger, conn: Connection, fresh: list[_Op], on_conflict: bool, keys_new: bool
) -> tuple[list[_Op], list[int]]:
    """Insert the entries of ``fresh``: the ops written (``on_conflict``: those whose
    key was not taken) and their ids. See ``_write_batch``."""
    from spaktok_ledger._store._ledger import _entry_row

    e = ledger._tables.entries
    entries = [_entry_row(op) for op in fresh]  # posted entries: no expiry, hold, reversal
    if not on_conflict:
        ids = list(conn.execute(ledger._stmts["insert_entries_returning"], entries).scalars())
        return fresh, ids
    # With psycopg one statement of arrays; ids matched by key (unique here).
    returned = ledger._insert_many(
        conn, e, entries, returning=("idempotency_key", "id"), skip_taken="idempotency_key"
    )
    by_key: dict[str, int] = {row.idempotency_key: row.id for row in returned}
    if len(by_key) < len(fresh):
        taken = [op for op in fresh if op.key not in by_key]
        if keys_new:
            raise KeysTaken(taken[0].key)
        recorded = _recorded(conn, e, [op.key for op in taken])
        for op in taken:
            _check_replay(op, recorded[op.key])
        fresh = [op for op in fresh if op.key in by_key]
    return fresh, [by_key[op.key] for op in fresh]


def _recorded(conn: Connection, entries: sa.Table, keys: list[str]) -> dict[str, str]:
    """The request fingerprints of those of ``keys`` that are recorded."""
    found: dict[str, str] = {}
    for start in range(0, len(keys), 1000):
        rows = conn.execute(
            sa.select(entries.c.idempotency_key, entries.c.request_hash).where(
                entries.c.idempotency_key.in_(keys[start : start + 1000])
            )
        )
        found.update({row.idempotency_key: row.request_hash for row in rows})
    return found


def _check_replay(op: _Op, recorded_hash: str) -> None:
    """``op``'s key is recorded: a replay if for the same request, else a conflict."""
    if recorded_hash != op.request_hash:
        raise IdempotencyConflict(
            f"idempotency key {op.key!r} was already used for a different request",
            idempotency_key=op.key,
        )


def _new_delta() -> _Delta:
    from spaktok_ledger._store._ledger import _Delta

    return _Delta()
