"""Currencies: the ledger's exponent table, Stripe's units, and the conversions between them.

Pure: no I/O and no formatting library. Every conversion between a major
amount, the ledger's minor units, Stripe's integer amounts and py-moneyed's
``Money`` lives here, so there is exactly one place that knows how many
decimals a currency's stored amounts have.

Two exponents per currency
--------------------------

*The ledger's exponent* (:func:`currency_exponent`)
    ISO 4217's minor units, from the table the library owns
    (:mod:`spaktok_ledger._iso4217`, version :data:`EXPONENT_TABLE_VERSION`).
    **Every stored amount uses it**: ``1999`` USD is $19.99, ``1500`` JPY is
    ¥1,500, ``1230`` KWD is 1.230 KD, ``737604`` HUF is 7 376,04 Ft. It never
    comes from CLDR (babel): how many decimals a locale *shows* is
    presentation (:func:`spaktok_ledger.display_digits`) and changes between
    CLDR releases; what a stored integer means must not.

*Stripe's exponent* (:func:`stripe_exponent`)
    The exponent of the integer Stripe's API expects in ``amount`` fields
    (https://docs.stripe.com/currencies). Stripe treats every currency as
    two-decimal except its zero-decimal list (JPY, KRW, VND, CLP...) and the
    three-decimal BHD, JOD, KWD, OMR, TND. Where the two exponents disagree,
    :func:`to_stripe_amount` and :func:`from_stripe_amount` convert:

    ========  =====  ======  ==============================================
    currency  ISO    Stripe  rule
    ========  =====  ======  ==============================================
    USD, EUR  2      2       amounts pass through unchanged
    HUF, IDR  2      2       unchanged (CLDR may show no decimals: display only)
    ALL, LAK  2      2       unchanged (CLDR shows whole units: display only)
    JPY, KRW  0      0       amounts pass through unchanged
    KWD       3      3       a charge's last digit must be 0 (10 fils)
    ISK, UGX  0      2       sent x100; Stripe wants a multiple of 100
    MGA       2      0       sent /100: only whole ariary can be charged
    HUF, TWD  2      2       charges two-decimal; payouts whole units
    ========  =====  ======  ==============================================

    UGX appears in Stripe's zero-decimal list *and* in its special cases;
    the special case wins (Stripe answers ``invalid_charge_amount_no_decimal_
    compatible`` to a UGX amount that is not a multiple of 100), so UGX is
    sent like ISK.

>>> to_minor(Decimal("7376.04"), "HUF")
737604
>>> to_stripe_amount(5, "ISK")
500
>>> to_major(1230, "KWD")
Decimal('1.230')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import (
    ROUND_05UP,
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)
from functools import cache
from typing import TYPE_CHECKING, Final, Literal

from spaktok_ledger._errors import (
    InvalidAmount,
    InvalidAmountType,
    InvalidInput,
    UnknownCurrency,
    UnsupportedCurrency,
)
from spaktok_ledger._iso4217 import MINOR_UNITS, NO_MINOR_UNIT, TABLE_VERSION, WITHDRAWN
from spaktok_ledger._money import check_minor
from spaktok_ledger._validate import shown

if TYPE_CHECKING:
    from moneyed import Money

__all__ = [
    "EXPONENT_TABLE_VERSION",
    "ROUNDING_MODES",
    "STRIPE_MINIMUM_CHARGE",
    "STRIPE_PRESENTMENT_CURRENCIES",
    "STRIPE_THREE_DECIMAL_CURRENCIES",
    "STRIPE_ZERO_DECIMAL_CURRENCIES",
    "CurrencyInfo",
    "check_rounding",
    "currency_exponent",
    "currency_info",
    "from_money",
    "from_stripe_amount",
    "is_stripe_chargeable",
    "known_currencies",
    "stripe_charge_increment",
    "stripe_exponent",
    "stripe_minimum_charge_minor",
    "stripe_payout_increment",
    "to_major",
    "to_minor",
    "to_money",
    "to_stripe_amount",
    "validate_currency",
]

_CODE = re.compile(r"^[A-Z]{3}$")

EXPONENT_TABLE_VERSION: Final = TABLE_VERSION
"""The version of the ledger's exponent table (ISO 4217 List One, by publication date)."""

