"""Revenue splits: largest remainder, the odd-unit rule, validation and invariants."""

from __future__ import annotations

import dataclasses
import inspect
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spaktok_ledger._errors import InvalidAmount, InvalidAmountType, InvalidSplit
from spaktok_ledger._split import RevenueSplit, split
from tests.errors import assert_error
from tests.strategies import bps_shares, minor_amounts

GIFT = {"streamer": 4000, "platform": 6000}


# --- examples --------------------------------------------------------------------


def test_even_split():
    """A total that divides exactly is split exactly."""
    assert split(100, GIFT) == {"streamer": 40, "platform": 60}


def test_platform_keeps_the_odd_unit_by_default():
    """With a 50/50 split of an odd total, the platform gets the extra unit."""
    assert split(5, {"streamer": 5000, "platform": 5000}) == {"streamer": 2, "platform": 3}


def test_platform_keeps_the_odd_unit_even_with_the_smaller_remainder():
    """remainder_to outranks the larger remainder: a 70/30 split of 7 gives the platform 3."""
    # Exact shares: streamer 4.9, platform 2.1; plain largest remainder would give 5/2.
    assert split(7, {"streamer": 7000, "platform": 3000}) == {"streamer": 4, "platform": 3}
    assert split(7, {"streamer": 7000, "platform": 3000}, remainder_to=None) == {
        "streamer": 5,
        "platform": 2,
    }


def test_remainder_to_names_another_party():
    """remainder_to can hand the odd unit to any party with a share."""
    assert split(5, {"streamer": 5000, "platform": 5000}, remainder_to="streamer") == {
        "streamer": 3,
        "platform": 2,
    }


def test_largest_remainder_with_name_tie_break():
    """Without remainder_to, leftovers go by largest remainder, then by name."""
    assert split(2, {"c": 3334, "b": 3333, "a": 3333}, remainder_to=None) == {
        "c": 1,
        "b": 0,
        "a": 1,
    }


def test_zero_share_never_receives_a_leftover():
    """A party with 0 bps gets 0 even when it is the remainder_to party."""
    assert split(3, {"streamer": 10_000, "platform": 0}) == {"streamer": 3, "platform": 0}


def test_default_remainder_to_is_ignored_without_a_platform():
    """Without a platform party the default falls back to largest remainder, ties by name."""
    assert split(3, {"a": 5000, "b": 5000}) == {"a": 2, "b": 1}


def test_explicit_remainder_to_must_exist():
    """Naming a remainder_to party that has no share is an error."""
    with pytest.raises(InvalidSplit):
        split(3, {"a": 5000, "b": 5000}, remainder_to="platform")


def test_result_keeps_the_order_of_shares():
    """The result's keys come back in the order the shares were given."""
    assert list(split(10, {"z": 5000, "a": 5000})) == ["z", "a"]


def test_negative_total_is_split_symmetrically():
    """A reversal splits into the exact negatives of the original parts."""
    assert split(-101, GIFT) == {"streamer": -40, "platform": -61}


def test_zero_total():
    """Zero splits into zeros."""
    assert split(0, GIFT) == {"streamer": 0, "platform": 0}


def test_integral_decimal_total_is_accepted():
    """An integral Decimal total is accepted like check_minor accepts it."""
    assert split(Decimal(100), GIFT) == {"streamer": 40, "platform": 60}


# --- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "shares",
    [
        {"a": 5000, "b": 4999},
        {"a": 10_001, "b": -1},
        {"a": 5000.0, "b": 5000},
        {"a": True, "b": 9999},
        {"a": Decimal(5000), "b": 5000},
        {"": 10_000},
        {1: 10_000},
        {},
        [("a", 10_000)],
        None,
    ],
)
def test_invalid_shares_raise(shares):
    """Shares must be a non-empty mapping of names to non-negative int bps summing to 10,000."""
    with pytest.raises(InvalidSplit) as info:
        split(100, shares)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("total", [1.5, 100.0, True, "100", None])
def test_invalid_totals_raise(total):
    """Totals must be int minor units: floats, bools and strings are refused."""
    with pytest.raises(InvalidAmountType):
        split(total, GIFT)


def test_total_outside_int64_raises():
    """A total beyond signed 64-bit range is refused."""
    with pytest.raises(InvalidAmount):
        split(2**63, GIFT)


