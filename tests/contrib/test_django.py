"""spaktok_ledger.contrib.django: the ledger joins Django's own transaction (PostgreSQL).

Django is configured once per test process (``tests/conftest.py``) against the
run's throwaway PostgreSQL database; the host's rows go through Django's own cursor
into a plain table, so the tests need no Django models.
"""

from __future__ import annotations

import io
import json

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.postgres

django = pytest.importorskip("django")
from django.conf import settings as django_settings  # noqa: E402


@pytest.fixture(scope="module")
def dj(pg_database_url: str):
    """Django configured on the test database; the ledger migrated with its own prefix."""
    # Django is configured once per process by tests/conftest.py, on this
    # run's PostgreSQL database (pg_database_url creates it).
    assert django_settings.configured
    assert django_settings.DATABASES["default"]["NAME"] == sa.make_url(pg_database_url).database
    from django.db import connection

    from spaktok_ledger import Gift, GiftCatalogue
    from spaktok_ledger.contrib import django as spaktok

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS host_orders (id serial PRIMARY KEY, note text NOT NULL)"
        )
    economy = spaktok.get_economy().__class__(
        spaktok.get_ledger(), GiftCatalogue([Gift("rose", 10), Gift("rocket", 5000)])
    )
    economy.setup()
    economy.register_streamer("bob")
    economy.credit_purchase("al", coins=1000, price_usd_minor=1000, idempotency_key="fund:al")
    yield economy
    spaktok.reset()
    connection.close()


def host_notes() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT note FROM host_orders ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def add_host_row(note: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO host_orders (note) VALUES (%s)", [note])


def test_first_connect_keeps_the_hosts_earlier_row(dj) -> None:
    """A fresh bridge engine's first connect inside atomic() does not roll back Django's work."""
    from spaktok_ledger.contrib import django as spaktok
    from spaktok_ledger.contrib.django import _bridge

    _bridge._engines.clear()  # the next joined() makes the engine's first connection
    with spaktok.atomic() as ledger:
        add_host_row("before-first-connect")
        dj.using(ledger).send_gift("al", "bob", "rose", 1, idempotency_key="first")
    assert "before-first-connect" in host_notes()
    assert dj.wallet("al").coins == 990


def test_host_commit_keeps_both(dj) -> None:
    """The host's row and the gift commit together."""
    from spaktok_ledger.contrib import django as spaktok

    before = dj.wallet("al").coins
    with spaktok.atomic() as ledger:
        receipt = dj.using(ledger).send_gift("al", "bob", "rose", 2, idempotency_key="commit")
        add_host_row(f"order:{receipt.entry_id}")
        assert dj.using(ledger).wallet("al").coins == before - 20  # sees its own write
    assert f"order:{receipt.entry_id}" in host_notes()
    assert dj.wallet("al").coins == before - 20
    assert dj.ledger.entry(receipt.entry_id).idempotency_key.endswith("commit")


def test_a_replay_inside_the_block_reads_the_stored_receipt(dj) -> None:
    """A replayed gift rebuilds its receipt from stored JSON on Django's connection (whose
    own loaders would hand JSON back as text) and matches the first answer."""
    from spaktok_ledger.contrib import django as spaktok

    with spaktok.atomic() as ledger:
        first = dj.using(ledger).send_gift("al", "bob", "rose", 1, idempotency_key="replayed")
    with spaktok.atomic() as ledger:
        again = dj.using(ledger).send_gift("al", "bob", "rose", 1, idempotency_key="replayed")
        assert dj.using(ledger).history(user_id="al", limit=1).items[0].entry_id == first.entry_id
    assert again.replayed and again.to_dict() == first.to_dict()
    assert again.sent_at.tzinfo is not None


def test_host_rollback_undoes_the_ledger(dj) -> None:
    """An exception after the gift rolls back the host's row and the ledger's entry."""
    from django.db import IntegrityError

    from spaktok_ledger.contrib import django as spaktok

    before, count = dj.wallet("al").coins, dj.ledger.count_entries()

    def gift_then_failing_host_insert() -> None:
        with spaktok.atomic() as ledger:
            dj.using(ledger).send_gift("al", "bob", "rose", 1, idempotency_key="rolled-back")
            add_host_row("rolled-back")
            add_host_row(None)  # type: ignore[arg-type]  # NOT NULL: the host's insert fails

    with pytest.raises(IntegrityError):
        gift_then_failing_host_insert()
    assert "rolled-back" not in host_notes()
    assert dj.wallet("al").coins == before
    assert dj.ledger.count_entries() == count
    # The key was never used: the corrected retry goes through.
    with spaktok.atomic() as ledger:
        dj.using(ledger).send_gift("al", "bob", "rose", 1, idempotency_key="rolled-back")
    assert dj.wallet("al").coins == before - 10


def test_a_refusal_rolls_back_its_savepoint_only(dj) -> None:
    """InsufficientFunds inside the block leaves Django's transaction usable; the host commits."""
    from spaktok_ledger import InsufficientFunds
    from spaktok_ledger.contrib import django as spaktok

    before = dj.wallet("al").coins
    with spaktok.atomic() as ledger:
        add_host_row("refused-order")
        with pytest.raises(InsufficientFunds):
            dj.using(ledger).send_gift("al", "bob", "rocket", 1, idempotency_key="too-much")
        add_host_row("after-refusal")
    assert {"refused-order", "after-refusal"} <= set(host_notes())
    assert dj.wallet("al").coins == before


def test_joined_needs_an_open_transaction(dj) -> None:
    """Outside transaction.atomic() there is nothing to join: a clear error, nothing written."""
    from django.db.transaction import TransactionManagementError

    from spaktok_ledger.contrib import django as spaktok

    with pytest.raises(TransactionManagementError, match=r"transaction\.atomic"):
        with spaktok.joined():
            pass
    # Outside a transaction, the process ledger works on its own connection.
    assert spaktok.get_ledger().count_entries() >= 1


def test_sqlalchemy_cannot_commit_djangos_transaction(dj) -> None:
    """The borrowed connection refuses commit() and attribute changes: Django owns them."""
    from spaktok_ledger.contrib import django as spaktok

    with spaktok.atomic() as ledger:
        conn = ledger.connection()
        with pytest.raises(RuntimeError, match="never commits"):
            conn.connection.dbapi_connection.commit()
        with pytest.raises(RuntimeError, match="autocommit"):
            conn.connection.dbapi_connection.autocommit = True


@settings(max_examples=15)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=1, max_value=400), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_ledger_follows_the_hosts_decision(dj, steps) -> None:
    """Property: after any mix of committed and rolled-back blocks, the wallet moved by
    exactly the committed gifts, each committed gift has its host row, and verify() holds."""
    from spaktok_ledger import InsufficientFunds
    from spaktok_ledger.contrib import django as spaktok

    dj.credit_purchase("pp", coins=2000, price_usd_minor=2000, idempotency_key="fund:pp")
    start = dj.wallet("pp").coins
    expected = start
    for quantity, commit in steps:
        key = f"pp:{id(steps)}:{quantity}:{expected}:{commit}"
        try:
            with spaktok.atomic() as ledger:
                receipt = dj.using(ledger).send_gift("pp", "bob", "rose", quantity, idempotency_key=key)
                add_host_row(f"pp:{receipt.entry_id}")
                if not commit:
                    raise _Abort
            if not receipt.replayed:
                expected -= 10 * quantity
            assert f"pp:{receipt.entry_id}" in host_notes()
        except _Abort:
            pass
        except InsufficientFunds:
            assert 10 * quantity > expected
    assert dj.wallet("pp").coins == expected
    assert dj.ledger.verify().ok


