"""Currency exponents, Stripe units, major/minor conversions and py-moneyed interop."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import inspect
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Decimal,
)

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from moneyed import Money, get_currency

import spaktok_ledger._currency as currency_module
import spaktok_ledger._iso4217 as iso_module
from spaktok_ledger._currency import (
    EXPONENT_TABLE_VERSION,
    STRIPE_MINIMUM_CHARGE,
    STRIPE_PRESENTMENT_CURRENCIES,
    STRIPE_THREE_DECIMAL_CURRENCIES,
    STRIPE_ZERO_DECIMAL_CURRENCIES,
    currency_exponent,
    currency_info,
    from_money,
    from_stripe_amount,
    is_stripe_chargeable,
    known_currencies,
    stripe_charge_increment,
    stripe_exponent,
    stripe_minimum_charge_minor,
    stripe_payout_increment,
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
from spaktok_ledger._iso4217 import (
    MINOR_UNITS,
    NO_MINOR_UNIT,
    TABLE_PUBLISHED,
    WITHDRAWN,
)
from tests.strategies import currencies, int64s, minor_amounts, rounding_modes, stripe_currencies

pytestmark = pytest.mark.money

# Stripe's published zero-decimal list (docs.stripe.com/currencies#zero-decimal).
STRIPE_DOCS_ZERO_DECIMAL = [
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


# --- the table ---------------------------------------------------------------


def test_validate_currency_keeps_its_contract():
    """validate_currency returns known upper-case codes and refuses anything else."""
    assert validate_currency("USD") == "USD"
    assert "EUR" in known_currencies()
    for bad in ["usd", "US", "ZZZ", 840, None, "DEM"]:
        with pytest.raises(UnknownCurrency):
            validate_currency(bad)


@pytest.mark.parametrize("code", sorted(NO_MINOR_UNIT))
def test_codes_without_a_minor_unit_are_not_ledger_currencies(code):
    """ISO codes whose minor unit is N.A. (gold, SDR, XXX) are refused, saying why."""
    assert code not in known_currencies()
    with pytest.raises(UnknownCurrency, match="no minor unit"):
        validate_currency(code)


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("ISK", 0),
        ("UGX", 0),
        ("HUF", 2),
        ("IDR", 2),
        ("TWD", 2),
        ("COP", 2),
        ("ALL", 2),
        ("LAK", 2),
        ("RSD", 2),
        ("MGA", 2),
        ("IQD", 3),
        ("LYD", 3),
        ("CLF", 4),
        ("UYW", 4),
        ("XCG", 2),
        ("BGN", 2),
        ("BYR", 0),
    ],
)
def test_currency_exponent_is_iso_4217_minor_units(currency, exponent):
    """The ledger's exponent is ISO 4217's minor units (List One, or the withdrawn code's)."""
    assert currency_exponent(currency) == exponent
    assert currency_info(currency).exponent == exponent


def test_huf_amounts_never_change_meaning():
    """The issue's example: 7 376,04 Ft is 737604 minor units, whatever CLDR shows."""
    assert to_minor(Decimal("7376.04"), "HUF") == 737604
    assert to_major(737604, "HUF") == Decimal("7376.04")
    assert to_stripe_amount(737604, "HUF") == 737604


def test_exponents_do_not_depend_on_babel(monkeypatch):
    """A CLDR release that shows other decimals (babel 2.19: HUF/IDR whole units) changes nothing."""
    import babel.numbers

    before = {code: currency_exponent(code) for code in known_currencies()}
    currency_module._info.cache_clear()
    monkeypatch.setattr(babel.numbers, "get_currency_precision", lambda code: 0)
    try:
        assert {code: currency_exponent(code) for code in known_currencies()} == before
        assert to_minor(Decimal("7376.04"), "HUF") == 737604
    finally:
        currency_module._info.cache_clear()


@pytest.mark.parametrize("module", [currency_module, iso_module])
def test_the_units_modules_import_no_formatting_library(module):
    """_currency and _iso4217 import neither babel nor anything else outside the core."""
    tree = ast.parse(inspect.getsource(module))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {name for name in imported if name.split(".")[0] == "babel"}


def test_table_records_its_source_and_version():
    """The table names its ISO 4217 publication and a version derived from it."""
    assert f"iso4217-{TABLE_PUBLISHED}" == EXPONENT_TABLE_VERSION
    datetime.date.fromisoformat(TABLE_PUBLISHED)
    assert "List One" in iso_module.TABLE_SOURCE
    assert not set(MINOR_UNITS) & NO_MINOR_UNIT
    assert all(0 <= units <= 4 for units in MINOR_UNITS.values())


def test_table_matches_the_iso4217_package():
    """Cross-check with the ``iso4217`` package (SIX's List One XML): same codes, same minor units.

    Fails when the installed package carries a newer ISO list than the
    library's table: a new ISO amendment must be reviewed, given a new
    ``TABLE_VERSION`` and a CHANGELOG entry (and ``migrate-units`` for any
    currency whose minor units changed).
    """
    iso4217 = pytest.importorskip("iso4217")
    published = iso4217.__published__.isoformat()
    theirs = {c.code: c.exponent for c in iso4217.Currency}
    ours = {code: units for code, units in MINOR_UNITS.items() if code not in WITHDRAWN}
    assert published == TABLE_PUBLISHED, (
        f"the iso4217 package carries the ISO 4217 list of {published}; the library's table "
        f"is {EXPONENT_TABLE_VERSION}: review the amendment and update _iso4217.py"
    )
    assert ours == {code: units for code, units in theirs.items() if units is not None}
    assert {code for code, units in theirs.items() if units is None} == NO_MINOR_UNIT
    assert not set(WITHDRAWN) & set(theirs)


@pytest.mark.parametrize(("code", "info"), sorted(WITHDRAWN.items()))
def test_withdrawn_codes_stay_readable(code, info):
    """Amounts stored in a withdrawn code (BGN, HRK...) still convert, and say when it went."""
    assert validate_currency(code) == code
    assert currency_info(code).withdrawn == info.withdrawn
    assert to_major(10**info.minor_units, code) == 1
    if info.successor is not None:
        assert info.successor in MINOR_UNITS and info.successor not in WITHDRAWN


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("USD", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("KWD", 3),
        ("TND", 3),
        ("ISK", 2),
        ("UGX", 2),
        ("HUF", 2),
        ("TWD", 2),
        ("IDR", 2),
    ],
)
def test_stripe_exponent_follows_stripe(currency, exponent):
    """Stripe exponents follow Stripe's zero-decimal, three-decimal and special-case lists."""
    assert stripe_exponent(currency) == exponent


