"""Quotes: what make_quote passes on, the limits a Quote enforces, and the errors of each
refusal (type, message, details)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import pytest

from spaktok_ledger._catalogue import CoinPack
from spaktok_ledger._errors import (
    InvalidAmount,
    InvalidAmountType,
    InvalidInput,
    QuoteExpired,
    RateStale,
    UnitsMismatch,
)
from spaktok_ledger._pricing import Quote, check_quote_valid, local_price, make_quote
from spaktok_ledger.fx import Rate, StaticRateProvider
from tests.errors import assert_error

pytestmark = pytest.mark.money

NOW = datetime(2024, 6, 28, 18, 0, tzinfo=UTC)
PUBLISHED = datetime(2024, 6, 28, 16, 0, tzinfo=UTC)
PACK = CoinPack("starter", usd_price_minor=499, coins=500, bonus_coins=25)
RATES = {"EUR": Decimal("0.934143"), "JPY": Decimal("160.6165"), "HUF": Decimal("368.99")}


def clock() -> datetime:
    return NOW


def provider(published_at: datetime = PUBLISHED) -> StaticRateProvider:
    return StaticRateProvider(
        RATES, published_at=published_at, source="openexchangerates", clock=clock
    )


def quote_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "q1",
        "pack_id": "starter",
        "coins": 500,
        "bonus_coins": 25,
        "usd_price_minor": 499,
        "face_value_usd_minor": 525,
        "currency": "EUR",
        "local_amount_minor": 466,
        "rate": Decimal("0.934143"),
        "markup_bps": 0,
        "rate_source": "openexchangerates",
        "rate_published_at": PUBLISHED,
        "rate_fetched_at": NOW,
        "created_at": NOW,
        "expires_at": NOW + timedelta(minutes=15),
    }
    return fields | changes


# --- make_quote passes its options on --------------------------------------------------------


def test_make_quote_prices_with_the_markup_and_rounding_given():
    """The quoted amount is local_price with the same markup and rounding, not the defaults."""
    rate = RATES["JPY"]
    quote = make_quote(PACK, "JPY", provider(), clock, markup_bps=250, rounding=ROUND_CEILING)
    expected = local_price(499, "JPY", rate, markup_bps=250, rounding=ROUND_CEILING)
    assert quote.local_amount_minor == expected == 822  # 801.476... x 1.025 = 821.5 -> 822
    assert local_price(499, "JPY", rate, markup_bps=250) != local_price(499, "JPY", rate)
    assert (
        make_quote(PACK, "JPY", provider(), clock, rounding=ROUND_CEILING).local_amount_minor == 802
    )
    assert quote.markup_bps == 250


def test_make_quote_records_the_locale():
    """The locale a quote was made for is stored on it (canonical CLDR form), with the display."""
    quote = make_quote(PACK, "JPY", provider(), clock, locale="ja-JP")
    assert quote.locale == "ja_JP"
    assert quote.display == "￥801"


def test_rate_exactly_as_old_as_allowed_is_used():
    """max_rate_age is inclusive: a rate published exactly that long ago still prices."""
    age = timedelta(days=7)
    quote = make_quote(PACK, "EUR", provider(published_at=NOW - age), clock, max_rate_age=age)
    assert quote.rate_published_at == NOW - age


def test_rate_older_than_allowed():
    """One second past max_rate_age the quote is refused, naming the source and the time."""
    published = NOW - timedelta(days=7, seconds=1)
    with pytest.raises(RateStale) as info:
        make_quote(PACK, "EUR", provider(published_at=published), clock)
    assert_error(
        info.value,
        RateStale,
        [],
        {"source": "openexchangerates", "published_at": published.isoformat()},
        message="openexchangerates USD->EUR rate was published at "
        f"{published.isoformat()}, over the 7 days, 0:00:00 limit",
    )


class AnswersWith:
    def __init__(self, base: str, quote: str) -> None:
        self.base, self.quote = base, quote

    def rate(self, base: str, quote: str) -> Rate:
        return Rate(self.base, self.quote, Decimal(1), "wrong", NOW, NOW)


@pytest.mark.parametrize(("base", "quote"), [("EUR", "JPY"), ("USD", "EUR")])
def test_provider_answering_another_pair(base, quote):
    """A provider that answers another base or another quote currency is caught by name."""
    with pytest.raises(InvalidInput) as info:
        make_quote(PACK, "JPY", AnswersWith(base, quote), clock)
    assert_error(
        info.value, InvalidInput, [], {}, message=f"provider answered {base}->{quote} for USD->JPY"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": timedelta(0)}, "ttl must be a positive timedelta, got datetime.timedelta(0)"),
        (
            {"ttl": timedelta(seconds=-1)},
            "ttl must be a positive timedelta, got datetime.timedelta(days=-1, seconds=86399)",
        ),
        ({"ttl": 900}, "ttl must be a positive timedelta, got 900"),
    ],
)
def test_make_quote_ttl(kwargs, message):
    """The TTL must be a positive timedelta."""
    with pytest.raises(InvalidInput) as info:
        make_quote(PACK, "EUR", provider(), clock, **kwargs)
    assert_error(info.value, InvalidInput, [], {}, message=message)


def test_make_quote_pack_type():
    """make_quote takes a CoinPack and names what it got instead."""
    with pytest.raises(InvalidInput) as info:
        make_quote({"id": "starter"}, "EUR", provider(), clock)  # type: ignore[arg-type]
    assert_error(info.value, InvalidInput, [], {}, message="pack must be a CoinPack, not dict")


def test_make_quote_clock_must_be_aware():
    """A clock answering a naive time is named as clock()."""
    with pytest.raises(InvalidInput) as info:
        make_quote(PACK, "EUR", provider(), lambda: datetime(2024, 6, 28, 18, 0))
    assert_error(
        info.value,
        InvalidInput,
        [],
        {},
        message="clock() must be a timezone-aware datetime, got "
        "datetime.datetime(2024, 6, 28, 18, 0)",
    )


# --- a Quote's own limits -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["id", "pack_id", "rate_source"])
def test_quote_strings(name):
    """Ids and the rate source are non-empty strings of at most 255 characters."""
    assert getattr(Quote(**quote_fields(**{name: "a" * 255})), name) == "a" * 255
    for bad in ["", "a" * 256, 5, None]:
        with pytest.raises(InvalidInput) as info:
            Quote(**quote_fields(**{name: bad}))
        assert_error(
            info.value, InvalidInput, [], {}, message=f"quote {name} must be a non-empty string"
        )


@pytest.mark.parametrize(
    "name", ["coins", "bonus_coins", "usd_price_minor", "face_value_usd_minor"]
)
def test_quote_counts(name):
    """Coin counts and USD amounts are int minor units, checked under their own names."""
    assert getattr(Quote(**quote_fields(**{name: 0})), name) == 0
    with pytest.raises(InvalidInput) as info:
        Quote(**quote_fields(**{name: -1}))
    assert_error(info.value, InvalidInput, [], {}, message=f"quote {name} must not be negative")
    with pytest.raises(InvalidAmountType) as info:
        Quote(**quote_fields(**{name: 1.5}))
    assert_error(
        info.value,
        InvalidAmountType,
        [f"{name} must be an int number of minor units, not float"],
        {"field": name},
    )


def test_quote_amount_is_positive():
    """A quoted amount of zero or less is refused; one minor unit is a quote."""
    assert Quote(**quote_fields(local_amount_minor=1)).local_amount_minor == 1
    with pytest.raises(InvalidAmount) as info:
        Quote(**quote_fields(local_amount_minor=0))
    assert_error(
        info.value,
        InvalidAmount,
        [],
        {"field": "local_amount_minor"},
        message="local_amount_minor must not be zero",
    )
    with pytest.raises(InvalidInput) as info:
        Quote(**quote_fields(local_amount_minor=-466))
    assert_error(
        info.value, InvalidInput, [], {}, message="quote local_amount_minor must be positive"
    )


def test_quote_written_at_another_exponent():
    """A quote stored under another table's exponent is UnitsMismatch, with both exponents."""
    with pytest.raises(UnitsMismatch) as info:
        Quote(**quote_fields(currency="HUF", local_amount_minor=1841, exponent=0))
    assert_error(
        info.value,
        UnitsMismatch,
        [],
        {"currency": "HUF", "stored_exponent": 0, "expected_exponent": 2},
        message="quote q1 holds HUF amounts at exponent 0; this library's table "
        "(iso4217-2026-01-01) uses 2: rescale stored quotes with `spaktok-ledger migrate-units`",
    )