ROUNDING_MODES: Final = frozenset(
    {
        ROUND_05UP,
        ROUND_CEILING,
        ROUND_DOWN,
        ROUND_FLOOR,
        ROUND_HALF_DOWN,
        ROUND_HALF_EVEN,
        ROUND_HALF_UP,
        ROUND_UP,
    }
)
"""The ``decimal`` rounding constants; every rounding in the library names one."""

# --- Stripe's tables (https://docs.stripe.com/currencies) -------------------


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


STRIPE_ZERO_DECIMAL_CURRENCIES: Final = _codes(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF"
)
"""Stripe's zero-decimal currencies: the amount is the number of major units.

Stripe's own list also names UGX, but its "special cases" section (and the
API) require UGX amounts as two-decimal values ending in 00, so UGX is left
out here and handled like ISK.
"""

STRIPE_THREE_DECIMAL_CURRENCIES: Final = _codes("BHD JOD KWD OMR TND")
"""Three-decimal currencies: Stripe requires the last digit of a charge to be 0."""

_STRIPE_WHOLE_UNITS_AS_TWO_DECIMALS: Final = frozenset({"ISK", "UGX"})
"""Effectively zero-decimal, but sent as two-decimal values (x100, ending in 00)."""

_STRIPE_WHOLE_UNIT_PAYOUTS: Final = frozenset({"HUF", "TWD"})
"""Two-decimal for charges, but payouts must be whole units (divisible by 100)."""

STRIPE_PRESENTMENT_CURRENCIES: Final = (
    _codes(
        "USD AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BIF BMD BND BOB BRL "
        "BSD BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR "
        "FJD FKP GBP GEL GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR ISK JMD JPY KES "
        "KGS KHR KMF KRW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MUR MVR "
        "MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN PYG QAR RON RSD "
        "RUB RWF SAR SBD SCR SEK SGD SHP SLE SOS SRD SZL THB TJS TOP TRY TTD TWD TZS UAH "
        "UGX UYU UZS VND VUV WST XAF XCD XOF XPF YER ZAR ZMW"
    )
    | STRIPE_THREE_DECIMAL_CURRENCIES
)
"""Currencies Stripe can charge in (its card presentment list, plus the
three-decimal currencies its standard payment flows support). Which of them a
given account may use still depends on its country and payment methods."""

STRIPE_MINIMUM_CHARGE: Final[dict[str, Decimal]] = {
    code: Decimal(value)
    for code, value in {
        "USD": "0.50",
        "AED": "2.00",
        "AUD": "0.50",
        "BGN": "1.00",
        "BRL": "0.50",
        "CAD": "0.50",
        "CHF": "0.50",
        "CZK": "15.00",
        "DKK": "2.50",
        "EUR": "0.50",
        "GBP": "0.30",
        "HKD": "4.00",
        "HUF": "175.00",
        "INR": "0.50",
        "JPY": "50",
        "MXN": "10",
        "MYR": "2",
        "NOK": "3.00",
        "NZD": "0.50",
        "PLN": "2.00",
        "RON": "2.00",
        "SEK": "3.00",
        "SGD": "0.50",
        "THB": "10",
    }.items()
}
"""Stripe's minimum charge per *settlement* currency, in major units.

Stripe checks a charge after converting it to the account's settlement
currency. The library's simplification (see :mod:`spaktok_ledger._pricing`):
a price must be worth at least the USD minimum at the quoted rate (the
platform settles in USD) **and**, when the presentment currency has its own
row here, at least that row's amount. The second check is exact for an
account that settles in that currency and merely conservative otherwise.
"""