def test_zero_decimal_currencies_pass_through_except_ugx_and_mga():
    """Stripe's zero-decimal currencies are sent as-is, except UGX (x100) and MGA (ISO: 2 decimals)."""
    for code in STRIPE_DOCS_ZERO_DECIMAL:
        minor = 500 if code == "MGA" else 5
        expected = 500 if code == "UGX" else 5
        assert to_stripe_amount(minor, code) == expected, code
    assert set(STRIPE_DOCS_ZERO_DECIMAL) - {"UGX"} == STRIPE_ZERO_DECIMAL_CURRENCIES


def test_mga_charges_are_whole_ariary():
    """MGA has two ISO decimals but Stripe takes whole ariary: the step is 100 minor units."""
    assert stripe_charge_increment("MGA") == 100
    assert from_stripe_amount(5, "MGA") == 500
    with pytest.raises(InvalidAmount):
        to_stripe_amount(550, "MGA")


def test_three_decimal_charges_must_end_in_zero():
    """A three-decimal charge is refused unless its last digit is 0."""
    assert {"BHD", "JOD", "KWD", "OMR", "TND"} == STRIPE_THREE_DECIMAL_CURRENCIES
    for code in STRIPE_THREE_DECIMAL_CURRENCIES:
        assert to_stripe_amount(5120, code) == 5120
        with pytest.raises(InvalidAmount):
            to_stripe_amount(5124, code)
        assert stripe_charge_increment(code) == 10


