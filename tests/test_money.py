"""check_minor: the one gate every amount passes, its range and its errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spaktok_ledger._errors import InvalidAmount, InvalidAmountType
from spaktok_ledger._money import INT64_MAX, INT64_MIN, check_minor
from tests.errors import assert_error
from tests.strategies import int64s

pytestmark = pytest.mark.money


# --- what passes ---------------------------------------------------------------------


@given(value=int64s)
def test_every_int64_passes_unchanged(value):
    """Any int in signed 64-bit range comes back as the same int."""
    result = check_minor(value)
    assert result == value
    assert type(result) is int


@given(value=int64s)
def test_integral_decimals_become_ints(value):
    """An integral, finite Decimal in range becomes the int it denotes."""
    result = check_minor(Decimal(value))
    assert result == value
    assert type(result) is int
    assert check_minor(Decimal(value).quantize(Decimal("1.00"))) == value


def test_the_int64_bounds_are_inclusive():
    """-2**63 and 2**63 - 1 are amounts; one beyond either is not."""
    assert (INT64_MIN, INT64_MAX) == (-(2**63), 2**63 - 1)
    assert check_minor(INT64_MIN) == INT64_MIN
    assert check_minor(INT64_MAX) == INT64_MAX
    assert check_minor(Decimal(INT64_MIN)) == INT64_MIN
    for outside in (INT64_MIN - 1, INT64_MAX + 1):
        with pytest.raises(InvalidAmount) as info:
            check_minor(outside)
        assert_error(
            info.value,
            InvalidAmount,
            ["amount_minor", str(outside), "outside the signed 64-bit range"],
            {"field": "amount_minor"},
        )


@given(value=int64s.filter(bool))
def test_allow_zero_false_refuses_only_zero(value):
    """allow_zero=False refuses 0 and lets every other amount through, 1 and -1 included."""
    assert check_minor(value, allow_zero=False) == value


@pytest.mark.parametrize("value", [1, -1, Decimal(1)])
def test_allow_zero_false_keeps_one_unit(value):
    """A single minor unit is not zero."""
    assert check_minor(value, allow_zero=False) == value


def test_zero_is_an_amount_unless_refused():
    """Zero passes by default; with allow_zero=False it is refused, naming the field."""
    assert check_minor(0) == 0
    assert check_minor(Decimal("0.00")) == 0
    with pytest.raises(InvalidAmount) as info:
        check_minor(0, name="usd_minor", allow_zero=False)
    assert_error(info.value, InvalidAmount, ["usd_minor must not be zero"], {"field": "usd_minor"})
    with pytest.raises(InvalidAmount) as info:
        check_minor(Decimal(0), allow_zero=False)
    assert_error(
        info.value, InvalidAmount, ["amount_minor must not be zero"], {"field": "amount_minor"}
    )


# --- what is refused, and how it is said ----------------------------------------------------


def test_floats_are_never_money():
    """A float is refused as the wrong type, saying so, with the field in details."""
    with pytest.raises(InvalidAmountType) as info:
        check_minor(19.99)
    assert_error(
        info.value,
        InvalidAmountType,
        ["amount_minor must be an int number of minor units, not float (floats are never money)"],
        {"field": "amount_minor"},
    )
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("value", "type_name"), [(True, "bool"), ("1999", "str"), (None, "NoneType"), ([1], "list")]
)
def test_other_types_are_refused_by_name(value, type_name):
    """bool, str, None... are refused naming their type, without the float remark."""
    with pytest.raises(InvalidAmountType) as info:
        check_minor(value, name="total_minor")
    assert_error(
        info.value,
        InvalidAmountType,
        [f"total_minor must be an int number of minor units, not {type_name}"],
        {"field": "total_minor"},
    )
    assert str(info.value).endswith(f"not {type_name}")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_non_finite_decimals_are_refused(value):
    """NaN and infinities are refused as not finite."""
    with pytest.raises(InvalidAmount) as info:
        check_minor(Decimal(value), name="fee_minor")
    shown = str(Decimal(value))
    assert_error(
        info.value,
        InvalidAmount,
        [f"fee_minor must be finite, got {shown}"],
        {"field": "fee_minor"},
    )


@pytest.mark.parametrize("value", ["1.5", "-0.01", "1E-30"])
def test_fractions_of_a_minor_unit_are_refused(value):
    """A Decimal with a fraction of a minor unit is refused, showing the value."""
    with pytest.raises(InvalidAmount) as info:
        check_minor(Decimal(value))
    assert_error(
        info.value,
        InvalidAmount,
        [f"amount_minor must be a whole number of minor units, got {Decimal(value)}"],
        {"field": "amount_minor"},
    )


@given(
    value=st.one_of(st.integers(max_value=INT64_MIN - 1), st.integers(min_value=INT64_MAX + 1)),
    as_decimal=st.booleans(),
)
def test_everything_outside_int64_is_refused(value, as_decimal):
    """No amount beyond signed 64 bits gets in, as an int or a Decimal."""
    with pytest.raises(InvalidAmount) as info:
        check_minor(Decimal(value) if as_decimal else value, name="balance_minor")
    assert_error(
        info.value,
        InvalidAmount,
        [f"balance_minor {value} is outside the signed 64-bit range"],
        {"field": "balance_minor"},
    )
