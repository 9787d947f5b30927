"""Local prices (one rounding, Stripe units, endings, minimums), quotes and the pack catalogue."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from spaktok_ledger._catalogue import CoinPack, PackCatalogue
from spaktok_ledger._currency import currency_exponent, currency_info, to_stripe_amount
from spaktok_ledger._errors import (
    AmountBelowMinimum,
    InvalidAmount,
    InvalidAmountType,
    InvalidCatalogue,
    InvalidInput,
    QuoteExpired,
    RateStale,
    RateUnavailable,
    UnitsMismatch,
    UnknownCurrency,
    UnknownPack,
    UnsupportedCurrency,
)
from spaktok_ledger._pricing import (
    PriceEnding,
    Quote,
    check_quote_valid,
    check_stripe_minimum,
    local_price,
    make_quote,
)
from spaktok_ledger.fx import FallbackRateProvider, Rate, StaticRateProvider
from tests.strategies import rates, rounding_modes, stripe_currencies, usd_prices

pytestmark = pytest.mark.money

NOW = datetime(2024, 6, 28, 18, 0, tzinfo=UTC)
PUBLISHED = datetime(2024, 6, 28, 16, 0, tzinfo=UTC)

# USD-based rates from the Open Exchange Rates sample (tests/fixtures/fx).
OXR = {
    "EUR": Decimal("0.934143"),
    "GBP": Decimal("0.790636"),
    "JPY": Decimal("160.6165"),
    "KWD": Decimal("0.30672"),
    "HUF": Decimal("368.99"),
    "TWD": Decimal("32.555"),
    "KRW": Decimal("1378.9"),
    "VND": Decimal("25455.0"),
    "INR": Decimal("83.3716"),
    "BRL": Decimal("5.5035"),
    "IDR": Decimal("16335.9"),
}


def clock() -> datetime:
    return NOW


def provider(**overrides: object) -> StaticRateProvider:
    return StaticRateProvider(
        {**OXR, "ISK": Decimal("138.5")},
        published_at=overrides.get("published_at", PUBLISHED),  # type: ignore[arg-type]
        source="openexchangerates",
        clock=clock,
    )


def exact_minor(usd_minor: int, currency: str, rate: Decimal, markup_bps: int = 0) -> Fraction:
    """The unrounded local amount in minor units, computed independently."""
    return (
        Fraction(usd_minor, 100)
        * Fraction(rate)
        * Fraction(10_000 + markup_bps, 10_000)
        * 10 ** currency_exponent(currency)
    )


# --- local_price: examples ------------------------------------------------------


@pytest.mark.parametrize(
    ("usd_minor", "currency", "expected"),
    [
        (499, "EUR", 466),  # 4.661...
        (499, "GBP", 395),  # 3.945...
        (499, "JPY", 801),  # 801.476... whole yen
        (499, "KWD", 1530),  # 1.5305... KWD, rounded to 10 fils
        (499, "HUF", 184126),  # 1841.2601 Ft (two-decimal at Stripe)
        (499, "ISK", 691),  # 691.115 kr, whole kronur
        (499, "KRW", 6881),
        (499, "VND", 127020),
        (499, "IDR", 8151614),
        (499, "USD", 499),
    ],
)
def test_local_price_examples(usd_minor, currency, expected):
    """A USD price converts at the rate and rounds half-up once to the charge increment."""
    rate = Decimal(1) if currency == "USD" else {**OXR, "ISK": Decimal("138.5")}[currency]
    assert local_price(usd_minor, currency, rate) == expected


def test_three_decimal_prices_end_in_zero():
    """KWD prices always land on a multiple of 10 fils, so Stripe accepts them."""
    for usd in range(60, 5000, 37):
        amount = local_price(usd, "KWD", OXR["KWD"], rounding=ROUND_CEILING)
        assert amount % 10 == 0
        assert to_stripe_amount(amount, "KWD") == amount


def test_isk_price_is_sent_times_100():
    """An ISK price is whole kronur in the ledger and x100 for Stripe."""
    amount = local_price(499, "ISK", Decimal("138.5"))
    assert to_stripe_amount(amount, "ISK") == 69100


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(ROUND_HALF_UP, 801), (ROUND_CEILING, 802), (ROUND_FLOOR, 801), (ROUND_DOWN, 801)],
)
def test_rounding_mode_is_named_at_the_call(mode, expected):
    """The caller's rounding mode decides the single rounding."""
    assert local_price(499, "JPY", OXR["JPY"], rounding=mode) == expected


