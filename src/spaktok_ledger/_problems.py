"""The problem-details table and builders behind :mod:`spaktok_ledger.http`."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from spaktok_ledger import _errors as e
from spaktok_ledger._errors import LedgerError, PaymentProviderError

__all__ = [
    "DOCS_TYPE_BASE",
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "PROBLEM_TYPES",
    "Problem",
    "ProblemError",
    "ProblemType",
    "make_problem",
    "problem_for",
    "problem_type",
]

PROBLEM_JSON: Final = "application/problem+json"
"""The media type of a problem details body (RFC 9457, section 6.1)."""

DOCS_TYPE_BASE: Final = "https://github.com/spaktok/spaktok-ledger/blob/main/docs/http.md#"
"""Default prefix of ``type`` URIs: the problem type's entry in ``docs/http.md``."""

# Members RFC 9457 defines, plus our ``code``: details never override them.
_RESERVED: Final = frozenset({"type", "title", "status", "detail", "instance", "code"})


@dataclass(frozen=True, slots=True)
class ProblemType:
    """How one error class is answered over HTTP."""

    status: int
    """The HTTP status code."""
    title: str
    """The problem type's fixed, human-readable summary (RFC 9457, 3.1.3)."""
    retry_after_seconds: int | None = None
    """Sent as ``Retry-After`` when set: the request may be retried (same idempotency key)."""


# One entry per error class of the library, most specific first where it matters
# only for reading: lookups walk the class's MRO, so a host's own subclass of a
# library error gets its parent's answer. tests/test_http.py checks that every
# LedgerError subclass the library defines has its own entry here.
PROBLEM_TYPES: Final[Mapping[type[LedgerError], ProblemType]] = {
    LedgerError: ProblemType(500, "Ledger error"),
    # bad arguments: the request can be corrected
    e.InvalidInput: ProblemType(422, "Invalid input"),
    e.InvalidAmount: ProblemType(422, "Invalid amount"),
    e.InvalidAmountType: ProblemType(422, "Amount of the wrong type"),
    e.BalanceOverflow: ProblemType(422, "Balance would overflow"),
    e.UnknownCurrency: ProblemType(422, "Unknown currency"),
    e.UnknownLocale: ProblemType(422, "Unknown locale"),
    e.InvalidAccountCode: ProblemType(422, "Invalid account code"),
    e.InvalidEntry: ProblemType(422, "Invalid journal entry"),
    e.UnbalancedEntry: ProblemType(422, "Unbalanced journal entry"),
    e.CurrencyMismatch: ProblemType(422, "Currency does not match the account"),
    e.InvalidSplit: ProblemType(422, "Invalid revenue split"),
    e.InvalidCatalogue: ProblemType(422, "Invalid catalogue"),
    e.InvalidCursor: ProblemType(422, "Invalid page cursor"),
    e.UnsupportedCurrency: ProblemType(422, "Currency not supported"),
    e.AmountBelowMinimum: ProblemType(422, "Amount below the minimum charge"),
    e.GiftRejected: ProblemType(422, "Gift rejected"),
    # lookups
    e.NotFound: ProblemType(404, "Not found"),
    e.UnknownAccount: ProblemType(404, "Unknown account"),
    e.UnknownEntry: ProblemType(404, "Unknown entry"),
    e.UnknownQuote: ProblemType(404, "Unknown quote"),
    e.UnknownPack: ProblemType(404, "Unknown coin pack"),
    e.UnknownGift: ProblemType(404, "Unknown gift"),
    e.UnknownUser: ProblemType(404, "Unknown user"),
    e.UnknownStreamer: ProblemType(404, "Unknown streamer"),
    e.UnknownPurchase: ProblemType(404, "Unknown purchase"),
    e.UnknownPayout: ProblemType(404, "Unknown payout"),
    e.UnknownCase: ProblemType(404, "Unknown compliance case"),
    # state conflicts and business refusals: nothing was written
    e.Conflict: ProblemType(409, "Conflicts with the recorded state"),
    e.IdempotencyConflict: ProblemType(409, "Idempotency key reused for a different request"),
    e.AccountConflict: ProblemType(409, "Account exists with another definition"),
    e.AlreadyReversed: ProblemType(409, "Entry already reversed"),
    e.HoldNotPending: ProblemType(409, "Hold no longer pending"),
    e.CaseClosed: ProblemType(409, "Compliance case already decided"),
    e.InsufficientFunds: ProblemType(409, "Insufficient funds"),
    e.SpendingBlocked: ProblemType(409, "Spending blocked until a refunded purchase is repaid"),
    e.QuoteExpired: ProblemType(409, "Quote expired: ask for a new one"),
    # exchange rates: the server cannot price right now
    e.RateError: ProblemType(503, "Exchange rate unusable"),
    e.RateUnavailable: ProblemType(503, "Exchange rate unavailable"),
    e.RateStale: ProblemType(503, "Exchange rate too old"),
    # payments
    e.PaymentError: ProblemType(502, "Payment error"),
    e.PaymentProviderError: ProblemType(502, "Payment provider error"),
    e.WebhookVerificationError: ProblemType(400, "Webhook signature rejected"),
    e.WebhookPayloadError: ProblemType(400, "Webhook payload unreadable"),
    e.AmountMismatch: ProblemType(409, "Amount does not match the quote"),
    e.FraudRejected: ProblemType(429, "Purchase limit reached"),
    # payouts
    e.PayoutError: ProblemType(409, "Payout refused"),
    e.PayoutsNotEnabled: ProblemType(409, "Payouts not enabled"),
    e.PayoutBelowMinimum: ProblemType(422, "Payout below the minimum"),
    e.PayoutLimitExceeded: ProblemType(409, "Payout limit exceeded"),
    # compliance
    e.ComplianceError: ProblemType(403, "Refused by compliance controls"),
    e.MonitoringRefused: ProblemType(403, "Refused by transaction monitoring"),
    e.DataErased: ProblemType(410, "Personal data erased"),
    e.EncryptionError: ProblemType(500, "Encryption key unavailable"),
    e.ScreeningUnavailable: ProblemType(
        503, "Screening provider unavailable", retry_after_seconds=30
    ),
    # infrastructure
    e.LedgerBusy: ProblemType(
        503, "Ledger busy: retry with the same Idempotency-Key", retry_after_seconds=1
    ),
    e.SchemaError: ProblemType(500, "Ledger schema not ready"),
    e.PublishError: ProblemType(503, "Message broker unavailable", retry_after_seconds=5),
    e.UnitsMismatch: ProblemType(500, "Stored amounts use other units than the library"),
}


