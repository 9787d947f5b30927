"""Pricing: USD list prices -> local charge amounts, and quotes.

Pure: no I/O. The coin packs being priced live in :mod:`spaktok_ledger._catalogue`.

How a USD price becomes a local price (:func:`local_price`)
-----------------------------------------------------------

1. The USD price (cents), the rate (a ``Decimal``) and the markup factor
   ``(10_000 + markup_bps) / 10_000`` are multiplied **exactly**, as
   rationals (``fractions.Fraction``): no intermediate rounding at all.
2. The exact local amount is rounded **once**, with the ``rounding`` mode
   named at the call, to the currency's *Stripe charge increment*: whole
   yen for JPY, 10 fils for KWD (Stripe wants the last digit 0), one cent
   for EUR, one krona for ISK. With a :class:`PriceEnding` the same single
   rounding snaps to the ending instead (``4.99``, ``1,800`` yen).
3. The result is refused with ``AmountBelowMinimum`` when Stripe would not
   charge it: below the USD 0.50 minimum at the quoted rate (the platform
   settles in USD), or below Stripe's own minimum for that currency when it
   publishes one (``STRIPE_MINIMUM_CHARGE``).

>>> from decimal import Decimal
>>> local_price(499, "JPY", Decimal("160.6165"))
801
>>> local_price(499, "KWD", Decimal("0.30672"))
1530
>>> local_price(499, "EUR", Decimal("0.934143"), price_ending=PriceEnding.ninety_nine())
499
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, Final

from spaktok_ledger._catalogue import CoinPack
from spaktok_ledger._currency import (
    EXPONENT_TABLE_VERSION,
    check_rounding,
    currency_exponent,
    currency_info,
    stripe_minimum_charge_minor,
    to_major,
    to_stripe_amount,
    validate_currency,
)
from spaktok_ledger._errors import (
    AmountBelowMinimum,
    InvalidAmount,
    InvalidInput,
    QuoteExpired,
    RateStale,
    UnitsMismatch,
    UnsupportedCurrency,
)
from spaktok_ledger._format import display_digits, format_price, parse_locale
from spaktok_ledger._money import check_minor
from spaktok_ledger.fx._rates import (
    Clock,
    Rate,
    RateProvider,
    check_aware,
    check_rate_value,
    utc_now,
)

__all__ = [
    "DEFAULT_MAX_RATE_AGE",
    "DEFAULT_QUOTE_TTL",
    "MAX_MARKUP_BPS",
    "USD_MINIMUM_CHARGE_MINOR",
    "PriceEnding",
    "Quote",
    "check_quote_valid",
    "check_stripe_minimum",
    "local_price",
    "make_quote",
]

DEFAULT_QUOTE_TTL: Final = timedelta(minutes=15)
"""How long a displayed price stays chargeable."""

DEFAULT_MAX_RATE_AGE: Final = timedelta(days=7)
"""A backstop in :func:`make_quote`: even an uncached provider's rate may not be older."""

MAX_MARKUP_BPS: Final = 10_000
"""FX markups run from 0 to 100 %."""

USD_MINIMUM_CHARGE_MINOR: Final = 50
"""Stripe's minimum charge in the USD settlement currency: $0.50."""


def _round(value: Fraction, rounding: str) -> int:
    """Round an exact rational to an integer with a ``decimal.ROUND_*`` mode, exactly.

    Every mode depends only on the integer part, whether a fraction remains,
    and which side of one half it falls; a ``Decimal`` stand-in with the same
    three facts (``floor + 0``, ``0.25``, ``0.5`` or ``0.75``) rounds the same.
    """
    floor, remainder = divmod(value.numerator, value.denominator)
    twice = 2 * remainder
    if remainder == 0:
        tail = Decimal(0)
    elif twice < value.denominator:
        tail = Decimal("0.25")
    elif twice == value.denominator:
        tail = Decimal("0.5")
    else:
        tail = Decimal("0.75")
    return int((Decimal(floor) + tail).to_integral_value(rounding=rounding))