def test_isk_is_whole_kronur_sent_times_100():
    """ISK amounts are whole kronur in the ledger and x100 for Stripe, and back."""
    assert to_stripe_amount(5, "ISK") == 500
    assert from_stripe_amount(500, "ISK") == 5
    assert stripe_charge_increment("ISK") == 1


def test_fractional_stripe_amount_the_ledger_cannot_hold_is_refused():
    """A legacy fractional ISK amount from Stripe raises instead of rounding silently."""
    with pytest.raises(InvalidAmount):
        from_stripe_amount(50050, "ISK")


def test_cldr_whole_unit_currencies_pass_through_to_stripe():
    """Currencies CLDR shows without decimals have two ISO decimals, as at Stripe: unchanged."""
    for code in ["ALL", "AFN", "LAK", "LBP", "MMK", "RSD", "SOS", "YER", "HUF", "IDR"]:
        assert currency_exponent(code) == 2
        assert to_stripe_amount(700, code) == 700
        assert from_stripe_amount(700, code) == 700


def test_huf_and_twd_payouts_are_whole_units():
    """HUF and TWD charge two-decimal amounts but pay out only multiples of 100."""
    for code in ["HUF", "TWD"]:
        assert to_stripe_amount(1045, code) == 1045
        assert to_stripe_amount(1000, code, kind="payout") == 1000
        with pytest.raises(InvalidAmount):
            to_stripe_amount(1045, code, kind="payout")
        assert stripe_payout_increment(code) == 100
        assert stripe_charge_increment(code) == 1


def test_unsupported_currencies_raise():
    """Currencies Stripe cannot charge raise UnsupportedCurrency in every Stripe function."""
    assert not is_stripe_chargeable("IQD")
    assert not is_stripe_chargeable("CLF")
    for function in (stripe_exponent, stripe_charge_increment, stripe_payout_increment):
        with pytest.raises(UnsupportedCurrency):
            function("IQD")
    with pytest.raises(UnsupportedCurrency):
        to_stripe_amount(100, "IQD")
    with pytest.raises(UnsupportedCurrency):
        from_stripe_amount(100, "IQD")
    with pytest.raises(UnknownCurrency):
        is_stripe_chargeable("XAU")


def test_presentment_list_is_in_the_exponent_table():
    """Every Stripe presentment currency has ISO minor units in the library's table."""
    assert known_currencies() >= STRIPE_PRESENTMENT_CURRENCIES
    assert {"USD", "EUR", "JPY", "KWD", "ISK", "UGX", "HUF"} <= STRIPE_PRESENTMENT_CURRENCIES


@pytest.mark.parametrize(
    ("currency", "minimum"),
    [
        ("USD", 50),
        ("EUR", 50),
        ("GBP", 30),
        ("JPY", 50),
        ("HUF", 17500),
        ("MXN", 1000),
        ("THB", 1000),
        ("CZK", 1500),
        ("KWD", None),
        ("ISK", None),
    ],
)
def test_stripe_minimum_charge_in_minor_units(currency, minimum):
    """Stripe's minimum charge table converts to minor units at the ISO exponent."""
    assert stripe_minimum_charge_minor(currency) == minimum


def test_stripe_minimum_table_is_in_major_units():
    """The minimum table holds Decimal major units (USD 0.50, JPY 50)."""
    assert STRIPE_MINIMUM_CHARGE["USD"] == Decimal("0.50")
    assert STRIPE_MINIMUM_CHARGE["JPY"] == Decimal(50)


