"""Explicit request checks, for the apps without pydantic (Flask, Django).

:class:`Fields` checks a JSON object's fields one by one and reports every
problem at once, as one 422 ``validation_failed`` problem, the way pydantic
does in the FastAPI example.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from examples.common.services import malformed_json, validation_failed

__all__ = ["CURRENCY_PATTERN", "ID_PATTERN", "Fields", "parse_json_object", "parse_query_int"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
CURRENCY_PATTERN = re.compile(r"^[A-Za-z]{3}$")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: 400 if it is not JSON, 422 if not an object."""
    if not raw.strip():
        raise validation_failed([{"field": "body", "message": "Field required"}])
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed_json(str(exc)) from None
    except RecursionError:  # a deeply nested body: refused, never a 500
        raise malformed_json("the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise validation_failed([{"field": "body", "message": "must be a JSON object"}])
    return data


class Fields:
    """Checks a JSON object's fields one by one, collecting every problem (then 422)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.errors: list[dict[str, str]] = []
        self.known: set[str] = set()

    def _fail(self, name: str, message: str) -> None:
        self.errors.append({"field": name, "message": message})

    def text(
        self, name: str, *, pattern: re.Pattern[str] | None = None, max_length: int = 64
    ) -> str:
        """A required string (``""`` when it fails: :meth:`check` raises before it is used)."""
        value = self.optional_text(name, pattern=pattern, max_length=max_length)
        if self.data.get(name) is None:
            self._fail(name, "Field required")
        return value or ""

    def optional_text(
        self, name: str, *, pattern: re.Pattern[str] | None = None, max_length: int = 64
    ) -> str | None:
        self.known.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self._fail(name, "must be a non-empty string")
        elif not value.isprintable():  # NUL, control characters, lone surrogates
            self._fail(name, "must not contain control characters")
        elif len(value) > max_length:
            self._fail(name, f"must be at most {max_length} characters")
        elif pattern is not None and not pattern.match(value):
            self._fail(name, f"must match {pattern.pattern}")
        else:
            return value
        return None

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        self.known.add(name)
        value = self.data.get(name, default)
        # bool is an int in Python, and 3.0 is not a count: money is whole minor units.
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(name, "must be an integer")
        elif not minimum <= value <= maximum:
            self._fail(name, f"must be from {minimum} to {maximum}")
        else:
            return value
        return default

    def amount(self, name: str) -> int | Literal["all"]:
        self.known.add(name)
        value = self.data.get(name)
        if value == "all":
            return "all"
        if value is None:
            self._fail(name, "Field required")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self._fail(name, 'must be a positive integer number of US cents, or "all"')
        else:
            return value
        return "all"

    def check(self) -> None:
        """Unknown fields are errors too; raise everything found as one 422."""
        for name in sorted(set(self.data) - self.known):
            self._fail(name, "Extra inputs are not permitted")
        if self.errors:
            raise validation_failed(self.errors)


def parse_query_int(raw: str | None, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """A query parameter that must be a whole number in a range (422 otherwise)."""
    if raw is None:
        return default
    # ASCII digits only ("²".isdigit() is true), and short: int() of a huge string is slow.
    if not re.fullmatch(r"[0-9]{1,18}", raw) or not minimum <= int(raw) <= maximum:
        raise validation_failed(
            [{"field": name, "message": f"must be an integer from {minimum} to {maximum}"}]
        )
    return int(raw)
