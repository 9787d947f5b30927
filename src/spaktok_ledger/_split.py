"""Revenue splits: integer minor units allocated by largest remainder.

Pure: no I/O. Shares are basis points (1 bps = 0.01 %), non-negative ``int``
values summing to exactly 10,000. The parts always sum to the total.

The odd-unit rule
-----------------

Each party first gets the floor of its exact share (``total · bps / 10_000``);
the few units left over (fewer than the number of parties) go one each to
parties whose exact share has a fractional part, in this order:

1. the ``remainder_to`` party (default ``"platform"``: the platform keeps
   the odd cent of a 40/60 gift split);
2. then the larger fractional part first (the classic largest-remainder
   method);
3. then party name, in ascending order, to break exact ties.

No party ever receives more than one leftover unit, so every part is within
one minor unit of its exact share, and a party with a zero share gets zero.
A negative total (a reversal) is split as its absolute value and negated, so
``split(-x)`` is exactly ``-split(x)`` part by part and a reversal undoes the
original to the unit.

>>> split(101, {"streamer": 4000, "platform": 6000})
{'streamer': 40, 'platform': 61}
>>> split(-101, {"streamer": 4000, "platform": 6000})
{'streamer': -40, 'platform': -61}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from spaktok_ledger._errors import InvalidSplit
from spaktok_ledger._money import check_minor

__all__ = ["BPS_TOTAL", "PLATFORM", "RevenueSplit", "split"]

BPS_TOTAL: Final = 10_000
"""Shares are basis points; a complete split sums to this."""

PLATFORM: Final = "platform"
"""The party that keeps leftover units unless told otherwise."""


class _Default:
    """Marks ``remainder_to`` as not given (then a missing party is not an error)."""

    def __repr__(self) -> str:
        return repr(PLATFORM)


_DEFAULT: Final = _Default()


def _check_shares(shares: object) -> dict[str, int]:
    if not isinstance(shares, Mapping) or not shares:
        raise InvalidSplit("shares must be a non-empty mapping of party name to basis points")
    checked: dict[str, int] = {}
    for name, bps in shares.items():
        if not isinstance(name, str) or not name:
            raise InvalidSplit(f"party names must be non-empty strings, got {name!r}")
        if isinstance(bps, bool) or not isinstance(bps, int):
            raise InvalidSplit(
                f"share of {name!r} must be an int number of basis points, "
                f"not {type(bps).__name__}",
                party=name,
            )
        if bps < 0:
            raise InvalidSplit(f"share of {name!r} must not be negative, got {bps}", party=name)
        checked[name] = bps
    total = sum(checked.values())
    if total != BPS_TOTAL:
        raise InvalidSplit(
            f"shares must sum to {BPS_TOTAL} basis points, got {total}", total_bps=total
        )
    return checked


def split(
    total_minor: int,
    shares: Mapping[str, int],
    *,
    remainder_to: str | _Default | None = _DEFAULT,
) -> dict[str, int]:
    """Split ``total_minor`` between parties by basis points; the parts sum to the total.

    ``remainder_to`` names the party that receives a leftover unit first
    (default ``"platform"``, ignored when no party has that name; an
    explicitly named party that is missing raises ``InvalidSplit``).
    ``None`` gives plain largest remainder with ties broken by name. See the
    module docstring for the full rule. The result keeps the order of
    ``shares``.

    >>> split(5, {"streamer": 5000, "platform": 5000})
    {'streamer': 2, 'platform': 3}
    >>> split(5, {"streamer": 5000, "platform": 5000}, remainder_to="streamer")
    {'streamer': 3, 'platform': 2}
    >>> split(2, {"a": 3333, "b": 3333, "c": 3334}, remainder_to=None)
    {'a': 1, 'b': 0, 'c': 1}
    """
    total = check_minor(total_minor, name="total_minor")
    checked = _check_shares(shares)
    if isinstance(remainder_to, _Default):
        first = PLATFORM if PLATFORM in checked else None
    elif remainder_to is None or remainder_to in checked:
        first = remainder_to
    else:
        raise InvalidSplit(
            f"remainder_to names {remainder_to!r}, which has no share", party=remainder_to
        )
    if total < 0:
        return {name: -part for name, part in split(-total, checked, remainder_to=first).items()}

    parts: dict[str, int] = {}
    remainders: dict[str, int] = {}  # fractional parts, in units of 1/BPS_TOTAL
    for name, bps in checked.items():
        parts[name], remainders[name] = divmod(total * bps, BPS_TOTAL)
    leftover = total - sum(parts.values())
    eligible = sorted(
        (name for name, remainder in remainders.items() if remainder),
        key=lambda name: (name != first, -remainders[name], name),
    )
    for name in eligible[:leftover]:
        parts[name] += 1
    return parts


@dataclass(frozen=True, slots=True)
class RevenueSplit:
    """How a gift's value divides between the streamer and the platform.

    Defaults to the product plan's 40/60; the platform keeps the odd unit.

    >>> RevenueSplit().split(101)
    (40, 61)
    >>> RevenueSplit(streamer_bps=5000, platform_bps=5000).split(-3)
    (-1, -2)
    """

    streamer_bps: int = 4000
    """The streamer's share in basis points."""
    platform_bps: int = 6000
    """The platform's share in basis points; the two sum to 10,000."""

    def __post_init__(self) -> None:
        _check_shares({"streamer": self.streamer_bps, PLATFORM: self.platform_bps})

    def split(self, value_minor: int) -> tuple[int, int]:
        """Return ``(streamer_minor, platform_minor)`` for a gift worth ``value_minor``."""
        parts = split(
            value_minor,
            {"streamer": self.streamer_bps, PLATFORM: self.platform_bps},
            remainder_to=PLATFORM,
        )
        return parts["streamer"], parts[PLATFORM]
