"""Encryption at rest: a dump of the database shows no personal data; rotation; the vault."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import date

import pytest
import sqlalchemy as sa

from spaktok_ledger import InvalidInput, Ledger, StripeGateway
from spaktok_ledger._service._payouts import Payouts
from spaktok_ledger.compliance import (
    ERASED,
    Identity,
    Keyring,
    Sensitive,
    StaticListScreening,
    key_usage,
    rotate_keys,
)
from spaktok_ledger.testing import signed_event, stripe_client
from tests.compliance.conftest import (
    CONNECT_SECRET,
    KEY_1,
    KEY_2,
    PLATFORM_SECRET,
    fund,
    shop,
)

# What the library is given about people, in forms that cannot occur by chance.
EMAIL = "carol.customerson@example.com"
NAME = "Carol Quintessa Customerson"
STREAMER_EMAIL = "bob.streamer.private@example.com"
IP = "203.0.113.77"
SCREENED = "Zelda Quixotic-Hartmann"
KYC_DUE = "individual.verification.additional_document"
SENSITIVE = (EMAIL, NAME, STREAMER_EMAIL, IP, SCREENED, KYC_DUE)


def parked_charge_event(user: str) -> dict:
    """A charge event for a purchase the ledger does not know yet: it is parked, payload
    and all (Stripe's objects carry the customer's email, name and address)."""
    return {
        "id": "evt_parked_1",
        "object": "event",
        "type": "charge.refunded",
        "created": 1_700_000_000,
        "livemode": False,
        "data": {
            "object": {
                "id": "ch_unknown_1",
                "object": "charge",
                "payment_intent": "pi_unknown_1",
                "metadata": {"user_id": user},
                "billing_details": {"email": EMAIL, "name": NAME, "phone": None},
                "receipt_email": EMAIL,
            }
        },
    }


def populate(ledger: Ledger, clock, fake, keyring: Keyring | None):
    """A ledger that was given every kind of personal data the library stores."""
    screening = StaticListScreening([])
    world = shop(ledger, clock, fake, keyring=keyring, screening=screening)
    economy = world.economy
    sensitive = keyring is not None
    economy.register_streamer(
        "bob",
        metadata={"email": Sensitive(STREAMER_EMAIL) if sensitive else "x", "tier": "gold"},
    )
    economy.credit_purchase(
        "alice",
        coins=500,
        price_usd_minor=499,
        idempotency_key="cs_1",
        metadata={"ip": Sensitive(IP)} if sensitive else {},
    )
    world.buy("alice", "k1", customer_email=EMAIL)
    outcome = world.payments.handle_webhook(*signed_event(parked_charge_event("alice"), PLATFORM_SECRET))
    assert outcome.outcome == "parked"
    account = fake.create_account()["id"]
    fake.update_account(account, currently_due=[KYC_DUE], details_submitted=True)
    payouts = Payouts(
        economy,
        StripeGateway(stripe_client(fake, timeout=10)),
        connect_webhook_secret=CONNECT_SECRET,
    )
    payouts.link_account("bob", account)
    if sensitive:
        world.compliance.screen("bob", Identity(SCREENED, date(1990, 5, 17)), actor="kyc")
    economy.send_gift("alice", "bob", "heart", 2, idempotency_key="g1")
    return world, payouts


def dump(ledger: Ledger, backend: str, db_url: str) -> str:
    """Everything in the ledger's tables, as the database's own dump tool writes it."""
    if backend == "sqlite":
        path = sa.make_url(db_url).database
        with sqlite3.connect(path) as conn:
            return "\n".join(conn.iterdump())
    if shutil.which("pg_dump") is None:
        pytest.fail("pg_dump is needed for the PostgreSQL dump test")
    url = sa.make_url(db_url)
    result = subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "--host", url.host or "127.0.0.1",
            "--port", str(url.port or 5432),
            "--username", url.username or "postgres",
            "--table", f"{ledger.prefix}*",
            url.database or "",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PGPASSWORD": url.password or "", "PATH": "/usr/bin:/bin"},
    )
    return result.stdout


def test_a_dump_shows_no_personal_data(ledger, clock, fake, keyring, backend, db_url) -> None:
    """pg_dump / SQLite's iterdump of a ledger holding every kind of personal data: none
    of it in plain text; amounts and account codes still readable."""
    world, payouts = populate(ledger, clock, fake, keyring)
    text = dump(ledger, backend, db_url)
    leaked = [value for value in SENSITIVE if value in text]
    assert leaked == []
    assert "user:alice:wallet" in text and "enc1:d:" in text and "enc1:k:k1:" in text
    # ... and the application still reads it all back
    bob = world.economy.streamer("bob")
    assert world.compliance.reveal(bob.metadata) == {"email": STREAMER_EMAIL, "tier": "gold"}
    assert payouts.account_status("bob").currently_due == (KYC_DUE,)
    (parked,) = world.payments.inbox.parked("platform")
    assert parked["data"]["object"]["billing_details"]["email"] == EMAIL  # as Stripe sent it
    (screening,) = world.compliance.screenings("bob")
    assert world.compliance.screened_identity(screening.id).full_name == SCREENED
    purchase = ledger.entry_by_key("cs_1")
    assert world.compliance.reveal(purchase.metadata)["ip"] == IP
    assert ledger.verify().ok


def test_without_a_keyring_the_dump_would_show_it(ledger, clock, fake, backend, db_url) -> None:
    """The control: the same flow without a keyring leaves the payload and KYC state readable
    (so the test above can fail), and sensitive metadata is refused, not stored in clear."""
    world, _ = populate(ledger, clock, fake, None)
    text = dump(ledger, backend, db_url)
    assert EMAIL in text and KYC_DUE in text
    with pytest.raises(InvalidInput, match="keyring"):
        world.economy.register_streamer("eve", metadata={"email": Sensitive(STREAMER_EMAIL)})
    with pytest.raises(InvalidInput):
        world.economy.credit_purchase(
            "eve", coins=1, price_usd_minor=1, idempotency_key="x", metadata={"ip": Sensitive(IP)}
        )
    assert STREAMER_EMAIL not in dump(ledger, backend, db_url)


def test_rotation_moves_everything_to_the_new_key(ledger, clock, fake, backend, db_url) -> None:
    """rotate-keys re-wraps data keys and re-seals payloads in batches; the old key can go."""
    world, payouts = populate(ledger, clock, fake, Keyring({"k1": KEY_1}))
    assert set(key_usage(world.compliance)) == {"k1"}
    rotating = Keyring({"k2": KEY_2, "k1": KEY_1})
    world.compliance = type(world.compliance)(ledger, keyring=rotating, clock=clock)
    progress: list[tuple[int, int]] = []
    report = rotate_keys(
        world.compliance, actor="sre", batch_size=1, on_progress=lambda d, t: progress.append((d, t))
    )
    assert report.data_keys_rewrapped == 2  # alice's and bob's
    assert report.payloads_sealed == 1 and report.accounts_sealed == 0
    assert report.usage == {"k2": 3}
    assert progress[0] == (0, 3) and progress[-1] == (3, 3) and len(progress) == 4
    assert "enc1:k:k1:" not in dump(ledger, backend, db_url)
    assert rotate_keys(world.compliance, actor="sre").data_keys_rewrapped == 0  # nothing left
    # only the new key now
    from spaktok_ledger.compliance import Compliance

    fresh = Compliance(ledger, keyring=Keyring({"k2": KEY_2}), clock=clock)
    bob = world.economy.streamer("bob")
    assert fresh.reveal(bob.metadata)["email"] == STREAMER_EMAIL
    assert fresh.reveal(ledger.entry_by_key("cs_1").metadata)["ip"] == IP
    assert world.compliance.audit_log(action="rotate_keys")[0].result["usage"] == {"k2": 3}


def test_rotation_seals_what_was_stored_before_a_keyring(ledger, clock, fake) -> None:
    """A ledger that ran without a keyring: the first rotation seals its payloads and
    connected-account details."""
    _, payouts = populate(ledger, clock, fake, None)
    from spaktok_ledger.compliance import Compliance

    compliance = Compliance(ledger, keyring=Keyring({"k1": KEY_1}), clock=clock)
    report = rotate_keys(compliance, actor="sre")
    assert (report.payloads_sealed, report.accounts_sealed) == (1, 1)
    assert report.usage == {"k1": 2}  # bob's new data key and the payload
    accounts = ledger.tables.connected_accounts
    row = ledger.read(lambda conn: conn.execute(sa.select(accounts)).one())
    assert row.currently_due == [] and row.sealed.startswith("enc1:d:")


def test_erased_values_read_as_erased(ledger, clock, keyring) -> None:
    """Once a party's data key is destroyed its sealed values read as ERASED."""
    from spaktok_ledger.compliance import DataErased, erase_user
    from tests.compliance.conftest import build

    compliance, economy = build(ledger, clock, keyring=keyring)
    fund(economy, "alice", 10, "k", metadata={"note": Sensitive({"name": NAME})})
    meta = ledger.entry_by_key("k").metadata
    assert compliance.reveal(meta)["note"] == {"name": NAME}
    erase_user(compliance, "alice", actor="dpo", reason="request")
    assert compliance.reveal(meta)["note"] == ERASED
    with pytest.raises(DataErased):
        compliance.open(meta["note"])
    # a returning user gets a new data key; the old data stays unreadable
    fund(economy, "alice", 10, "k2", metadata={"note": Sensitive("back")})
    assert compliance.reveal(ledger.entry_by_key("k2").metadata)["note"] == "back"
    assert compliance.reveal(meta)["note"] == ERASED
