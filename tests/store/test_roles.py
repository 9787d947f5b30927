"""docs/operations.md's least-privilege grants, run for real on PostgreSQL.

The owner migrates; the application role gets exactly the GRANTs the docs
give (read from the Markdown, so the docs cannot drift) and must be able to
run the whole economy (purchase by webhook, gifts, a payout) while every
attempt to rewrite history is refused by the privilege system.
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from spaktok_ledger import (
    CoinPack,
    Gift,
    GiftCatalogue,
    GiftEconomy,
    Ledger,
    PackCatalogue,
    Payments,
    Payouts,
    Pricing,
    StripeGateway,
    create_engine,
)
from spaktok_ledger.compliance import (
    Cases,
    Compliance,
    Keyring,
    MonitoringConfig,
    erase_user,
    rotate_keys,
)
from spaktok_ledger.fx import StaticRateProvider
from spaktok_ledger.testing import FakeStripe, signed_event, stripe_client

pytestmark = pytest.mark.postgres
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _grant_block() -> str:
    """The SQL block of operations.md that grants the application role its rights."""
    blocks = re.findall(r"```sql\n(.*?)```", OPERATIONS.read_text(), re.S)
    (block,) = [b for b in blocks if "GRANT SELECT, INSERT ON spaktok_accounts" in b]
    return block


@pytest.fixture
def app_url(pg_database_url: str, pg_engine: sa.Engine, prefix: str):
    """A login role with only the documented grants, on tables under ``prefix``."""
    role = f"spaktok_app_{secrets.token_hex(4)}"
    Ledger(pg_engine, prefix=prefix).migrate()  # as the owner (the test's superuser)
    sql = _grant_block().replace("spaktok_app", "APP_ROLE").replace("spaktok_", prefix)
    sql = sql.replace("APP_ROLE", role)
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        code = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
        for statement in code.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    url = sa.make_url(pg_database_url).set(username=role, password=None)
    yield url.render_as_string(hide_password=False), role
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        conn.exec_driver_sql(f"DROP OWNED BY {role}")
        conn.exec_driver_sql(f"DROP ROLE {role}")


def test_app_role_runs_the_economy_but_cannot_rewrite_history(app_url, prefix: str) -> None:
    """With the documented grants the app buys, gifts and pays out; UPDATE/DELETE are refused."""
    url, _role = app_url
    engine = create_engine(url)
    ledger = Ledger(engine, prefix=prefix)
    # With monitoring, encryption at rest and the audit log: their tables need grants too.
    config = MonitoringConfig(  # only the review threshold holds here (alice is a new account)
        payout_review_usd_minor=5000,
        rapid_min_usd_minor=10**12,
        concentration_min_usd_minor=10**12,
    )
    compliance = Compliance(ledger, keyring=Keyring({"k1": bytes(32)}), config=config)
    economy = GiftEconomy(
        ledger, GiftCatalogue([Gift("rocket", 5000)]), hold_days=0, compliance=compliance
    )
    economy.setup()  # works as the app: the schema is current, nothing to migrate
    economy.register_streamer("bob")
    with FakeStripe() as fake:
        gateway = StripeGateway(stripe_client(fake))
        pricing = Pricing(
            ledger, PackCatalogue([CoinPack("big", 20_000, 20_000)]),
            StaticRateProvider({"EUR": Decimal("0.93")}),
        )
        payments = Payments(economy, pricing, gateway, webhook_secret="whsec_p")
        quote = pricing.quote("big", currency="EUR", user_id="alice")
        checkout = payments.create_checkout(
            "alice", quote.id, success_url="https://a/ok", cancel_url="https://a/no",
            idempotency_key="k",
        )
        event = fake.complete_checkout(checkout.checkout_session_id, exchange_rate=Decimal("1.07"))
        assert payments.handle_webhook(*signed_event(event, "whsec_p")).outcome == "credited"
        economy.send_gift("alice", "bob", "rocket", 3, idempotency_key="g")
        payouts = Payouts(
            economy, gateway, connect_webhook_secret="whsec_c", minimum_usd_minor=1000
        )
        payouts.link_account("bob", fake.create_account(onboarded=True)["id"])
        assert payouts.request_payout("bob", 1000, idempotency_key="p").status == "transferred"
        held = payouts.request_payout("bob", 5000, idempotency_key="p2")
        assert held.status == "review"
        cases = Cases(economy, payouts=payouts)
        (case,) = cases.find()
        cases.decide(case.id, "release", actor="rita", reason="ok")
        assert payouts.payout(held.payout_id).status == "transferred"
        compliance.link_accounts("alice", "carol", basis="device", actor="ops")
        compliance.unlink_accounts("alice", "carol", actor="ops")
        economy.block_streamer("bob", "review", actor="ops")
        erase_user(compliance, "alice", actor="dpo", reason="request", include_aml_records=True)
        rotate_keys(compliance, actor="sre")
    assert ledger.verify().ok
    t = ledger.tables
    for statement in (
        t.postings.update().values(amount=1),
        t.entries.delete(),
        t.balances.delete(),
        t.compliance.audit_log.update().values(actor="someone else"),
        t.compliance.audit_log.delete(),
        sa.text(f"TRUNCATE {t.postings.name}"),
        sa.text(f"DROP TABLE {t.quotes.name}"),
    ):
        with pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"):
            with engine.begin() as conn:
                conn.execute(statement)
    engine.dispose()