def _magnitude(value: Fraction) -> int:
    """The exponent m with 10**m <= value < 10**(m+1), for a positive value."""
    m = len(str(value.numerator)) - len(str(value.denominator))
    while Fraction(10) ** m > value:
        m -= 1
    while Fraction(10) ** (m + 1) <= value:
        m += 1
    return m


def _check_markup(markup_bps: object) -> int:
    if isinstance(markup_bps, bool) or not isinstance(markup_bps, int):
        raise InvalidInput(f"markup_bps must be an int, not {type(markup_bps).__name__}")
    if not 0 <= markup_bps <= MAX_MARKUP_BPS:
        raise InvalidInput(f"markup_bps must be between 0 and {MAX_MARKUP_BPS}, got {markup_bps}")
    return markup_bps


def _check_decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise InvalidInput(f"{name} must be a Decimal, not {type(value).__name__}")
    result = Decimal(value)
    if not result.is_finite():
        raise InvalidInput(f"{name} must be finite, got {result}")
    return result


@dataclass(frozen=True, slots=True)
class PriceEnding:
    """Snap a price to ``k · step - offset`` (major units) with the call's single rounding.

    * ``PriceEnding.ninety_nine()`` — ``step=1, offset=0.01``: 4.99, 5.99...
      (in KWD: 4.990, still a multiple of 10 fils).
    * ``PriceEnding.whole()`` — whole major units.
    * ``PriceEnding.nice(2)`` — two significant digits (¥1,721 -> ¥1,700,
      or ¥1,800 with ``rounding=ROUND_CEILING``); ``step`` is then the
      smallest step allowed.
    * ``PriceEnding.charm(currency)`` — a sensible default per currency:
      ``.99`` for EUR/USD-like currencies, ``nice(2)`` for JPY-like ones.

    ``k`` is ``(exact + offset) / step`` rounded with the caller's mode, so
    ``ROUND_HALF_UP`` picks the nearest ending and ``ROUND_CEILING`` the next
    one up. Step and offset must be whole multiples of the currency's Stripe
    charge increment, else ``InvalidInput``.

    >>> PriceEnding.ninety_nine()
    PriceEnding(step=Decimal('1'), offset=Decimal('0.01'), significant_digits=None)
    """

    step: Decimal = Decimal(1)
    """Prices are multiples of this many major units (before the offset)."""
    offset: Decimal = Decimal(0)
    """Subtracted from the multiple: ``0.01`` turns 5 into 4.99. ``0 <= offset < step``."""
    significant_digits: int | None = None
    """If set, the step grows with the price so it keeps this many significant digits."""

    def __post_init__(self) -> None:
        step = _check_decimal(self.step, "step")
        offset = _check_decimal(self.offset, "offset")
        if step <= 0:
            raise InvalidInput(f"step must be positive, got {step}")
        if not 0 <= offset < step:
            raise InvalidInput(f"offset must satisfy 0 <= offset < step, got {offset}")
        sig = self.significant_digits
        if sig is not None and (isinstance(sig, bool) or not isinstance(sig, int) or sig < 1):
            raise InvalidInput(f"significant_digits must be a positive int, got {sig!r}")
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "offset", offset)

    @classmethod
    def whole(cls) -> PriceEnding:
        """Whole major units."""
        return cls(step=Decimal(1))

    @classmethod
    def ninety_nine(cls) -> PriceEnding:
        """Prices ending in .99 of a major unit."""
        return cls(step=Decimal(1), offset=Decimal("0.01"))

    @classmethod
    def nice(cls, significant_digits: int = 2) -> PriceEnding:
        """Round to ``significant_digits`` significant digits (at least one major unit)."""
        return cls(step=Decimal(1), significant_digits=significant_digits)

    @classmethod
    def charm(cls, currency: str) -> PriceEnding:
        """A conventional ending for ``currency``.

        * ``.99`` for two-decimal currencies whose cash prices use decimals (EUR, USD, GBP);
        * ``.x90`` for three-decimal currencies (KWD 1.590), whose major unit is worth
          about three dollars, too coarse for whole-unit endings;
        * two significant digits for zero-decimal currencies (JPY 1,600) and for those
          CLDR prices in whole units in cash (HUF, TWD, IDR, SEK, CZK). This is the
          one place where CLDR data (babel) picks an amount: a pricing convention
          for new quotes, never the meaning of a stored one.

        >>> PriceEnding.charm("JPY") == PriceEnding.nice(2)
        True
        """
        info = currency_info(currency)
        if info.exponent == 0 or display_digits(info.code, cash=True) == 0:
            return cls.nice(2)
        if info.exponent >= 3:
            return cls(step=Decimal("0.1"), offset=Decimal("0.01"))
        return cls.ninety_nine()

    def _grid(self, exact_minor: Fraction, exponent: int, increment: int) -> tuple[int, int]:
        """(step, offset) in minor units for a price of ``exact_minor``."""
        step = self.step
        if self.significant_digits is not None and exact_minor > 0:
            magnitude = _magnitude(exact_minor / 10**exponent)
            step = max(step, Decimal(1).scaleb(magnitude + 1 - self.significant_digits))
        step_minor, offset_minor = step.scaleb(exponent), self.offset.scaleb(exponent)
        for name, value in (("step", step_minor), ("offset", offset_minor)):
            if value != value.to_integral_value() or int(value) % increment:
                raise InvalidInput(
                    f"price ending {name} {value.scaleb(-exponent)} is not a multiple of the "
                    f"currency's charge increment ({increment} minor units)"
                )
        return int(step_minor), int(offset_minor)