class _Abort(Exception):
    pass


def test_settings_are_checked(dj) -> None:
    """Unknown keys or a missing database alias are ImproperlyConfigured, named."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from spaktok_ledger.contrib.django import ledger_settings

    with override_settings(SPAKTOK_LEDGER={"PREFIX": "dj_", "DATABSE": "x"}):
        with pytest.raises(ImproperlyConfigured, match="DATABSE"):
            ledger_settings()
    with override_settings(SPAKTOK_LEDGER={"DATABASE": "nowhere"}):
        with pytest.raises(ImproperlyConfigured, match="nowhere"):
            ledger_settings()
    with override_settings(SPAKTOK_LEDGER={"HOLD_DAYS": -1}):
        with pytest.raises(ImproperlyConfigured, match="HOLD_DAYS"):
            ledger_settings()


def test_database_url_follows_djangos_settings(dj, pg_database_url) -> None:
    """The ledger's own engine points at the database Django uses."""
    from spaktok_ledger.contrib.django import database_url

    url = database_url()
    expected = sa.make_url(pg_database_url)
    assert (url.drivername, url.database, url.host) == (
        "postgresql+psycopg", expected.database, expected.host
    )


def test_management_commands(dj) -> None:
    """spaktok_migrate reports the revision; spaktok_ledger runs the CLI on Django's database."""
    from django.core.management import CommandError, call_command

    from spaktok_ledger import head_revision

    out = io.StringIO()
    call_command("spaktok_migrate", stdout=out)
    assert f"revision {head_revision()}" in out.getvalue() and "'dj_'" in out.getvalue()
    out = io.StringIO()
    call_command("spaktok_ledger", "balance", "user:al:wallet", "--json", stdout=out)
    assert json.loads(out.getvalue())["account"] == "user:al:wallet"
    err = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("spaktok_ledger", "balance", "user:nobody:wallet", stdout=io.StringIO(),
                     stderr=err)
    assert failed.value.returncode == 3
    assert err.getvalue().startswith("error: ")