def test_currency_info_is_a_frozen_record():
    """currency_info returns an immutable record with every view of the currency."""
    info = currency_info("KWD")
    assert (info.exponent, info.stripe_exponent, info.stripe_charge_step) == (3, 3, 10)
    assert info.stripe_chargeable
    assert info.withdrawn is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.exponent = 2  # type: ignore[misc]
    assert currency_info("IQD").stripe_exponent is None


# --- major <-> minor ----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("19.99"), "USD", 1999),
        (Decimal("1500"), "JPY", 1500),
        (Decimal("1.230"), "KWD", 1230),
        (Decimal("5"), "ISK", 5),
        (7, "EUR", 700),
        (Decimal("-0.05"), "USD", -5),
        (Decimal("0"), "USD", 0),
    ],
)
def test_to_minor_examples(amount, currency, minor):
    """Exact major amounts convert to minor units at the ISO exponent."""
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [
        (1999, "USD", "19.99"),
        (1500, "JPY", "1500"),
        (1230, "KWD", "1.230"),
        (5, "ISK", "5"),
        (-5, "USD", "-0.05"),
    ],
)
def test_to_major_examples(minor, currency, major):
    """Minor units convert to a Decimal written at the ISO exponent."""
    result = to_major(minor, currency)
    assert result == Decimal(major)
    assert str(result) == major


@pytest.mark.parametrize("bad", [19.99, 0.0, True, "19.99", None, [1]])
def test_to_minor_refuses_non_decimals(bad):
    """Floats, bools, strings and other types are refused with InvalidAmountType."""
    with pytest.raises(InvalidAmountType) as info:
        to_minor(bad, "USD")
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("bad", [1.5, True, Decimal("1.5"), "1"])
def test_to_major_refuses_non_integers(bad):
    """to_major accepts only integral minor units."""
    with pytest.raises(InvalidAmount):
        to_major(bad, "USD")


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_to_minor_refuses_non_finite(bad):
    """NaN and infinities are not amounts."""
    with pytest.raises(InvalidAmount):
        to_minor(bad, "USD")


def test_to_minor_without_rounding_refuses_excess_decimals():
    """Without a rounding mode, sub-minor precision raises instead of rounding."""
    with pytest.raises(InvalidAmount):
        to_minor(Decimal("0.125"), "USD")
    with pytest.raises(InvalidAmount):
        to_minor(Decimal("1.5"), "JPY")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (ROUND_HALF_UP, 13),
        (ROUND_HALF_EVEN, 12),
        (ROUND_DOWN, 12),
        (ROUND_CEILING, 13),
        (ROUND_FLOOR, 12),
    ],
)
def test_to_minor_rounds_with_the_named_mode(mode, expected):
    """With a rounding mode, the amount is rounded once with that mode."""
    assert to_minor(Decimal("0.125"), "USD", rounding=mode) == expected


def test_to_minor_refuses_unknown_rounding_modes():
    """A rounding argument that is not a decimal.ROUND_* constant is refused."""
    with pytest.raises(InvalidInput):
        to_minor(Decimal("0.125"), "USD", rounding="nearest")


def test_to_minor_refuses_amounts_outside_int64():
    """Amounts beyond signed 64-bit range are refused."""
    with pytest.raises(InvalidAmount):
        to_minor(Decimal(2**63), "USD")


@given(minor=int64s, currency=currencies)
def test_minor_major_round_trip(minor, currency):
    """to_minor(to_major(x)) == x for every int64 amount and every currency."""
    major = to_major(minor, currency)
    assert isinstance(major, Decimal)
    assert major.as_tuple().exponent == -currency_exponent(currency)
    assert to_minor(major, currency) == minor


@given(
    major=st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, places=6),
    currency=currencies,
    mode=rounding_modes,
)
def test_rounded_to_minor_is_within_one_unit(major, currency, mode):
    """A rounded conversion lands within one minor unit of the exact value."""
    minor = to_minor(major, currency, rounding=mode)
    assert abs(Decimal(minor) - major.scaleb(currency_exponent(currency))) < 1


# --- Stripe units: properties ---------------------------------------------------


