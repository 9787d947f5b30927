"""Balances that cannot overflow signed 64 bits.

Every posting is within int64, but a balance is a running sum. Three guards:

1. before a write, each balance delta of an entry (the sum of its postings on
   one account) must itself fit, since it is sent as a 64-bit parameter;
2. the write: PostgreSQL raises ``numeric_value_out_of_range`` (SQLSTATE
   22003) when ``posted + delta`` leaves ``bigint``; SQLite would silently turn
   the sum into a float, which the CHECK constraint ``{prefix}balances_range``
   (migration 0013: every balance column within ``±(2**63 - 1) / shard_count``,
   so the sum of an account's shard rows fits too) refuses. Both become
   :class:`~spaktok_ledger.BalanceOverflow`;
3. the range is symmetric (the lowest int64 is excluded) so negating a
   balance, as the no-overdraft rule does for credit-normal accounts, never
   overflows either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import sqlalchemy as sa

from spaktok_ledger._errors import BalanceOverflow
from spaktok_ledger._money import INT64_MAX

__all__ = ["BALANCE_MAX", "check_delta", "translate_overflow"]

BALANCE_MAX: Final = INT64_MAX
"""A balance column holds ``-BALANCE_MAX .. BALANCE_MAX``."""


def check_delta(account: str, *deltas: int) -> None:
    """Refuse, before writing, a balance change that cannot even be sent as int64."""
    if any(not -BALANCE_MAX <= d <= BALANCE_MAX for d in deltas):
        raise BalanceOverflow(
            f"the entry changes the balance of {account} by more than signed 64 bits hold",
            account=account,
        )


def _is_overflow(exc: sa.exc.DBAPIError, prefix: str) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate == "22003":
        return True
    text = str(orig)
    return f"{prefix}balances_range" in text or "integer overflow" in text


@contextmanager
def translate_overflow(prefix: str, account: str | None = None) -> Iterator[None]:
    """Turn the database's overflow refusal of a balance write into ``BalanceOverflow``.

    With ``account`` (the write touched one account's rows), the error names it in
    its message and in ``details["account"]``, as :func:`check_delta` does; a batch
    of several accounts' rows cannot tell which one overflowed, so it names none.
    """
    try:
        yield
    except (sa.exc.DataError, sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
        if not _is_overflow(exc, prefix):
            raise
        if account is None:
            raise BalanceOverflow(
                "the entry would take a balance outside signed 64-bit range; nothing was written"
            ) from exc
        raise BalanceOverflow(
            f"the entry would take the balance of {account} outside signed 64 bits; "
            "nothing was written",
            account=account,
        ) from exc
