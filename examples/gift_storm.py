"""A gift storm with group commit, as a plain script (core only).

    python examples/gift_storm.py [path/to/file.db | postgresql+psycopg://...]

200 viewers send gifts to one streamer from 32 threads at once through a
``GiftBatcher``: the gifts that arrive together are committed together, each
caller still gets its own receipt, and the few viewers without coins are
refused alone. Then a bulk import of history with ``Ledger.ingest``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from spaktok_ledger import (
    EntryDraft,
    Gift,
    GiftBatcher,
    GiftCatalogue,
    GiftEconomy,
    InsufficientFunds,
    Ledger,
    Posting,
)


def main(url: str) -> None:
    economy = GiftEconomy(Ledger(url), GiftCatalogue([Gift("rose", 10, "Rose")]), hold_days=0)
    economy.setup()
    economy.register_streamer("star")
    viewers = [f"viewer{i}" for i in range(200)]
    for i, viewer in enumerate(viewers):
        economy.open_user(viewer)
        if i % 20:  # every 20th viewer has no coins
            economy.credit_purchase(
                viewer, coins=100, price_usd_minor=100, idempotency_key=f"buy:{viewer}"
            )
    batcher = GiftBatcher(economy, window_seconds=0.002, max_batch=256)
    refused: list[str] = []
    lock = threading.Lock()

    def sender(mine: list[str]) -> None:
        for viewer in mine:
            try:
                batcher.send_gift(viewer, "star", "rose", idempotency_key="storm")
            except InsufficientFunds:
                with lock:
                    refused.append(viewer)

    threads = [threading.Thread(target=sender, args=(viewers[i::32],)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    earned = economy.earnings("star").available_minor
    print(
        f"{len(viewers) - len(refused)} gifts in {batcher.batches} transactions; "
        f"{len(refused)} refused; the streamer earned {earned} US cents"
    )
    assert len(refused) == 10
    assert earned == 190 * 4

    history = [
        EntryDraft(
            "import",
            (
                Posting.debit("platform:stripe_clearing", 100),
                Posting.credit(f"user:{v}:wallet", 100),
            ),
            f"import:{v}",
        )
        for v in viewers
    ]
    report = economy.ledger.ingest(history, batch_size=100)
    again = economy.ledger.ingest(history)
    print(f"imported {report.inserted} entries; again: {again.replayed} skipped")
    assert economy.ledger.verify().ok


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else None
    if target and "://" in target:
        main(target)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(f"sqlite:///{target or Path(tmp) / 'storm.db'}")
