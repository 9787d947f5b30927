"""The validation layer at the public boundary: hostile input becomes a typed error.

Pure: no I/O. Every public call (the ledger store, the services, the webhook
entry points, sync or async) checks its arguments here before it reads or
writes anything, so a refusal is always a :class:`~spaktok_ledger.LedgerError`
subclass that names the field, and is the same on SQLite and PostgreSQL:

- text (ids, keys, codes, descriptions, metadata strings) is a ``str`` (never
  ``bytes``), without NUL (PostgreSQL cannot store it; SQLite would store it
  as is, so the backends would disagree), without lone surrogates (not
  encodable as UTF-8), within a documented length;
- integers (entry ids, cursors, amounts, quantities) are ``int`` (never
  ``bool``, ``float``, ``Decimal`` or ``bytes``) within a documented range,
  at most signed 64-bit;
- metadata is at most :data:`MAX_METADATA_DEPTH` levels deep and
  :data:`MAX_METADATA_BYTES` bytes of JSON.

Derived keys (``gift:{sender}:{key}``, ``adjust:{key}``) go through
:func:`derived_key`, which hashes the part a caller supplied when the whole
would not fit the key column, so every documented-valid key is accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, cast

from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._money import INT64_MAX

__all__ = [
    "MAX_ENTRY_ID",
    "MAX_KEY_COLUMN",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_WEBHOOK_BODY_BYTES",
    "check_aware",
    "check_entry_id",
    "check_int",
    "check_metadata_shape",
    "check_metadata_size",
    "check_text",
    "check_types",
    "derived_key",
    "shown",
]

MAX_ENTRY_ID: Final = INT64_MAX
"""Entry, hold and posting ids are positive signed 64-bit integers."""
MAX_KEY_COLUMN: Final = 255
"""Characters the idempotency-key column holds (every derived key fits it)."""
MAX_METADATA_DEPTH: Final = 32
"""Nesting levels of metadata (a mapping of scalars is depth 1)."""
MAX_METADATA_BYTES: Final = 65_536
"""Bytes of metadata once serialised as JSON."""
MAX_WEBHOOK_BODY_BYTES: Final = 1_048_576
"""The default cap on a webhook request body, checked before its signature."""


def check_text(
    value: object,
    field: str,
    *,
    max_length: int,
    min_length: int = 1,
    error: type[InvalidInput] = InvalidInput,
) -> str:
    """Return ``value`` if it is storable text of ``min_length``..``max_length`` characters.

    >>> check_text("gift-1", "idempotency_key", max_length=200)
    'gift-1'
    """
    if not isinstance(value, str):
        raise error(
            f"{field} must be a string, not {type(value).__name__}",
            field=field,
        )
    if "\x00" in value:
        raise error(f"{field} must not contain NUL characters", field=field)
    if not min_length <= len(value) <= max_length:
        raise error(
            f"{field} must be {min_length} to {max_length} characters, got {len(value)}",
            field=field,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{field} must be valid Unicode (no lone surrogates)", field=field) from exc
    return value


def check_int(
    value: object,
    field: str,
    *,
    minimum: int,
    maximum: int,
    error: type[InvalidInput] = InvalidInput,
) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``) in ``minimum..maximum``.

    >>> check_int(3, "quantity", minimum=1, maximum=10)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{field} must be an int, not {type(value).__name__}", field=field)
    if not minimum <= value <= maximum:
        raise error(f"{field} must be from {minimum} to {maximum}, got {value}", field=field)
    return value


def check_entry_id(value: object, field: str = "entry_id") -> int:
    """An entry (or hold) id: a positive signed 64-bit ``int``."""
    return check_int(value, field, minimum=1, maximum=MAX_ENTRY_ID)


def check_types(types: Iterable[str] | None, field: str = "types") -> list[str] | None:
    """A history filter's entry types: ``None`` or an iterable of short strings."""
    if types is None:
        return None
    if isinstance(types, str | bytes) or not isinstance(types, Iterable):
        raise InvalidInput(f"{field} must be a list of entry types", field=field)
    out = [check_text(t, field, max_length=64) for t in types]
    if len(out) > 64:
        raise InvalidInput(f"{field} lists at most 64 entry types", field=field)
    return sorted(set(out))


def check_metadata_shape(value: object, field: str = "metadata") -> None:
    """Refuse metadata nested deeper than :data:`MAX_METADATA_DEPTH` or holding bad text.

    Walks iteratively (a 100,000-deep value cannot exhaust the stack) before
    anything serialises it; the size limit is checked on the JSON afterwards.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_METADATA_BYTES:
            raise InvalidInput(f"{field} holds too many values", field=field)
        kind = type(item)  # the common exact types first: no ABC check for them
        if kind is str:
            _check_meta_text(item, field)  # type: ignore[arg-type]
            continue
        if item is None or kind is bool or kind is float:
            continue
        mapping = kind is dict or (kind is not list and isinstance(item, Mapping))
        if mapping or isinstance(item, list | tuple):
            if depth >= MAX_METADATA_DEPTH:
                raise InvalidInput(
                    f"{field} is nested deeper than {MAX_METADATA_DEPTH} levels", field=field
                )
            if mapping:
                for key, child in cast("Mapping[object, object]", item).items():
                    if isinstance(key, str):
                        _check_meta_text(key, field)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in cast("list[object]", item))
        elif isinstance(item, str):
            _check_meta_text(item, field)
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not -INT64_MAX - 1 <= item <= INT64_MAX
        ):
            raise InvalidInput(f"{field} integers must fit signed 64 bits", field=field)


def _check_meta_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidInput(
            f"{field} must not contain NUL characters (PostgreSQL cannot store them)",
            field=field,
        )
    if len(text) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{field} is larger than {MAX_METADATA_BYTES} bytes", field=field)
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{field} must be valid Unicode (no lone surrogates)", field=field
        ) from exc


def check_metadata_size(text: str, field: str = "metadata") -> None:
    """Refuse serialised metadata over :data:`MAX_METADATA_BYTES` bytes."""
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"{field} is larger than {MAX_METADATA_BYTES} bytes of JSON", field=field
        )


def derived_key(prefix: str, *parts: str, limit: int = MAX_KEY_COLUMN) -> str:
    """``prefix:part:part``; when that exceeds ``limit`` characters, the parts are hashed.

    Keys that fit are unchanged (so entries recorded before keep replaying);
    a longer one becomes ``prefix:sha256:<hex>`` of the parts, which always fits.

    >>> derived_key("adjust", "k1")
    'adjust:k1'
    >>> len(derived_key("gift", "u" * 64, "k" * 200))
    76
    """
    key = ":".join((prefix, *parts))
    if len(key) <= limit:
        return key
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}:sha256:{digest}"


def shown(value: object, limit: int = 80) -> str:
    """A short, safe rendering of a refused value for an error message.

    Never the ``repr`` of an arbitrary object (a 100,000-deep dict has none
    that fits the stack, a long string would fill logs): text and numbers
    shortened to ``limit`` characters, anything else by its type name.

    >>> shown("abc")
    "'abc'"
    >>> shown({"a": 1})
    '<dict>'
    """
    if isinstance(value, str | bytes | int | float | Decimal) and not isinstance(value, bool):
        try:
            text = repr(value)
        except ValueError:  # an int with more digits than int -> str allows
            return f"<{type(value).__name__}>"
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if value is None or isinstance(value, bool):
        return repr(value)
    return f"<{type(value).__name__}>"


def check_aware(value: object, field: str) -> datetime:
    """A timezone-aware ``datetime`` (a naive one is ambiguous: which zone?)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{field} must be a timezone-aware datetime", field=field)
    return value
