"""Exchange rates: the ``RateProvider`` port, rate tables, cross rates, a static provider.

Pure: no I/O. A :class:`Rate` says how many units of ``quote`` one unit of
``base`` buys, as a ``Decimal``. Providers publish a :class:`RateTable`
against their own base (EUR for the ECB and Fixer's free plan, USD for Open
Exchange Rates); :meth:`RateTable.rate` derives any pair from it, crossing
through the table's base when neither side is the base::

    USD -> JPY from an EUR table  =  (EUR -> JPY) / (EUR -> USD)

Divisions run in :data:`CROSS_RATE_CONTEXT` (20 significant digits, half-even):
far more digits than any provider publishes (ECB: 5-6, OXR: 6-7), so the
money rounding that happens later, once, is the only one that matters.

>>> table = StaticRateProvider({"USD": "1.0705", "JPY": "171.94"}, base="EUR").rates()
>>> table.rate("USD", "JPY").value
Decimal('160.61653432975245213')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from types import MappingProxyType
from typing import Final, Protocol

from spaktok_ledger._clock import Clock, utc_now
from spaktok_ledger._currency import validate_currency
from spaktok_ledger._errors import InvalidInput, RateUnavailable

__all__ = [
    "CROSS_RATE_CONTEXT",
    "Clock",
    "Rate",
    "RateProvider",
    "RateTable",
    "RateTableProvider",
    "StaticRateProvider",
    "check_aware",
    "check_rate_value",
    "utc_now",
]

CROSS_RATE_CONTEXT: Final = Context(
    prec=20, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
"""The decimal context for inverse and cross rates: 20 significant digits, half-even."""

_SOURCE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")


def check_aware(value: object, name: str) -> datetime:
    """Return ``value`` if it is a timezone-aware ``datetime``, else raise ``InvalidInput``."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def check_rate_value(value: object, name: str = "rate") -> Decimal:
    """Return ``value`` as a positive, finite ``Decimal``; accepts ``Decimal``, ``int``, ``str``.

    Floats are refused: a rate read as ``0.1`` from a float is not ``0.1``.

    >>> check_rate_value("171.94")
    Decimal('171.94')
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidInput(
            f"{name} must be a Decimal (or int/str), not {type(value).__name__}"
            + (" (floats are never money)" if isinstance(value, float) else "")
        )
    try:
        rate = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise InvalidInput(f"{name} is not a number: {value!r}") from exc
    if not rate.is_finite() or rate <= 0:
        raise InvalidInput(f"{name} must be a positive finite number, got {value!r}")
    return rate


@dataclass(frozen=True, slots=True)
class Rate:
    """One exchange rate: 1 ``base`` buys ``value`` ``quote``.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2024, 6, 28, 14, 0, tzinfo=UTC)
    >>> Rate("USD", "JPY", Decimal("160.6165"), "static", t, t).convert(Decimal("4.99"))
    Decimal('801.476335')
    """

    base: str
    """The currency converted from."""
    quote: str
    """The currency converted to."""
    value: Decimal
    """Units of ``quote`` per one unit of ``base`` (positive, finite)."""
    source: str
    """Who published it: ``"ecb"``, ``"openexchangerates"``, ``"fixer"``, ``"static"``..."""
    published_at: datetime
    """When the provider says the rate was set (tz-aware); staleness is measured from here."""
    fetched_at: datetime
    """When the library fetched it (tz-aware)."""
    via: str | None = None
    """For a cross rate, the provider's base currency it was computed through."""

    def __post_init__(self) -> None:
        validate_currency(self.base)
        validate_currency(self.quote)
        object.__setattr__(self, "value", check_rate_value(self.value))
        if not isinstance(self.source, str) or not _SOURCE.match(self.source):
            raise InvalidInput(f"rate source must match [a-z][a-z0-9_.:-]*, got {self.source!r}")
        check_aware(self.published_at, "published_at")
        check_aware(self.fetched_at, "fetched_at")
        if self.via is not None:
            validate_currency(self.via)

    def convert(self, amount: Decimal) -> Decimal:
        """Multiply a major ``amount`` of ``base`` by the rate, exactly (no rounding)."""
        if not isinstance(amount, Decimal) or not amount.is_finite():
            raise InvalidInput(f"amount must be a finite Decimal, got {amount!r}")
        # A product has at most as many digits as its factors together: exact.
        digits = len(amount.as_tuple().digits) + len(self.value.as_tuple().digits)
        return Context(prec=digits, traps=[InvalidOperation, Overflow]).multiply(amount, self.value)

    def age(self, now: datetime) -> timedelta:
        """How old the rate is at ``now``, measured from ``published_at``."""
        return check_aware(now, "now") - self.published_at


