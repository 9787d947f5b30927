"""Shared Hypothesis strategies for money, currencies, splits, rates and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from spaktok_ledger._currency import (
    ROUNDING_MODES,
    STRIPE_PRESENTMENT_CURRENCIES,
    known_currencies,
)
from spaktok_ledger._money import INT64_MAX, INT64_MIN

__all__ = [
    "aware_datetimes",
    "bps_shares",
    "currencies",
    "int64s",
    "minor_amounts",
    "party_names",
    "rates",
    "rounding_modes",
    "stripe_currencies",
    "usd_prices",
]

int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
"""Any amount the ledger can hold."""


def minor_amounts(min_value: int = -(10**15), max_value: int = 10**15) -> st.SearchStrategy[int]:
    """Realistic minor-unit amounts (default: up to ±10^15, far above any real balance)."""
    return st.integers(min_value=min_value, max_value=max_value)


currencies = st.sampled_from(sorted(known_currencies()))
"""Every ISO 4217 code babel knows, historic ones included."""

stripe_currencies = st.sampled_from(sorted(STRIPE_PRESENTMENT_CURRENCIES))
"""Currencies Stripe can charge in."""

rounding_modes = st.sampled_from(sorted(ROUNDING_MODES))
"""The ``decimal.ROUND_*`` constants."""

usd_prices = st.integers(min_value=50, max_value=10_000_000)
"""Coin-pack list prices in US cents, from Stripe's $0.50 minimum to $100,000."""

rates = st.decimals(
    min_value=Decimal("0.0001"),
    max_value=Decimal("100000"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
).filter(lambda value: value > 0)
"""Positive exchange rates with at most six decimals, as providers publish them."""

party_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
"""Names of parties in a split."""


@st.composite
def bps_shares(draw: st.DrawFn, min_parties: int = 1, max_parties: int = 6) -> dict[str, int]:
    """A mapping of distinct party names to non-negative basis points summing to 10,000."""
    names = draw(st.lists(party_names, min_size=min_parties, max_size=max_parties, unique=True))
    cuts = sorted(
        draw(
            st.lists(
                st.integers(min_value=0, max_value=10_000),
                min_size=len(names) - 1,
                max_size=len(names) - 1,
            )
        )
    )
    bounds = [0, *cuts, 10_000]
    return {name: bounds[i + 1] - bounds[i] for i, name in enumerate(names)}


def aware_datetimes(
    min_value: datetime = datetime(2000, 1, 1),
    max_value: datetime = datetime(2100, 1, 1),
) -> st.SearchStrategy[datetime]:
    """Timezone-aware datetimes in UTC or a fixed offset."""
    zones = st.sampled_from([UTC, *(timezone(timedelta(hours=h)) for h in (-8, -3, 1, 5, 9))])
    return st.datetimes(min_value=min_value, max_value=max_value, timezones=zones)
