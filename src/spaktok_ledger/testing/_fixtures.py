"""Stripe's own fixture objects, ids that look like Stripe's, and Stripe's currency exponents.

``stripe_fixtures.json`` is a subset of ``openapi/fixtures3.json`` from Stripe's
public OpenAPI repository, Copyright (c) 2011- Stripe, Inc., MIT License (the
notice is in ``STRIPE_FIXTURES_LICENSE`` next to it).
"""

from __future__ import annotations

import copy
import json
import secrets
import string
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "convert_minor",
    "fixture",
    "new_id",
    "random_token",
    "stripe_exponent",
]

_ALPHABET = string.ascii_letters + string.digits

# Stripe's rules for API amounts, kept here on purpose rather than imported from
# the library: a test double that shared the code under test would hide its bugs.
_ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


@cache
def _resources() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("stripe_fixtures.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)["resources"]
    return loaded


def fixture(object_type: str) -> dict[str, Any]:
    """A fresh deep copy of Stripe's fixture object for ``object_type`` (``"charge"``...)."""
    return copy.deepcopy(_resources()[object_type])


def random_token(length: int) -> str:
    """``length`` random letters and digits, the body of Stripe's ids and secrets."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """A random id in Stripe's style: ``new_id("ch")`` -> ``"ch_3Pq..."``."""
    return f"{prefix}_{random_token(length)}"


def stripe_exponent(currency: str) -> int:
    """How many decimals Stripe's API amounts carry for ``currency`` (lower case)."""
    if currency in _ZERO_DECIMAL:
        return 0
    if currency in _THREE_DECIMAL:
        return 3
    return 2


def convert_minor(amount_minor: int, source: str, target: str, rate: Decimal) -> int:
    """Convert minor units of ``source`` into ``target`` at ``rate`` (target per source unit).

    Rounds once, half up, as a settlement does.
    """
    shift = stripe_exponent(target) - stripe_exponent(source)
    exact = Decimal(amount_minor) * rate * (Decimal(10) ** shift)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
