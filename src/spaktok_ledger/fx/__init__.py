"""Exchange rates: the ``RateProvider`` port and its adapters.

Pure parts (rates, tables, cross rates, the static provider, caching and
fallback) import nothing beyond the standard library and babel. The HTTP
adapters (:class:`ECBRateProvider`, :class:`OpenExchangeRatesProvider`,
:class:`FixerRateProvider`) need the ``fx`` extra (``httpx``) and are
imported on first use, so ``import spaktok_ledger.fx`` works without it.

>>> from decimal import Decimal
>>> provider = StaticRateProvider({"EUR": Decimal("0.934143")})
>>> provider.rate("USD", "EUR").value
Decimal('0.934143')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spaktok_ledger.fx._cache import CachedRateProvider, FallbackRateProvider
from spaktok_ledger.fx._parse import parse_ecb_xml, parse_fixer_json, parse_oxr_json
from spaktok_ledger.fx._rates import (
    CROSS_RATE_CONTEXT,
    Rate,
    RateProvider,
    RateTable,
    RateTableProvider,
    StaticRateProvider,
)

if TYPE_CHECKING:
    from spaktok_ledger.fx._http import (
        ECBRateProvider,
        FixerRateProvider,
        OpenExchangeRatesProvider,
    )

__all__ = [
    "CROSS_RATE_CONTEXT",
    "CachedRateProvider",
    "ECBRateProvider",
    "FallbackRateProvider",
    "FixerRateProvider",
    "OpenExchangeRatesProvider",
    "Rate",
    "RateProvider",
    "RateTable",
    "RateTableProvider",
    "StaticRateProvider",
    "parse_ecb_xml",
    "parse_fixer_json",
    "parse_oxr_json",
]

_HTTP_PROVIDERS = frozenset({"ECBRateProvider", "FixerRateProvider", "OpenExchangeRatesProvider"})


def __getattr__(name: str) -> object:
    # The HTTP adapters import httpx (the ``fx`` extra): load them on first use.
    if name in _HTTP_PROVIDERS:
        from spaktok_ledger.fx import _http

        return getattr(_http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