@dataclass(frozen=True, slots=True)
class RateTable:
    """A provider's snapshot: every rate against one base currency, with its times.

    ``rates[code]`` is units of ``code`` per one unit of ``base``; the base
    itself may be left out (it is 1).
    """

    base: str
    """The provider's base currency (EUR for the ECB, USD for OXR)."""
    rates: Mapping[str, Decimal]
    """Quote currency -> units per one ``base``."""
    source: str
    published_at: datetime
    fetched_at: datetime
    _values: dict[str, Decimal] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_currency(self.base)
        if not isinstance(self.rates, Mapping):
            raise InvalidInput("rates must be a mapping of currency code to Decimal")
        values = {validate_currency(code): check_rate_value(v) for code, v in self.rates.items()}
        if values.get(self.base, Decimal(1)) != 1:
            raise InvalidInput(f"the rate of the base {self.base} against itself must be 1")
        values[self.base] = Decimal(1)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "rates", MappingProxyType(dict(values)))
        if not isinstance(self.source, str) or not _SOURCE.match(self.source):
            raise InvalidInput(f"rate source must match [a-z][a-z0-9_.:-]*, got {self.source!r}")
        check_aware(self.published_at, "published_at")
        check_aware(self.fetched_at, "fetched_at")

    @property
    def currencies(self) -> frozenset[str]:
        """Every currency the table can price, base included."""
        return frozenset(self._values)

    def _unit(self, code: str) -> Decimal:
        try:
            return self._values[validate_currency(code)]
        except KeyError:
            raise RateUnavailable(
                f"{self.source} publishes no {code} rate", source=self.source, currency=code
            ) from None

    def rate(self, base: str, quote: str) -> Rate:
        """The rate ``base`` -> ``quote``, direct, inverse or crossed through the table's base.

        >>> table = StaticRateProvider({"JPY": "160.6165"}, base="USD").rates()
        >>> table.rate("JPY", "USD").value
        Decimal('0.0062260104036633845215')
        """
        base_unit, quote_unit = self._unit(base), self._unit(quote)
        if base == quote:
            value, via = Decimal(1), None
        elif base == self.base:
            value, via = quote_unit, None
        else:
            value = CROSS_RATE_CONTEXT.divide(quote_unit, base_unit)
            via = None if quote == self.base else self.base
        return Rate(base, quote, value, self.source, self.published_at, self.fetched_at, via)


class RateProvider(Protocol):
    """The port the pricing code depends on: one method, any pair of currencies.

    Raises ``RateUnavailable`` when it cannot answer and ``RateStale`` when
    the freshest rate it has is too old to price with.
    """

    def rate(self, base: str, quote: str) -> Rate:
        """Units of ``quote`` per one ``base``."""
        ...


class RateTableProvider(RateProvider, Protocol):
    """A provider that fetches a whole table at once (what :class:`CachedRateProvider` caches)."""

    def rates(self) -> RateTable:
        """Fetch (or build) the current table."""
        ...


class StaticRateProvider:
    """Fixed rates, for tests, offline runs and hand-set price lists.

    ``rates`` maps currency -> units per one ``base`` (``Decimal``, ``int`` or
    ``str``; floats are refused). Without ``published_at`` the rates count as
    published "now" on every call, so they never go stale.

    >>> provider = StaticRateProvider({"EUR": "0.934143", "JPY": "160.6165"})
    >>> provider.rate("USD", "EUR").value
    Decimal('0.934143')
    """

    default_ttl: Final = timedelta(days=365)
    default_max_age: Final = timedelta(days=36_500)

    def __init__(
        self,
        rates: Mapping[str, Decimal | int | str],
        *,
        base: str = "USD",
        source: str = "static",
        published_at: datetime | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._base = validate_currency(base)
        self._rates = {
            validate_currency(code): check_rate_value(value, f"rate of {code}")
            for code, value in rates.items()
        }
        self._source = source
        self._published_at = (
            None if published_at is None else check_aware(published_at, "published_at")
        )
        self._clock = clock
        self.rates()  # validate now rather than at the first price

    def __repr__(self) -> str:
        return f"StaticRateProvider(base={self._base!r}, currencies={sorted(self._rates)!r})"

    @property
    def source(self) -> str:
        return self._source

    def rates(self) -> RateTable:
        """The table, stamped with the clock's time (and ``published_at`` if given)."""
        now = self._clock()
        published = self._published_at if self._published_at is not None else now
        return RateTable(self._base, self._rates, self._source, published, now)

    def rate(self, base: str, quote: str) -> Rate:
        return self.rates().rate(base, quote)
