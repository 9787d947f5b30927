"""Group commit for gift storms: many concurrent ``send_gift`` calls, one transaction.

A popular stream sends thousands of gifts a second; one commit per gift makes
the database's commit (a WAL flush) the bottleneck. :class:`GiftBatcher`
coalesces the calls that arrive within a small window (``window_seconds``, or
until ``max_batch`` calls are waiting) into one transaction:

* The first caller to find no batch collecting becomes its *leader*: it waits
  out the window (or until as many calls wait as the last batch held), takes
  the waiting calls (in arrival order) and runs them in one ``Ledger.atomic``
  unit: set-based (one statement per table for all the gifts) when every gift
  is sure to go through as it would alone, else each gift in its own
  SAVEPOINT. The next caller starts the next batch while this one commits.
* A gift that is refused inside the batch (insufficient funds, a blocked
  streamer, ...) is rolled back to its savepoint alone; the gifts before it
  commit, then it is run on its own through ``GiftEconomy.send_gift`` (so its
  caller gets exactly the error, or the replayed receipt, that a serial call
  gives), and the gifts after it form the next batch. Calls that fail the
  request checks (a bad quantity, an unknown gift) are run on their own at
  their place in the order in the same way.
* If a batch fails as a whole (contention that outlasted the ledger's
  retries, an overdraft found only when the unit's balances were applied),
  each of its gifts is run on its own: no caller is failed by another's gift.
* Every caller returns only after its own gift is committed; idempotency keys
  behave as in ``send_gift`` (a replay returns the first receipt).

Threads are the unit of concurrency here; each batch is one transaction on
the economy's ledger (which must own its engine).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from spaktok_ledger._domain import EntryType, Posting, built_draft
from spaktok_ledger._errors import InvalidInput, LedgerError, UnknownAccount
from spaktok_ledger._service._gifts import (
    GIFT_REVENUE,
    MAX_QUANTITY,
    GiftDetails,
    GiftEconomy,
    GiftReceipt,
    Streamer,
    _check_key,
    _GiftRequest,
    earnings_account,
    receivable_account,
    wallet_account,
)
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._store._ingest import KeysTaken, _write_batch
from spaktok_ledger._store._ledger import Ledger

__all__ = ["GiftBatcher", "GiftOrder"]


@dataclass(frozen=True, slots=True)
class GiftOrder:
    """One ``send_gift`` call, for :meth:`GiftBatcher.send_many`."""

    sender_id: str | int
    """The viewer sending the gift."""
    streamer_id: str | int
    """The streamer receiving it."""
    gift_id: str
    """A gift of the economy's catalogue."""
    idempotency_key: str
    """As for ``send_gift``: the same key and request returns the first receipt."""
    quantity: int = 1
    """How many of the gift (1 to 9,999)."""


@dataclass(slots=True)
class _Call:
    order: GiftOrder
    done: threading.Event = field(default_factory=threading.Event)
    receipt: GiftReceipt | None = None
    error: BaseException | None = None
    solo: bool = False
    """Run on its own after the batch (refused inside it, or the batch failed)."""