def _rate_value(rate: Rate | Decimal, currency: str) -> Decimal:
    if isinstance(rate, Rate):
        if rate.base != "USD" or rate.quote != currency:
            raise InvalidInput(
                f"expected a USD->{currency} rate, got {rate.base}->{rate.quote}",
                currency=currency,
            )
        value = rate.value
    else:
        value = check_rate_value(rate)
    if currency == "USD" and value != 1:
        raise InvalidInput(f"the USD->USD rate is 1, got {value}")
    return value


def check_stripe_minimum(amount_minor: int, currency: str, usd_rate: Rate | Decimal) -> None:
    """Raise ``AmountBelowMinimum`` if Stripe would refuse to charge ``amount_minor``.

    Two checks (the documented simplification of Stripe's rule, which
    converts each charge to the account's settlement currency):

    * the amount is worth at least USD 0.50 at ``usd_rate`` (USD -> currency),
      since the platform settles in USD;
    * if Stripe publishes a minimum for ``currency`` itself (GBP 0.30,
      JPY 50, HUF 175...), the amount reaches it.

    >>> from decimal import Decimal
    >>> check_stripe_minimum(50, "USD", Decimal(1))
    >>> check_stripe_minimum(45, "JPY", Decimal("160"))
    Traceback (most recent call last):
    ...
    spaktok_ledger._errors.AmountBelowMinimum: 45 JPY is below Stripe's minimum charge of 50 JPY
    """
    amount = check_minor(amount_minor)
    code = validate_currency(currency)
    rate_value = _rate_value(usd_rate, code)
    exponent = currency_info(code).exponent
    own_minimum = stripe_minimum_charge_minor(code)
    if own_minimum is not None and amount < own_minimum:
        raise AmountBelowMinimum(
            f"{to_major(amount, code)} {code} is below Stripe's minimum charge of "
            f"{to_major(own_minimum, code)} {code}",
            currency=code,
            amount_minor=amount,
            minimum_minor=own_minimum,
        )
    # amount / rate >= USD 0.50, compared exactly as rationals.
    if Fraction(amount, 10**exponent) < Fraction(USD_MINIMUM_CHARGE_MINOR, 100) * Fraction(
        rate_value
    ):
        raise AmountBelowMinimum(
            f"{to_major(amount, code)} {code} is worth less than Stripe's minimum charge "
            f"of USD 0.50 at the rate {rate_value}",
            currency=code,
            amount_minor=amount,
            minimum_usd_minor=USD_MINIMUM_CHARGE_MINOR,
        )


