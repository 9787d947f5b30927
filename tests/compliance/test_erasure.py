"""Erasure without breaking the books: personal data gone, every entry and balance kept."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from spaktok_ledger import Ledger
from spaktok_ledger.compliance import (
    ERASED,
    DataErased,
    Keyring,
    Sensitive,
    erase_user,
)
from spaktok_ledger.testing import FakeClock
from tests.compliance.conftest import KEY_1, build, fund
from tests.compliance.test_encryption import EMAIL, IP, SCREENED, STREAMER_EMAIL, dump, populate

_prefixes = itertools.count()


def books(ledger: Ledger) -> tuple:
    return ledger.count_entries(), ledger.trial_balance().rows


def test_erase_user_destroys_personal_data_and_keeps_the_books(
    ledger, clock, fake, keyring, backend, db_url
) -> None:
    """After erasing the viewer and the streamer: verify() is clean, the entries and
    balances are the same, and none of their personal data can be read or found."""
    world, payouts = populate(ledger, clock, fake, keyring)
    before = books(ledger)
    wallet = world.economy.wallet("alice")
    alice = erase_user(world.compliance, "alice", actor="dpo", reason="GDPR art. 17 request")
    bob = erase_user(world.compliance, "bob", actor="dpo", reason="account closed")
    assert ledger.verify().ok and books(ledger) == before
    assert world.economy.wallet("alice") == wallet
    assert (alice.data_keys_destroyed, alice.webhook_payloads_removed) == (1, 1)
    assert alice.entries_kept == 3  # two purchase credits and the gift, none rewritten
    assert (bob.data_keys_destroyed, bob.streamer_metadata_scrubbed) == (1, True)
    assert (bob.account_details_scrubbed, bob.screening_identities_removed) == (True, 1)
    assert world.payments.inbox.parked("platform") == []
    assert world.economy.streamer("bob").metadata == {}
    assert payouts.account_status("bob").currently_due == ()
    purchase = ledger.entry_by_key("cs_1").metadata
    assert world.compliance.reveal(purchase)["ip"] == ERASED
    with pytest.raises(DataErased) as info:
        world.compliance.open(purchase["ip"])
    assert info.value.details["party_id"] == "alice"
    (record,) = world.compliance.audit_log(action="erase_user", subject="party:alice")
    assert record.actor == "dpo" and record.result["entries_kept"] == 3
    text = dump(ledger, backend, db_url)
    # the keys are gone: not even a copy of the ciphertexts' key material is left
    keys = ledger.tables.compliance.data_keys
    wrapped = ledger.read(lambda conn: conn.execute(sa.select(keys.c.wrapped_key)).scalars().all())
    assert wrapped == [None, None]
    for value in (EMAIL, IP, SCREENED, STREAMER_EMAIL):
        assert value not in text


def test_aml_records_are_kept_unless_asked(ledger, clock, keyring) -> None:
    """Declared links and screening results are AML records: kept by default."""
    compliance, economy = build(ledger, clock, keyring=keyring)
    compliance.link_accounts("alice", "mallory", basis="card", actor="ops")
    erase_user(compliance, "alice", actor="dpo", reason="request")
    assert compliance.linked_accounts("mallory") == {"alice"}
    erase_user(compliance, "alice", actor="dpo", reason="retention over", include_aml_records=True)
    assert compliance.linked_accounts("mallory") == frozenset()


@given(
    activity=st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(min_value=1, max_value=500)),
        min_size=1,
        max_size=8,
    ),
    erased=st.sets(st.sampled_from(["u1", "u2", "u3", "s1"]), min_size=1),
)
@settings(max_examples=10, deadline=None)
def test_erasure_never_changes_the_books(engine, activity, erased) -> None:
    """Whatever was bought and gifted, erasing any parties leaves every entry, every
    balance and verify() as they were, and only the erased parties' data unreadable."""
    clock = FakeClock()
    ledger = Ledger(engine, prefix=f"er{next(_prefixes)}_", clock=clock)
    ledger.migrate()
    compliance, economy = build(ledger, clock, keyring=Keyring({"k": KEY_1}))
    economy.register_streamer("s1", metadata={"email": Sensitive("s1@example.com")})
    for i, (user, coins) in enumerate(activity):
        fund(economy, user, coins, f"c{i}", metadata={"ip": Sensitive(f"10.0.0.{i}")})
        if coins >= 10:
            economy.send_gift(user, "s1", "rose", 1, idempotency_key=f"g{i}")
    before = books(ledger)
    for party in sorted(erased):
        erase_user(compliance, party, actor="dpo", reason="request")
    assert books(ledger) == before and ledger.verify().ok
    for i, (user, _) in enumerate(activity):
        shown = compliance.reveal(ledger.entry_by_key(f"c{i}").metadata)["ip"]
        assert shown == (ERASED if user in erased else f"10.0.0.{i}")
    streamer = compliance.reveal(economy.streamer("s1").metadata)
    assert streamer == ({} if "s1" in erased else {"email": "s1@example.com"})
