"""local_price's rules as properties and edge cases: endings, significant digits, markups,
minimums, and the errors each refusal raises (type, message, details)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
)
from fractions import Fraction

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import spaktok_ledger._pricing as pricing_module
from spaktok_ledger._currency import currency_exponent, currency_info
from spaktok_ledger._errors import (
    AmountBelowMinimum,
    InvalidAmount,
    InvalidAmountType,
    InvalidInput,
    UnsupportedCurrency,
)
from spaktok_ledger._pricing import (
    MAX_MARKUP_BPS,
    PriceEnding,
    _magnitude,
    check_stripe_minimum,
    local_price,
)
from spaktok_ledger.fx import Rate
from tests.errors import assert_error
from tests.strategies import rates, rounding_modes, stripe_currencies, usd_prices

pytestmark = pytest.mark.money

EUR = Decimal("0.934143")
JPY = Decimal("160.6165")
KWD = Decimal("0.30672")
T = datetime(2024, 6, 28, 16, 0, tzinfo=UTC)
HALF = (ROUND_HALF_UP, ROUND_HALF_EVEN, ROUND_HALF_DOWN)
UP = (ROUND_CEILING, ROUND_UP)
DOWN = (ROUND_FLOOR, ROUND_DOWN)


def exact_minor(usd_minor: int, currency: str, rate: Decimal, markup_bps: int = 0) -> Fraction:
    """The unrounded local price in minor units (no markup on USD, which is not converted)."""
    markup = 0 if currency == "USD" else markup_bps
    return (
        Fraction(usd_minor, 100)
        * Fraction(rate)
        * Fraction(10_000 + markup, 10_000)
        * 10 ** currency_exponent(currency)
    )


def magnitude(value: Fraction) -> int:
    """floor(log10(value)), read off a decimal expansion long enough to be exact here."""
    return Context(prec=200).divide(Decimal(value.numerator), Decimal(value.denominator)).adjusted()


def assert_rounded_onto(amount: int, exact: Fraction, step: int, offset: int, mode: str) -> None:
    """``amount`` is on the grid k·step - offset, on the side of ``exact`` the mode asks for."""
    assert (amount + offset) % step == 0
    assert abs(amount - exact) < step
    if mode in HALF:
        assert abs(amount - exact) <= Fraction(step, 2)
    if mode in UP:
        assert amount >= exact
    if mode in DOWN:
        assert amount <= exact


# --- the magnitude of a price ---------------------------------------------------------------


@given(
    numerator=st.integers(1, 10**15),
    denominator=st.integers(1, 10**15),
)
def test_magnitude_brackets_the_value(numerator, denominator):
    """10**m <= value < 10**(m+1), for values far below and far above one unit."""
    value = Fraction(numerator, denominator)
    m = _magnitude(value)
    assert Fraction(10) ** m <= value < Fraction(10) ** (m + 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(1), 0),
        (Fraction(10), 1),
        (Fraction(9, 1), 0),
        (Fraction(1, 2), -1),
        (Fraction(1, 10), -1),
        (Fraction(99, 1000), -2),
        (Fraction(1, 10**9), -9),
        (Fraction(10**12 - 1), 11),
    ],
)
def test_magnitude_examples(value, expected):
    """Powers of ten belong to their own decade; sub-unit values have negative magnitudes."""
    assert _magnitude(value) == expected


# --- significant digits ----------------------------------------------------------------------


@given(
    usd_minor=usd_prices,
    currency=stripe_currencies,
    rate=rates,
    digits=st.integers(1, 4),
    mode=rounding_modes,
)
def test_nice_keeps_the_significant_digits_asked_for(usd_minor, currency, rate, digits, mode):
    """nice(d) lands on a multiple of 10**(magnitude + 1 - d) major units, at least one unit."""
    rate = Decimal(1) if currency == "USD" else rate
    try:
        amount = local_price(
            usd_minor,
            currency,
            rate,
            rounding=mode,
            price_ending=PriceEnding.nice(digits),
            check_minimum=False,
        )
    except AmountBelowMinimum:
        assume(False)
    exponent = currency_exponent(currency)
    exact = exact_minor(usd_minor, currency, rate)
    step_major = max(Fraction(1), Fraction(10) ** (magnitude(exact / 10**exponent) + 1 - digits))
    step = step_major * 10**exponent
    assert step.denominator == 1
    assert_rounded_onto(amount, exact, int(step), 0, mode)


def test_nice_on_two_decimal_currencies():
    """nice(2) works in major units for EUR: 46.70 -> 47.00, 467.06 -> 470.00, 4.66 -> 5.00."""
    nice = PriceEnding.nice(2)
    assert local_price(4999, "EUR", EUR, price_ending=nice) == 4700
    assert local_price(49999, "EUR", EUR, price_ending=nice) == 47000
    assert local_price(499, "EUR", EUR, price_ending=nice) == 500
    assert local_price(499999, "EUR", EUR, price_ending=nice) == 470000


def test_nice_defaults_to_two_digits():
    """PriceEnding.nice() is two significant digits on a one-unit step."""
    assert PriceEnding.nice() == PriceEnding(step=Decimal(1), significant_digits=2)
    assert PriceEnding.nice(3) == PriceEnding(step=Decimal(1), significant_digits=3)


def test_one_significant_digit():
    """significant_digits=1 is allowed: 1,604.5 yen is 2,000 (nearest) or 1,000 (floor)."""
    one = PriceEnding.nice(1)
    assert one.significant_digits == 1
    assert local_price(999, "JPY", JPY, price_ending=one) == 2000
    assert local_price(999, "JPY", JPY, price_ending=one, rounding=ROUND_FLOOR) == 1000


def test_significant_digits_below_one_unit():
    """With a cent step, significant digits apply below one euro: 0.467 -> 0.47 (magnitude -1)."""
    ending = PriceEnding(step=Decimal("0.01"), significant_digits=2)
    assert local_price(50, "EUR", EUR, price_ending=ending, check_minimum=False) == 47
    ending = PriceEnding(step=Decimal("0.01"), significant_digits=1)
    assert local_price(50, "EUR", EUR, price_ending=ending, check_minimum=False) == 50
    assert local_price(5, "EUR", EUR, price_ending=ending, check_minimum=False) == 5


@given(usd_minor=st.integers(1, 10**7))
@example(usd_minor=1)
def test_digit_step_can_lift_a_finer_base_step(usd_minor):
    """With one significant digit, a price of a cent or more has a step of at least a cent, so a
    base step of a tenth of a cent is never used (one cent exactly included)."""
    ending = PriceEnding(step=Decimal("0.001"), significant_digits=1)
    amount = local_price(usd_minor, "USD", Decimal(1), price_ending=ending, check_minimum=False)
    exact = Fraction(usd_minor)
    step = 10 ** magnitude(exact)
    assert_rounded_onto(amount, exact, step, 0, ROUND_HALF_UP)


# --- endings -----------------------------------------------------------------------------------


ENDINGS = [
    ("EUR", PriceEnding.ninety_nine()),
    ("GBP", PriceEnding.ninety_nine()),
    ("EUR", PriceEnding(step=Decimal(5), offset=Decimal("0.05"))),
    ("KWD", PriceEnding(step=Decimal("0.1"), offset=Decimal("0.01"))),
    ("KWD", PriceEnding.ninety_nine()),
    ("JPY", PriceEnding(step=Decimal(100), offset=Decimal(1))),
    ("USD", PriceEnding(step=Decimal(1), offset=Decimal("0.05"))),
]


@given(
    usd_minor=usd_prices,
    case=st.sampled_from(ENDINGS),
    rate=rates,
    mode=rounding_modes,
)
def test_endings_round_once_onto_their_grid(usd_minor, case, rate, mode):
    """An ending's price is k·step - offset: never below the exact price when rounding up,
    never above it when rounding down, the nearest ending with a half mode."""
    currency, ending = case
    rate = Decimal(1) if currency == "USD" else rate
    try:
        amount = local_price(
            usd_minor, currency, rate, rounding=mode, price_ending=ending, check_minimum=False
        )
    except AmountBelowMinimum:
        assume(False)
    exponent = currency_exponent(currency)
    step = int(ending.step.scaleb(exponent))
    offset = int(ending.offset.scaleb(exponent))
    assert_rounded_onto(amount, exact_minor(usd_minor, currency, rate), step, offset, mode)


def test_ninety_nine_rounds_up_past_the_half():
    """4.495 EUR is nearer 4.99 than 3.99: a .99 ending counts the offset before rounding."""
    ending = PriceEnding.ninety_nine()
    # 449.5 cents exactly (rate 1): halfway between 3.99 and 4.99 is 4.49.
    assert local_price(4495, "EUR", Decimal("0.1"), price_ending=ending) == 499
    assert local_price(4485, "EUR", Decimal("0.1"), price_ending=ending) == 399
    assert (
        local_price(4995, "EUR", Decimal("0.1"), price_ending=ending, rounding=ROUND_CEILING) == 599
    )


def test_ninety_nine_is_on_a_one_unit_step():
    """ninety_nine() steps by one major unit."""
    assert PriceEnding.ninety_nine() == PriceEnding(step=Decimal(1), offset=Decimal("0.01"))
    assert PriceEnding.whole() == PriceEnding(step=Decimal(1))


def test_charm_follows_the_iso_exponent_even_if_cldr_shows_decimals(monkeypatch):
    """A zero-decimal currency gets nice(2) from its ISO exponent, whatever CLDR's cash digits say;
    other currencies follow CLDR's cash digits."""
    monkeypatch.setattr(pricing_module, "display_digits", lambda code, cash=False: 2)
    assert PriceEnding.charm("JPY") == PriceEnding.nice(2)
    assert PriceEnding.charm("HUF") == PriceEnding.ninety_nine()
    assert PriceEnding.charm("KWD") == PriceEnding(step=Decimal("0.1"), offset=Decimal("0.01"))
    monkeypatch.setattr(pricing_module, "display_digits", lambda code, cash=False: 0)
    assert PriceEnding.charm("EUR") == PriceEnding.nice(2)