# --- RevenueSplit -------------------------------------------------------------------


def test_revenue_split_defaults_to_40_60():
    """The default RevenueSplit is the product plan's 40/60 with the platform's odd unit."""
    assert RevenueSplit().split(101) == (40, 61)
    assert RevenueSplit().split(1) == (0, 1)
    assert RevenueSplit().split(-101) == (-40, -61)


def test_revenue_split_custom_rates():
    """A per-streamer split in basis points is honoured."""
    assert RevenueSplit(streamer_bps=7000, platform_bps=3000).split(1000) == (700, 300)


@pytest.mark.parametrize(
    ("streamer", "platform"), [(4000, 5000), (-1, 10_001), (4000.0, 6000), (True, 9999)]
)
def test_revenue_split_validates(streamer, platform):
    """A RevenueSplit whose shares are invalid cannot be built."""
    with pytest.raises(InvalidSplit):
        RevenueSplit(streamer_bps=streamer, platform_bps=platform)


def test_revenue_split_is_frozen():
    """RevenueSplit is immutable."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        RevenueSplit().streamer_bps = 1  # type: ignore[misc]


def test_revenue_split_refuses_float_values():
    """A float gift value is refused."""
    with pytest.raises(InvalidAmountType):
        RevenueSplit().split(1.0)  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------


@given(total=minor_amounts(), shares=bps_shares(), first=st.booleans())
def test_parts_sum_to_the_total(total, shares, first):
    """The parts always sum to the total."""
    kwargs = {} if first else {"remainder_to": None}
    assert sum(split(total, shares, **kwargs).values()) == total


@given(total=minor_amounts(), shares=bps_shares(), first=st.booleans())
def test_each_part_is_within_one_unit_of_its_exact_share(total, shares, first):
    """Every part differs from total·bps/10,000 by less than one minor unit."""
    kwargs = {} if first else {"remainder_to": None}
    parts = split(total, shares, **kwargs)
    for name, bps in shares.items():
        assert abs(parts[name] * 10_000 - total * bps) < 10_000
        if bps == 0:
            assert parts[name] == 0


@given(total=minor_amounts(), shares=bps_shares())
def test_negative_totals_are_symmetric(total, shares):
    """split(-x) is -split(x), part by part."""
    positive, negative = split(total, shares), split(-total, shares)
    assert negative == {name: -part for name, part in positive.items()}


@given(
    a=minor_amounts(0, 10**12),
    b=minor_amounts(0, 10**12),
    shares=bps_shares(),
    first=st.booleans(),
)
def test_split_of_sum_is_within_one_unit_of_sum_of_splits(a, b, shares, first):
    """Splitting a+b differs from splitting a and b separately by at most one unit per part."""
    kwargs = {} if first else {"remainder_to": None}
    whole = split(a + b, shares, **kwargs)
    first_part, second_part = split(a, shares, **kwargs), split(b, shares, **kwargs)
    for name in shares:
        assert abs(whole[name] - first_part[name] - second_part[name]) <= 1


@given(total=minor_amounts(), shares=bps_shares(min_parties=2), data=st.data())
def test_result_does_not_depend_on_mapping_order(total, shares, data):
    """Reordering the shares mapping does not change who gets what."""
    names = data.draw(st.permutations(list(shares)))
    reordered = {name: shares[name] for name in names}
    assert split(total, reordered) == split(total, shares)


@given(total=minor_amounts(), streamer_bps=st.integers(0, 10_000))
def test_platform_odd_unit_means_streamer_gets_the_floor(total, streamer_bps):
    """With the default rule the streamer's part is its exact share rounded toward zero."""
    streamer, platform = RevenueSplit(streamer_bps, 10_000 - streamer_bps).split(total)
    exact_floor = abs(total) * streamer_bps // 10_000
    assert streamer == (exact_floor if total >= 0 else -exact_floor)
    assert streamer + platform == total


@given(total=minor_amounts(), shares=bps_shares(), data=st.data())
def test_negation_symmetry_holds_for_every_remainder_rule(total, shares, data):
    """split(-x) is -split(x) whatever remainder_to names: None or any party, not just the default."""
    first = data.draw(st.sampled_from([None, *shares]))
    positive = split(total, shares, remainder_to=first)
    negative = split(-total, shares, remainder_to=first)
    assert negative == {name: -part for name, part in positive.items()}