def test_half_modes_on_an_exact_tie():
    """A price exactly halfway between two yen rounds as its mode says."""
    # 1.00 USD at 100.5 JPY/USD is exactly 100.5 yen.
    assert local_price(100, "JPY", Decimal("100.5"), rounding=ROUND_HALF_UP) == 101
    assert local_price(100, "JPY", Decimal("100.5"), rounding=ROUND_HALF_EVEN) == 100


def test_markup_in_basis_points():
    """markup_bps raises the price by that many hundredths of a percent before rounding."""
    assert local_price(499, "EUR", OXR["EUR"], markup_bps=200) == 475  # 4.6614 * 1.02
    assert local_price(10_000, "EUR", Decimal(1), markup_bps=150) == 10_150


def test_usd_prices_carry_no_fx_markup():
    """A USD price involves no conversion, so the FX markup does not apply."""
    assert local_price(999, "USD", Decimal(1), markup_bps=200) == 999
    quote = make_quote(PACK, "USD", provider(), clock, markup_bps=200)
    assert (quote.local_amount_minor, quote.markup_bps) == (499, 0)


def test_rate_object_must_be_usd_to_the_currency():
    """A Rate for another pair is refused."""
    rate = Rate("EUR", "JPY", Decimal("171.94"), "ecb", PUBLISHED, NOW)
    with pytest.raises(InvalidInput):
        local_price(499, "JPY", rate)
    usd_jpy = Rate("USD", "JPY", Decimal("160.6165"), "openexchangerates", PUBLISHED, NOW)
    assert local_price(499, "JPY", usd_jpy) == 801


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"usd_minor": 4.99}, InvalidAmountType),
        ({"usd_minor": 0}, InvalidAmount),
        ({"usd_minor": -499}, InvalidAmount),
        ({"currency": "XAU"}, UnknownCurrency),
        ({"currency": "IQD", "rate": Decimal("1310")}, UnsupportedCurrency),
        ({"currency": "eur"}, UnknownCurrency),
        ({"rate": 0.93}, InvalidInput),
        ({"rate": Decimal(0)}, InvalidInput),
        ({"markup_bps": -1}, InvalidInput),
        ({"markup_bps": 10_001}, InvalidInput),
        ({"markup_bps": 1.5}, InvalidInput),
        ({"currency": "JPY", "rate": OXR["JPY"], "markup_bps": 10_001}, InvalidInput),
        ({"rounding": "up"}, InvalidInput),
        ({"currency": "USD", "rate": Decimal("1.1")}, InvalidInput),
    ],
)
def test_local_price_validates_its_arguments(kwargs, error):
    """Floats, unknown or unsupported currencies and out-of-range arguments are refused."""
    arguments = {"usd_minor": 499, "currency": "EUR", "rate": OXR["EUR"], **kwargs}
    with pytest.raises(error):
        local_price(
            arguments.pop("usd_minor"),
            arguments.pop("currency"),
            arguments.pop("rate"),
            **arguments,
        )


# --- price endings -------------------------------------------------------------------


def test_ninety_nine_endings():
    """ninety_nine() snaps to x.99 with the caller's rounding."""
    ending = PriceEnding.ninety_nine()
    assert local_price(499, "EUR", OXR["EUR"], price_ending=ending) == 499  # 4.66 -> 4.99
    assert local_price(499, "GBP", OXR["GBP"], price_ending=ending) == 399  # 3.95 -> 3.99
    assert local_price(999, "GBP", OXR["GBP"], price_ending=ending, rounding=ROUND_FLOOR) == 699


def test_ninety_nine_in_a_three_decimal_currency_still_ends_in_zero():
    """KWD x.990 keeps the last digit 0."""
    amount = local_price(
        499, "KWD", OXR["KWD"], price_ending=PriceEnding.ninety_nine(), rounding=ROUND_CEILING
    )
    assert amount == 1990


