"""Stripe's units for every currency, against Stripe's published rules encoded here on their own.

The oracle below is written from https://docs.stripe.com/currencies ("Minor units
in API amounts", "Zero-decimal currencies", "Three-decimal currencies", "Special
cases"), independently of ``_currency.py``: if the library's tables or its
conversion code drift from Stripe's rules, these tests disagree with it. ISO 4217
exponents come from the ``iso4217`` package (SIX's list), not from the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import iso4217
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spaktok_ledger._currency as currency_module
from spaktok_ledger._currency import (
    STRIPE_PRESENTMENT_CURRENCIES,
    CurrencyInfo,
    currency_info,
    from_stripe_amount,
    stripe_charge_increment,
    stripe_exponent,
    stripe_payout_increment,
    to_stripe_amount,
)
from spaktok_ledger._errors import InvalidAmount
from spaktok_ledger._money import INT64_MAX, INT64_MIN
from tests.errors import assert_error

pytestmark = pytest.mark.money

# --- Stripe's rules, as the documentation states them ----------------------------------

# "Zero-decimal currencies": the amount is the number of major units (¥500 -> 500).
DOCS_ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
# "Three-decimal currencies": amounts in thousandths, and "the least-significant
# (last) digit" must be 0 (5.124 KWD is sent as 5120 or 5130).
DOCS_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
# "Special cases": ISK is zero-decimal but sent as a two-decimal amount that must be
# divisible by 100 (5 ISK -> 500); UGX likewise (it is in the zero-decimal list, but
# the special case governs what the API accepts).
DOCS_WHOLE_UNITS_AS_TWO_DECIMALS = frozenset({"ISK", "UGX"})
# "Special cases": HUF and TWD charges are two-decimal, but payouts must be whole
# units: amounts divisible by 100.
DOCS_WHOLE_UNIT_PAYOUTS = frozenset({"HUF", "TWD"})

# ISO 4217 minor units of the presentment currencies ISO has since withdrawn (the
# iso4217 package lists current codes only): the Netherlands Antillean guilder
# (replaced by XCG) and the Bulgarian lev (replaced by the euro) had 2.
WITHDRAWN_ISO_EXPONENTS = {"ANG": 2, "BGN": 2}


def iso_exponent(code: str) -> int:
    """ISO 4217 minor units, from SIX's list as the iso4217 package ships it."""
    for currency in iso4217.Currency:
        if currency.code == code:
            return int(currency.exponent)
    return WITHDRAWN_ISO_EXPONENTS[code]


def stripe_rule(code: str) -> tuple[int, int, int]:
    """(exponent of Stripe's integer, charge step, payout step), steps in Stripe's units."""
    if code in DOCS_WHOLE_UNITS_AS_TWO_DECIMALS:
        return 2, 100, 100
    if code in DOCS_ZERO_DECIMAL:
        return 0, 1, 1
    if code in DOCS_THREE_DECIMAL:
        return 3, 10, 10
    if code in DOCS_WHOLE_UNIT_PAYOUTS:
        return 2, 1, 100
    return 2, 1, 1


def stripe_value(amount_minor: int, code: str) -> Fraction:
    """The amount in Stripe's units, exactly (a fraction when the ledger's unit is finer)."""
    exponent = stripe_rule(code)[0]
    return Fraction(amount_minor) * Fraction(10) ** (exponent - iso_exponent(code))


def accepted(amount_minor: int, code: str, kind: str) -> bool:
    """Whether Stripe takes this amount: a whole number of Stripe units, a multiple of the step."""
    value = stripe_value(amount_minor, code)
    step = stripe_rule(code)[1 if kind == "charge" else 2]
    return value.denominator == 1 and value.numerator % step == 0


def smallest_step(code: str, kind: str) -> int:
    """The smallest positive amount in minor units that Stripe accepts, by search."""
    return next(k for k in range(1, 10_001) if accepted(k, code, kind))


PRESENTMENT = sorted(STRIPE_PRESENTMENT_CURRENCIES)


@pytest.fixture(autouse=True)
def _rules_computed_afresh() -> Iterator[None]:
    """Each test derives currency records from the rules, not from a cache an earlier test filled."""
    currency_module._info.cache_clear()
    yield
    currency_module._info.cache_clear()


# --- the oracle's own sanity --------------------------------------------------------------


def test_the_oracle_covers_the_documented_cases():
    """Worked examples from Stripe's page hold in the oracle."""
    assert stripe_value(1000, "USD") == 1000  # 10 USD -> 1000
    assert stripe_value(500, "JPY") == 500  # ¥500 -> 500
    assert stripe_value(5, "ISK") == 500  # 5 ISK -> 500
    assert accepted(5120, "KWD", "charge") and not accepted(5124, "KWD", "charge")
    assert accepted(1045, "HUF", "charge") and not accepted(1045, "HUF", "payout")
    assert accepted(1000, "HUF", "payout")


# --- every presentment currency against the rules ------------------------------------------