# --- markups -----------------------------------------------------------------------------------


@given(usd_minor=usd_prices, markup=st.integers(0, MAX_MARKUP_BPS), mode=rounding_modes)
def test_usd_prices_never_carry_a_markup(usd_minor, markup, mode):
    """A USD price is the list price, whatever the markup and rounding."""
    assert local_price(usd_minor, "USD", Decimal(1), markup_bps=markup, rounding=mode) == usd_minor


@given(usd_minor=usd_prices, markup=st.integers(0, MAX_MARKUP_BPS), rate=rates)
def test_markup_scales_the_exact_price(usd_minor, markup, rate):
    """Every markup from 0 to 10,000 bps is applied exactly once before the one rounding."""
    amount = local_price(
        usd_minor, "EUR", rate, markup_bps=markup, rounding=ROUND_CEILING, check_minimum=False
    )
    exact = exact_minor(usd_minor, "EUR", rate, markup)
    assert exact <= amount < exact + 1


def test_markup_edges():
    """0 and 10,000 bps (double) are the ends; 1 bps shows on a large enough price."""
    assert local_price(499, "EUR", Decimal(1), markup_bps=0) == 499
    assert local_price(499, "EUR", Decimal(1), markup_bps=MAX_MARKUP_BPS) == 998
    assert local_price(100_000, "EUR", Decimal(1), markup_bps=1) == 100_010
    assert local_price(100_000, "USD", Decimal(1), markup_bps=1) == 100_000