def test_nice_numbers_for_zero_decimal_currencies():
    """nice(2) rounds to two significant digits: nearest with half-up, next with ceiling."""
    nice = PriceEnding.nice(2)
    assert local_price(999, "JPY", OXR["JPY"], price_ending=nice) == 1600
    assert local_price(999, "JPY", OXR["JPY"], price_ending=nice, rounding=ROUND_CEILING) == 1700
    assert local_price(4999, "KRW", OXR["KRW"], price_ending=nice) == 69000
    assert local_price(99, "JPY", OXR["JPY"], price_ending=nice) == 160


def test_whole_units():
    """whole() rounds to whole major units."""
    assert local_price(499, "EUR", OXR["EUR"], price_ending=PriceEnding.whole()) == 500


@pytest.mark.parametrize(
    ("currency", "ending"),
    [
        ("EUR", PriceEnding.ninety_nine()),
        ("GBP", PriceEnding.ninety_nine()),
        ("KWD", PriceEnding(step=Decimal("0.1"), offset=Decimal("0.01"))),
        ("JPY", PriceEnding.nice(2)),
        ("HUF", PriceEnding.nice(2)),
        ("TWD", PriceEnding.nice(2)),
    ],
)
def test_charm_ending_per_currency(currency, ending):
    """charm() picks .99, .x90 or two significant digits by the currency's habits."""
    assert PriceEnding.charm(currency) == ending


def test_ending_must_fit_the_charge_increment():
    """An ending that would break Stripe's KWD last-digit rule is refused."""
    ending = PriceEnding(step=Decimal(1), offset=Decimal("0.001"))
    with pytest.raises(InvalidInput):
        local_price(499, "KWD", OXR["KWD"], price_ending=ending)
    with pytest.raises(InvalidInput):
        local_price(499, "JPY", OXR["JPY"], price_ending=PriceEnding.ninety_nine())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"step": Decimal(0)},
        {"step": Decimal(-1)},
        {"step": 1.0},
        {"offset": Decimal(1)},
        {"offset": Decimal("-0.01")},
        {"significant_digits": 0},
        {"significant_digits": True},
        {"step": Decimal("Infinity")},
    ],
)
def test_price_ending_validates(kwargs):
    """Steps are positive Decimals, 0 <= offset < step, significant digits positive ints."""
    with pytest.raises(InvalidInput):
        PriceEnding(**kwargs)


# --- Stripe minimums ---------------------------------------------------------------------


def test_below_the_usd_minimum():
    """A price under USD 0.50 is refused."""
    with pytest.raises(AmountBelowMinimum):
        local_price(49, "USD", Decimal(1))
    assert local_price(50, "USD", Decimal(1)) == 50


def test_below_the_currencys_own_minimum():
    """A price under Stripe's published minimum for its currency is refused (JPY 50)."""
    with pytest.raises(AmountBelowMinimum, match="minimum charge of 50 JPY") as info:
        local_price(60, "JPY", Decimal(80))  # 48 yen, although worth USD 0.60
    assert info.value.details["minimum_minor"] == 50


def test_rounding_below_the_usd_equivalent_is_refused():
    """Rounding that drops a charge under USD 0.50 at the rate is caught (KWD, JPY)."""
    with pytest.raises(AmountBelowMinimum, match=r"USD 0\.50"):
        local_price(50, "KWD", OXR["KWD"])  # 0.150 KWD = USD 0.489
    assert local_price(50, "KWD", OXR["KWD"], rounding=ROUND_CEILING) == 160
    with pytest.raises(AmountBelowMinimum):
        local_price(50, "JPY", OXR["JPY"])  # 80 yen = USD 0.498
    assert local_price(50, "JPY", OXR["JPY"], rounding=ROUND_CEILING) == 81


def test_minimum_check_can_be_skipped():
    """check_minimum=False prices without Stripe's minimums (for other gateways)."""
    assert local_price(10, "USD", Decimal(1), check_minimum=False) == 10


def test_a_price_that_rounds_to_nothing_is_refused():
    """A positive price that rounds to zero is below any minimum."""
    with pytest.raises(AmountBelowMinimum):
        local_price(1, "KWD", OXR["KWD"], check_minimum=False)


def test_check_stripe_minimum_directly():
    """check_stripe_minimum accepts exact minimums and refuses anything lower."""
    check_stripe_minimum(30, "GBP", Decimal("0.5"))  # 0.30 GBP = USD 0.60
    with pytest.raises(AmountBelowMinimum):
        check_stripe_minimum(29, "GBP", Decimal("0.5"))
    with pytest.raises(AmountBelowMinimum):
        check_stripe_minimum(35, "GBP", Decimal("0.790636"))  # USD 0.44


