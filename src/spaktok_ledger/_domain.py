"""The ledger's domain types: accounts, postings, entries, balances.

Pure: frozen dataclasses and validation, no I/O. Invalid values cannot be
constructed, so anything that reaches the store has already been checked.

Sign convention: a posting's ``amount_minor`` is **positive for a debit and
negative for a credit**. An entry balances when its postings sum to zero in
every currency. Balances are reported in the account's *normal* sign
(debit-normal for assets and expenses, credit-normal for liabilities, equity
and revenue), so a wallet holding 500 coins reports ``posted_minor == 500``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from spaktok_ledger._currency import validate_currency
from spaktok_ledger._errors import (
    InvalidAccountCode,
    InvalidEntry,
    InvalidInput,
    UnbalancedEntry,
)
from spaktok_ledger._money import check_minor
from spaktok_ledger._validate import check_metadata_shape, check_metadata_size, check_text, shown

__all__ = [
    "Account",
    "AccountKind",
    "AccountSpec",
    "Balance",
    "Entry",
    "EntryDraft",
    "EntryPage",
    "EntryPhase",
    "EntryType",
    "HistoryItem",
    "HistoryPage",
    "Posting",
    "TrialBalance",
    "TrialBalanceRow",
    "check_account_code",
    "check_json",
    "stored_posting",
]

MAX_POSTINGS: Final = 64
MAX_KEY_LENGTH: Final = 255
MAX_SHARDS: Final = 64

_CODE = re.compile(r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.@\-]+)+$")
_TYPE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")

Json = Any
"""A JSON-serialisable value (dicts with string keys, lists, str, int, bool, None)."""


class AccountKind(StrEnum):
    """The five kinds of account in double entry."""

    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"

    @property
    def normal_sign(self) -> int:
        """+1 for debit-normal kinds (asset, expense), -1 for credit-normal ones."""
        return 1 if self in (AccountKind.ASSET, AccountKind.EXPENSE) else -1


class EntryType(StrEnum):
    """Entry types the library itself writes. Hosts may use any ``[a-z][a-z0-9_.]*`` type.

    A reversal keeps the type of the entry it reverses (so filtering history
    by type shows both) and names it in ``reverses_id``.
    """

    PURCHASE = "purchase"
    GIFT = "gift"
    PAYOUT = "payout"
    REFUND = "refund"
    DISPUTE = "dispute"
    FEE = "fee"
    MATURATION = "maturation"
    ADJUSTMENT = "adjustment"
    TRANSFER = "transfer"
    REPAYMENT = "repayment"


class EntryPhase(StrEnum):
    """Where an entry stands in the two-phase life of a movement.

    ``posted`` entries move posted balances. A ``pending`` entry is a hold: its
    postings count against available balances until a later entry resolves it,
    either ``posted`` (same postings, now posted, ``hold_id`` naming the hold)
    or ``voided``/``expired`` (no postings). Entries are never updated.
    """

    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"
    EXPIRED = "expired"


def check_account_code(code: object) -> str:
    """Return ``code`` if it is a valid namespaced account code, else raise.

    >>> check_account_code("user:42:wallet")
    'user:42:wallet'
    """
    if not isinstance(code, str) or len(code) > 200 or not _CODE.match(code):
        raise InvalidAccountCode(
            f"account code must look like 'namespace:part[:part...]' "
            f"(lower-case namespace, at most 200 characters), got {shown(code)}",
            account=code if isinstance(code, str) else None,
        )
    return code


def check_json(value: object, *, name: str = "metadata") -> dict[str, Json]:
    """Return a JSON-safe copy of a metadata mapping, or raise ``InvalidInput``."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be a mapping, not {type(value).__name__}")
    if not value:
        return {}
    check_metadata_shape(value, name)
    try:
        plain = value if type(value) is dict else dict(value)
        text = json.dumps(plain, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{name} must be JSON-serialisable: {exc}", field=name) from exc
    check_metadata_size(text, name)
    copy: dict[str, Json] = json.loads(text)
    # json.dumps escapes NUL as \u0000: only then is the walk needed.
    if "\\u0000" in text and _has_nul(copy):
        raise InvalidInput(f"{name} must not contain NUL characters (PostgreSQL cannot store them)")
    return copy


def built_draft(
    type: str,
    postings: Sequence[Posting],
    idempotency_key: str,
    *,
    description: str,
    metadata: dict[str, Json],
    effective_at: datetime | None,
) -> EntryDraft:
    """An ``EntryDraft`` whose ``metadata`` the library built itself from checked
    values (party ids, catalogue ids, ints, ISO times): everything else is
    validated as for any draft, but the metadata is not serialised and parsed
    again to check it is JSON (a gift's draft spent more time there than on its
    postings). It must not be the caller's mapping: it is kept as it is."""
    draft = EntryDraft(
        type, postings, idempotency_key, description=description, effective_at=effective_at
    )
    object.__setattr__(draft, "metadata", metadata)
    return draft


def _has_nul(value: Json) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_aware(value: datetime | None, name: str) -> None:
    if value is not None and (
        not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None
    ):
        raise InvalidEntry(f"{name} must be a timezone-aware datetime, got {shown(value)}")


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """What an account is; ``Ledger.open_account`` creates it (idempotently).

    >>> AccountSpec("user:42:wallet", AccountKind.LIABILITY).currency
    'USD'
    """

    code: str
    """Namespaced code, e.g. ``user:42:wallet``."""
    kind: AccountKind
    """Asset, liability, equity, revenue or expense."""
    currency: str = "USD"
    """ISO 4217 code of every posting to this account."""
    allow_overdraft: bool = False
    """May the available balance (normal sign) go below zero?"""
    balance_shards: int = 1
    """Balance rows to spread concurrent writes over (hot accounts); see ``docs/concepts.md``."""
    metadata: Mapping[str, Json] = field(default_factory=dict)
    """Free-form JSON for the host (names, external ids)."""

    def __post_init__(self) -> None:
        check_account_code(self.code)
        if not isinstance(self.kind, AccountKind):
            try:
                object.__setattr__(self, "kind", AccountKind(self.kind))
            except ValueError as exc:
                raise InvalidInput(f"unknown account kind {shown(self.kind)}") from exc
        validate_currency(self.currency)
        if not isinstance(self.allow_overdraft, bool):
            raise InvalidInput("allow_overdraft must be a bool")
        if (
            isinstance(self.balance_shards, bool)
            or not isinstance(self.balance_shards, int)
            or not 1 <= self.balance_shards <= MAX_SHARDS
        ):
            raise InvalidInput(f"balance_shards must be an int from 1 to {MAX_SHARDS}")
        object.__setattr__(self, "metadata", check_json(self.metadata))


@dataclass(frozen=True, slots=True)
class Account:
    """An account as recorded in the store."""

    id: int
    code: str
    kind: AccountKind
    currency: str
    allow_overdraft: bool
    balance_shards: int
    metadata: Mapping[str, Json]
    created_at: datetime

    def spec(self) -> AccountSpec:
        return AccountSpec(
            self.code,
            self.kind,
            self.currency,
            self.allow_overdraft,
            self.balance_shards,
            dict(self.metadata),
        )


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of an entry: a signed amount (debit > 0, credit < 0) on one account.

    >>> Posting.credit("platform:gift_revenue", 60).amount_minor
    -60
    """

    account: str
    """The account's code."""
    amount_minor: int
    """Signed minor units: positive debits, negative credits; never zero."""
    currency: str = "USD"
    """ISO 4217 code; must equal the account's currency."""

    def __post_init__(self) -> None:
        check_account_code(self.account)
        object.__setattr__(self, "amount_minor", check_minor(self.amount_minor, allow_zero=False))
        validate_currency(self.currency)

    @classmethod
    def debit(cls, account: str, amount_minor: int, currency: str = "USD") -> Posting:
        """A debit of a positive ``amount_minor``."""
        return cls(account, _positive(amount_minor), currency)

    @classmethod
    def credit(cls, account: str, amount_minor: int, currency: str = "USD") -> Posting:
        """A credit of a positive ``amount_minor`` (stored negated)."""
        return cls(account, -_positive(amount_minor), currency)


def stored_posting(account: str, amount_minor: int, currency: str) -> Posting:
    """A posting read back from the store, whose values were checked when written.

    Skips ``Posting``'s checks (three per leg, most of a statement page's
    Python time): the store only holds postings that passed them.
    """
    posting = object.__new__(Posting)
    _set(posting, "account", account)
    _set(posting, "amount_minor", amount_minor)
    _set(posting, "currency", currency)
    return posting


_set = object.__setattr__


def _positive(amount_minor: int) -> int:
    value = check_minor(amount_minor, allow_zero=False)
    if value < 0:
        raise InvalidEntry(
            "debit()/credit() take a positive amount_minor; the direction gives the sign"
        )
    return value


def check_balanced(postings: Iterable[Posting]) -> None:
    """Raise ``UnbalancedEntry`` unless the postings sum to zero in every currency."""
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        totals[posting.currency] += posting.amount_minor
    off = {currency: total for currency, total in totals.items() if total != 0}
    if off:
        raise UnbalancedEntry(
            "postings must sum to zero per currency; off by "
            + ", ".join(f"{total:+d} {currency}" for currency, total in sorted(off.items())),
            imbalance=off,
        )


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidEntry(
            f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters",
            field="idempotency_key",
        )
    return check_text(key, "idempotency_key", max_length=MAX_KEY_LENGTH, error=InvalidEntry)


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """A journal entry to record: validated on construction.

    >>> draft = EntryDraft(
    ...     type="gift",
    ...     idempotency_key="gift:1",
    ...     postings=[
    ...         Posting.debit("user:1:wallet", 100),
    ...         Posting.credit("streamer:7:earnings", 40),
    ...         Posting.credit("platform:gift_revenue", 60),
    ...     ],
    ... )
    >>> len(draft.postings)
    3
    """

    type: str
    """What kind of movement: ``gift``, ``purchase``, ``payout``... (``[a-z][a-z0-9_.]*``)."""
    postings: Sequence[Posting]
    """Two or more postings summing to zero per currency (any sequence; stored as a tuple)."""
    idempotency_key: str
    """Same key + same draft returns the first result; same key + other draft conflicts."""
    description: str = ""
    """Human-readable text for statements."""
    metadata: Mapping[str, Json] = field(default_factory=dict)
    """JSON the host or the library attaches (gift id, split used, Stripe ids)."""
    effective_at: datetime | None = None
    """When the movement happened economically (tz-aware); default: when recorded."""

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not _TYPE.match(self.type):
            raise InvalidEntry(
                f"entry type must match [a-z][a-z0-9_.]{{0,63}}, got {shown(self.type)}"
            )
        if isinstance(self.postings, str | bytes | Mapping) or not isinstance(
            self.postings, Iterable
        ):
            raise InvalidEntry(
                f"postings must be a sequence of Posting, not {type(self.postings).__name__}",
                field="postings",
            )
        postings = tuple(self.postings)
        for posting in postings:
            if not isinstance(posting, Posting):
                raise InvalidEntry(f"postings must be Posting objects, got {shown(posting)}")
        if len(postings) < 2:
            raise InvalidEntry("an entry needs at least two postings")
        if len(postings) > MAX_POSTINGS:
            raise InvalidEntry(f"an entry has at most {MAX_POSTINGS} postings")
        check_balanced(postings)
        object.__setattr__(self, "postings", postings)
        _check_key(self.idempotency_key)
        if (
            not isinstance(self.description, str)
            or len(self.description) > 1000
            or "\x00" in self.description
        ):
            raise InvalidEntry(
                "description must be a string of at most 1000 characters, without NUL",
                field="description",
            )
        check_text(
            self.description, "description", max_length=1000, min_length=0, error=InvalidEntry
        )
        object.__setattr__(self, "metadata", check_json(self.metadata))
        _check_aware(self.effective_at, "effective_at")

    def fingerprint_fields(self) -> dict[str, Json]:
        """The request as the client gave it, for idempotency comparison.

        ``effective_at`` only counts when the caller set it: a retry that lets
        it default to "now" is the same request.
        """
        return {
            "type": self.type,
            "postings": [[p.account, p.amount_minor, p.currency] for p in self.postings],
            "description": self.description,
            "metadata": dict(self.metadata),
            "effective_at": self.effective_at.isoformat() if self.effective_at else None,
        }


@dataclass(frozen=True, slots=True)
class Entry:
    """A recorded journal entry (a row of the ``transactions`` table) and its postings."""

    id: int
    type: str
    phase: EntryPhase
    postings: tuple[Posting, ...]
    idempotency_key: str
    description: str
    metadata: Mapping[str, Json]
    effective_at: datetime
    recorded_at: datetime
    expires_at: datetime | None = None
    """For holds: when ``expire_holds`` may void it."""
    hold_id: int | None = None
    """For an entry that posts or voids a hold: the hold's id."""
    reverses_id: int | None = None
    """For a reversal: the id of the entry it reverses."""
    replayed: bool = field(default=False, compare=False)
    """True when this call recognised an earlier request with the same key and
    wrote nothing (hosts can answer with an ``Idempotent-Replayed`` header)."""


@dataclass(frozen=True, slots=True)
class EntryPage:
    """Entries touching a set of accounts, newest first; ``next_cursor`` continues."""

    entries: tuple[Entry, ...]
    next_cursor: str | None
    hold_status: Mapping[int, EntryPhase] = field(default_factory=dict)
    """For each pending entry (hold) on the page: pending, posted, voided or expired."""


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance in its normal sign (see the module docstring).

    ``available_minor`` is what may still be spent: posted minus pending
    holds that take money *out* of the account. Pending money coming *in*
    is not available until posted.
    """

    account: str
    kind: AccountKind
    currency: str
    posted_minor: int
    pending_in_minor: int
    pending_out_minor: int

    @property
    def pending_minor(self) -> int:
        """Net pending change (in minus out)."""
        return self.pending_in_minor - self.pending_out_minor

    @property
    def available_minor(self) -> int:
        return self.posted_minor - self.pending_out_minor

    @classmethod
    def from_raw(
        cls,
        account: str,
        kind: AccountKind,
        currency: str,
        *,
        posted: int,
        pending_debit: int,
        pending_credit: int,
    ) -> Balance:
        """Build from debit-positive sums (how the store keeps them)."""
        if kind.normal_sign > 0:
            pending_in, pending_out = pending_debit, pending_credit
        else:
            pending_in, pending_out = pending_credit, pending_debit
        return cls(account, kind, currency, kind.normal_sign * posted, pending_in, pending_out)


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One posting on an account, with its entry, for statements."""

    entry_id: int
    posting_id: int
    type: str
    phase: EntryPhase
    account: str
    currency: str
    amount_minor: int
    """The posting as recorded: debit > 0, credit < 0."""
    balance_change_minor: int
    """The same in the account's normal sign (+ means the balance grew)."""
    counterparties: tuple[str, ...]
    """The other accounts of the entry."""
    description: str
    metadata: Mapping[str, Json]
    effective_at: datetime
    recorded_at: datetime
    hold_id: int | None
    reverses_id: int | None
    hold_status: EntryPhase | None = None
    """For a hold's posting: ``pending`` while open, else how it was resolved."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of history, newest first; pass ``next_cursor`` to get the next one."""

    items: tuple[HistoryItem, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    account: str
    kind: AccountKind
    currency: str
    debit_minor: int
    """The posted balance when it is on the debit side, else 0."""
    credit_minor: int
    """The posted balance when it is on the credit side (as a positive number), else 0."""


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """Posted balances of every account; per currency, debits equal credits."""

    rows: tuple[TrialBalanceRow, ...]

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per currency: (total debits, total credits)."""
        out: dict[str, tuple[int, int]] = {}
        for row in self.rows:
            debit, credit = out.get(row.currency, (0, 0))
            out[row.currency] = (debit + row.debit_minor, credit + row.credit_minor)
        return out

    @property
    def balanced(self) -> bool:
        return all(debit == credit for debit, credit in self.totals().values())