@given(currency=stripe_currencies, units=minor_amounts(-(10**12), 10**12))
def test_stripe_round_trip(currency, units):
    """Chargeable amounts survive to_stripe_amount/from_stripe_amount unchanged."""
    minor = units * stripe_charge_increment(currency)
    sent = to_stripe_amount(minor, currency)
    assert from_stripe_amount(sent, currency) == minor
    assert sent % currency_info(currency).stripe_charge_step == 0


@given(currency=st.sampled_from(sorted(STRIPE_THREE_DECIMAL_CURRENCIES)), minor=minor_amounts())
def test_three_decimal_last_digit_rule(currency, minor):
    """A three-decimal amount reaches Stripe only when it ends in 0."""
    if minor % 10 == 0:
        assert to_stripe_amount(minor, currency) % 10 == 0
    else:
        with pytest.raises(InvalidAmount):
            to_stripe_amount(minor, currency)


@given(currency=stripe_currencies, minor=minor_amounts(0, 10**12))
def test_stripe_amount_has_the_same_major_value(currency, minor):
    """The Stripe integer and the ledger's minor units denote the same major amount."""
    assume(minor % stripe_charge_increment(currency) == 0)
    sent = to_stripe_amount(minor, currency)
    assert Decimal(sent).scaleb(-stripe_exponent(currency)) == to_major(minor, currency)


def test_stripe_conversions_refuse_floats():
    """Stripe conversions take ints only."""
    with pytest.raises(InvalidAmountType):
        to_stripe_amount(19.99, "USD")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountType):
        from_stripe_amount(1999.0, "USD")  # type: ignore[arg-type]


# --- py-moneyed -----------------------------------------------------------------


def test_money_round_trip():
    """to_money and from_money convert both ways at our exponents."""
    money = to_money(1999, "USD")
    assert money == Money("19.99", "USD")
    assert from_money(money) == (1999, "USD")
    assert from_money(to_money(1230, "KWD")) == (1230, "KWD")


@pytest.mark.parametrize(("currency", "sub_unit"), [("IQD", 1000), ("MGA", 100), ("ALL", 100)])
def test_money_amounts_use_the_iso_table(currency, sub_unit):
    """Money interop converts at the ISO exponent (py-moneyed's sub_unit agrees for these)."""
    assert get_currency(currency).sub_unit == 10 ** currency_exponent(currency) == sub_unit
    assert to_money(1500, currency).amount == Decimal(1500) / sub_unit
    assert from_money(Money(Decimal(15), currency)) == (15 * sub_unit, currency)


def test_from_money_refuses_sub_minor_amounts_unless_rounding():
    """A Money amount finer than the ISO exponent needs an explicit rounding mode."""
    with pytest.raises(InvalidAmount):
        from_money(Money("1.5", "JPY"))
    assert from_money(Money("1.5", "JPY"), rounding=ROUND_HALF_UP) == (2, "JPY")


def test_from_money_refuses_other_types():
    """from_money takes a moneyed.Money only."""
    with pytest.raises(InvalidAmountType):
        from_money(Decimal("1.00"))  # type: ignore[arg-type]


def test_to_money_unknown_to_moneyed_is_unsupported():
    """A currency the table knows but py-moneyed does not raises UnsupportedCurrency."""
    missing = sorted(code for code in known_currencies() if not _moneyed_knows(code))
    assert missing, "expected at least one ISO code py-moneyed lacks"
    with pytest.raises(UnsupportedCurrency):
        to_money(100, missing[0])


def _moneyed_knows(code: str) -> bool:
    from moneyed import CURRENCIES

    return code in CURRENCIES


@given(minor=minor_amounts(), currency=st.sampled_from(["USD", "EUR", "JPY", "KWD", "ISK"]))
def test_money_round_trip_property(minor, currency):
    """from_money(to_money(x, c)) == (x, c)."""
    assert from_money(to_money(minor, currency)) == (minor, currency)