# --- local_price: properties --------------------------------------------------------------


@given(
    usd_minor=usd_prices,
    currency=stripe_currencies,
    rate=rates,
    markup=st.integers(0, 1000),
    mode=rounding_modes,
)
def test_rounds_once_to_the_charge_increment(usd_minor, currency, rate, markup, mode):
    """The price is a multiple of the charge increment within one increment of the exact value."""
    rate = Decimal(1) if currency == "USD" else rate
    try:
        amount = local_price(
            usd_minor, currency, rate, markup_bps=markup, rounding=mode, check_minimum=False
        )
    except AmountBelowMinimum:
        assume(False)
    increment = currency_info(currency).charge_increment_minor
    # USD prices are not converted, so no FX markup applies to them (docs/pricing.md).
    exact = exact_minor(usd_minor, currency, rate, 0 if currency == "USD" else markup)
    assert amount % increment == 0
    assert abs(amount - exact) < increment
    if mode in (ROUND_HALF_UP, ROUND_HALF_EVEN, ROUND_HALF_DOWN):
        assert abs(amount - exact) <= Fraction(increment, 2)
    if mode in (ROUND_CEILING, ROUND_UP):
        assert amount >= exact
    if mode in (ROUND_FLOOR, ROUND_DOWN):
        assert amount <= exact
    to_stripe_amount(amount, currency)  # Stripe accepts it


@given(usd_minor=usd_prices, rate=rates, low=st.integers(0, 5000), extra=st.integers(0, 5000))
def test_more_markup_never_lowers_the_price(usd_minor, rate, low, extra):
    """Raising the markup never lowers the local price."""
    try:
        first = local_price(usd_minor, "EUR", rate, markup_bps=low, check_minimum=False)
    except AmountBelowMinimum:
        return  # rounds to nothing: no price to compare
    second = local_price(usd_minor, "EUR", rate, markup_bps=low + extra, check_minimum=False)
    assert second >= first


@given(usd_minor=usd_prices, currency=stripe_currencies, rate=rates)
def test_accepted_prices_are_worth_the_usd_minimum(usd_minor, currency, rate):
    """Any price local_price returns is worth at least USD 0.50 at the rate."""
    rate = Decimal(1) if currency == "USD" else rate
    try:
        amount = local_price(usd_minor, currency, rate)
    except AmountBelowMinimum:
        return
    exponent = currency_exponent(currency)
    assert Fraction(amount, 10**exponent) >= Fraction(1, 2) * Fraction(rate)


@given(usd_minor=usd_prices, currency=stripe_currencies, rate=rates, mode=rounding_modes)
def test_charm_endings_are_valid_charges(usd_minor, currency, rate, mode):
    """Charm endings always yield amounts Stripe accepts for the currency."""
    rate = Decimal(1) if currency == "USD" else rate
    try:
        amount = local_price(
            usd_minor,
            currency,
            rate,
            rounding=mode,
            price_ending=PriceEnding.charm(currency),
            check_minimum=False,
        )
    except AmountBelowMinimum:
        return
    assert amount % currency_info(currency).charge_increment_minor == 0
    to_stripe_amount(amount, currency)


# --- catalogue ---------------------------------------------------------------------------------


def test_coin_pack_values():
    """A pack's face value counts bonus coins; P - F is what coin_pricing books."""
    pack = CoinPack("starter", usd_price_minor=499, coins=500, bonus_coins=25, name="Starter")
    assert pack.total_coins == 525
    assert pack.face_value_usd_minor() == 525
    assert pack.pricing_difference_usd_minor() == -26
    assert pack.face_value_usd_minor(coin_value_usd_minor=2) == 1050
    assert CoinPack("plain", 499, 400).pricing_difference_usd_minor() == 99
    assert CoinPack("plain", 499, 400).name == "plain"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": "Bad Id"},
        {"id": ""},
        {"usd_price_minor": 0},
        {"usd_price_minor": 4.99},
        {"usd_price_minor": "499"},
        {"coins": 0},
        {"coins": True},
        {"bonus_coins": -1},
        {"name": 5},
    ],
)
def test_coin_pack_validation(kwargs):
    """Bad ids, non-positive or non-int prices and coin counts raise InvalidCatalogue."""
    arguments = {"id": "starter", "usd_price_minor": 499, "coins": 500, **kwargs}
    with pytest.raises(InvalidCatalogue):
        CoinPack(**arguments)


