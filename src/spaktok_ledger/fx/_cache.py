"""Caching and fallback around rate providers.

Pure apart from the clock, which is injected. A :class:`CachedRateProvider`
keeps a provider's table for a TTL (the provider's update interval) and
refuses, with ``RateStale``, to price from a table whose ``published_at`` is
older than ``max_age``. A :class:`FallbackRateProvider` asks providers in
order until one answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from spaktok_ledger._errors import InvalidInput, RateError, RateStale, RateUnavailable
from spaktok_ledger.fx._rates import (
    Clock,
    Rate,
    RateProvider,
    RateTable,
    RateTableProvider,
    check_aware,
    utc_now,
)

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_TTL", "CachedRateProvider", "FallbackRateProvider"]

logger = logging.getLogger("spaktok_ledger.fx")

DEFAULT_TTL: Final = timedelta(hours=1)
"""TTL for a provider that does not declare ``default_ttl``."""
DEFAULT_MAX_AGE: Final = timedelta(days=3)
"""Staleness limit for a provider that does not declare ``default_max_age``."""


def _describe(provider: object) -> str:
    source = getattr(provider, "source", None)
    return source if isinstance(source, str) else type(provider).__name__


def _positive(value: object, name: str) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidInput(f"{name} must be a positive timedelta, got {value!r}")
    return value


class CachedRateProvider:
    """Cache a provider's rate table for ``ttl``; refuse rates older than ``max_age``.

    * ``ttl`` — how long a fetched table is reused before asking the provider
      again. Defaults to the provider's ``default_ttl`` (ECB: 1 hour, it
      publishes once a day at about 16:00 CET; Open Exchange Rates: 1 hour;
      Fixer: 8 hours, its free plan allows about 100 calls a month).
    * ``max_age`` — the staleness limit, measured from the table's
      ``published_at`` at every call, cached or not. An older table raises
      ``RateStale`` instead of pricing silently. Defaults to the provider's
      ``default_max_age`` (ECB: 5½ days, enough for the Easter closure).
    * When a refresh fails and the cached table is still within ``max_age``,
      the cached table is served, a warning is logged, and the provider is
      asked again after ``retry_after`` (so a provider that is down does not
      cost a timeout on every price).
    * ``clock`` returns the current tz-aware time; inject one in tests.

    Thread-safe: one refresh at a time.

    >>> from spaktok_ledger.fx import StaticRateProvider
    >>> cached = CachedRateProvider(StaticRateProvider({"EUR": "0.9"}), ttl=timedelta(minutes=5))
    >>> cached.rate("USD", "EUR").value
    Decimal('0.9')
    """

    def __init__(
        self,
        provider: RateTableProvider,
        *,
        ttl: timedelta | None = None,
        max_age: timedelta | None = None,
        retry_after: timedelta = timedelta(minutes=1),
        clock: Clock = utc_now,
    ) -> None:
        self._provider = provider
        self._ttl = _positive(
            ttl if ttl is not None else getattr(provider, "default_ttl", DEFAULT_TTL), "ttl"
        )
        self._max_age = _positive(
            max_age
            if max_age is not None
            else getattr(provider, "default_max_age", DEFAULT_MAX_AGE),
            "max_age",
        )
        self._retry_after = _positive(retry_after, "retry_after")
        self._clock = clock
        self._lock = threading.Lock()
        self._table: RateTable | None = None
        self._refresh_at: datetime | None = None
        self._last_error: RateError | None = None

    def __repr__(self) -> str:
        return (
            f"CachedRateProvider({self._provider!r}, ttl={self._ttl!r}, max_age={self._max_age!r})"
        )

    @property
    def source(self) -> str:
        """The wrapped provider's source name."""
        return _describe(self._provider)

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    @property
    def max_age(self) -> timedelta:
        return self._max_age

    def invalidate(self) -> None:
        """Forget the cached table; the next call fetches."""
        with self._lock:
            self._table = None
            self._refresh_at = None

    def rates(self) -> RateTable:
        """The cached table, refreshed when its TTL has passed; ``RateStale`` if too old."""
        now = check_aware(self._clock(), "clock()")
        with self._lock:
            if self._table is None or self._refresh_at is None or now >= self._refresh_at:
                self._refresh(now)
            table = self._table
            last_error = self._last_error
        assert table is not None  # _refresh either sets it or raises
        age = now - table.published_at
        if age > self._max_age:
            raise RateStale(
                f"{table.source} rates were published at {table.published_at.isoformat()}, "
                f"{age} ago, over the {self._max_age} limit",
                source=table.source,
                published_at=table.published_at.isoformat(),
                max_age_seconds=int(self._max_age.total_seconds()),
            ) from last_error
        return table

    def _refresh(self, now: datetime) -> None:
        try:
            table = self._provider.rates()
        except RateError as exc:
            self._last_error = exc
            if self._table is None:
                raise
            self._refresh_at = now + self._retry_after
            logger.warning(
                "refreshing %s rates failed (%s); serving the table published at %s",
                _describe(self._provider),
                exc,
                self._table.published_at.isoformat(),
            )
            return
        self._table = table
        self._last_error = None
        self._refresh_at = now + self._ttl

    def rate(self, base: str, quote: str) -> Rate:
        """``base`` -> ``quote`` from the cached table (cross rates included)."""
        return self.rates().rate(base, quote)


class FallbackRateProvider:
    """Ask each provider in order; the first rate wins.

    A provider failing with ``RateUnavailable`` or ``RateStale`` is logged
    and skipped. When all fail, ``RateStale`` is raised if every failure was
    staleness, else ``RateUnavailable``, naming each provider's error. Misuse
    (an unknown currency code) is raised at once, not retried elsewhere.

    >>> from spaktok_ledger.fx import StaticRateProvider
    >>> chain = FallbackRateProvider([StaticRateProvider({}), StaticRateProvider({"EUR": "0.9"})])
    >>> chain.rate("USD", "EUR").value
    Decimal('0.9')
    """

    def __init__(self, providers: Sequence[RateProvider]) -> None:
        self._providers = tuple(providers)
        if not self._providers:
            raise InvalidInput("FallbackRateProvider needs at least one provider")

    def __repr__(self) -> str:
        return f"FallbackRateProvider({list(self._providers)!r})"

    @property
    def providers(self) -> tuple[RateProvider, ...]:
        return self._providers

    def rate(self, base: str, quote: str) -> Rate:
        errors: list[tuple[str, RateError]] = []
        for provider in self._providers:
            try:
                return provider.rate(base, quote)
            except RateError as exc:
                errors.append((_describe(provider), exc))
                logger.warning(
                    "rate provider %s failed for %s->%s: %s", _describe(provider), base, quote, exc
                )
        summary = "; ".join(f"{name}: {exc}" for name, exc in errors)
        error_class = (
            RateStale if all(isinstance(exc, RateStale) for _, exc in errors) else RateUnavailable
        )
        raise error_class(
            f"no provider could give {base}->{quote}: {summary}",
            providers=[name for name, _ in errors],
        ) from errors[-1][1]
