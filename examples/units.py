"""What a stored amount means: ISO 4217 units, CLDR display, Stripe units, the start-up check.

    .venv/bin/python examples/units.py [sqlite:///spaktok-example.db]

For a few currencies, prints the exponent the ledger stores amounts at (the
library's own ISO 4217 table), the decimals the installed babel's CLDR shows,
one amount as stored, as displayed (rounded half up, and exactly) and as sent
to Stripe. Then runs the start-up units check and ``migrate_units`` as a dry
run on a database, the way a deploy step would before starting a new version.
"""

from __future__ import annotations

import sys
from decimal import Decimal

import babel

from spaktok_ledger import (
    EXPONENT_TABLE_VERSION,
    Ledger,
    currency_exponent,
    display_digits,
    format_price,
    is_stripe_chargeable,
    migrate_units,
    to_minor,
    to_stripe_amount,
)

AMOUNTS = [
    ("USD", "en_US", Decimal("19.99")),
    ("HUF", "hu_HU", Decimal("7376.04")),
    ("ALL", "sq_AL", Decimal("461.73")),
    ("JPY", "ja_JP", Decimal("801")),
    ("KWD", "ar_KW", Decimal("1.530")),
    ("ISK", "is_IS", Decimal("691")),
    ("IQD", "ar_IQ", Decimal("6545.125")),
]


def main(url: str) -> None:
    print(f"exponent table {EXPONENT_TABLE_VERSION}; display by babel {babel.__version__}")
    header = ("code", "ISO", "CLDR", "stored", "shown", "exact", "Stripe")
    print("{:4} {:>3} {:>4} {:>10} {:>14} {:>16} {:>9}".format(*header))
    for code, locale, major in AMOUNTS:
        stored = to_minor(major, code)
        stripe = str(to_stripe_amount(stored, code)) if is_stripe_chargeable(code) else "-"
        print(
            f"{code:4} {currency_exponent(code):>3} {display_digits(code):>4} {stored:>10} "
            f"{format_price(stored, code, locale):>14} "
            f"{format_price(stored, code, locale, rounding=None):>16} {stripe:>9}"
        )
    with Ledger(url) as ledger:
        ledger.migrate()  # refuses with UnitsMismatch if stored units differ
        ledger.check_schema()
        assert ledger.engine is not None
        found = migrate_units(ledger.engine, ledger.prefix, dry_run=True, progress=print)
        print(f"rows to rescale: {sum(problem.rows for problem in found)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///spaktok-example.db")
