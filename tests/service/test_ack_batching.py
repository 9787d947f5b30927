"""Fast acknowledgements on the asyncio API are stored together (issue 12).

Concurrent ``AsyncPayments.accept_webhook`` / ``AsyncPayouts.accept_webhook``
calls on one event loop share one insert and one commit; each caller still
gets its own answer (queued, duplicate, ignored, or its own error). Both
backends, through the async drivers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    AsyncGiftEconomy,
    AsyncLedger,
    AsyncPayments,
    AsyncPayouts,
    AsyncPricing,
    CoinPack,
    LedgerBusy,
    PackCatalogue,
    StripeGateway,
    WebhookVerificationError,
)
from spaktok_ledger._service._webhooks import WebhookInbox
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client
from tests.apis import async_engine, dispose_engines, run, sync_engine
from tests.service.conftest import GIFTS

SECRET = "whsec_batch_platform"
CONNECT_SECRET = "whsec_batch_connect"


def checkout_event(n: int, *, type_: str = "checkout.session.completed") -> dict[str, Any]:
    return {
        "id": f"evt_batch_{n}",
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "data": {"object": {"object": "checkout.session", "id": f"cs_batch_{n}"}},
    }


@pytest.fixture
def services(engine: sa.Engine, prefix: str, clock):
    with FakeStripe() as fake:
        ledger = AsyncLedger(async_engine(engine), prefix=prefix, clock=clock)
        economy = AsyncGiftEconomy(ledger, GIFTS, hold_days=0, clock=clock)
        run(economy.setup())
        pricing = AsyncPricing(
            ledger,
            PackCatalogue([CoinPack("starter", 499, 500)]),
            StaticRateProvider({"EUR": Decimal("0.93")}, clock=clock),
            clock=clock,
        )
        gateway = StripeGateway(stripe_client(fake, timeout=5))
        payouts = AsyncPayouts(
            economy, gateway, connect_webhook_secret=CONNECT_SECRET, clock=clock
        )
        payments = AsyncPayments(
            economy, pricing, gateway, webhook_secret=SECRET, clock=clock,
            transfer_events=payouts,
        )
        yield payments, payouts
    dispose_engines()


class Statements:
    """The inserts into the inbox and the commits on the async engine's connections."""

    def __init__(self, ledger: AsyncLedger) -> None:
        self.engine = ledger.engine.sync_engine
        self.table = ledger.tables.webhook_events.name
        self.inserts = 0
        self.commits = 0

    def _on_execute(self, conn, cursor, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {self.table.upper()}"):
            self.inserts += 1

    def _on_commit(self, conn) -> None:
        self.commits += 1

    def __enter__(self) -> Statements:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        sa.event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)
        sa.event.remove(self.engine, "commit", self._on_commit)


def inbox(payments: AsyncPayments) -> dict[str, str]:
    """event id -> status, read with a sync engine on the same database."""
    ledger = payments.economy.ledger
    t = ledger.tables.webhook_events
    with sync_engine(ledger.engine).connect() as conn:
        return {r.event_id: r.status for r in conn.execute(sa.select(t.c.event_id, t.c.status))}


async def accept_all(target: AsyncPayments | AsyncPayouts, deliveries) -> list[Any]:
    return await asyncio.gather(
        *(target.accept_webhook(body, header) for body, header in deliveries),
        return_exceptions=True,
    )


def test_concurrent_acknowledgements_share_one_insert_and_one_commit(services) -> None:
    """20 deliveries arriving together (two of them copies of a third): one insert, one
    commit, every caller answered queued, one row per event."""
    payments, _ = services
    events = [checkout_event(n) for n in range(18)]
    deliveries = [signed_event(e, SECRET) for e in events]
    deliveries += [signed_event(events[0], SECRET), signed_event(events[0], SECRET)]
    with Statements(payments.economy.ledger) as seen:
        answers = run(accept_all(payments, deliveries))
    assert [a.outcome for a in answers] == ["queued"] * 20
    assert [a.event_id for a in answers] == [e["id"] for e in events] + [events[0]["id"]] * 2
    assert (seen.inserts, seen.commits) == (1, 1)
    assert inbox(payments) == {e["id"]: "queued" for e in events}


