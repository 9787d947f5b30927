"""History cursors: opaque, tamper-evident, strictly bounded.

A cursor is ``<posting id>.<query id>.<tag>`` in URL-safe base64, where the tag
is an HMAC-SHA256 (truncated to 96 bits) over the posting id and the query it
belongs to. Decoding checks, before anything reaches the database: the type
and length of the text, the alphabet, the tag (constant-time), that the
posting id is a canonical decimal from 1 to 2**63 - 1, and that the query
matches. Anything else is :class:`~spaktok_ledger.InvalidCursor` (HTTP 400),
never a driver error.

The HMAC key is the library's own constant: a cursor only carries a position
inside a query the caller is already allowed to run, so its tag is there to
make tampering evident and refuse it early, not to keep a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final

from spaktok_ledger._errors import InvalidCursor
from spaktok_ledger._money import INT64_MAX

__all__ = ["MAX_CURSOR_LENGTH", "decode_cursor", "encode_cursor"]

MAX_CURSOR_LENGTH: Final = 128
"""Characters a cursor can have; longer input is refused without decoding."""

_KEY: Final = b"spaktok-ledger history cursor v1"
_TAG_BYTES: Final = 12
_ALPHABET: Final = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_BODY: Final = re.compile(r"([1-9][0-9]{0,18})\.([0-9a-f]{16})")


def _tag(body: bytes) -> bytes:
    return hmac.new(_KEY, body, hashlib.sha256).digest()[:_TAG_BYTES]


def encode_cursor(posting_id: int, query_id: str) -> str:
    """The cursor that continues ``query_id`` after (below) ``posting_id``."""
    body = f"{posting_id}.{query_id}".encode()
    return base64.urlsafe_b64encode(body + _tag(body)).decode().rstrip("=")


def decode_cursor(cursor: object, query_id: str) -> int:
    """The posting id a cursor of ``query_id`` carries, or ``InvalidCursor``."""
    if not isinstance(cursor, str) or not _ALPHABET.fullmatch(cursor):
        raise InvalidCursor("the cursor is not one this ledger issued", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("the cursor is not one this ledger issued", field="cursor") from exc
    body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(raw) <= _TAG_BYTES or not hmac.compare_digest(tag, _tag(body)):
        raise InvalidCursor("the cursor is not one this ledger issued", field="cursor")
    match = _BODY.fullmatch(body.decode("ascii", errors="replace"))
    if match is None or int(match.group(1)) > INT64_MAX:
        raise InvalidCursor("the cursor is not one this ledger issued", field="cursor")
    if match.group(2) != query_id:
        raise InvalidCursor("the cursor belongs to a different history query", field="cursor")
    return int(match.group(1))
