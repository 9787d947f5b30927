"""Compliance as a plain script: a laundering attempt held for review, a reviewer's
decision, sealed personal data, erasure and the audit log.

    python examples/compliance_review.py        # from the repository root

Runs offline: a local fake Stripe and a fake clock (``spaktok_ledger.testing``).
In production the keyring comes from ``SPAKTOK_KEYRING`` (``Keyring.from_env()``).
"""

from __future__ import annotations

import io
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy, Ledger, Payouts, StripeGateway
from spaktok_ledger.compliance import (
    Cases,
    Compliance,
    Keyring,
    Sensitive,
    erase_user,
)
from spaktok_ledger.testing import FakeClock, FakeStripe, stripe_client


def main(database: str) -> None:
    clock = FakeClock(datetime(2026, 12, 1, tzinfo=UTC))
    ledger = Ledger(database, clock=clock)
    compliance = Compliance(ledger, keyring=Keyring.parse(Keyring.generate_entry("demo")))
    # hold_days=0 shows the rules on their own: the default 7-day hold period is the
    # first defence (fresh gifts cannot be paid out for a week; docs/gifts.md).
    economy = GiftEconomy(
        ledger,
        GiftCatalogue([Gift("rose", 10), Gift("rocket", 5000)]),
        compliance=compliance,
        hold_days=0,
    )
    economy.setup()
    with FakeStripe(clock=clock) as stripe:
        stripe.top_up(1_000_000)  # the platform's Stripe balance, which transfers draw on
        payouts = Payouts(
            economy,
            StripeGateway(stripe_client(stripe)),
            connect_webhook_secret="whsec_demo",
            minimum_usd_minor=1000,
        )
        cases = Cases(economy, payouts=payouts)

        # A streamer with a Stripe Connect account, and personal data sealed at rest.
        economy.register_streamer("mule", metadata={"email": Sensitive("mule@example.com")})
        payouts.link_account("mule", stripe.create_account(onboarded=True)["id"])
        clock.advance(days=30)

        # Coins bought with a stolen card, gifted at once, cashed out two hours later.
        economy.credit_purchase("thief", coins=10_000, price_usd_minor=9_900, idempotency_key="c1")
        economy.send_gift("thief", "mule", "rocket", 2, idempotency_key="g1")
        clock.advance(hours=2)
        payout = payouts.request_payout("mule", "all", idempotency_key="cashout")
        print(f"payout {payout.payout_id}: {payout.status} (transfer: {payout.transfer_id})")

        for case in cases.find(subject_id="mule"):
            print(f"case {case.id} [{case.rule}]: {case.reason}")
            cases.decide(case.id, "refuse", actor="aml-analyst", reason="cash-out of fresh coins")
        print(
            f"after review: {payouts.payout(payout.payout_id).status}; "
            f"back in earnings: {economy.earnings('mule').available_minor} US cents"
        )
        report = io.StringIO()
        print(f"suspicious-activity export: {cases.export(report, decision='refuse')} case(s)")

    # The streamer's email is stored sealed; erasure destroys the key, the books stay.
    sealed = economy.streamer("mule").metadata["email"]
    print(f"stored email: {sealed[:24]}... -> {compliance.reveal({'e': sealed})['e']}")
    before = ledger.trial_balance()
    erase_user(compliance, "mule", actor="dpo", reason="GDPR request")
    if ledger.trial_balance() != before or not ledger.verify().ok:
        raise SystemExit("erasure changed the books")
    print(f"after erasure: {compliance.reveal({'e': sealed})['e']}; books unchanged, verify ok")

    for record in compliance.audit_log():
        print(f"audit #{record.id}: {record.actor} {record.action} {record.subject}")
    ledger.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(f"sqlite:///{Path(tmp) / 'compliance-review.db'}")
