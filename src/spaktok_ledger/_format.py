"""Locale-aware display of prices, via babel and CLDR.

Pure: no I/O (CLDR data ships inside babel). babel is used here for
presentation only: symbols, separators, grouping, placement, and how many
decimals a locale *shows* (:func:`display_digits`). What a stored integer
*means* comes from the library's ISO 4217 table (:func:`spaktok_ledger.
currency_exponent`) and never from CLDR, so a babel upgrade can change how a
price looks, never how much it is.

When CLDR shows fewer decimals than the currency's ISO exponent (babel 2.19
shows HUF, IDR and COP in whole units; CLDR shows ALL, LAK, IQD in whole
units), :func:`format_price` rounds the *displayed* number with the mode it
is given (``ROUND_HALF_UP`` by default) and never touches the stored value;
``rounding=None`` instead shows every stored digit that is not zero, which
is what a quote displays (what is displayed is what is charged).

Locales are CLDR identifiers (``"de_DE"``, ``"pt_BR"``); BCP 47 tags with
hyphens (``"de-DE"``, ``"zh-Hant-TW"``) are accepted too. A locale babel does
not know raises ``InvalidInput``.

>>> format_price(1999, "EUR", "de_DE")
'19,99\\xa0€'
>>> default_currency_for_locale("ja")
'JPY'
"""

from __future__ import annotations

import copy
from datetime import date
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.numbers import (
    UnsupportedNumberingSystemError,
    format_currency,
    get_currency_name,
    get_currency_precision,
    get_group_symbol,
    get_territory_currencies,
)

from spaktok_ledger._currency import check_rounding, to_major, validate_currency
from spaktok_ledger._errors import InvalidInput, UnknownLocale

__all__ = [
    "currency_name",
    "default_currency_for_locale",
    "display_digits",
    "format_price",
    "parse_locale",
]


def display_digits(currency: str, *, cash: bool = False) -> int:
    """Decimals CLDR *shows* for ``currency`` (presentation only; may change with babel).

    ``cash=True`` gives CLDR's cash digits, the decimals of everyday prices
    (SEK, CZK, HUF, TWD: none). Never use this to interpret a stored amount:
    that is :func:`spaktok_ledger.currency_exponent`.

    >>> display_digits("USD"), display_digits("JPY"), display_digits("KWD")
    (2, 0, 3)
    >>> display_digits("SEK", cash=True)
    0
    """
    code = validate_currency(currency)
    if not cash:
        return int(get_currency_precision(code))
    fractions = get_global("currency_fractions")
    return int(fractions.get(code, fractions["DEFAULT"])[2])


