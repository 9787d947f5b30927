"""Locale-aware price formatting, currency names and default currencies (babel/CLDR)."""

from __future__ import annotations

import re
from datetime import date
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import babel
import pytest
from babel import Locale
from babel.numbers import (
    get_currency_precision,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    get_minus_sign_symbol,
    parse_decimal,
)
from hypothesis import given
from hypothesis import strategies as st

from spaktok_ledger._currency import currency_exponent, to_major
from spaktok_ledger._errors import InvalidAmountType, InvalidInput, UnknownCurrency
from spaktok_ledger._format import (
    currency_name,
    default_currency_for_locale,
    display_digits,
    format_price,
    parse_locale,
)
from tests.strategies import minor_amounts, rounding_modes

pytestmark = pytest.mark.money

# These tests assert what format_price promises -- the currency is shown, every
# digit CLDR shows is the amount's (rounded once, with the named mode, where
# CLDR shows fewer decimals than the ISO exponent), the locale's grouping is
# used, the text parses back to the amount -- and read the locale's symbols
# from babel, so a CLDR release that changes a glyph (fr_CH's group separator,
# HUF's decimals in babel 2.19) does not fail them. A changed *promise* does.

LOCALES = [
    ("USD", "en_US"),
    ("EUR", "de_DE"),
    ("JPY", "ja_JP"),
    ("EGP", "ar_EG"),
    ("INR", "hi_IN"),
    ("BRL", "pt_BR"),
    ("CHF", "fr_CH"),
    ("USD", "de_CH"),
    ("GBP", "en_GB"),
    ("CAD", "fr_CA"),
    ("KRW", "ko_KR"),
    ("ISK", "is_IS"),
    ("KWD", "ar_KW"),
    ("KWD", "en_US"),
    ("HUF", "hu_HU"),
    ("IDR", "id_ID"),
    ("ALL", "sq_AL"),
    ("COP", "es_CO"),
    ("EUR", "fr_FR"),
]


def shown_value(text: str, currency: str, locale: str) -> Decimal:
    """Parse a formatted price back: check the currency is shown, return the number."""
    symbol = get_currency_symbol(currency, locale)
    assert symbol in text or currency in text, f"{currency} not shown in {text!r}"
    number = text.replace(symbol, "") if symbol in text else text.replace(currency, "")
    negative = get_minus_sign_symbol(locale) in number or "-" in number
    decimal_sign, group_sign = get_decimal_symbol(locale), get_group_symbol(locale)
    kept = "".join(ch for ch in number if ch.isdigit() or ch in (decimal_sign, group_sign))
    value = parse_decimal(kept.strip(group_sign), locale, strict=False)
    return -value if negative else value


def expected_shown(amount_minor: int, currency: str, rounding: str | None) -> Decimal:
    """The number a price should show: the amount, rounded to CLDR's digits with the mode."""
    major = to_major(amount_minor, currency)
    digits = get_currency_precision(currency)
    rounded = major.quantize(Decimal(1).scaleb(-digits), rounding=rounding or ROUND_HALF_UP)
    return major if rounding is None else rounded


@pytest.mark.parametrize(("currency", "locale"), LOCALES)
@pytest.mark.parametrize("amount_minor", [0, 5, 1999, 199999, 737604, 12345678901, -199999])
def test_format_price_keeps_its_promises(currency, locale, amount_minor):
    """The currency is shown and the text parses back to the amount, rounded as documented."""
    text = format_price(amount_minor, currency, locale)
    assert shown_value(text, currency, locale) == expected_shown(
        amount_minor, currency, ROUND_HALF_UP
    )


@pytest.mark.parametrize(("currency", "locale"), LOCALES)
def test_large_amounts_use_the_locales_grouping(currency, locale):
    """A price of a million major units or more shows the locale's group separator."""
    amount_minor = 1_234_567 * 10 ** currency_exponent(currency)
    text = format_price(amount_minor, currency, locale)
    assert get_group_symbol(locale) in text
    assert shown_value(text, currency, locale) == Decimal(1_234_567)


@pytest.mark.parametrize(("currency", "locale"), LOCALES)
def test_shown_decimals_are_cldrs(currency, locale):
    """The number of decimals shown is CLDR's for the currency (display_digits)."""
    text = format_price(10 ** currency_exponent(currency) + 1, currency, locale)
    decimals = re.search(re.escape(get_decimal_symbol(locale)) + r"(\d+)", text)
    assert (len(decimals.group(1)) if decimals else 0) == display_digits(currency)


def test_stable_renderings():
    """Renderings no CLDR release has changed: en_US dollars, a negative amount, dinars."""
    assert format_price(199999, "USD", "en_US") == "$1,999.99"
    assert format_price(-1999, "USD", "en_US") == "-$19.99"
    assert format_price(5120, "KWD", "en_US") == "KWD5.120"


