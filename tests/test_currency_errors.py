"""Errors of the currency functions: the type, the facts in the message, and the details."""

from __future__ import annotations

import sys
from decimal import ROUND_HALF_UP, Decimal

import pytest
from moneyed import Money

from spaktok_ledger._currency import (
    _codes,
    check_rounding,
    currency_info,
    from_money,
    from_stripe_amount,
    known_currencies,
    stripe_exponent,
    to_major,
    to_minor,
    to_money,
    to_stripe_amount,
    validate_currency,
)
from spaktok_ledger._errors import (
    InvalidAmount,
    InvalidAmountType,
    InvalidInput,
    UnknownCurrency,
    UnsupportedCurrency,
)
from tests.errors import assert_error

pytestmark = pytest.mark.money


def test_code_lists_split_on_whitespace():
    """Stripe's currency lists are written as whitespace-separated codes."""
    assert _codes("JPY  KRW\nVND") == frozenset({"JPY", "KRW", "VND"})


# --- validate_currency ------------------------------------------------------------------


@pytest.mark.parametrize("code", ["usd", "US", "USDT", 840, None])
def test_malformed_codes(code):
    """A code that is not three upper-case letters is refused, quoting it."""
    with pytest.raises(UnknownCurrency) as info:
        validate_currency(code)
    assert_error(
        info.value,
        UnknownCurrency,
        [],
        {},
        message=f"currency must be a 3-letter ISO 4217 code, got {code!r}",
    )


def test_unknown_code():
    """A well-formed code ISO does not list is refused with the code in details."""
    with pytest.raises(UnknownCurrency) as info:
        validate_currency("ZZZ")
    assert_error(
        info.value, UnknownCurrency, [], {"currency": "ZZZ"}, message="unknown currency code 'ZZZ'"
    )


def test_code_without_minor_unit():
    """Gold has an ISO code but no minor unit: refused, saying why, with the code in details."""
    with pytest.raises(UnknownCurrency) as info:
        validate_currency("XAU")
    assert_error(
        info.value,
        UnknownCurrency,
        ["XAU has no minor unit in ISO 4217", "cannot hold amounts in it"],
        {"currency": "XAU"},
    )


# --- Stripe conversions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: stripe_exponent("IQD"),
        lambda: to_stripe_amount(100, "IQD"),
        lambda: from_stripe_amount(100, "IQD"),
    ],
)
def test_currency_stripe_cannot_charge(call):
    """A currency outside Stripe's list is UnsupportedCurrency with the code in details."""
    with pytest.raises(UnsupportedCurrency) as info:
        call()
    assert_error(
        info.value,
        UnsupportedCurrency,
        [],
        {"currency": "IQD"},
        message="Stripe cannot charge in IQD",
    )


def test_charge_off_stripes_grid():
    """A KWD charge whose last digit is not 0 names the rule, the amount and the currency."""
    with pytest.raises(InvalidAmount) as info:
        to_stripe_amount(5124, "KWD")
    assert_error(
        info.value,
        InvalidAmount,
        [],
        {"currency": "KWD", "amount_minor": 5124},
        message="a Stripe charge in KWD must be a multiple of 10 in Stripe's units; "
        "5124 minor units is 5124",
    )


def test_payout_off_stripes_grid():
    """A HUF payout with fillér is refused, showing the amount in Stripe's units."""
    with pytest.raises(InvalidAmount) as info:
        to_stripe_amount(1045, "HUF", kind="payout")
    assert_error(
        info.value,
        InvalidAmount,
        ["a Stripe payout in HUF must be a multiple of 100", "1045 minor units is 1045"],
        {"currency": "HUF", "amount_minor": 1045},
    )


def test_amount_finer_than_stripes_unit():
    """An MGA amount with fractions of an ariary cannot be sent (Stripe takes whole ariary)."""
    with pytest.raises(InvalidAmount) as info:
        to_stripe_amount(550, "MGA")
    assert_error(
        info.value,
        InvalidAmount,
        [],
        {"currency": "MGA"},
        message="550 is not a whole number of MGA units at this exponent",
    )


def test_amount_from_stripe_finer_than_the_ledger():
    """A legacy fractional ISK amount from Stripe is refused, naming the currency."""
    with pytest.raises(InvalidAmount) as info:
        from_stripe_amount(50050, "ISK")
    assert_error(
        info.value,
        InvalidAmount,
        [],
        {"currency": "ISK"},
        message="50050 is not a whole number of ISK units at this exponent",
    )


