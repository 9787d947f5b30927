"""Identifiers of the host's users and streamers, as the ledger stores them."""

from __future__ import annotations

import re
from typing import Final

from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._validate import shown

__all__ = ["check_party_id"]

_ID: Final = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")


def check_party_id(value: object, name: str = "id") -> str:
    """A user or streamer id: the host's own id as a short string (ints are accepted).

    Ids become part of account codes (``user:{id}:wallet``), so they are
    limited to letters, digits and ``_ . @ -``, at most 64 characters.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(
            f"{name} must be 1-64 letters, digits or _.@- (or an int), got {shown(value)}",
            field=name,
        )
    return value