@pytest.fixture
def cldr_huf_digits(monkeypatch):
    """Simulate a CLDR release's HUF decimals (babel 2.18: 2, babel 2.19: 0)."""

    def simulate(digits: int) -> None:
        real = babel.numbers.get_currency_precision

        def precision(code: str) -> int:
            return digits if code == "HUF" else real(code)

        monkeypatch.setattr(babel.numbers, "get_currency_precision", precision)
        monkeypatch.setattr("spaktok_ledger._format.get_currency_precision", precision)

    return simulate


@pytest.mark.parametrize(("cldr_digits", "shown"), [(2, "7376.50"), (0, "7377")])
def test_fewer_cldr_decimals_round_the_display_only(cldr_huf_digits, cldr_digits, shown):
    """7 376,50 Ft: shown with two decimals (CLDR 2.18) or rounded half up to 7 377 Ft (2.19)."""
    cldr_huf_digits(cldr_digits)
    assert display_digits("HUF") == cldr_digits
    assert shown_value(format_price(737650, "HUF", "hu_HU"), "HUF", "hu_HU") == Decimal(shown)
    assert to_major(737650, "HUF") == Decimal("7376.50")  # the amount itself never changes


@pytest.mark.parametrize(
    ("mode", "shown"), [(ROUND_HALF_UP, 7377), (ROUND_HALF_EVEN, 7376), (ROUND_DOWN, 7376)]
)
def test_display_rounding_mode_is_named(cldr_huf_digits, mode, shown):
    """The display rounds with the mode the caller names."""
    cldr_huf_digits(0)
    text = format_price(737650, "HUF", "hu_HU", rounding=mode)
    assert shown_value(text, "HUF", "hu_HU") == shown


@pytest.mark.parametrize("cldr_digits", [0, 2])
def test_exact_display_hides_no_stored_digit(cldr_huf_digits, cldr_digits):
    """rounding=None shows a non-zero fraction even where CLDR shows whole units."""
    cldr_huf_digits(cldr_digits)
    text = format_price(737604, "HUF", "hu_HU", rounding=None)
    assert shown_value(text, "HUF", "hu_HU") == Decimal("7376.04")
    whole = format_price(737600, "HUF", "hu_HU", rounding=None)
    assert shown_value(whole, "HUF", "hu_HU") == 7376
    assert (get_decimal_symbol("hu_HU") in whole) == (cldr_digits > 0)


def test_whole_unit_currencies_in_every_cldr_release():
    """ALL and IQD: CLDR shows whole units, the ISO amount has 2 and 3 decimals."""
    assert format_price(12350, "ALL", "en_US") == "ALL124"
    assert format_price(12345, "ALL", "en_US", rounding=None) == "ALL123.45"
    assert format_price(1500, "IQD", "en_US", rounding=ROUND_CEILING) == "IQD2"


def test_format_price_refuses_unknown_rounding_modes():
    """A rounding argument that is not a decimal.ROUND_* constant is InvalidInput."""
    with pytest.raises(InvalidInput):
        format_price(100, "USD", "en_US", rounding="nearest")


@given(
    amount_minor=minor_amounts(-(10**13), 10**13),
    pair=st.sampled_from(LOCALES),
    mode=st.one_of(st.none(), rounding_modes),
)
def test_format_round_trips(amount_minor, pair, mode):
    """Every formatted price parses back to the amount, rounded once with the named mode."""
    currency, locale = pair
    text = format_price(amount_minor, currency, locale, rounding=mode)
    assert shown_value(text, currency, locale) == expected_shown(amount_minor, currency, mode)


def test_format_price_with_the_locales_own_digits():
    """numbering_system='default' uses the locale's own separators (Arabic ones for ar_EG)."""
    text = format_price(199999, "EGP", "ar_EG", numbering_system="default")
    assert get_decimal_symbol("ar_EG", numbering_system="arab") in text
    assert "1999" in "".join(ch for ch in text if ch.isdigit())


def test_format_price_refuses_an_unknown_numbering_system():
    """An unknown numbering system is InvalidInput, not a babel error."""
    with pytest.raises(InvalidInput):
        format_price(100, "EGP", "ar_EG", numbering_system="klingon")


def test_format_price_accepts_bcp47_tags_and_locale_objects():
    """Hyphenated BCP 47 tags and babel Locale objects work like CLDR identifiers."""
    assert format_price(199999, "BRL", "pt-BR") == format_price(199999, "BRL", "pt_BR")
    assert format_price(199999, "BRL", Locale("pt", "BR")) == format_price(199999, "BRL", "pt_BR")


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
def test_formatting_never_rounds_when_cldr_shows_every_decimal(amount_minor):
    """Where CLDR shows the ISO decimals (KWD: 3), every digit of the amount appears."""
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
