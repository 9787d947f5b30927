"""The ledger's exponent table: ISO 4217 minor units, frozen in the package.

Pure data, no I/O, no dependency. Every stored amount in the ledger is an
integer count of a currency's *minor unit*; this table says what that unit
is (``HUF: 2`` -- a stored ``737604`` is 7 376,04 Ft). It is the library's
own data on purpose: the number of decimals a formatting library (CLDR,
through babel) *shows* for a currency changes between releases (babel 2.19
shows HUF and IDR without decimals, 2.18 showed two), and the meaning of
stored integers must never change with a dependency upgrade. babel is used
only for presentation.

Source
    ISO 4217 "List One" (current currency & funds code list), as published
    by SIX Financial Information on behalf of the ISO 4217 Maintenance
    Agency, publication date **2026-01-01** (the list that withdraws BGN and
    lists XCG and XAD). Column ``CcyMnrUnts``.

Cross-checked (2026-02, while writing this table) against two other copies
    * the PyPI package ``iso4217`` 1.16.20260101 (SIX's XML, published 2026-01-01),
      which the test suite compares with this table on every run
      (``tests/test_currency.py``);
    * the public dataset ``datasets/currency-codes`` (``data/codes-all.csv``,
      revision of 2026-02-01), whose git history also gave the minor units
      the withdrawn codes below had while they were current.
    No code differs in minor units between the three.

Version
    :data:`TABLE_VERSION` names this table. A later ISO amendment that changes
    a currency's minor units gets a new version and a CHANGELOG entry; amounts
    already stored in that currency are then rescaled by ``spaktok-ledger
    migrate-units`` (the library refuses to start on them until then).

Withdrawn codes
    Codes ISO withdrew since 2012 stay in :data:`WITHDRAWN` with the minor
    units they had when they were current, so that amounts stored in them
    (a BGN purchase from 2025, an ANG refund) stay readable, refundable and
    exportable. They are accepted like current codes; :data:`WITHDRAWN`
    says when and for what they were withdrawn. Older codes (DEM, FRF...)
    and the codes without a minor unit (gold, SDR, test and "no currency"
    codes: ``N.A.`` in the list) are not ledger currencies.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, NamedTuple

__all__ = [
    "MINOR_UNITS",
    "NO_MINOR_UNIT",
    "TABLE_PUBLISHED",
    "TABLE_SOURCE",
    "TABLE_VERSION",
    "WITHDRAWN",
    "Withdrawn",
]

TABLE_VERSION: Final = "iso4217-2026-01-01"
"""The version of this table: ISO 4217 List One as published on 2026-01-01."""

TABLE_PUBLISHED: Final = "2026-01-01"
"""Publication date of the ISO 4217 List One this table was written from."""

TABLE_SOURCE: Final = (
    "ISO 4217 List One (current currency & funds code list), SIX Financial Information "
    "for the ISO 4217 Maintenance Agency, published 2026-01-01"
)
"""Where the minor units come from."""

# List One, grouped by minor units (CcyMnrUnts). Funds codes (BOV, CHE, CHW,
# CLF, COU, MXV, USN, UYI, UYW) are listed as ISO lists them.
_LIST_ONE: Final = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN BWP "
        "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
        "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES "
        "KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR "
        "MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD "
        "RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP "
        "TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XAD XCD XCG YER ZAR ZMW ZWG"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

NO_MINOR_UNIT: Final = frozenset(
    ["XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"]
)
"""List One codes whose minor unit is ``N.A.`` (precious metals, bond units,
SDR, SUCRE, ADB unit, the testing and the no-currency code): not ledger currencies."""


class Withdrawn(NamedTuple):
    """A code withdrawn from List One, kept so stored amounts stay readable."""

    minor_units: int
    """The minor units it had while current."""
    withdrawn: str
    """Year and month ISO withdrew it (``YYYY-MM``)."""
    successor: str | None
    """The code that replaced it, if one did."""


WITHDRAWN: Final = MappingProxyType(
    {
        "ANG": Withdrawn(2, "2025-03", "XCG"),
        "BGN": Withdrawn(2, "2026-01", "EUR"),
        "BYR": Withdrawn(0, "2017-01", "BYN"),
        "CUC": Withdrawn(2, "2021-06", "CUP"),
        "HRK": Withdrawn(2, "2023-01", "EUR"),
        "LTL": Withdrawn(2, "2014-12", "EUR"),
        "LVL": Withdrawn(2, "2014-01", "EUR"),
        "MRO": Withdrawn(2, "2017-12", "MRU"),
        "SLL": Withdrawn(2, "2023-12", "SLE"),
        "STD": Withdrawn(2, "2017-12", "STN"),
        "USS": Withdrawn(2, "2014-03", None),
        "VEF": Withdrawn(2, "2018-08", "VES"),
        "ZMK": Withdrawn(2, "2012-12", "ZMW"),
        "ZWL": Withdrawn(2, "2024-09", "ZWG"),
    }
)
"""Codes withdrawn from List One since 2012, with their minor units and successor."""

MINOR_UNITS: Final = MappingProxyType(
    {
        **{code: units for units, codes in _LIST_ONE.items() for code in codes.split()},
        **{code: info.minor_units for code, info in WITHDRAWN.items()},
    }
)
"""Every ledger currency (current and withdrawn) -> its ISO 4217 minor units."""
