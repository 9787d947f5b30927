"""The demo behind ``spaktok-ledger demo`` (and ``python3 dev.py demo``).

It tells the gift economy's story on a fresh embedded SQLite file, through the
library's public API only, and prints what an operator would look at.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TextIO

from spaktok_ledger._catalogue import Gift, GiftCatalogue
from spaktok_ledger._errors import InsufficientFunds
from spaktok_ledger._pricing import CoinPack, PackCatalogue
from spaktok_ledger._service import GiftEconomy
from spaktok_ledger._store import Ledger
from spaktok_ledger.cli import money, print_trial_balance, table

__all__ = ["run_demo"]

PACKS = PackCatalogue(
    (
        CoinPack("starter", usd_price_minor=499, coins=500, name="Starter"),
        CoinPack("fan", usd_price_minor=1999, coins=2000, bonus_coins=200, name="Fan"),
    )
)
GIFTS = GiftCatalogue(
    (
        Gift("rose", 10, "Rose"),
        Gift("heart", 99, "Heart"),
        Gift("crown", 499, "Crown"),
    )
)
VIEWERS = ("alice", "amir", "yuki")
STREAMERS = ("bob", "lena")


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            candidate.unlink()


def run_demo(file: str, out: TextIO) -> int:
    """Run the demo on ``file`` (deleted and recreated: the demo owns it)."""
    path = Path(file)
    _fresh(path)
    out.write(f"spaktok-ledger demo on {path} (embedded SQLite, created fresh)\n\n")
    with Ledger(f"sqlite:///{path}") as ledger:
        economy = GiftEconomy(ledger, GIFTS)
        economy.setup()
        for viewer in VIEWERS:
            economy.open_user(viewer)
        economy.register_streamer("bob")
        economy.register_streamer("lena", streamer_bps=5000)
        out.write(
            "1. schema migrated; platform accounts opened; viewers alice, amir, yuki;\n"
            "   streamers bob (default 40/60 split) and lena (partner: 50/50)\n"
        )

        out.write("\n2. viewers buy coin packs (credited directly here)\n")
        purchases = [("alice", "fan"), ("amir", "starter"), ("yuki", "starter"), ("yuki", "fan")]
        for n, (viewer, pack_id) in enumerate(purchases):
            pack = PACKS.get(pack_id)
            credit = economy.credit_purchase(
                viewer,
                coins=pack.total_coins,
                price_usd_minor=pack.usd_price_minor,
                idempotency_key=f"demo:purchase:{n}",
                description=f"{pack.name} pack",
                metadata={"pack_id": pack.id},
            )
            out.write(
                f"   {viewer:<5} {pack.name:<7} {money(pack.usd_price_minor):>7} -> "
                f"{credit.coins} coins (wallet {credit.wallet.coins})\n"
            )

        out.write("\n3. a burst of gifts during two streams\n")
        rng = random.Random(7)  # noqa: S311 - a reproducible story, not secrets
        sent = refused = 0
        for n in range(40):
            viewer, streamer = rng.choice(VIEWERS), rng.choice(STREAMERS)
            gift = rng.choices(GIFTS.gifts, weights=(6, 3, 1))[0]
            try:
                economy.send_gift(
                    viewer, streamer, gift.id, rng.randint(1, 2), idempotency_key=f"demo:{n}"
                )
                sent += 1
            except InsufficientFunds:
                refused += 1
        out.write(f"   {sent} gifts sent, {refused} refused for insufficient coins\n")
        richest = max(VIEWERS, key=lambda v: economy.wallet(v).coins)
        first = economy.send_gift(richest, "bob", "heart", 1, idempotency_key="demo:retry")
        again = economy.send_gift(richest, "bob", "heart", 1, idempotency_key="demo:retry")
        out.write(
            f"   a retried request returns the original receipt #{again.entry_id}: "
            f"replayed={again.replayed}, same={again == first}\n"
        )
        split = first.gift
        out.write(
            f"   e.g. 1 Heart = {money(split.value_usd_minor)}: "
            f"{money(split.streamer_share_minor)} to bob, "
            f"{money(split.platform_share_minor)} to the platform\n"
        )

        out.write("\nwallets\n")
        table(
            out,
            ["viewer", "coins", "face value"],
            [
                [v, w.coins, money(w.usd_minor)]
                for v, w in ((v, economy.wallet(v)) for v in VIEWERS)
            ],
            right=[1, 2],
        )
        out.write("\nstreamer earnings\n")
        table(
            out,
            ["streamer", "split", "gifts", "available", "in payout"],
            [
                [
                    s,
                    "50/50" if s == "lena" else "40/60",
                    len(economy.history(streamer_id=s, types=["gift"], limit=500).items),
                    money(e.available_minor),
                    money(e.in_payout_minor),
                ]
                for s, e in ((s, economy.earnings(s)) for s in STREAMERS)
            ],
            right=[2, 3, 4],
        )
        revenue = ledger.balance("platform:gift_revenue").posted_minor
        out.write(f"\nplatform gift revenue: {money(revenue)}\n")

        out.write("\ntrial balance\n")
        print_trial_balance(out, ledger.trial_balance())
        report = ledger.verify()
        out.write(f"\nverify: {'ok' if report.ok else report.problems}\n")
        return 0 if report.ok else 1