@pytest.mark.parametrize(
    ("markup", "message"),
    [
        (-1, "markup_bps must be between 0 and 10000, got -1"),
        (10_001, "markup_bps must be between 0 and 10000, got 10001"),
        (1.5, "markup_bps must be an int, not float"),
        (True, "markup_bps must be an int, not bool"),
    ],
)
def test_markup_out_of_range(markup, message):
    """A markup outside 0..10,000 bps or not an int is refused, quoting it."""
    with pytest.raises(InvalidInput) as info:
        local_price(499, "EUR", EUR, markup_bps=markup)
    assert_error(info.value, InvalidInput, [], {}, message=message)


# --- tiny prices and minimums --------------------------------------------------------------------


def test_one_cent_prices():
    """A one-cent price is a price when minimums are not checked, in USD and after conversion."""
    assert local_price(1, "USD", Decimal(1), check_minimum=False) == 1
    assert local_price(1, "EUR", Decimal(1), check_minimum=False) == 1
    assert local_price(1, "JPY", Decimal(100), check_minimum=False) == 1


def test_a_price_that_rounds_to_nothing():
    """One US cent in KWD rounds to 0 fils: refused, naming the currency."""
    with pytest.raises(AmountBelowMinimum) as info:
        local_price(1, "KWD", KWD, check_minimum=False)
    assert_error(
        info.value,
        AmountBelowMinimum,
        [],
        {"currency": "KWD"},
        message="USD 0.01 rounds to nothing in KWD",
    )