def test_negative_split_keeps_an_explicit_remainder_rule():
    """A reversal gives the odd unit back to the party that got it, not to the platform."""
    shares = {"streamer": 5000, "platform": 5000}
    assert split(5, shares, remainder_to="streamer") == {"streamer": 3, "platform": 2}
    assert split(-5, shares, remainder_to="streamer") == {"streamer": -3, "platform": -2}
    shares = {"streamer": 7000, "platform": 3000}
    assert split(-7, shares, remainder_to=None) == {"streamer": -5, "platform": -2}


def test_default_remainder_rule_reads_as_the_platform():
    """help(split) shows the default as remainder_to='platform'."""
    assert "remainder_to: 'str | _Default | None' = 'platform'" in str(inspect.signature(split))


# --- errors: type, message, details --------------------------------------------------------


@pytest.mark.parametrize("shares", [{}, [("a", 10_000)], None])
def test_shares_that_are_not_a_mapping(shares):
    """Shares must be a non-empty mapping; the message says so."""
    with pytest.raises(InvalidSplit) as info:
        split(100, shares)
    assert_error(
        info.value,
        InvalidSplit,
        [],
        {},
        message="shares must be a non-empty mapping of party name to basis points",
    )


@pytest.mark.parametrize("name", ["", 1, None])
def test_party_names_must_be_strings(name):
    """A party name that is not a non-empty string is named in the message."""
    with pytest.raises(InvalidSplit) as info:
        split(100, {name: 10_000})
    assert_error(
        info.value, InvalidSplit, [f"party names must be non-empty strings, got {name!r}"], {}
    )


@pytest.mark.parametrize(("bps", "type_name"), [(5000.0, "float"), (True, "bool"), ("5000", "str")])
def test_share_types(bps, type_name):
    """A share that is not an int names the party and the type, and details name the party."""
    with pytest.raises(InvalidSplit) as info:
        split(100, {"streamer": bps, "platform": 5000})
    assert_error(
        info.value,
        InvalidSplit,
        ["share of 'streamer' must be an int number of basis points, not " + type_name],
        {"party": "streamer"},
    )


def test_negative_share():
    """A negative share names the party and the value."""
    with pytest.raises(InvalidSplit) as info:
        split(100, {"platform": 10_001, "streamer": -1})
    assert_error(
        info.value,
        InvalidSplit,
        ["share of 'streamer' must not be negative, got -1"],
        {"party": "streamer"},
    )


@pytest.mark.parametrize(("shares", "total"), [({"a": 5000, "b": 4999}, 9999), ({"a": 10_001}, 10_001)])
def test_shares_must_sum_to_10000(shares, total):
    """Shares that do not sum to 10,000 bps say what they sum to, in the message and details."""
    with pytest.raises(InvalidSplit) as info:
        split(100, shares)
    assert_error(
        info.value,
        InvalidSplit,
        [f"shares must sum to 10000 basis points, got {total}"],
        {"total_bps": total},
    )


def test_remainder_to_must_name_a_party():
    """An explicit remainder_to without a share names the party."""
    with pytest.raises(InvalidSplit) as info:
        split(3, {"a": 5000, "b": 5000}, remainder_to="platform")
    assert_error(
        info.value,
        InvalidSplit,
        ["remainder_to names 'platform', which has no share"],
        {"party": "platform"},
    )


@pytest.mark.parametrize("total", [1.5, "100"])
def test_invalid_total_names_its_field(total):
    """A total that is not minor units is reported as total_minor."""
    with pytest.raises(InvalidAmountType) as info:
        split(total, GIFT)
    assert_error(
        info.value,
        InvalidAmountType,
        ["total_minor must be an int number of minor units"],
        {"field": "total_minor"},
    )


def test_revenue_split_errors_name_the_party():
    """An invalid RevenueSplit says which of its two shares is wrong."""
    with pytest.raises(InvalidSplit) as info:
        RevenueSplit(streamer_bps=-1, platform_bps=10_001)
    assert_error(
        info.value, InvalidSplit, ["share of 'streamer' must not be negative"], {"party": "streamer"}
    )
    with pytest.raises(InvalidSplit) as info:
        RevenueSplit(streamer_bps=4000, platform_bps=6000.0)  # type: ignore[arg-type]
    assert_error(info.value, InvalidSplit, ["share of 'platform'"], {"party": "platform"})
