"""Checking an error the way a caller that maps errors to responses relies on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from spaktok_ledger import LedgerError
from spaktok_ledger.http import problem_for

__all__ = ["assert_error"]

# The members RFC 9457 reserves; a detail with one of these names is sent as error_<name>.
_RESERVED = {"type", "title", "status", "detail", "instance", "code"}


def _json(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def assert_error(
    error: BaseException,
    cls: type[LedgerError],
    facts: Sequence[str],
    details: Mapping[str, Any],
    *,
    message: str | None = None,
) -> None:
    """``error`` is exactly ``cls``; its message states every fact (or is exactly
    ``message``); its details are exactly ``details``; and the problem response
    (``spaktok_ledger.http``) carries both."""
    assert type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error}"
    assert isinstance(error, LedgerError)
    text = str(error)
    assert isinstance(text, str)
    if message is not None:
        assert text == message
    for fact in facts:
        assert fact in text, f"{fact!r} missing from {text!r}"
    assert dict(error.details) == dict(details)
    body = problem_for(error).to_dict()
    assert body["detail"] == text
    assert body["code"] == error.code
    for name, value in details.items():
        member = f"error_{name}" if name in _RESERVED else name
        assert body[member] == _json(value), member