TOML = """
coin_value_usd_minor = 1

[[packs]]
id = "starter"
name = "Starter"
usd_price_minor = 499
coins = 500

[[packs]]
id = "big"
name = "Big"
usd_price_minor = 4999
coins = 5000
bonus_coins = 500
"""


def test_catalogue_from_toml_and_json_files(tmp_path):
    """The same catalogue loads from a TOML file and from a JSON file."""
    toml_file = tmp_path / "packs.toml"
    toml_file.write_text(TOML, encoding="utf-8")
    from_toml = PackCatalogue.load(toml_file)
    json_file = tmp_path / "packs.json"
    json_file.write_text(json.dumps(from_toml.to_dict()), encoding="utf-8")
    from_json = PackCatalogue.load(json_file)
    assert from_toml == from_json
    assert [pack.id for pack in from_toml] == ["starter", "big"]
    assert len(from_toml) == 2
    assert "big" in from_toml
    assert from_toml.get("big").total_coins == 5500
    assert from_toml.face_value_usd_minor("big") == 5500


def test_catalogue_from_code():
    """A catalogue can be built directly from CoinPack objects."""
    catalogue = PackCatalogue((CoinPack("a", 99, 100), CoinPack("b", 499, 500)), 1)
    assert catalogue.get("a").coins == 100
    with pytest.raises(UnknownPack):
        catalogue.get("c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalogue.coin_value_usd_minor = 2  # type: ignore[misc]


TWO_PACKS_SAME_ID = (
    '[[packs]]\nid = "a"\nusd_price_minor = 499\ncoins = 500\n'
    '[[packs]]\nid = "a"\nusd_price_minor = 999\ncoins = 1000\n'
)
ONE_PACK = '{"id": "a", "usd_price_minor": 499, "coins": 5}'


@pytest.mark.parametrize(
    ("text", "loader"),
    [
        (
            '{"packs": [{"id": "a", "usd_price_minor": 4.99, "coins": 500}]}',
            PackCatalogue.from_json,
        ),
        (
            '{"packs": [{"id": "a", "usd_price_minor": 499, "coins": 5, "price": 1}]}',
            PackCatalogue.from_json,
        ),
        ('{"packs": [{"id": "a", "coins": 500}]}', PackCatalogue.from_json),
        ('{"packs": [], "coin_value_usd_minor": 1}', PackCatalogue.from_json),
        ('{"packs": {"id": "a"}}', PackCatalogue.from_json),
        ('{"packs": ["a"]}', PackCatalogue.from_json),
        (f'{{"packs": [{ONE_PACK}], "currency": "USD"}}', PackCatalogue.from_json),
        (f'{{"packs": [{ONE_PACK}], "coin_value_usd_minor": 0}}', PackCatalogue.from_json),
        ("[1, 2]", PackCatalogue.from_json),
        ("{", PackCatalogue.from_json),
        ('[[packs]]\nid = "a"\nusd_price_minor = 4.99\ncoins = 500\n', PackCatalogue.from_toml),
        (TWO_PACKS_SAME_ID, PackCatalogue.from_toml),
        ("packs = [", PackCatalogue.from_toml),
    ],
)
def test_invalid_catalogues(text, loader):
    """Floats, unknown or missing keys, duplicates, empty lists and bad syntax are refused."""
    with pytest.raises(InvalidCatalogue) as info:
        loader(text)
    assert isinstance(info.value, ValueError)


def test_catalogue_file_suffix(tmp_path):
    """Only .json and .toml catalogue files are read."""
    path = tmp_path / "packs.yaml"
    path.write_text("packs: []", encoding="utf-8")
    with pytest.raises(InvalidCatalogue):
        PackCatalogue.load(path)


def test_catalogue_rejects_non_pack_items():
    """A catalogue holds CoinPack objects only."""
    with pytest.raises(InvalidCatalogue):
        PackCatalogue(({"id": "a"},))  # type: ignore[arg-type]
    with pytest.raises(InvalidCatalogue):
        PackCatalogue("abc")  # type: ignore[arg-type]


# --- quotes --------------------------------------------------------------------------------------

PACK = CoinPack("starter", usd_price_minor=499, coins=500, bonus_coins=25)


def test_make_quote_freezes_the_price_and_its_provenance():
    """A quote records the amount, rate, source, rate times and expiry."""
    quote = make_quote(PACK, "JPY", provider(), clock, locale="ja_JP", id_factory=lambda: "q1")
    assert quote.id == "q1"
    assert (quote.pack_id, quote.coins, quote.bonus_coins) == ("starter", 500, 25)
    assert (quote.usd_price_minor, quote.face_value_usd_minor) == (499, 525)
    assert (quote.currency, quote.local_amount_minor) == ("JPY", 801)
    assert quote.rate == Decimal("160.6165")
    assert quote.rate_source == "openexchangerates"
    assert quote.rate_published_at == PUBLISHED
    assert quote.rate_fetched_at == NOW
    assert quote.created_at == NOW
    assert quote.expires_at == NOW + timedelta(minutes=15)
    assert quote.display == "￥801"
    assert quote.stripe_amount == 801
    assert quote.total_coins == 525


def test_make_quote_options():
    """Markup, rounding, endings, TTL and coin value pass through to the quote."""
    quote = make_quote(
        PACK,
        "EUR",
        provider(),
        clock,
        timedelta(minutes=5),
        markup_bps=150,
        price_ending=PriceEnding.ninety_nine(),
        coin_value_usd_minor=2,
    )
    assert quote.local_amount_minor == 499
    assert quote.markup_bps == 150
    assert quote.expires_at == NOW + timedelta(minutes=5)
    assert quote.face_value_usd_minor == 1050
    assert quote.display is None
    assert quote.id.startswith("quote_")


def test_usd_quote_needs_no_rate():
    """A USD quote uses the identity rate and never asks the provider."""

    class Broken:
        def rate(self, base: str, quote: str) -> Rate:
            raise RateUnavailable("should not be called")

    quote = make_quote(PACK, "USD", Broken(), clock)
    assert (quote.local_amount_minor, quote.rate, quote.rate_source) == (499, 1, "identity")


def test_make_quote_refuses_old_rates():
    """A rate older than max_rate_age raises RateStale even from an uncached provider."""
    old = provider(published_at=NOW - timedelta(days=8))
    with pytest.raises(RateStale):
        make_quote(PACK, "EUR", old, clock)
    quote = make_quote(PACK, "EUR", old, clock, max_rate_age=timedelta(days=30))
    assert quote.rate_published_at == NOW - timedelta(days=8)


def test_make_quote_checks_the_providers_answer():
    """A provider answering another pair is caught."""

    class Wrong:
        def rate(self, base: str, quote: str) -> Rate:
            return Rate("EUR", quote, Decimal(1), "wrong", NOW, NOW)

    with pytest.raises(InvalidInput):
        make_quote(PACK, "JPY", Wrong(), clock)


def test_make_quote_through_a_fallback_chain():
    """Quotes work with any RateProvider, such as a fallback chain."""
    chain = FallbackRateProvider([StaticRateProvider({}, clock=clock), provider()])
    assert make_quote(PACK, "KWD", chain, clock).local_amount_minor == 1530


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": timedelta(0)}, {"locale": "xx_YY"}, {"markup_bps": -5}, {"currency": "usd"}],
)
def test_make_quote_validates(kwargs):
    """Bad TTLs, locales, markups and currencies are refused before pricing."""
    arguments = {"currency": "EUR", **kwargs}
    with pytest.raises((InvalidInput, UnknownCurrency)):
        make_quote(PACK, arguments.pop("currency"), provider(), clock, **arguments)