def local_price(
    usd_minor: int,
    currency: str,
    rate: Rate | Decimal,
    *,
    markup_bps: int = 0,
    rounding: str = ROUND_HALF_UP,
    price_ending: PriceEnding | None = None,
    check_minimum: bool = True,
) -> int:
    """Convert a USD price in cents to a chargeable amount in ``currency`` minor units.

    ``rate`` is USD -> ``currency`` (a :class:`~spaktok_ledger.fx.Rate` or a
    ``Decimal``); ``markup_bps`` adds an FX margin (150 = 1.5 %) to converted
    prices; a USD price is not converted and gets none. The one
    rounding uses ``rounding`` (a ``decimal.ROUND_*`` constant) and lands on
    the currency's Stripe charge increment, or on ``price_ending``. See the
    module docstring for the steps.

    >>> from decimal import Decimal, ROUND_CEILING
    >>> local_price(499, "EUR", Decimal("0.934143"))
    466
    >>> local_price(499, "EUR", Decimal("0.934143"), markup_bps=200)
    475
    >>> local_price(999, "JPY", Decimal("160.6165"), price_ending=PriceEnding.nice(2),
    ...             rounding=ROUND_CEILING)
    1700
    """
    usd = check_minor(usd_minor, name="usd_minor", allow_zero=False)
    if usd < 0:
        raise InvalidAmount(f"usd_minor must be positive, got {usd}", field="usd_minor")
    code = validate_currency(currency)
    info = currency_info(code)
    if not info.stripe_chargeable:
        raise UnsupportedCurrency(f"Stripe cannot charge in {code}", currency=code)
    rate_value = _rate_value(rate, code)
    # An FX margin: a USD price involves no conversion, so it carries no markup.
    markup = _check_markup(markup_bps)
    if code == "USD":
        markup = 0
    mode = check_rounding(rounding)
    exponent, increment = info.exponent, info.charge_increment_minor

    # The exact local amount in minor units, as a rational: nothing rounds here.
    exact = (
        Fraction(usd, 100)
        * Fraction(rate_value)
        * Fraction(10_000 + markup, 10_000)
        * Fraction(10) ** exponent
    )
    if price_ending is None:
        step, offset = increment, 0
    else:
        step, offset = price_ending._grid(exact, exponent, increment)
    # The one rounding: how many steps of the grid.
    amount = _round((exact + offset) / step, mode) * step - offset
    if amount <= 0:
        raise AmountBelowMinimum(
            f"USD {to_major(usd, 'USD')} rounds to nothing in {code}", currency=code
        )
    amount = check_minor(amount)
    if check_minimum:
        check_stripe_minimum(amount, code, rate_value)
    return amount


# --- quotes --------------------------------------------------------------------


def _aware(value: object, name: str) -> datetime:
    try:
        return check_aware(value, name)
    except InvalidInput:
        raise InvalidInput(f"quote {name} must be a timezone-aware datetime") from None