# --- the table -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrencyInfo:
    """Everything the library knows about one currency's units.

    >>> info = currency_info("KWD")
    >>> (info.exponent, info.stripe_exponent, info.charge_increment_minor)
    (3, 3, 10)
    """

    code: str
    """The ISO 4217 code."""
    exponent: int
    """ISO 4217 minor units: the exponent of every stored amount in this currency."""
    stripe_exponent: int | None
    """The exponent of the integer Stripe expects, or ``None`` if Stripe cannot charge it."""
    stripe_charge_step: int
    """Stripe charge amounts must be multiples of this (in Stripe's units): 1, 10 or 100."""
    stripe_payout_step: int
    """Stripe payout amounts must be multiples of this (in Stripe's units)."""
    stripe_minimum_charge_minor: int | None
    """Stripe's minimum charge in minor units, when Stripe publishes one for this currency."""
    withdrawn: str | None = None
    """``YYYY-MM`` when ISO withdrew the code (amounts stored in it stay readable), else None."""

    @property
    def stripe_chargeable(self) -> bool:
        """Whether Stripe can charge in this currency."""
        return self.stripe_exponent is not None

    @property
    def charge_increment_minor(self) -> int:
        """The smallest step, in minor units, between two amounts Stripe can charge."""
        return self._increment(self.stripe_charge_step)

    @property
    def payout_increment_minor(self) -> int:
        """The smallest step, in minor units, between two amounts Stripe can pay out."""
        return self._increment(self.stripe_payout_step)

    def _increment(self, stripe_step: int) -> int:
        if self.stripe_exponent is None:
            return 1
        # Work in the finer of the two exponents, where both a minor unit and
        # a Stripe step are whole numbers; the increment is their lcm.
        finest = max(self.exponent, self.stripe_exponent)
        minor: int = 10 ** (finest - self.exponent)
        step: int = stripe_step * 10 ** (finest - self.stripe_exponent)
        return math.lcm(minor, step) // minor


_KNOWN: Final = frozenset(MINOR_UNITS)


def known_currencies() -> frozenset[str]:
    """Every code the ledger can hold amounts in: ISO 4217 List One with a minor unit,
    plus the codes withdrawn since 2012 (see :mod:`spaktok_ledger._iso4217`).

    >>> {"EUR", "HUF", "BGN"} <= known_currencies(), "XAU" in known_currencies()
    (True, False)
    """
    return _KNOWN


def validate_currency(code: object) -> str:
    """Return ``code`` if the ledger's exponent table knows it, else raise ``UnknownCurrency``.

    Codes are case-sensitive upper case, as ISO 4217 writes them: ``"usd"``
    is refused rather than silently upper-cased, because a lower-case code in
    a ledger call usually means a Stripe payload was passed through unchecked.
    ISO codes without a minor unit (``XAU``, ``XDR``, ``XXX``...) are refused
    too: the ledger stores integers of a minor unit, and they have none.
    """
    if not isinstance(code, str) or not _CODE.match(code):
        raise UnknownCurrency(f"currency must be a 3-letter ISO 4217 code, got {shown(code)}")
    if code not in _KNOWN:
        if code in NO_MINOR_UNIT:
            raise UnknownCurrency(
                f"{code} has no minor unit in ISO 4217, so the ledger cannot hold amounts in it",
                currency=code,
            )
        raise UnknownCurrency(f"unknown currency code {code!r}", currency=code)
    return code


@cache
def _info(code: str) -> CurrencyInfo:
    return _build_info(code)


def _build_info(code: str) -> CurrencyInfo:
    # Kept apart from the cache: mutation testing (mutmut) skips decorated
    # functions, and these are the Stripe rules its mutants must reach.
    exponent = MINOR_UNITS[code]
    stripe: int | None = None
    charge_step = payout_step = 1
    if code in STRIPE_PRESENTMENT_CURRENCIES:
        if code in STRIPE_ZERO_DECIMAL_CURRENCIES:
            stripe = 0
        elif code in STRIPE_THREE_DECIMAL_CURRENCIES:
            stripe, charge_step, payout_step = 3, 10, 10
        else:
            stripe = 2
            if code in _STRIPE_WHOLE_UNITS_AS_TWO_DECIMALS:
                charge_step = payout_step = 100
            elif code in _STRIPE_WHOLE_UNIT_PAYOUTS:
                payout_step = 100
    minimum = STRIPE_MINIMUM_CHARGE.get(code)
    minimum_minor = None if minimum is None else int(minimum.scaleb(exponent))
    withdrawn = WITHDRAWN[code].withdrawn if code in WITHDRAWN else None
    return CurrencyInfo(code, exponent, stripe, charge_step, payout_step, minimum_minor, withdrawn)


def currency_info(currency: str) -> CurrencyInfo:
    """The units of ``currency`` (ISO exponent, Stripe exponent, steps, minimum).

    >>> currency_info("ISK").stripe_exponent
    2
    """
    return _info(validate_currency(currency))