def test_a_lone_delivery_is_written_at_once(services) -> None:
    """No window to wait out: one delivery, one insert, answered queued."""
    payments, _ = services
    with Statements(payments.economy.ledger) as seen:
        answer = run(payments.accept_webhook(*signed_event(checkout_event(1), SECRET)))
    assert answer.outcome == "queued"
    assert (seen.inserts, seen.commits) == (1, 1)


def test_each_caller_in_a_batch_gets_its_own_status(services) -> None:
    """In one batch: a new event (queued), one already applied (duplicate), one already
    queued (queued), an unhandled type (ignored, not stored); a forgery is refused."""
    payments, _ = services
    applied, waiting, new = checkout_event(1), checkout_event(2), checkout_event(3)
    run(accept_all(payments, [signed_event(applied, SECRET), signed_event(waiting, SECRET)]))
    ledger = payments.economy.ledger
    t = ledger.tables.webhook_events
    with sync_engine(ledger.engine).begin() as conn:
        conn.execute(t.update().where(t.c.event_id == applied["id"]).values(status="processed"))
    other = checkout_event(4, type_="customer.created")
    forged = signed_event(checkout_event(5), "whsec_forger")
    answers = run(
        accept_all(
            payments,
            [
                signed_event(new, SECRET),
                signed_event(applied, SECRET),
                signed_event(waiting, SECRET),
                signed_event(other, SECRET),
                forged,
            ],
        )
    )
    assert [a.outcome for a in answers[:4]] == ["queued", "duplicate", "queued", "ignored"]
    assert answers[1].duplicate and not answers[0].duplicate
    assert isinstance(answers[4], WebhookVerificationError)
    assert inbox(payments) == {
        applied["id"]: "processed",
        waiting["id"]: "queued",
        new["id"]: "queued",
    }


def test_a_failing_row_fails_only_its_own_caller(services, monkeypatch) -> None:
    """A batch the database refuses because of one row is written again one delivery
    at a time: that caller gets the error a call of its own gets, the others queued."""
    payments, _ = services
    events = [checkout_event(n) for n in range(6)]
    real = WebhookInbox.accept_many
    batches: list[int] = []

    def refusing(self, deliveries):  # the database refuses evt_batch_3's row
        batches.append(len(deliveries))
        if any(event.id == "evt_batch_3" for event, _, _ in deliveries):
            raise sa.exc.DataError("INSERT", {}, Exception("value too long"))
        return real(self, deliveries)

    monkeypatch.setattr(WebhookInbox, "accept_many", refusing)
    answers = run(accept_all(payments, [signed_event(e, SECRET) for e in events]))
    assert isinstance(answers[3], sa.exc.DataError)
    assert [a.outcome for i, a in enumerate(answers) if i != 3] == ["queued"] * 5
    assert batches == [6, 1, 1, 1, 1, 1, 1]  # the batch, then each alone
    assert set(inbox(payments)) == {e["id"] for i, e in enumerate(events) if i != 3}


def test_a_database_failure_fails_the_batch_at_once(services, monkeypatch) -> None:
    """Contention that outlasted the retries (or a lost connection) is not one row's
    fault: every caller of the batch gets it at once, with no one-by-one replay that
    would make the last caller wait out the failure a hundred times."""
    payments, _ = services
    batches: list[int] = []

    def busy(self, deliveries):
        batches.append(len(deliveries))
        raise LedgerBusy("contention outlasted the retries", backend="test")

    monkeypatch.setattr(WebhookInbox, "accept_many", busy)
    deliveries = [signed_event(checkout_event(n), SECRET) for n in range(5)]
    answers = run(accept_all(payments, deliveries))
    assert all(isinstance(a, LedgerBusy) for a in answers)
    assert batches == [5]
    assert inbox(payments) == {}


def test_each_delivery_keeps_its_own_arrival_time(services) -> None:
    """Deliveries stored in one batch keep the times they arrived (the worker takes
    them oldest first), not the batch's."""
    payments, _ = services
    times = iter(datetime(2026, 3, 1, 12, 0, n, tzinfo=UTC) for n in range(100))
    payments.blocking.clock = lambda: next(times)
    events = [checkout_event(n) for n in (5, 3, 9, 1)]
    run(accept_all(payments, [signed_event(e, SECRET) for e in events]))
    ledger = payments.economy.ledger
    t = ledger.tables.webhook_events
    with sync_engine(ledger.engine).connect() as conn:
        found = conn.execute(sa.select(t.c.event_id).order_by(t.c.received_at)).scalars()
        assert list(found) == [e["id"] for e in events]


