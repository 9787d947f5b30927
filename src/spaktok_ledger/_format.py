"""Locale-aware display of prices, via babel and CLDR.

Pure: no I/O (CLDR data ships inside babel). Amounts arrive as integer minor
units and are turned into ``Decimal`` major units with the same exponent
table the ledger uses (:mod:`spaktok_ledger._currency`), so formatting never
rounds: what is displayed is what is charged.

Locales are CLDR identifiers (``"de_DE"``, ``"pt_BR"``); BCP 47 tags with
hyphens (``"de-DE"``, ``"zh-Hant-TW"``) are accepted too. A locale babel does
not know raises ``InvalidInput``.

>>> format_price(1999, "EUR", "de_DE")
'19,99\\xa0€'
>>> default_currency_for_locale("ja")
'JPY'
"""

from __future__ import annotations

from datetime import date

from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.numbers import (
    UnsupportedNumberingSystemError,
    format_currency,
    get_currency_name,
    get_territory_currencies,
)

from spaktok_ledger._currency import to_major, validate_currency
from spaktok_ledger._errors import InvalidInput, UnknownLocale

__all__ = ["currency_name", "default_currency_for_locale", "format_price", "parse_locale"]


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
    numbering_system: str = "latn",
) -> str:
    """Format integer minor units as a price for ``locale`` (symbol, separators, placement).

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
    try:
        return format_currency(major, code, locale=parsed, numbering_system=numbering_system)
    except UnsupportedNumberingSystemError as exc:
        raise InvalidInput(
            f"cannot format for locale {parsed} with numbering system {numbering_system!r}"
        ) from exc


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