def problem_type(error: type[LedgerError]) -> ProblemType:
    """The :class:`ProblemType` of an error class: its own entry, else its nearest parent's."""
    for cls in error.__mro__:
        found = PROBLEM_TYPES.get(cls)
        if found is not None:
            return found
    raise TypeError(f"{error.__name__} is not a LedgerError")


@dataclass(frozen=True, slots=True)
class Problem:
    """An RFC 9457 problem: the body's members, and the headers for the response."""

    status: int
    code: str
    """The stable machine-readable name (``insufficient_funds``), an extension member."""
    title: str
    detail: str
    type: str
    instance: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    """Extension members (JSON values), e.g. ``available_minor``."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers that belong to the problem (``Retry-After``)."""

    def to_dict(self) -> dict[str, Any]:
        """The ``application/problem+json`` body, as a JSON object."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.instance is not None:
            body["instance"] = self.instance
        body.update(self.extensions)
        return body

    def to_json(self) -> bytes:
        """The body, serialised (UTF-8 JSON)."""
        return json.dumps(self.to_dict(), ensure_ascii=False).encode()


class ProblemError(Exception):
    """An exception carrying a :class:`Problem`: a host raises it for its own refusals
    (no caller, someone else's wallet, a malformed body) and answers it like a
    library error, in one error handler."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def _json_value(value: Any) -> Any:
    """A detail's value as JSON: exact decimals as strings, times in ISO 8601."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value  # never money (the library rejects float amounts); e.g. a duration
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _json_value(value.value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_json_value(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return str(value)


def _extensions(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        (f"error_{name}" if name in _RESERVED else name): _json_value(value)
        for name, value in values.items()
    }


def make_problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
    type_base: str = DOCS_TYPE_BASE,
    **extensions: Any,
) -> Problem:
    """A problem of the host's own (401, 403, request validation), in the same shape.

    >>> make_problem(403, "forbidden", "Forbidden", "not your wallet").to_dict()["status"]
    403
    """
    if not 400 <= status <= 599:
        raise ValueError(f"a problem's status is a 4xx or 5xx code, not {status}")
    return Problem(
        status=status,
        code=code,
        title=title,
        detail=detail,
        type=type_base + code,
        instance=instance,
        extensions=_extensions(extensions),
        headers=dict(headers or {}),
    )


def problem_for(
    exc: LedgerError, *, instance: str | None = None, type_base: str = DOCS_TYPE_BASE
) -> Problem:
    """The problem answering a library error: status, type, title, detail and details.

    ``type_base`` prefixes the error's ``code`` to make the ``type`` URI (default:
    the type's entry in this library's docs; pass your own documentation's URL).

    >>> from spaktok_ledger import InsufficientFunds
    >>> problem = problem_for(InsufficientFunds("wallet too low", available_minor=5))
    >>> (problem.status, problem.code, problem.to_dict()["available_minor"])
    (409, 'insufficient_funds', 5)
    """
    if not isinstance(exc, LedgerError):
        raise TypeError(f"problem_for() takes a LedgerError, not {type(exc).__name__}")
    kind = problem_type(type(exc))
    values: dict[str, Any] = dict(exc.details)
    retry_after = kind.retry_after_seconds
    if isinstance(exc, PaymentProviderError):
        values["retryable"] = exc.retryable
        if exc.retryable:
            retry_after = 1
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Problem(
        status=kind.status,
        code=exc.code,
        title=kind.title,
        detail=exc.message,
        type=type_base + exc.code,
        instance=instance,
        extensions=_extensions(values),
        headers=headers,
    )


PROBLEM_SCHEMA: Final[Mapping[str, Any]] = {
    "title": "Problem",
    "description": "An RFC 9457 problem details object (application/problem+json).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "URI of the problem type"},
        "title": {"type": "string", "description": "fixed summary of the problem type"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "this occurrence, in plain words"},
        "code": {
            "type": "string",
            "pattern": "^[a-z][a-z0-9_]*$",
            "description": "the stable machine-readable name of the problem",
        },
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
"""JSON Schema of a problem body (for OpenAPI documents): the members every problem has;
extension members (the error's details) are allowed beside them."""