def currency_exponent(currency: str) -> int:
    """ISO 4217 minor units of ``currency``: the exponent of every stored amount in it.

    From the library's own table (:data:`EXPONENT_TABLE_VERSION`), never from
    CLDR: ``currency_exponent("HUF")`` is 2 whatever babel shows.

    >>> currency_exponent("USD"), currency_exponent("JPY"), currency_exponent("KWD")
    (2, 0, 3)
    >>> currency_exponent("HUF"), currency_exponent("ISK"), currency_exponent("IQD")
    (2, 0, 3)
    """
    return currency_info(currency).exponent


def is_stripe_chargeable(currency: str) -> bool:
    """Whether Stripe can charge in ``currency`` (see ``STRIPE_PRESENTMENT_CURRENCIES``).

    >>> is_stripe_chargeable("EUR"), is_stripe_chargeable("IQD")
    (True, False)
    """
    return currency_info(currency).stripe_chargeable


def _chargeable(currency: str) -> CurrencyInfo:
    info = currency_info(currency)
    if info.stripe_exponent is None:
        raise UnsupportedCurrency(f"Stripe cannot charge in {currency}", currency=currency)
    return info


def stripe_exponent(currency: str) -> int:
    """The exponent of the integer amount Stripe expects for ``currency``.

    Raises ``UnsupportedCurrency`` for a currency Stripe cannot charge.

    >>> stripe_exponent("USD"), stripe_exponent("JPY"), stripe_exponent("ISK")
    (2, 0, 2)
    """
    exponent = _chargeable(currency).stripe_exponent
    assert exponent is not None  # _chargeable guarantees it
    return exponent


def stripe_charge_increment(currency: str) -> int:
    """The step, in minor units, that every Stripe charge amount is a multiple of.

    >>> stripe_charge_increment("KWD"), stripe_charge_increment("USD")
    (10, 1)
    """
    return _chargeable(currency).charge_increment_minor


def stripe_payout_increment(currency: str) -> int:
    """The step, in minor units, that every Stripe payout amount is a multiple of.

    >>> stripe_payout_increment("HUF"), stripe_payout_increment("USD")
    (100, 1)
    """
    return _chargeable(currency).payout_increment_minor


def stripe_minimum_charge_minor(currency: str) -> int | None:
    """Stripe's published minimum charge for ``currency`` in minor units, if it has one.

    >>> stripe_minimum_charge_minor("GBP"), stripe_minimum_charge_minor("JPY")
    (30, 50)
    >>> stripe_minimum_charge_minor("KWD") is None
    True
    """
    return currency_info(currency).stripe_minimum_charge_minor


def to_stripe_amount(
    amount_minor: int, currency: str, *, kind: Literal["charge", "payout"] = "charge"
) -> int:
    """Convert ledger minor units to the integer Stripe expects in ``amount``.

    Refuses (``InvalidAmount``) an amount Stripe would reject for ``kind``
    instead of rounding it: a KWD charge whose last fils digit is not 0, a
    HUF payout with fillér. Round with :func:`spaktok_ledger.local_price`
    before, never here.

    >>> to_stripe_amount(1999, "USD"), to_stripe_amount(1500, "JPY")
    (1999, 1500)
    >>> to_stripe_amount(5, "ISK"), to_stripe_amount(5120, "KWD")
    (500, 5120)
    """
    value = check_minor(amount_minor)
    info = _chargeable(currency)
    assert info.stripe_exponent is not None
    shift = info.stripe_exponent - info.exponent
    stripe_amount = value * 10**shift if shift >= 0 else _exact_div(value, 10**-shift, currency)
    step = info.stripe_charge_step if kind == "charge" else info.stripe_payout_step
    if stripe_amount % step:
        raise InvalidAmount(
            f"a Stripe {kind} in {currency} must be a multiple of {step} in Stripe's units; "
            f"{value} minor units is {stripe_amount}",
            currency=currency,
            amount_minor=value,
        )
    return check_minor(stripe_amount, name="stripe_amount")


def from_stripe_amount(stripe_amount: int, currency: str) -> int:
    """Convert an integer amount from Stripe (charge, refund, balance transaction) to minor units.

    Exact: an amount with a fraction the ledger cannot hold (a legacy ISK
    charge of 500.50 kr sent as ``50050``) raises ``InvalidAmount``.

    >>> from_stripe_amount(500, "ISK"), from_stripe_amount(1999, "USD")
    (5, 1999)
    """
    value = check_minor(stripe_amount, name="stripe_amount")
    info = _chargeable(currency)
    assert info.stripe_exponent is not None
    shift = info.stripe_exponent - info.exponent
    return _exact_div(value, 10**shift, currency) if shift >= 0 else value * 10**-shift