def test_make_quote_below_minimum():
    """A pack too cheap for Stripe in the chosen currency cannot be quoted."""
    with pytest.raises(AmountBelowMinimum):
        make_quote(CoinPack("tiny", 50, 50), "JPY", provider(), clock)


def test_quote_expiry():
    """check_quote_valid passes before expires_at and raises QuoteExpired from then on."""
    quote = make_quote(PACK, "EUR", provider(), clock)
    check_quote_valid(quote, NOW + timedelta(minutes=14, seconds=59))
    with pytest.raises(QuoteExpired) as info:
        check_quote_valid(quote, quote.expires_at)
    assert info.value.details["quote_id"] == quote.id
    with pytest.raises(InvalidInput):
        check_quote_valid(quote, datetime(2024, 6, 28, 18, 5))


def test_quote_json_round_trip():
    """to_dict is JSON-safe and from_dict rebuilds an equal quote."""
    quote = make_quote(PACK, "KWD", provider(), clock, locale="ar_KW")
    data = json.loads(json.dumps(quote.to_dict()))
    assert data["rate"] == "0.30672"
    assert data["created_at"] == "2024-06-28T18:00:00+00:00"
    assert Quote.from_dict(data) == quote


@pytest.mark.parametrize(
    "change",
    [
        {"rate": 0.30672},
        {"rate": "abc"},
        {"created_at": "yesterday"},
        {"created_at": "2024-06-28T18:00:00"},
        {"expires_at": "2024-06-28T17:00:00+00:00"},
        {"local_amount_minor": True},
        {"local_amount_minor": 0},
        {"coins": -1},
        {"currency": "XYZ"},
        {"extra": 1},
        {"id": ""},
    ],
)
def test_quote_from_dict_rejects_bad_data(change):
    """from_dict refuses wrong types, naive or inverted times and unknown keys."""
    data = make_quote(PACK, "EUR", provider(), clock).to_dict() | change
    with pytest.raises((InvalidInput, InvalidAmount, UnknownCurrency)):
        Quote.from_dict(data)