def test_a_cancelled_caller_leaves_the_others_answered(services) -> None:
    """A caller that goes away (a client disconnect) does not disturb the batch: the
    others are answered; its event is stored all the same (Stripe's retry is a copy)."""
    payments, _ = services
    events = [checkout_event(n) for n in range(5)]

    async def scenario() -> list[Any]:
        tasks = [
            asyncio.ensure_future(payments.accept_webhook(*signed_event(e, SECRET)))
            for e in events
        ]
        await asyncio.sleep(0)  # every caller is queued
        tasks[2].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    answers = run(scenario())
    assert isinstance(answers[2], asyncio.CancelledError)
    assert [a.outcome for i, a in enumerate(answers) if i != 2] == ["queued"] * 4
    assert set(inbox(payments)) == {e["id"] for e in events}


def test_connect_deliveries_are_stored_together_too(services) -> None:
    """AsyncPayouts.accept_webhook: the same coalescing on the Connect endpoint."""
    _, payouts = services
    events = [
        {
            "id": f"evt_acct_{n}",
            "object": "event",
            "type": "account.updated",
            "created": int(time.time()),
            "account": f"acct_{n}",
            "data": {"object": {"object": "account", "id": f"acct_{n}"}},
        }
        for n in range(8)
    ]
    with Statements(payouts.economy.ledger) as seen:
        answers = run(accept_all(payouts, [signed_event(e, CONNECT_SECRET) for e in events]))
    assert [a.outcome for a in answers] == ["queued"] * 8
    assert (seen.inserts, seen.commits) == (1, 1)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_copy_does_not_wait_for_the_worker_applying_its_event(services) -> None:
    """While another transaction (the worker applying the event) has updated the
    event's row and not committed, a batch holding a copy of it is answered from the
    committed status at once: an insert of that id would wait for the other
    transaction (PostgreSQL's unique check), and the whole batch with it."""
    payments, _ = services
    applying, other = checkout_event(1), checkout_event(2)
    run(payments.accept_webhook(*signed_event(applying, SECRET)))
    ledger = payments.economy.ledger
    t = ledger.tables.webhook_events
    with sync_engine(ledger.engine).connect() as worker:
        worker.execute(
            t.update().where(t.c.event_id == applying["id"]).values(lease_owner="worker")
        )  # not committed: the worker is still applying it

        async def batch() -> list[Any]:
            return await asyncio.wait_for(
                accept_all(
                    payments,
                    [signed_event(applying, SECRET), signed_event(other, SECRET)],
                ),
                timeout=5,
            )

        started = time.monotonic()
        answers = run(batch())
        assert time.monotonic() - started < 2
        worker.rollback()
    assert [a.outcome for a in answers] == ["queued", "queued"]
    assert inbox(payments) == {applying["id"]: "queued", other["id"]: "queued"}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_copy_inserted_meanwhile_is_answered_with_its_committed_status(services) -> None:
    """Another process stores (and applies) the event between this batch's read and its
    insert: the insert waits for that transaction, and the answer is the status it
    committed (duplicate), as a call of its own would give."""
    payments, _ = services
    event = checkout_event(7)
    ledger = payments.economy.ledger
    t = ledger.tables.webhook_events
    with sync_engine(ledger.engine).connect() as other:
        other.execute(
            t.insert().values(
                event_id=event["id"], endpoint="platform", type=event["type"],
                stripe_created=event["created"], status="processed", outcome="credited",
                received_at=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )  # not committed yet
        answer: list[Any] = []
        acking = threading.Thread(
            target=lambda: answer.append(
                run(payments.accept_webhook(*signed_event(event, SECRET)))
            )
        )
        acking.start()
        time.sleep(0.5)
        assert not answer  # waiting for the other transaction
        other.commit()
        acking.join(timeout=10)
    assert (answer[0].outcome, answer[0].duplicate) == ("duplicate", True)
