"""Quotes persist in the ledger's database; checkout can trust them until they expire."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from spaktok_ledger import (
    CoinPack,
    InvalidInput,
    Ledger,
    PackCatalogue,
    Pricing,
    QuoteExpired,
    RateUnavailable,
    UnknownLocale,
    UnknownPack,
    UnknownQuote,
)
from spaktok_ledger.fx import StaticRateProvider

CATALOGUE = PackCatalogue(
    [CoinPack("starter", 499, 500), CoinPack("mega", 4999, 5000, bonus_coins=500)]
)


@pytest.fixture
def pricing(ledger: Ledger, clock) -> Pricing:
    rates = StaticRateProvider(
        {"EUR": Decimal("0.934143"), "JPY": Decimal("160.6165"), "BRL": Decimal("5.5035")},
        clock=clock,
    )
    return Pricing(ledger, CATALOGUE, rates, ttl=timedelta(minutes=10), clock=clock)


def test_quote_in_the_locale_currency_is_stored(pricing: Pricing) -> None:
    """A de_DE viewer gets a EUR quote, formatted for Germany, readable back by id."""
    quote = pricing.quote("starter", locale="de_DE", user_id=42)
    assert (quote.currency, quote.local_amount_minor) == ("EUR", 466)
    assert quote.display == "4,66\xa0€"
    assert pricing.get(quote.id) == quote


def test_zero_decimal_currency(pricing: Pricing) -> None:
    """A Japanese viewer is quoted whole yen."""
    quote = pricing.quote("mega", locale="ja_JP")
    assert quote.currency == "JPY"
    assert quote.local_amount_minor == 8029  # 49.99 USD * 160.6165 = 8029.2, rounded once
    assert quote.total_coins == 5500


def test_fallbacks_to_usd(pricing: Pricing) -> None:
    """No locale means USD; an explicit currency wins; a currency without a rate is refused."""
    assert pricing.quote("starter").currency == "USD"
    assert pricing.quote("starter").local_amount_minor == 499
    assert pricing.quote("starter", currency="USD", locale="fr_FR").currency == "USD"
    with pytest.raises(RateUnavailable):
        pricing.quote("starter", locale="hi_IN")


def test_expiry_with_injected_clock(pricing: Pricing, clock) -> None:
    """A quote is valid until its expiry and refused after it."""
    quote = pricing.quote("starter", currency="EUR")
    clock.advance(minutes=9)
    assert pricing.store.get_valid(quote.id, clock()) == quote
    clock.advance(minutes=1)
    with pytest.raises(QuoteExpired):
        pricing.store.get_valid(quote.id, clock())
    assert pricing.get(quote.id) == quote  # still readable for the webhook's checks


def test_errors(pricing: Pricing) -> None:
    """Unknown packs, quotes and locales, and bad user ids, are clear errors."""
    with pytest.raises(UnknownPack):
        pricing.quote("nope")
    with pytest.raises(UnknownQuote):
        pricing.get("quote_missing")
    with pytest.raises(UnknownLocale):
        pricing.quote("starter", locale="xx_YY_ZZ")
    with pytest.raises(InvalidInput):
        pricing.quote("starter", user_id="not an id!")


def test_save_is_idempotent(pricing: Pricing) -> None:
    """Saving the same quote twice is a no-op; another quote under its id is refused."""
    quote = pricing.quote("starter", currency="BRL")
    assert pricing.store.save(quote) == quote
    other = pricing.quote("mega", currency="BRL")
    from dataclasses import replace

    with pytest.raises(InvalidInput):
        pricing.store.save(replace(other, id=quote.id))