def test_quote_from_dict_requires_keys():
    """A quote record missing a required field is refused."""
    data = make_quote(PACK, "EUR", provider(), clock).to_dict()
    del data["rate"]
    with pytest.raises(InvalidInput):
        Quote.from_dict(data)
    with pytest.raises(InvalidInput):
        Quote.from_dict([1, 2])  # type: ignore[arg-type]


def test_isk_quote_stripe_amount():
    """A quote's stripe_amount applies Stripe's units (ISK x100)."""
    quote = make_quote(PACK, "ISK", provider(), clock)
    assert (quote.local_amount_minor, quote.stripe_amount) == (691, 69100)


@given(
    usd=usd_prices,
    currency=st.sampled_from(sorted(OXR)),
    markup=st.integers(0, 500),
    ttl_minutes=st.integers(1, 120),
)
def test_quote_round_trip_property(usd, currency, markup, ttl_minutes):
    """Every quote survives a JSON round trip unchanged."""
    pack = CoinPack("p", usd_price_minor=usd, coins=usd)
    try:
        quote = make_quote(
            pack, currency, provider(), clock, timedelta(minutes=ttl_minutes), markup_bps=markup
        )
    except AmountBelowMinimum:
        return
    assert Quote.from_dict(json.loads(json.dumps(quote.to_dict()))) == quote


def test_quote_records_its_exponent():
    """A quote carries the exponent its amount is written in; one from another table is refused."""
    quote = make_quote(PACK, "HUF", provider(), clock)
    assert quote.exponent == 2
    assert quote.to_dict()["exponent"] == 2
    legacy = quote.to_dict()
    del legacy["exponent"]  # written by 0.1.0: the table's exponent is assumed
    assert Quote.from_dict(legacy) == quote
    with pytest.raises(UnitsMismatch, match="migrate-units"):
        Quote.from_dict(quote.to_dict() | {"exponent": 0})
    with pytest.raises(InvalidInput):
        Quote.from_dict(quote.to_dict() | {"exponent": "2"})


def test_quote_display_is_what_is_charged():
    """A quote's display shows every charged digit, even where CLDR shows whole units."""
    quote = make_quote(PACK, "ALL", StaticRateProvider({"ALL": "92.5301"}, clock=clock), clock,
                       locale="en_US")
    assert quote.local_amount_minor == 46173  # 4.99 x 92.5301 = 461.7252 -> 461.73
    assert quote.display == "ALL461.73"


def test_a_locale_currency_outside_the_table_is_quoted_in_usd(monkeypatch):
    """CLDR may name a currency the ISO table lacks (gold, an old code): the viewer gets USD."""
    from spaktok_ledger._service import _quotes

    assert _quotes.quote_currency(currency=None, locale="hu_HU") == "HUF"
    monkeypatch.setattr(_quotes, "default_currency_for_locale", lambda _locale: "XAU")
    assert _quotes.quote_currency(currency=None, locale="hu_HU") == "USD"
