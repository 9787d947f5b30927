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


def _write_batch(
    ledger: Ledger, conn: Connection, *, ops: Sequence[_Op], keys_new: bool = False
) -> tuple[list[int], int]:
    """Write ``ops`` (posted entries) in a few statements; their ids and how many
    were skipped as replays. ``keys_new``: the caller has read in this
    transaction that no key of ``ops`` is recorded (group commit), so they are not
    read again."""
    from spaktok_ledger._store._ledger import _entry_row, _op_deltas

    t = ledger._tables
    e = t.entries
    # Idempotency: keys already recorded, and keys repeated inside the batch.
    seen: dict[str, str] = {}
    keys = [] if keys_new else list({op.key for op in ops})
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        rows = conn.execute(
            e.select()
            .with_only_columns(e.c.idempotency_key, e.c.request_hash)
            .where(e.c.idempotency_key.in_(chunk))
        )
        seen.update({row.idempotency_key: row.request_hash for row in rows})
    fresh: list[_Op] = []
    for op in ops:
        known = seen.get(op.key)
        if known is None:
            seen[op.key] = op.request_hash
            fresh.append(op)
        elif known != op.request_hash:
            raise IdempotencyConflict(
                f"idempotency key {op.key!r} was already used for a different request",
                idempotency_key=op.key,
            )
    skipped = len(ops) - len(fresh)
    if not fresh:
        return [], skipped
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
    entries = [_entry_row(op) for op in fresh]  # posted entries: no expiry, hold, reversal
    if ledger._arrays(conn):  # one statement of arrays; ids matched by key (unique here)
        returned = ledger._insert_many(conn, e, entries, returning=("idempotency_key", "id"))
        by_key: dict[str, int] = {row.idempotency_key: row.id for row in returned}
        entry_ids = [by_key[op.key] for op in fresh]
    else:
        entry_ids = list(conn.execute(ledger._stmts["insert_entries_returning"], entries).scalars())
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
    return entry_ids, skipped


def _new_delta() -> _Delta:
    from spaktok_ledger._store._ledger import _Delta

    return _Delta()