@dataclass(frozen=True, slots=True)
class Quote:
    """A displayed local price: what checkout will charge, and why, until when.

    Serialise with :meth:`to_dict` (JSON-safe: ``Decimal`` as a string, times
    as ISO 8601) and read back with :meth:`from_dict`.
    """

    id: str
    pack_id: str
    coins: int
    """Coins bought, as the pack had them when quoted."""
    bonus_coins: int
    usd_price_minor: int
    """The pack's list price P in US cents."""
    face_value_usd_minor: int
    """The coins' face value F in US cents."""
    currency: str
    local_amount_minor: int
    """What checkout charges, in ``currency`` minor units (ISO 4217 exponent, see ``exponent``)."""
    rate: Decimal
    """USD -> ``currency`` rate used (before the markup)."""
    markup_bps: int
    rate_source: str
    rate_published_at: datetime
    rate_fetched_at: datetime
    created_at: datetime
    expires_at: datetime
    locale: str | None = None
    display: str | None = None
    """The formatted price for ``locale``, if one was given (every charged digit shown)."""
    exponent: int | None = None
    """The exponent ``local_amount_minor`` is written in; filled from the library's
    ISO 4217 table when omitted. A quote written under another exponent (another
    table version) is refused with ``UnitsMismatch`` rather than charged at the wrong scale."""

    def __post_init__(self) -> None:
        for name in ("id", "pack_id", "rate_source"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 255:
                raise InvalidInput(f"quote {name} must be a non-empty string")
        for name in ("coins", "bonus_coins", "usd_price_minor", "face_value_usd_minor"):
            value = check_minor(getattr(self, name), name=name)
            if value < 0:
                raise InvalidInput(f"quote {name} must not be negative")
            object.__setattr__(self, name, value)
        expected = currency_exponent(self.currency)
        if self.exponent is None:
            object.__setattr__(self, "exponent", expected)
        elif isinstance(self.exponent, bool) or self.exponent != expected:
            raise UnitsMismatch(
                f"quote {self.id} holds {self.currency} amounts at exponent {self.exponent!r}; "
                f"this library's table ({EXPONENT_TABLE_VERSION}) uses {expected}: "
                "rescale stored quotes with `spaktok-ledger migrate-units`",
                currency=self.currency,
                stored_exponent=self.exponent,
                expected_exponent=expected,
            )
        amount = check_minor(self.local_amount_minor, name="local_amount_minor", allow_zero=False)
        if amount < 0:
            raise InvalidInput("quote local_amount_minor must be positive")
        object.__setattr__(self, "local_amount_minor", amount)
        object.__setattr__(self, "rate", check_rate_value(self.rate))
        _check_markup(self.markup_bps)
        for name in ("rate_published_at", "rate_fetched_at", "created_at", "expires_at"):
            _aware(getattr(self, name), name)
        if self.expires_at <= self.created_at:
            raise InvalidInput("quote expires_at must be after created_at")
        for name in ("locale", "display"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"quote {name} must be a string or None")

    @property
    def stripe_amount(self) -> int:
        """The integer to send to Stripe as ``amount`` (e.g. ISK x100)."""
        return to_stripe_amount(self.local_amount_minor, self.currency)

    @property
    def total_coins(self) -> int:
        return self.coins + self.bonus_coins

    def is_expired(self, now: datetime) -> bool:
        """Whether ``now`` is at or past ``expires_at``."""
        return _aware(now, "now") >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for the quotes table or an API response)."""
        return {
            "id": self.id,
            "pack_id": self.pack_id,
            "coins": self.coins,
            "bonus_coins": self.bonus_coins,
            "usd_price_minor": self.usd_price_minor,
            "face_value_usd_minor": self.face_value_usd_minor,
            "currency": self.currency,
            "local_amount_minor": self.local_amount_minor,
            "rate": str(self.rate),
            "markup_bps": self.markup_bps,
            "rate_source": self.rate_source,
            "rate_published_at": self.rate_published_at.isoformat(),
            "rate_fetched_at": self.rate_fetched_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "locale": self.locale,
            "display": self.display,
            "exponent": self.exponent,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quote:
        """Rebuild a quote from :meth:`to_dict` output; anything malformed is ``InvalidInput``."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a quote must be a mapping")
        expected = set(_QUOTE_FIELDS)
        # locale and display are optional; exponent is absent from quotes
        # written before 0.2.0 (their table's exponent is then assumed).
        missing = expected - {"locale", "display", "exponent"} - set(data)
        unknown = set(data) - expected
        if missing or unknown:
            raise InvalidInput(f"quote keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
        values = dict(data)
        if not isinstance(values["rate"], str):
            raise InvalidInput("quote rate must be a decimal string")
        values["rate"] = check_rate_value(values["rate"])
        for name in ("rate_published_at", "rate_fetched_at", "created_at", "expires_at"):
            raw = values[name]
            try:
                values[name] = datetime.fromisoformat(raw)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"quote {name} must be an ISO 8601 string") from exc
        for name in (
            "coins",
            "bonus_coins",
            "usd_price_minor",
            "face_value_usd_minor",
            "local_amount_minor",
            "markup_bps",
            *(("exponent",) if values.get("exponent") is not None else ()),
        ):
            if isinstance(values[name], bool) or not isinstance(values[name], int):
                raise InvalidInput(f"quote {name} must be an integer")
        return cls(**values)