@pytest.mark.parametrize("code", PRESENTMENT)
def test_currency_record_follows_stripes_rules(code):
    """Stripe exponent, charge step and payout step match Stripe's published rules."""
    info = currency_info(code)
    exponent, charge_step, payout_step = stripe_rule(code)
    assert info.code == code
    assert info.exponent == iso_exponent(code)
    assert (info.stripe_exponent, info.stripe_charge_step, info.stripe_payout_step) == (
        exponent,
        charge_step,
        payout_step,
    )
    assert stripe_exponent(code) == exponent
    assert info.stripe_chargeable


@pytest.mark.parametrize("code", PRESENTMENT)
def test_increments_are_the_smallest_accepted_amounts(code):
    """The charge and payout increments are the smallest amounts Stripe accepts, in minor units."""
    assert stripe_charge_increment(code) == smallest_step(code, "charge")
    assert stripe_payout_increment(code) == smallest_step(code, "payout")
    assert currency_info(code).charge_increment_minor == smallest_step(code, "charge")
    assert currency_info(code).payout_increment_minor == smallest_step(code, "payout")


@given(
    code=st.sampled_from(PRESENTMENT),
    units=st.integers(-(10**6), 10**6),
    offset=st.integers(0, 1000),
    kind=st.sampled_from(["charge", "payout"]),
)
def test_to_stripe_amount_accepts_exactly_what_stripe_accepts(code, units, offset, kind):
    """An amount converts iff Stripe accepts it, to the same value in Stripe's units."""
    amount = units * 1000 + offset
    if accepted(amount, code, kind):
        assert to_stripe_amount(amount, code, kind=kind) == stripe_value(amount, code)
    else:
        with pytest.raises(InvalidAmount):
            to_stripe_amount(amount, code, kind=kind)


@given(
    code=st.sampled_from(PRESENTMENT),
    stripe_amount=st.integers(-(10**12), 10**12),
)
def test_from_stripe_amount_is_exact(code, stripe_amount):
    """An amount from Stripe converts iff the ledger's minor unit can hold it, to the same value."""
    minor = Fraction(stripe_amount) / Fraction(10) ** (stripe_rule(code)[0] - iso_exponent(code))
    if minor.denominator == 1:
        result = from_stripe_amount(stripe_amount, code)
        assert result == minor
        assert stripe_value(result, code) == stripe_amount
    else:
        with pytest.raises(InvalidAmount):
            from_stripe_amount(stripe_amount, code)


def test_kwd_payouts_are_tens_of_fils():
    """The issue's case: a KWD payout of 5.125 is refused, 5.120 is sent as 5120."""
    assert to_stripe_amount(5120, "KWD", kind="payout") == 5120
    with pytest.raises(InvalidAmount) as info:
        to_stripe_amount(5125, "KWD", kind="payout")
    assert_error(
        info.value,
        InvalidAmount,
        [
            "a Stripe payout in KWD must be a multiple of 10 in Stripe's units; "
            "5125 minor units is 5125"
        ],
        {"currency": "KWD", "amount_minor": 5125},
    )
    assert stripe_payout_increment("KWD") == 10


# --- the increment rule on records Stripe does not have (yet) -------------------------------


@given(
    exponent=st.integers(0, 4),
    stripe=st.integers(0, 3),
    charge_step=st.sampled_from([1, 10, 100, 1000]),
    payout_step=st.sampled_from([1, 10, 100, 1000]),
)
def test_increment_is_the_smallest_minor_amount_on_stripes_grid(
    exponent, stripe, charge_step, payout_step
):
    """For any pair of exponents and steps, the increment is the least k minor units that is a
    whole multiple of the step in Stripe's units."""
    info = CurrencyInfo("XTS", exponent, stripe, charge_step, payout_step, None)

    def least(step: int) -> int:
        # k minor units are k * scale Stripe units; k * scale / step is whole exactly
        # when k is a multiple of that ratio's reduced denominator.
        ratio = Fraction(10) ** (stripe - exponent) / step
        k = ratio.denominator
        assert (k * ratio).denominator == 1
        assert all((j * ratio).denominator != 1 for j in range(1, min(k, 1000)))
        return k

    assert info.charge_increment_minor == least(charge_step)
    assert info.payout_increment_minor == least(payout_step)


def test_currencies_stripe_cannot_charge_step_by_one_unit():
    """A currency outside Stripe's list has no Stripe exponent and steps by one minor unit."""
    info = currency_info("IQD")
    assert info.stripe_exponent is None
    assert not info.stripe_chargeable
    assert (info.charge_increment_minor, info.payout_increment_minor) == (1, 1)


# --- limits -------------------------------------------------------------------------------------


def test_stripe_amounts_stay_in_int64():
    """An ISK amount whose x100 leaves int64 is refused as stripe_amount, not sent."""
    assert to_stripe_amount(INT64_MAX // 100, "ISK") == INT64_MAX // 100 * 100
    with pytest.raises(InvalidAmount) as info:
        to_stripe_amount(INT64_MAX // 100 + 1, "ISK")
    assert_error(
        info.value,
        InvalidAmount,
        ["stripe_amount", "outside the signed 64-bit range"],
        {"field": "stripe_amount"},
    )
    assert from_stripe_amount(INT64_MIN, "USD") == INT64_MIN