def test_currencys_own_minimum():
    """Below Stripe's own minimum for the currency: amount, minimum and currency in details."""
    with pytest.raises(AmountBelowMinimum) as info:
        check_stripe_minimum(29, "GBP", Decimal("0.5"))
    assert_error(
        info.value,
        AmountBelowMinimum,
        [],
        {"currency": "GBP", "amount_minor": 29, "minimum_minor": 30},
        message="0.29 GBP is below Stripe's minimum charge of 0.30 GBP",
    )


def test_usd_equivalent_minimum():
    """Below USD 0.50 at the rate: amount, currency and the USD minimum in details."""
    with pytest.raises(AmountBelowMinimum) as info:
        check_stripe_minimum(150, "KWD", KWD)
    assert_error(
        info.value,
        AmountBelowMinimum,
        [],
        {"currency": "KWD", "amount_minor": 150, "minimum_usd_minor": 50},
        message="0.150 KWD is worth less than Stripe's minimum charge of USD 0.50 at the rate 0.30672",
    )


def test_minimum_with_a_rate_object():
    """check_stripe_minimum takes a Rate as well as a Decimal, and checks its pair."""
    rate = Rate("USD", "EUR", Decimal("0.9"), "static", T, T)
    check_stripe_minimum(50, "EUR", rate)  # EUR 0.50: its own minimum, and USD 0.56
    with pytest.raises(AmountBelowMinimum) as info:
        check_stripe_minimum(49, "EUR", rate)
    assert info.value.details["minimum_minor"] == 50
    ecb = Rate("EUR", "USD", Decimal("1.07"), "ecb", T, T)
    with pytest.raises(InvalidInput) as info:
        check_stripe_minimum(50, "EUR", ecb)
    assert_error(
        info.value,
        InvalidInput,
        [],
        {"currency": "EUR"},
        message="expected a USD->EUR rate, got EUR->USD",
    )


@given(amount=st.integers(1, 10**9), currency=stripe_currencies, rate=rates)
def test_minimum_is_exactly_the_usd_half_dollar(amount, currency, rate):
    """check_stripe_minimum passes iff the amount reaches the currency's own minimum and USD 0.50."""
    rate = Decimal(1) if currency == "USD" else rate
    info = currency_info(currency)
    worth = Fraction(amount, 10**info.exponent) / Fraction(rate)
    own = info.stripe_minimum_charge_minor
    expected = worth >= Fraction(1, 2) and (own is None or amount >= own)
    try:
        check_stripe_minimum(amount, currency, rate)
    except AmountBelowMinimum:
        assert not expected
    else:
        assert expected


def test_usd_rate_must_be_one():
    """A USD->USD rate other than 1 is refused, quoting it."""
    with pytest.raises(InvalidInput) as info:
        check_stripe_minimum(50, "USD", Decimal("1.1"))
    assert_error(info.value, InvalidInput, [], {}, message="the USD->USD rate is 1, got 1.1")


