"""Validation of money inputs: every amount is an ``int`` count of minor units.

Pure: no I/O. Floats never enter the library: ``0.1 + 0.2`` is not money.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from spaktok_ledger._errors import InvalidAmount, InvalidAmountType

__all__ = ["INT64_MAX", "INT64_MIN", "check_minor"]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def check_minor(value: object, *, name: str = "amount_minor", allow_zero: bool = True) -> int:
    """Return ``value`` as an ``int`` of minor units, or raise.

    Accepts ``int`` and integral, finite ``Decimal``; rejects ``float``,
    ``bool`` (an ``int`` subclass that is never money), NaN/Inf, fractions of
    a minor unit and anything outside signed 64-bit range.

    >>> check_minor(1999)
    1999
    >>> check_minor(Decimal("500"))
    500
    """
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise InvalidAmountType(
            f"{name} must be an int number of minor units, not {type(value).__name__}"
            + (" (floats are never money)" if isinstance(value, float) else ""),
            field=name,
        )
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidAmount(f"{name} must be finite, got {value}", field=name)
        if value != value.to_integral_value():
            raise InvalidAmount(
                f"{name} must be a whole number of minor units, got {value}", field=name
            )
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAmount(f"{name} {value} is outside the signed 64-bit range", field=name)
    if not allow_zero and value == 0:
        raise InvalidAmount(f"{name} must not be zero", field=name)
    return value
