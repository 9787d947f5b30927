"""Currencies: the one table of ISO 4217 codes and their exponents.

Pure: no I/O (babel ships CLDR data as package files).
"""

from __future__ import annotations

import re
from functools import cache

from babel.numbers import list_currencies

from spaktok_ledger._errors import UnknownCurrency

__all__ = ["known_currencies", "validate_currency"]

_CODE = re.compile(r"^[A-Z]{3}$")


@cache
def known_currencies() -> frozenset[str]:
    """Every ISO 4217 code CLDR knows (babel's list, including historic codes)."""
    return frozenset(list_currencies())


def validate_currency(code: object) -> str:
    """Return ``code`` if it is a known ISO 4217 currency code, else raise.

    Codes are case-sensitive upper case, as ISO 4217 writes them: ``"usd"``
    is refused rather than silently upper-cased, because a lower-case code in
    a ledger call usually means a Stripe payload was passed through unchecked.
    """
    if not isinstance(code, str) or not _CODE.match(code):
        raise UnknownCurrency(f"currency must be a 3-letter ISO 4217 code, got {code!r}")
    if code not in known_currencies():
        raise UnknownCurrency(f"unknown currency code {code!r}", currency=code)
    return code