# --- local_price's other refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd_minor", "cls", "message"),
    [
        (0, InvalidAmount, "usd_minor must not be zero"),
        (-499, InvalidAmount, "usd_minor must be positive, got -499"),
        (2**63, InvalidAmount, f"usd_minor {2**63} is outside the signed 64-bit range"),
        (4.99, InvalidAmountType, "usd_minor must be an int number of minor units, not float"),
    ],
)
def test_usd_price_refusals(usd_minor, cls, message):
    """The USD price is checked as usd_minor: positive int cents."""
    with pytest.raises(cls) as info:
        local_price(usd_minor, "EUR", EUR)
    assert_error(info.value, cls, [message], {"field": "usd_minor"})


def test_currency_stripe_cannot_charge():
    """A currency Stripe cannot charge is refused before any arithmetic."""
    with pytest.raises(UnsupportedCurrency) as info:
        local_price(499, "IQD", Decimal(1310))
    assert_error(
        info.value,
        UnsupportedCurrency,
        [],
        {"currency": "IQD"},
        message="Stripe cannot charge in IQD",
    )


# --- PriceEnding's own checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": Decimal(0)}, "step must be positive, got 0"),
        ({"step": Decimal(-1)}, "step must be positive, got -1"),
        ({"step": 1.0}, "step must be a Decimal, not float"),
        ({"step": Decimal("Infinity")}, "step must be finite, got Infinity"),
        ({"offset": 0.5}, "offset must be a Decimal, not float"),
        ({"offset": Decimal("NaN")}, "offset must be finite, got NaN"),
        ({"offset": Decimal(1)}, "offset must satisfy 0 <= offset < step, got 1"),
        ({"offset": Decimal("-0.01")}, "offset must satisfy 0 <= offset < step, got -0.01"),
        ({"significant_digits": 0}, "significant_digits must be a positive int, got 0"),
        ({"significant_digits": True}, "significant_digits must be a positive int, got True"),
        ({"significant_digits": 2.0}, "significant_digits must be a positive int, got 2.0"),
    ],
)
def test_price_ending_refusals(kwargs, message):
    """Each invalid field is named with its value."""
    with pytest.raises(InvalidInput) as info:
        PriceEnding(**kwargs)
    assert_error(info.value, InvalidInput, [], {}, message=message)


def test_price_ending_accepts_ints():
    """Whole numbers may be given as ints; they are kept as Decimals."""
    ending = PriceEnding(step=5, offset=0)  # type: ignore[arg-type]
    assert (ending.step, ending.offset) == (Decimal(5), Decimal(0))
    assert isinstance(ending.step, Decimal)


@pytest.mark.parametrize(
    ("currency", "ending", "message"),
    [
        (
            "KWD",
            PriceEnding(step=Decimal(1), offset=Decimal("0.001")),
            "price ending offset 0.001 is not a multiple of the currency's charge increment "
            "(10 minor units)",
        ),
        (
            "JPY",
            PriceEnding.ninety_nine(),
            "price ending offset 0.01 is not a multiple of the currency's charge increment "
            "(1 minor units)",
        ),
        (
            "KWD",
            PriceEnding(step=Decimal("0.005")),
            "price ending step 0.005 is not a multiple of the currency's charge increment "
            "(10 minor units)",
        ),
        (
            "EUR",
            PriceEnding(step=Decimal("0.001")),
            "price ending step 0.001 is not a multiple of the currency's charge increment "
            "(1 minor units)",
        ),
    ],
)
def test_ending_off_the_charge_grid(currency, ending, message):
    """An ending Stripe could not charge is refused, naming the part and the increment."""
    rate = {"KWD": KWD, "JPY": JPY, "EUR": EUR}[currency]
    with pytest.raises(InvalidInput) as info:
        local_price(4999, currency, rate, price_ending=ending)
    assert_error(info.value, InvalidInput, [], {}, message=message)