def parse_locale(locale: str | Locale) -> Locale:
    """Return a babel ``Locale`` for a CLDR identifier or BCP 47 tag, or raise ``InvalidInput``.

    >>> parse_locale("pt-BR")
    Locale('pt', territory='BR')
    """
    if isinstance(locale, Locale):
        return locale
    if not isinstance(locale, str) or not locale.strip():
        raise InvalidInput(f"locale must be a non-empty string, got {locale!r}")
    try:
        return Locale.parse(locale.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise UnknownLocale(f"unknown locale {locale!r}", locale=locale) from exc


def format_price(
    amount_minor: int,
    currency: str,
    locale: str | Locale,
    *,
    rounding: str | None = ROUND_HALF_UP,
    numbering_system: str = "latn",
) -> str:
    """Format integer minor units as a price for ``locale`` (symbol, separators, placement).

    The amount is read at the currency's ISO 4217 exponent and shown with the
    decimals CLDR uses for the currency (:func:`display_digits`). Where CLDR
    shows fewer decimals than the amount has, the *displayed* number is
    rounded once with ``rounding`` (a ``decimal.ROUND_*`` constant); with
    ``rounding=None`` no digit is hidden: a non-zero fraction below CLDR's
    digits is shown (``7 376,04 Ft``) and a zero one is not (``7 376 Ft``).

    ``numbering_system`` is babel's: ``"latn"`` (the default) uses Latin
    separators everywhere; ``"default"`` uses those of the locale's own
    numbering system (Arabic group and decimal marks for ``ar_EG``). Babel writes ASCII digits
    in both cases.

    >>> format_price(1999, "USD", "en_US")
    '$19.99'
    >>> format_price(1500, "JPY", "ja_JP")
    '￥1,500'
    >>> format_price(12345678, "INR", "hi_IN")
    '₹1,23,456.78'
    """
    code = validate_currency(currency)
    parsed = parse_locale(locale)
    major = to_major(amount_minor, code)
    mode = None if rounding is None else check_rounding(rounding)
    # CLDR may show fewer decimals than the amount has: round what is shown
    # (with the named mode), never the amount itself. babel would otherwise
    # round with the thread's decimal context.
    digits = display_digits(code)
    # Without a mode, ROUND_UP only detects a fraction CLDR would hide (any
    # non-zero one moves the value); that display then keeps every digit.
    shown = major.quantize(Decimal(1).scaleb(-digits), rounding=mode or ROUND_UP)
    pattern = None
    if mode is None and shown != major:
        # Exact display: every stored decimal, in the locale's own pattern.
        pattern = copy.copy(parsed.currency_formats["standard"])
        pattern.frac_prec = (-major.as_tuple().exponent,) * 2  # type: ignore[operator]
    try:
        safe = _apostrophe_safe(parsed, numbering_system)
        text = format_currency(
            shown if pattern is None else major,
            code,
            format=pattern,
            locale=safe or parsed,
            currency_digits=pattern is None,
            numbering_system=numbering_system,
        )
    except UnsupportedNumberingSystemError as exc:
        raise InvalidInput(
            f"cannot format for locale {parsed} with numbering system {numbering_system!r}"
        ) from exc
    return text if safe is None else text.replace(_STAND_IN, "'")


# babel's NumberPattern.apply removes ASCII apostrophes from its *output*
# (it takes them for the quotes of pattern literals), which erases a locale's
# apostrophe group separator: babel 2.19 formats 1'234'567,00 CHF for fr_CH as
# 1234567,00 CHF. Formatting with a private-use stand-in for the apostrophe and
# putting it back afterwards keeps the grouping CLDR asks for.
_STAND_IN = "\ue000"


class _ApostropheSafeLocale(Locale):
    @property
    def number_symbols(self) -> Any:
        return {
            system: {
                name: value.replace("'", _STAND_IN) if isinstance(value, str) else value
                for name, value in table.items()
            }
            for system, table in super().number_symbols.items()
        }


def _apostrophe_safe(parsed: Locale, numbering_system: str) -> Locale | None:
    """A stand-in locale when the locale's group separator is an apostrophe, else None."""
    if "'" not in get_group_symbol(parsed, numbering_system=numbering_system):
        return None
    return _ApostropheSafeLocale(
        parsed.language, parsed.territory, parsed.script, parsed.variant, parsed.modifier
    )


def currency_name(currency: str, locale: str | Locale, *, count: int | None = None) -> str:
    """The currency's name in ``locale``; ``count`` picks the plural form.

    >>> currency_name("USD", "de_DE")
    'US-Dollar'
    >>> currency_name("JPY", "en_US", count=2)
    'Japanese yen'
    """
    code = validate_currency(currency)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise InvalidInput(f"count must be an int, not {type(count).__name__}")
    return get_currency_name(code, count=count, locale=parse_locale(locale))


def _territory(parsed: Locale) -> str | None:
    if parsed.territory:
        return parsed.territory
    # A language-only locale ("de", "ja", "zh_Hant"): CLDR's likely subtags
    # name the territory most speakers live in (de -> de_Latn_DE).
    likely = get_global("likely_subtags")
    for key in (str(parsed), parsed.language):
        if key in likely:
            territory = Locale.parse(str(likely[key])).territory
            if territory:
                return territory
    return None


def default_currency_for_locale(locale: str | Locale, *, on: date | None = None) -> str:
    """The currency people in the locale's territory pay with, per CLDR.

    Takes the locale's territory (``de_CH`` -> CH -> CHF). A language-only
    locale uses CLDR's likely subtags for its language (``"de"`` ->
    ``de_Latn_DE`` -> EUR, ``"pt"`` -> BR -> BRL, ``"en"`` -> US -> USD).
    Where a territory has several legal tenders, CLDR's first is returned
    (``es_PA`` -> PAB, not USD). ``on`` picks the date (default: today).
    Raises ``InvalidInput`` when no currency can be found.

    >>> default_currency_for_locale("de_CH")
    'CHF'
    >>> default_currency_for_locale("de")
    'EUR'
    """
    parsed = parse_locale(locale)
    territory = _territory(parsed)
    if territory is None:
        raise InvalidInput(f"locale {locale!r} names no territory", locale=str(parsed))
    currencies = get_territory_currencies(territory, start_date=on, tender=True)
    if not currencies:
        raise InvalidInput(
            f"CLDR has no currency for territory {territory} (locale {locale!r})",
            locale=str(parsed),
        )
    first = currencies[0]
    assert isinstance(first, str)  # include_details=False returns codes
    return first
