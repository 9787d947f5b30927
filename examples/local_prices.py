"""Print a coin pack's price in ten locales, priced from the ECB sample rates, offline.

    .venv/bin/python examples/local_prices.py

The ECB adapter is fed ``tests/fixtures/fx/ecb-eurofxref-daily.xml`` through
``httpx.MockTransport`` (no network), with a clock set just after that
sample's publication so the rates are fresh. Each locale's currency comes from
CLDR (``default_currency_for_locale``); the price is the USD list price
converted with a 2 % FX margin, rounded once to a charm ending Stripe accepts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING
from pathlib import Path

import httpx

from spaktok_ledger import (
    CoinPack,
    PriceEnding,
    default_currency_for_locale,
    format_price,
    make_quote,
)
from spaktok_ledger.fx import CachedRateProvider, ECBRateProvider

SAMPLE = (
    Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "fx" / "ecb-eurofxref-daily.xml"
)
LOCALES = ["en_US", "de_DE", "ja_JP", "en_GB", "pt_BR", "hi_IN", "fr_CH", "ko_KR", "sv_SE", "hu_HU"]
PACK = CoinPack("popular", usd_price_minor=999, coins=1000, bonus_coins=50, name="Popular")


def main() -> None:
    xml = SAMPLE.read_bytes()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=xml))

    def clock() -> datetime:
        return datetime(2024, 6, 28, 18, 0, tzinfo=UTC)

    with ECBRateProvider(client=httpx.Client(transport=transport), clock=clock) as ecb:
        rates = CachedRateProvider(ecb, clock=clock)
        print(f"{PACK.name}: {PACK.total_coins} coins for {format_price(999, 'USD', 'en_US')}")
        print(f"{'locale':8} {'currency':8} {'price':>16} {'stripe amount':>14}  rate (USD->)")
        for locale in LOCALES:
            currency = default_currency_for_locale(locale)
            quote = make_quote(
                PACK,
                currency,
                rates,
                clock,
                timedelta(minutes=15),
                markup_bps=200,
                rounding=ROUND_CEILING,
                price_ending=PriceEnding.charm(currency),
                locale=locale,
            )
            print(
                f"{locale:8} {currency:8} {quote.display:>16} {quote.stripe_amount:>14}"
                f"  {quote.rate:.6f} ({quote.rate_source})"
            )


if __name__ == "__main__":
    main()
