"""The gift flow as a plain script, with nothing but the core installed.

    pip install spaktok-ledger          # no stripe, no httpx, no web framework
    python examples/gift_flow.py [path/to/file.db]

On a fresh SQLite file (default: a temporary one), it tells a short story:
coins bought (credited directly, as the payments service does once Stripe
confirms), gifts sent with the 40/60 split, a refusal that writes nothing, a
retried request answered from the first one, both statements with cursor
paging, and the trial balance, whose debits equal its credits.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from spaktok_ledger import (
    Gift,
    GiftCatalogue,
    GiftEconomy,
    InsufficientFunds,
    Ledger,
    format_price,
)

GIFTS = GiftCatalogue(
    (Gift("rose", 10, "Rose"), Gift("heart", 99, "Heart"), Gift("rocket", 5000, "Rocket"))
)


def usd(cents: int) -> str:
    return format_price(cents, "USD", "en_US")


def tell(ledger: Ledger) -> None:
    economy = GiftEconomy(ledger, GIFTS)
    economy.setup()  # creates the tables and the platform's accounts (idempotent)
    economy.register_streamer("bob")
    economy.register_streamer("lena", streamer_bps=5000)
    print("1. Streamers bob (default 40/60 split) and lena (a partner at 50/50) sign up.")

    # What Payments does when Stripe confirms a payment: 2000 coins + 200 bonus for $19.99.
    credit = economy.credit_purchase(
        "alice", coins=2200, price_usd_minor=1999, idempotency_key="order-1001"
    )
    print(f"2. Alice buys the Fan pack for {usd(1999)}: {credit.wallet.coins} coins.")

    for key, streamer, gift, quantity in [
        ("tap-1", "bob", "heart", 3),
        ("tap-2", "lena", "rose", 5),
        ("tap-3", "bob", "rose", 1),
    ]:
        receipt = economy.send_gift("alice", streamer, gift, quantity, idempotency_key=key)
        split = receipt.gift
        print(
            f"3. Alice sends {quantity} x {gift} to {streamer} ({split.coins} coins): "
            f"{streamer} earns {usd(split.streamer_share_minor)}, "
            f"the platform {usd(split.platform_share_minor)}."
        )

    again = economy.send_gift("alice", "bob", "heart", 3, idempotency_key="tap-1")
    print(f"4. The app retries tap-1 after a timeout: replayed={again.replayed}, nothing new.")

    try:
        economy.send_gift("alice", "bob", "rocket", 1, idempotency_key="tap-4")
    except InsufficientFunds as exc:
        print(f"5. A rocket costs 5000 coins: refused ({exc.code}); nothing was written.")

    wallet = economy.wallet("alice")
    print(f"6. Alice has {wallet.coins} coins left ({usd(wallet.usd_minor)} of face value).")

    print("7. Alice's statement, two items a page:")
    page = economy.history(user_id="alice", limit=2)
    number = 1
    while True:
        for item in page.items:
            print(f"   page {number}: {item.type:8} {item.change_minor:+6d}  {item.description}")
        if page.next_cursor is None:
            break
        page, number = (
            economy.history(user_id="alice", limit=2, cursor=page.next_cursor),
            number + 1,
        )

    for streamer in ("bob", "lena"):
        earnings = economy.earnings(streamer)
        gifts = economy.history(streamer_id=streamer, types=["gift"]).items
        print(
            f"8. {streamer}: {len(gifts)} gift(s), {usd(earnings.available_minor)} available "
            "for payout."
        )

    print("9. Trial balance (US cents):")
    trial = ledger.trial_balance()
    print(f"   {'account':34} {'debit':>7} {'credit':>7}")
    for row in trial.rows:
        if row.debit_minor or row.credit_minor:
            print(f"   {row.account:34} {row.debit_minor:7d} {row.credit_minor:7d}")
    debits, credits = trial.totals()["USD"]
    print(f"   {'total':34} {debits:7d} {credits:7d}  balanced: {trial.balanced}")
    report = ledger.verify()
    print(f"10. verify (balances recomputed from the postings): {'ok' if report.ok else 'FAILED'}")


def main(argv: list[str]) -> int:
    if argv:
        path = Path(argv[0])
        if path.exists():
            sys.exit(f"{path} exists: give a new file (the story starts from an empty ledger)")
        with Ledger(f"sqlite:///{path}") as ledger:
            tell(ledger)
        return 0
    with tempfile.TemporaryDirectory() as tmp, Ledger(f"sqlite:///{tmp}/gifts.db") as ledger:
        tell(ledger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