_QUOTE_FIELDS: Final = tuple(Quote.__dataclass_fields__)


def check_quote_valid(quote: Quote, now: datetime) -> None:
    """Raise ``QuoteExpired`` if ``quote`` can no longer be charged at ``now``."""
    if quote.is_expired(now):
        raise QuoteExpired(
            f"quote {quote.id} expired at {quote.expires_at.isoformat()}",
            quote_id=quote.id,
            expires_at=quote.expires_at.isoformat(),
        )


def _new_quote_id() -> str:
    return f"quote_{uuid.uuid4().hex}"


def make_quote(
    pack: CoinPack,
    currency: str,
    rate_provider: RateProvider,
    clock: Clock = utc_now,
    ttl: timedelta = DEFAULT_QUOTE_TTL,
    *,
    markup_bps: int = 0,
    rounding: str = ROUND_HALF_UP,
    price_ending: PriceEnding | None = None,
    locale: str | None = None,
    coin_value_usd_minor: int = 1,
    max_rate_age: timedelta = DEFAULT_MAX_RATE_AGE,
    id_factory: Callable[[], str] = _new_quote_id,
) -> Quote:
    """Price ``pack`` in ``currency`` now and freeze the result for ``ttl``.

    Asks ``rate_provider`` for USD -> ``currency`` (USD itself needs no rate),
    prices with :func:`local_price`, and records the rate, its source and
    times. ``max_rate_age`` is a backstop: a rate published longer ago raises
    ``RateStale`` even if the provider did not (wrap providers in
    ``CachedRateProvider`` for per-provider limits). With ``locale`` the quote
    carries the formatted price.

    >>> from datetime import datetime, UTC
    >>> from spaktok_ledger.fx import StaticRateProvider
    >>> now = lambda: datetime(2024, 6, 28, 15, 0, tzinfo=UTC)
    >>> quote = make_quote(CoinPack("starter", 499, 500), "EUR",
    ...                    StaticRateProvider({"EUR": "0.934143"}, clock=now), now,
    ...                    locale="de_DE", id_factory=lambda: "q1")
    >>> quote.local_amount_minor, quote.display
    (466, '4,66\\xa0€')
    """
    if not isinstance(pack, CoinPack):
        raise InvalidInput(f"pack must be a CoinPack, not {type(pack).__name__}")
    code = validate_currency(currency)
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidInput(f"ttl must be a positive timedelta, got {ttl!r}")
    if locale is not None:
        locale = str(parse_locale(locale))
    now = check_aware(clock(), "clock()")
    if code == "USD":
        rate = Rate("USD", "USD", Decimal(1), "identity", now, now)
    else:
        rate = rate_provider.rate("USD", code)
        if rate.base != "USD" or rate.quote != code:
            raise InvalidInput(f"provider answered {rate.base}->{rate.quote} for USD->{code}")
    if rate.age(now) > max_rate_age:
        raise RateStale(
            f"{rate.source} USD->{code} rate was published at "
            f"{rate.published_at.isoformat()}, over the {max_rate_age} limit",
            source=rate.source,
            published_at=rate.published_at.isoformat(),
        )
    amount = local_price(
        pack.usd_price_minor,
        code,
        rate,
        markup_bps=markup_bps,
        rounding=rounding,
        price_ending=price_ending,
    )
    return Quote(
        id=id_factory(),
        pack_id=pack.id,
        coins=pack.coins,
        bonus_coins=pack.bonus_coins,
        usd_price_minor=pack.usd_price_minor,
        face_value_usd_minor=pack.face_value_usd_minor(coin_value_usd_minor),
        currency=code,
        local_amount_minor=amount,
        rate=rate.value,
        markup_bps=0 if code == "USD" else markup_bps,
        rate_source=rate.source,
        rate_published_at=rate.published_at,
        rate_fetched_at=rate.fetched_at,
        created_at=now,
        expires_at=now + ttl,
        locale=locale,
        # What is displayed is what is charged: no stored digit is rounded away.
        display=None if locale is None else format_price(amount, code, locale, rounding=None),
    )