@pytest.mark.parametrize("bad", [19.99, "1999", True])
def test_stripe_amount_of_the_wrong_type(bad):
    """What comes from Stripe is checked as stripe_amount."""
    with pytest.raises(InvalidAmountType) as info:
        from_stripe_amount(bad, "USD")
    assert_error(
        info.value,
        InvalidAmountType,
        [f"stripe_amount must be an int number of minor units, not {type(bad).__name__}"],
        {"field": "stripe_amount"},
    )


# --- major <-> minor ------------------------------------------------------------------------


def test_rounding_mode_must_be_a_decimal_constant():
    """An unknown rounding mode is quoted back."""
    for bad in ["up", None, 1]:
        with pytest.raises(InvalidInput) as info:
            check_rounding(bad)
        assert_error(
            info.value,
            InvalidInput,
            [],
            {},
            message=f"rounding must be one of the decimal.ROUND_* constants, got {bad!r}",
        )
    assert check_rounding(ROUND_HALF_UP) == ROUND_HALF_UP


def test_float_major_amount():
    """A float major amount is refused as the wrong type, saying floats are never money."""
    with pytest.raises(InvalidAmountType) as info:
        to_minor(19.99, "USD")  # type: ignore[arg-type]
    assert_error(
        info.value,
        InvalidAmountType,
        [],
        {"field": "amount"},
        message="amount must be a Decimal or int of major units, not float "
        "(floats are never money)",
    )


@pytest.mark.parametrize(
    ("bad", "type_name"), [("19.99", "str"), (True, "bool"), (None, "NoneType")]
)
def test_other_major_amount_types(bad, type_name):
    """Other types are refused naming the type, without the float remark."""
    with pytest.raises(InvalidAmountType) as info:
        to_minor(bad, "USD")
    assert_error(
        info.value,
        InvalidAmountType,
        [],
        {"field": "amount"},
        message=f"amount must be a Decimal or int of major units, not {type_name}",
    )


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_major_amount(bad):
    """NaN and infinities are not amounts."""
    with pytest.raises(InvalidAmount) as info:
        to_minor(Decimal(bad), "EUR")
    assert_error(
        info.value,
        InvalidAmount,
        [],
        {"field": "amount"},
        message=f"amount must be finite, got {Decimal(bad)}",
    )


def test_too_many_decimals_without_rounding():
    """More decimals than the currency has, without a rounding mode, names both and the fix."""
    with pytest.raises(InvalidAmount) as info:
        to_minor(Decimal("1.5"), "JPY")
    assert_error(
        info.value,
        InvalidAmount,
        [],
        {"currency": "JPY"},
        message="1.5 JPY has more than 0 decimals; pass rounding= to round",
    )


def test_minor_amount_of_the_wrong_type():
    """to_major checks its argument as amount_minor."""
    with pytest.raises(InvalidAmountType) as info:
        to_major(1.5, "USD")  # type: ignore[arg-type]
    assert_error(info.value, InvalidAmountType, ["amount_minor"], {"field": "amount_minor"})


# --- py-moneyed -----------------------------------------------------------------------------


def test_to_money_without_the_extra(monkeypatch: pytest.MonkeyPatch):
    """Without py-moneyed, to_money says which extra installs it."""
    monkeypatch.setitem(sys.modules, "moneyed", None)
    with pytest.raises(ModuleNotFoundError) as info:
        to_money(1999, "USD")
    assert str(info.value) == (
        "to_money() needs the 'moneyed' package, which the 'moneyed' extra installs: "
        "pip install 'spaktok-ledger[moneyed]'"
    )


def test_to_money_currency_moneyed_lacks():
    """A currency the table knows but py-moneyed does not is UnsupportedCurrency, naming it."""
    from moneyed import CURRENCIES

    code = sorted(code for code in known_currencies() if code not in CURRENCIES)[0]
    with pytest.raises(UnsupportedCurrency) as info:
        to_money(100, code)
    assert_error(
        info.value,
        UnsupportedCurrency,
        [],
        {"currency": code},
        message=f"py-moneyed does not know {code}",
    )


def test_from_money_refuses_other_types():
    """from_money names the type it was given."""
    with pytest.raises(InvalidAmountType) as info:
        from_money(Decimal("1.00"))  # type: ignore[arg-type]
    assert_error(
        info.value, InvalidAmountType, [], {}, message="expected a moneyed.Money, not Decimal"
    )
    assert from_money(Money("1.005", "USD"), rounding=ROUND_HALF_UP) == (101, "USD")


def test_currency_info_refuses_unknown_codes():
    """currency_info validates before it looks anything up."""
    with pytest.raises(UnknownCurrency):
        currency_info("usd")