@pytest.mark.parametrize(
    "name", ["rate_published_at", "rate_fetched_at", "created_at", "expires_at"]
)
def test_quote_times_are_aware(name):
    """Each time must carry a timezone; the message names the field."""
    with pytest.raises(InvalidInput) as info:
        Quote(**quote_fields(**{name: datetime(2024, 6, 28, 18, 0)}))
    assert_error(
        info.value,
        InvalidInput,
        [],
        {},
        message=f"quote {name} must be a timezone-aware datetime",
    )


def test_quote_must_expire_after_it_is_made():
    """expires_at equal to created_at is already expired: refused."""
    with pytest.raises(InvalidInput) as info:
        Quote(**quote_fields(expires_at=NOW))
    assert_error(
        info.value, InvalidInput, [], {}, message="quote expires_at must be after created_at"
    )
    assert Quote(**quote_fields(expires_at=NOW + timedelta(microseconds=1))).is_expired(
        NOW + timedelta(microseconds=1)
    )


@pytest.mark.parametrize("name", ["locale", "display"])
def test_quote_optional_strings(name):
    """locale and display are strings or None."""
    assert getattr(Quote(**quote_fields(**{name: None})), name) is None
    with pytest.raises(InvalidInput) as info:
        Quote(**quote_fields(**{name: 5}))
    assert_error(info.value, InvalidInput, [], {}, message=f"quote {name} must be a string or None")