def _exact_div(value: int, divisor: int, currency: str) -> int:
    quotient, remainder = divmod(value, divisor)
    if remainder:
        raise InvalidAmount(
            f"{value} is not a whole number of {currency} units at this exponent",
            currency=currency,
        )
    return quotient


# --- major <-> minor ---------------------------------------------------------


def check_rounding(rounding: object) -> str:
    """Return ``rounding`` if it is one of the ``decimal.ROUND_*`` constants, else raise."""
    if not isinstance(rounding, str) or rounding not in ROUNDING_MODES:
        raise InvalidInput(
            f"rounding must be one of the decimal.ROUND_* constants, got {rounding!r}"
        )
    return rounding


def to_minor(amount: Decimal | int, currency: str, *, rounding: str | None = None) -> int:
    """Convert a major amount (``Decimal`` or ``int``) to integer minor units.

    Without ``rounding`` the amount must be exact at the currency's ISO 4217
    exponent (:func:`currency_exponent`); with it (a ``decimal.ROUND_*``
    constant) it is rounded once.
    Floats are refused with ``InvalidAmountType``: ``19.99`` is not
    ``Decimal("19.99")``.

    >>> to_minor(Decimal("19.99"), "USD"), to_minor(Decimal("1500"), "JPY")
    (1999, 1500)
    >>> from decimal import ROUND_HALF_UP
    >>> to_minor(Decimal("0.125"), "USD", rounding=ROUND_HALF_UP)
    13
    """
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        raise InvalidAmountType(
            f"amount must be a Decimal or int of major units, not {type(amount).__name__}"
            + (" (floats are never money)" if isinstance(amount, float) else ""),
            field="amount",
        )
    exponent = currency_exponent(currency)
    value = Decimal(amount)
    if not value.is_finite():
        raise InvalidAmount(f"amount must be finite, got {value}", field="amount")
    scaled = value.scaleb(exponent)
    if rounding is None:
        if scaled != scaled.to_integral_value():
            raise InvalidAmount(
                f"{value} {currency} has more than {exponent} decimals; pass rounding= to round",
                currency=currency,
            )
    else:
        scaled = scaled.to_integral_value(rounding=check_rounding(rounding))
    return check_minor(scaled)


def to_major(amount_minor: int, currency: str) -> Decimal:
    """Convert integer minor units to a ``Decimal`` of major units, at the ISO exponent.

    >>> to_major(1999, "USD"), to_major(1500, "JPY"), to_major(-5, "USD")
    (Decimal('19.99'), Decimal('1500'), Decimal('-0.05'))
    """
    value = check_minor(amount_minor)
    return Decimal(value).scaleb(-currency_exponent(currency))


# --- py-moneyed interop ------------------------------------------------------


def to_money(amount_minor: int, currency: str) -> Money:
    """Build a py-moneyed ``Money`` (needs the ``moneyed`` extra).

    Uses the library's exponent table for the amount; py-moneyed only
    carries it (its own ``sub_unit`` is not consulted).

    >>> to_money(1999, "USD")
    Money('19.99', 'USD')
    """
    from spaktok_ledger._extras import needs_extra

    with needs_extra("to_money()"):
        from moneyed import Money
        from moneyed.classes import CurrencyDoesNotExist

    major = to_major(amount_minor, currency)
    try:
        return Money(major, currency)
    except CurrencyDoesNotExist as exc:
        raise UnsupportedCurrency(
            f"py-moneyed does not know {currency}", currency=currency
        ) from exc


def from_money(money: Money, *, rounding: str | None = None) -> tuple[int, str]:
    """Split a py-moneyed ``Money`` into ``(amount_minor, currency)``.

    Exact unless ``rounding`` names a ``decimal.ROUND_*`` mode.

    >>> from moneyed import Money
    >>> from_money(Money("19.99", "USD"))
    (1999, 'USD')
    """
    from moneyed import Money

    if not isinstance(money, Money):
        raise InvalidAmountType(f"expected a moneyed.Money, not {type(money).__name__}")
    currency = validate_currency(money.currency.code)
    return to_minor(money.amount, currency, rounding=rounding), currency
