"""The demo behind ``spaktok-ledger demo`` (and ``python3 dev.py demo``).

It tells the gift economy's story on a fresh embedded SQLite file, through the
library's public API only, and prints what an operator would look at.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from spaktok_ledger._domain import AccountKind, AccountSpec, EntryDraft, Posting
from spaktok_ledger._split import RevenueSplit
from spaktok_ledger._store import Ledger
from spaktok_ledger.cli import money, print_trial_balance, table

__all__ = ["run_demo"]


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            candidate.unlink()


def run_demo(file: str, out: TextIO) -> int:
    """Run the demo on ``file`` (deleted and recreated: the demo owns it)."""
    path = Path(file)
    _fresh(path)
    out.write(f"spaktok-ledger demo on {path} (SQLite, created fresh)\n\n")
    with Ledger(f"sqlite:///{path}") as ledger:
        revision = ledger.migrate()
        out.write(f"1. schema created (migration {revision})\n")
        ledger.open_accounts(
            [
                AccountSpec("platform:stripe_clearing", AccountKind.ASSET),
                AccountSpec("platform:gift_revenue", AccountKind.REVENUE, balance_shards=16),
                AccountSpec("user:alice:wallet", AccountKind.LIABILITY),
                AccountSpec("streamer:bob:earnings", AccountKind.LIABILITY, balance_shards=8),
                AccountSpec("streamer:bob:payouts_in_flight", AccountKind.LIABILITY),
            ]
        )
        out.write("2. accounts opened\n")
        ledger.post(
            EntryDraft(
                "purchase",
                (
                    Posting.debit("platform:stripe_clearing", 999),
                    Posting.credit("user:alice:wallet", 999),
                ),
                "demo:purchase:1",
                description="alice buys 999 coins for $9.99",
            )
        )
        out.write("3. alice's coin purchase credited: 999 coins ($9.99)\n")
        streamer, platform = RevenueSplit().split(500)
        gift = ledger.post(
            EntryDraft(
                "gift",
                (
                    Posting.debit("user:alice:wallet", 500),
                    Posting.credit("streamer:bob:earnings", streamer),
                    Posting.credit("platform:gift_revenue", platform),
                ),
                "demo:gift:1",
                description="alice sends bob a 500-coin gift",
                metadata={"split": {"streamer_bps": 4000, "platform_bps": 6000}},
            )
        )
        out.write(
            f"4. gift #{gift.id}: {money(500)} split {money(streamer)} to bob (40%), "
            f"{money(platform)} to the platform (60%)\n"
        )
        again = ledger.post(
            EntryDraft(
                "gift",
                (
                    Posting.debit("user:alice:wallet", 500),
                    Posting.credit("streamer:bob:earnings", streamer),
                    Posting.credit("platform:gift_revenue", platform),
                ),
                "demo:gift:1",
                description="alice sends bob a 500-coin gift",
                metadata={"split": {"streamer_bps": 4000, "platform_bps": 6000}},
            )
        )
        out.write(f"   the same request retried: replayed={again.replayed}, nothing written\n")
        hold = ledger.hold(
            EntryDraft(
                "payout",
                (
                    Posting.debit("streamer:bob:earnings", 150),
                    Posting.credit("streamer:bob:payouts_in_flight", 150),
                ),
                "demo:payout:1",
                description="bob requests a $1.50 payout",
            )
        )
        out.write(f"5. payout hold #{hold.id}: $1.50 of bob's earnings reserved\n\n")
        balances = ledger.balances(
            [
                "user:alice:wallet",
                "streamer:bob:earnings",
                "streamer:bob:payouts_in_flight",
                "platform:gift_revenue",
                "platform:stripe_clearing",
            ]
        )
        table(
            out,
            ["account", "posted", "pending out", "available"],
            [
                [
                    b.account,
                    money(b.posted_minor),
                    money(b.pending_out_minor),
                    money(b.available_minor),
                ]
                for b in balances.values()
            ],
            right=[1, 2, 3],
        )
        out.write("\ntrial balance\n")
        print_trial_balance(out, ledger.trial_balance())
        report = ledger.verify()
        out.write(f"\nverify: {'ok' if report.ok else report.problems}\n")
        return 0 if report.ok else 1