def test_expiry_check_needs_an_aware_time():
    """is_expired names its argument when given a naive time."""
    quote = Quote(**quote_fields())
    with pytest.raises(InvalidInput) as info:
        quote.is_expired(datetime(2024, 6, 28, 18, 5))
    assert_error(
        info.value, InvalidInput, [], {}, message="quote now must be a timezone-aware datetime"
    )


def test_expired_quote():
    """QuoteExpired names the quote and its expiry, in the message and the details."""
    quote = Quote(**quote_fields())
    with pytest.raises(QuoteExpired) as info:
        check_quote_valid(quote, NOW + timedelta(minutes=15))
    assert_error(
        info.value,
        QuoteExpired,
        [],
        {"quote_id": "q1", "expires_at": "2024-06-28T18:15:00+00:00"},
        message="quote q1 expired at 2024-06-28T18:15:00+00:00",
    )


# --- reading quotes back ------------------------------------------------------------------------


def test_from_dict_without_the_optional_keys():
    """locale, display and exponent may be absent (quotes written before 0.2.0)."""
    data = Quote(**quote_fields()).to_dict()
    for key in ("locale", "display", "exponent"):
        del data[key]
    assert Quote.from_dict(data) == Quote(**quote_fields())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a quote must be a mapping"),
        ({"id": "q1"}, "quote keys: missing ['bonus_coins', 'coins', 'created_at', "),
    ],
)
def test_from_dict_shape(data, message):
    """Something that is not a quote record is refused, saying what is wrong with it."""
    with pytest.raises(InvalidInput) as info:
        Quote.from_dict(data)
    assert str(info.value).startswith(message)
    assert_error(info.value, InvalidInput, [message], {})


def test_from_dict_keys():
    """Missing and unknown keys are both listed, sorted."""
    data = Quote(**quote_fields()).to_dict()
    del data["rate"]
    data["price"] = 1
    with pytest.raises(InvalidInput) as info:
        Quote.from_dict(data)
    assert_error(
        info.value, InvalidInput, [], {}, message="quote keys: missing ['rate'], unknown ['price']"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": 0.93}, "quote rate must be a decimal string"),
        ({"created_at": "yesterday"}, "quote created_at must be an ISO 8601 string"),
        ({"expires_at": None}, "quote expires_at must be an ISO 8601 string"),
        ({"coins": "500"}, "quote coins must be an integer"),
        ({"markup_bps": True}, "quote markup_bps must be an integer"),
        ({"exponent": "2"}, "quote exponent must be an integer"),
    ],
)
def test_from_dict_values(change, message):
    """Each malformed value is named."""
    data = Quote(**quote_fields()).to_dict() | change
    with pytest.raises(InvalidInput) as info:
        Quote.from_dict(data)
    assert_error(info.value, InvalidInput, [], {}, message=message)