class GiftBatcher:
    """Coalesce concurrent ``send_gift`` calls into group commits.

    >>> from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy, Ledger
    >>> economy = GiftEconomy(Ledger("sqlite://"), GiftCatalogue([Gift("rose", 10)]))
    >>> economy.setup()
    >>> batcher = GiftBatcher(economy, window_seconds=0.002, max_batch=256)
    >>> batcher.max_batch
    256

    ``window_seconds``: how long a batch's leader waits for more calls (0 to
    1 s); the wait ends early once as many calls wait as the batch before held
    (so a caller alone, after a batch of one, is written at once, and a steady
    set of senders starts its next batch as soon as they are all back);
    ``max_batch``: a batch starts at once when this many calls are waiting (1
    to 10,000).
    """

    def __init__(
        self, economy: GiftEconomy, *, window_seconds: float = 0.002, max_batch: int = 256
    ) -> None:
        if not isinstance(economy, GiftEconomy):
            raise InvalidInput("economy must be a GiftEconomy")
        if economy.ledger.engine is None:
            raise InvalidInput("a GiftBatcher needs a ledger that owns its engine, not a view")
        if isinstance(window_seconds, bool) or not isinstance(window_seconds, int | float):
            raise InvalidInput("window_seconds must be a number of seconds")
        if not 0 <= window_seconds <= 1:
            raise InvalidInput("window_seconds must be from 0 to 1")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int):
            raise InvalidInput("max_batch must be an int")
        if not 1 <= max_batch <= 10_000:
            raise InvalidInput("max_batch must be from 1 to 10,000")
        self.economy = economy
        self.window_seconds = float(window_seconds)
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._waiting: list[_Call] = []
        self._collecting = False
        self._committing = False
        self._last_size = 1  # calls in the last batch collected: 1 means no one else is sending
        t = economy._t  # the set-based path's reads, built once
        self._streamers_in = sa.select(t.streamers).where(
            t.streamers.c.streamer_id.in_(sa.bindparam("ids", expanding=True))
        )
        self.batches = 0
        """Transactions committed (or attempted) for batches so far."""

    # -- public ------------------------------------------------------------------

    def send_gift(
        self,
        sender_id: str | int,
        streamer_id: str | int,
        gift_id: str,
        quantity: int = 1,
        *,
        idempotency_key: str,
    ) -> GiftReceipt:
        """Like ``GiftEconomy.send_gift``, committed together with concurrent calls."""
        call = _Call(GiftOrder(sender_id, streamer_id, gift_id, idempotency_key, quantity))
        with self._cond:
            self._waiting.append(call)
            lead = not self._collecting
            if lead:
                self._collecting = True
            elif len(self._waiting) >= min(self.max_batch, self._last_size):
                self._cond.notify_all()
        if lead:
            self._lead()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.receipt is not None
        return call.receipt

    def send_many(self, orders: Iterable[GiftOrder]) -> list[GiftReceipt | LedgerError]:
        """Send ``orders`` in order, in batches of at most ``max_batch`` per transaction.

        Returns one item per order: its receipt, or the ``LedgerError`` that
        refused it (the others still go through). The result equals sending
        them one by one with ``send_gift``.
        """
        calls = [_Call(o if isinstance(o, GiftOrder) else _bad_order(o)) for o in orders]
        for start in range(0, len(calls), self.max_batch):
            self._run(calls[start : start + self.max_batch])
        out: list[GiftReceipt | LedgerError] = []
        for call in calls:
            if call.error is not None:
                if not isinstance(call.error, LedgerError):
                    raise call.error
                out.append(call.error)
            else:
                assert call.receipt is not None
                out.append(call.receipt)
        return out

    # -- batching ----------------------------------------------------------------

    def _lead(self) -> None:
        """Collect a batch and commit it. One batch commits at a time: calls that
        arrive meanwhile wait for the next one (that is what makes batches grow
        with the load: the busier the database, the bigger each commit)."""
        with self._cond:
            # The window ends early once as many calls wait as the last batch held:
            # the senders that were there are back (so after a batch of one, a lone
            # caller is written at once: the 2 ms default halved one sender's rate),
            # and at 32 senders the batch no longer idles out the rest of the window.
            # Calls arriving while a batch commits still wait for it.
            deadline = time.monotonic() + self.window_seconds
            while True:
                left = deadline - time.monotonic()
                waiting = len(self._waiting)
                if not self._committing and (
                    waiting >= self.max_batch or left <= 0 or waiting >= self._last_size
                ):
                    break
                self._cond.wait(left if left > 0 else None)
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            self._last_size = len(batch)
            self._committing = True
            self._collecting = False
            lead_next = False
            if self._waiting:  # more than max_batch waiting: they get a leader of their own
                self._collecting = True
                try:
                    threading.Thread(target=self._lead, daemon=True).start()
                except RuntimeError:  # no thread to be had: this one leads them next
                    lead_next = True
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._committing = False
                self._cond.notify_all()
        if lead_next:
            self._lead()

    def _run(self, calls: Sequence[_Call]) -> None:
        """Run ``calls`` in order: runs of valid gifts share a transaction; a call
        refused inside one ends it (the gifts before it commit) and is then run on
        its own, so every call sees exactly the state a serial ``send_gift`` sees."""
        try:
            i = 0
            while i < len(calls):
                segment: list[tuple[_Call, _GiftRequest]] = []
                while i < len(calls):
                    req = self._request(calls[i])
                    if req is None:
                        break
                    segment.append((calls[i], req))
                    i += 1
                done = self._commit(segment)
                if done < len(segment):  # refused inside the batch: rewind to it
                    i -= len(segment) - done
                    calls[i].solo = True
                if i < len(calls):
                    if calls[i].solo:
                        self._solo(calls[i])
                    i += 1
        except BaseException as exc:  # handed to every caller still waiting
            for call in calls:
                if call.receipt is None and call.error is None:
                    call.error = exc
            raise
        finally:
            for call in calls:
                call.done.set()

    def _commit(self, segment: Sequence[tuple[_Call, _GiftRequest]]) -> int:
        """Commit the gifts of ``segment`` up to the first refused one, in one
        transaction; returns how many were committed."""
        if not segment:
            return 0
        self.batches += 1
        if len(segment) == 1:  # nothing to share: the plain path, no savepoint
            self._solo(segment[0][0])
            return 1
        try:
            try:
                return self.economy.ledger.atomic(lambda tx: self._in_unit(tx, segment))
            except KeysTaken:  # rolled back: a gift of it replays (or conflicts) alone
                self.batches += 1
                return self.economy.ledger.atomic(lambda tx: self._in_unit(tx, segment, False))
        except LedgerError:
            # The unit failed as a whole (contention that outlasted the retries,
            # an overdraft found only when the unit's balances were applied):
            # every gift of it runs on its own.
            for call, _ in segment:
                call.receipt = None
                self._solo(call)
            return len(segment)

    def _request(self, call: _Call) -> _GiftRequest | None:
        """Validate a call as ``send_gift`` does; None if it must run on its own."""
        o = call.order
        try:
            sender = check_party_id(o.sender_id, "sender_id")
            streamer = check_party_id(o.streamer_id, "streamer_id")
            key = _check_key(o.idempotency_key)
        except LedgerError as exc:
            call.error = exc
            return None
        quantity = o.quantity
        valid = (
            sender != streamer
            and not isinstance(quantity, bool)
            and isinstance(quantity, int)
            and 1 <= quantity <= MAX_QUANTITY
            and self.economy.gifts is not None
            and o.gift_id in self.economy.gifts
        )
        if not valid:
            call.solo = True  # send_gift raises (or replays) exactly as it would alone
            return None
        assert self.economy.gifts is not None
        request: dict[str, Any] = {
            "op": "send_gift",
            "sender": sender,
            "streamer": streamer,
            "gift": o.gift_id,
            "quantity": quantity,
        }
        return _GiftRequest(
            sender,
            streamer,
            self.economy.gifts.get(o.gift_id),
            quantity,
            f"gift:{sender}:{key}",
            request,
        )

    def _in_unit(
        self, tx: Ledger, segment: Sequence[tuple[_Call, _GiftRequest]], set_based: bool = True
    ) -> int:
        economy = self.economy.using(tx)
        if set_based and len(segment) > 1 and self._set_based(tx, economy, segment):
            return len(segment)
        for n, (call, req) in enumerate(segment):
            call.receipt = None
            try:
                call.receipt = tx._in_savepoint(functools.partial(economy._send, req=req))
            except LedgerError:
                return n
        return len(segment)

    def _set_based(
        self,
        tx: Ledger,
        economy: GiftEconomy,
        segment: Sequence[tuple[_Call, _GiftRequest]],
    ) -> bool:
        """Write the whole segment with a few statements for all its gifts.

        Taken only when every gift is certain to go through as it would alone
        (streamers known and not blocked, wallets known and funded in order,
        keys distinct, no compliance monitoring); otherwise False, with
        nothing written, and the gifts go one savepoint at a time. Whether the
        keys are new is found as the entries are written (``_write_batch``): a
        recorded one raises ``KeysTaken`` and ``_commit`` sends the segment again
        one savepoint at a time, in a new transaction.
        """
        if economy.compliance is not None:
            return False
        reqs = [req for _, req in segment]
        if len({r.ledger_key for r in reqs}) != len(reqs):
            return False
        conn = tx.connection()
        streamer_ids = sorted({r.streamer for r in reqs})
        found = {
            row.streamer_id: row for row in conn.execute(self._streamers_in, {"ids": streamer_ids})
        }
        if any(found.get(s) is None or found[s].status == "blocked" for s in streamer_ids):
            return False
        codes = sorted(
            {
                code
                for r in reqs
                for code in (
                    wallet_account(r.sender),
                    receivable_account(r.sender),
                    *economy._earnings_codes(r.streamer),
                )
            }
        )
        try:
            balances = dict(tx.balances(codes))
        except UnknownAccount:
            return False
        now = economy.clock()
        matures_at = now + timedelta(days=economy.hold_days) if economy.hold_days else None
        bucket = "earnings_pending" if economy.hold_days else "earnings"
        planned = []
        for r in reqs:
            row = found[r.streamer]
            split = economy.split_for(
                Streamer(
                    streamer_id=row.streamer_id,
                    blocked=False,
                    streamer_bps=row.streamer_bps,
                    blocked_reason=row.blocked_reason,
                    metadata=row.metadata,
                )
            )
            coins = r.gift.coins * r.quantity
            value = coins * economy.coin_value_usd_minor
            streamer_share, platform_share = split.split(value)
            wallet = balances[wallet_account(r.sender)]
            if wallet.available_minor < value:
                return False
            legs = [Posting.debit(wallet_account(r.sender), value)]
            if streamer_share:
                legs.append(Posting.credit(earnings_account(r.streamer, bucket), streamer_share))
            if platform_share:
                legs.append(Posting.credit(GIFT_REVENUE, platform_share))
            details = GiftDetails(
                r.gift.id,
                r.quantity,
                coins,
                value,
                streamer_share,
                platform_share,
                split.streamer_bps,
                split.platform_bps,
            )
            draft = built_draft(  # as send_gift's: metadata from checked values
                EntryType.GIFT,
                tuple(legs),
                r.ledger_key,
                description=f"{r.quantity} x {r.gift.name} from {r.sender} to {r.streamer}",
                metadata={
                    "sender": r.sender,
                    "streamer": r.streamer,
                    "gift": details.to_dict(),
                    "matures_at": matures_at.isoformat() if matures_at else None,
                },
                effective_at=now,
            )
            # Running balances, so each receipt shows the state after its own gift.
            for leg in legs:
                if leg.account not in balances:  # platform revenue: not on a receipt
                    continue
                b = balances[leg.account]
                balances[leg.account] = replace(
                    b, posted_minor=b.posted_minor + b.kind.normal_sign * leg.amount_minor
                )
            after = {code: balances[code] for code in codes}
            planned.append((r, draft, details, streamer_share, after))
        self._write_planned(tx, economy, segment, planned, now=now, matures_at=matures_at)
        return True

    def _write_planned(
        self,
        tx: Ledger,
        economy: GiftEconomy,
        segment: Sequence[tuple[_Call, _GiftRequest]],
        planned: list[Any],
        *,
        now: datetime,
        matures_at: datetime | None,
    ) -> None:
        conn, t = tx.connection(), economy._t
        ops = [
            tx._op_from_draft("post", d, None, r.request, request_built=True)
            for r, d, *_ in planned
        ]
        entry_ids, skipped = _write_batch(tx, conn, ops=ops, keys_new=True)
        assert skipped == 0
        lots = []
        events = []
        for entry_id, (r, _, details, share, after) in zip(entry_ids, planned, strict=True):
            receipt = GiftReceipt(
                entry_id=entry_id,
                sender_id=r.sender,
                streamer_id=r.streamer,
                gift=details,
                sender_wallet=economy._wallet_from(r.sender, after),
                streamer_earnings=economy._earnings_from(r.streamer, after),
                sent_at=now,
                matures_at=matures_at,
            )
            if matures_at is not None and share:
                lots.append(
                    {
                        "streamer_id": r.streamer,
                        "gift_entry_id": entry_id,
                        "amount_minor": share,
                        "matures_at": matures_at,
                    }
                )
            events.append(
                {
                    "topic": "gift.sent",
                    "dedupe_key": f"gift.sent:{entry_id}",
                    "entry_id": entry_id,
                    "payload": receipt.to_dict(),
                    "created_at": now,
                }
            )
            segment[len(events) - 1][0].receipt = receipt
        if lots:
            tx._insert_many(conn, t.earning_lots, lots)
        tx._insert_many(conn, t.outbox, events)

    def _solo(self, call: _Call) -> None:
        o = call.order
        try:
            call.receipt = self.economy.send_gift(
                o.sender_id,
                o.streamer_id,
                o.gift_id,
                o.quantity,
                idempotency_key=o.idempotency_key,
            )
        except LedgerError as exc:
            call.error = exc


def _bad_order(order: object) -> GiftOrder:
    raise InvalidInput(f"send_many takes GiftOrder items, not {type(order).__name__}")
