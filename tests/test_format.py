"""Locale-aware price formatting, currency names and default currencies (babel/CLDR)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from babel import Locale
from hypothesis import given

from spaktok_ledger._currency import to_major
from spaktok_ledger._errors import InvalidAmountType, InvalidInput, UnknownCurrency
from spaktok_ledger._format import (
    currency_name,
    default_currency_for_locale,
    format_price,
    parse_locale,
)
from tests.strategies import minor_amounts

NBSP, NNBSP, RLM = "\xa0", "\u202f", "\u200f"


@pytest.mark.parametrize(
    ("amount_minor", "currency", "locale", "expected"),
    [
        (199999, "USD", "en_US", "$1,999.99"),
        (199999, "EUR", "de_DE", f"1.999,99{NBSP}€"),
        (150000, "JPY", "ja_JP", "￥150,000"),
        (199999, "EGP", "ar_EG", f"{RLM}1,999.99{NBSP}ج.م.{RLM}"),
        (12345678, "INR", "hi_IN", "₹1,23,456.78"),
        (199999, "BRL", "pt_BR", f"R${NBSP}1.999,99"),
        (199999, "CHF", "fr_CH", f"1{NNBSP}999,99{NBSP}CHF"),
        (199999, "USD", "de_CH", f"${NBSP}1\u2019999.99"),
        (199999, "GBP", "en_GB", "£1,999.99"),
        (199999, "CAD", "fr_CA", f"1{NBSP}999,99{NBSP}$"),
        (1500, "KRW", "ko_KR", "₩1,500"),
        (5, "ISK", "is_IS", f"5{NBSP}kr."),
        (5120, "KWD", "ar_KW", f"{RLM}5.120{NBSP}د.ك.{RLM}"),
        (5120, "KWD", "en_US", "KWD5.120"),
        (-1999, "USD", "en_US", "-$19.99"),
        (0, "EUR", "fr_FR", f"0,00{NBSP}€"),
    ],
)
def test_format_price_matches_cldr(amount_minor, currency, locale, expected):
    """format_price produces babel's CLDR rendering for each locale."""
    assert format_price(amount_minor, currency, locale) == expected


def test_format_price_with_the_locales_own_digits():
    """numbering_system='default' uses the locale's own separators (Arabic ones for ar_EG)."""
    assert format_price(199999, "EGP", "ar_EG", numbering_system="default") == (
        f"{RLM}1\u066c999\u066b99{NBSP}ج.م.{RLM}"
    )


def test_format_price_refuses_an_unknown_numbering_system():
    """An unknown numbering system is InvalidInput, not a babel error."""
    with pytest.raises(InvalidInput):
        format_price(100, "EGP", "ar_EG", numbering_system="klingon")


def test_format_price_accepts_bcp47_tags_and_locale_objects():
    """Hyphenated BCP 47 tags and babel Locale objects work like CLDR identifiers."""
    assert format_price(199999, "BRL", "pt-BR") == format_price(199999, "BRL", "pt_BR")
    assert format_price(199999, "BRL", Locale("pt", "BR")) == f"R${NBSP}1.999,99"


@pytest.mark.parametrize("locale", ["xx_YY", "not a locale", "", "   ", None, 42, "zz"])
def test_bad_locales_raise_invalid_input(locale):
    """A locale babel cannot parse or does not know raises InvalidInput (a ValueError)."""
    with pytest.raises(InvalidInput) as info:
        format_price(100, "USD", locale)
    assert isinstance(info.value, ValueError)


def test_format_price_refuses_floats_and_unknown_currencies():
    """Amounts are int minor units and currencies are known codes."""
    with pytest.raises(InvalidAmountType):
        format_price(19.99, "USD", "en_US")  # type: ignore[arg-type]
    with pytest.raises(UnknownCurrency):
        format_price(1999, "usd", "en_US")


@given(amount_minor=minor_amounts(0, 10**13))
def test_en_us_dollars_render_like_python_grouping(amount_minor):
    """For en_US and USD, the output is '$' plus the exact amount with comma grouping."""
    assert format_price(amount_minor, "USD", "en_US") == f"${to_major(amount_minor, 'USD'):,}"


@given(amount_minor=minor_amounts(-(10**13), 10**13))
def test_formatting_never_rounds(amount_minor):
    """Every digit of the minor amount appears in the formatted price (no rounding)."""
    text = format_price(amount_minor, "KWD", "en_US")
    digits = "".join(ch for ch in text if ch.isdigit())
    assert Decimal(digits) == abs(amount_minor)


@pytest.mark.parametrize(
    ("locale", "currency"),
    [
        ("en_US", "USD"),
        ("de_DE", "EUR"),
        ("ja_JP", "JPY"),
        ("ar_EG", "EGP"),
        ("hi_IN", "INR"),
        ("pt_BR", "BRL"),
        ("fr_CH", "CHF"),
        ("de_CH", "CHF"),
        ("en_GB", "GBP"),
        ("de-AT", "EUR"),
    ],
)
def test_default_currency_for_a_territory(locale, currency):
    """A locale with a territory maps to that territory's currency."""
    assert default_currency_for_locale(locale) == currency


@pytest.mark.parametrize(
    ("locale", "currency"),
    [
        ("de", "EUR"),
        ("ja", "JPY"),
        ("pt", "BRL"),
        ("en", "USD"),
        ("hi", "INR"),
        ("ar", "EGP"),
        ("zh_Hant", "TWD"),
        ("zh", "CNY"),
    ],
)
def test_default_currency_for_language_only_locales(locale, currency):
    """A language-only locale uses CLDR's likely subtags to pick a territory."""
    assert default_currency_for_locale(locale) == currency


def test_default_currency_follows_the_date():
    """The date argument selects the currency in force then (Germany before the euro)."""
    assert default_currency_for_locale("de_DE", on=date(1995, 1, 1)) == "DEM"


def test_default_currency_for_a_region_raises():
    """A macro-region locale (Latin America, 419) has no currency of its own."""
    with pytest.raises(InvalidInput):
        default_currency_for_locale("es_419")


def test_default_currency_for_a_bad_locale_raises():
    """A locale babel does not know raises InvalidInput."""
    with pytest.raises(InvalidInput):
        default_currency_for_locale("xx")


@pytest.mark.parametrize(
    ("currency", "locale", "name", "plural"),
    [
        ("USD", "en_US", "US Dollar", "US dollars"),
        ("EUR", "de_DE", "Euro", "Euro"),
        ("JPY", "ja_JP", "日本円", "円"),
        ("BRL", "pt_BR", "Real brasileiro", "Reais brasileiros"),
        ("CHF", "fr_CH", "franc suisse", "francs suisses"),
        ("INR", "hi_IN", "भारतीय रुपया", "भारतीय रुपए"),
    ],
)
def test_currency_name(currency, locale, name, plural):
    """currency_name gives CLDR's display name, and the plural form with count."""
    assert currency_name(currency, locale) == name
    assert currency_name(currency, locale, count=2) == plural


def test_currency_name_validates_arguments():
    """Unknown currencies, bad locales and float counts are refused."""
    with pytest.raises(UnknownCurrency):
        currency_name("XYZ", "en_US")
    with pytest.raises(InvalidInput):
        currency_name("USD", "xx_YY")
    with pytest.raises(InvalidInput):
        currency_name("USD", "en_US", count=1.5)  # type: ignore[arg-type]


def test_parse_locale_returns_babel_locales():
    """parse_locale normalises identifiers to babel Locale objects."""
    assert parse_locale("zh-Hant-TW") == Locale("zh", "TW", script="Hant")
