"""Catalogues the host configures: the gifts viewers send (and shared loading helpers).

Pure: no I/O beyond reading a catalogue file the caller names. Prices and
counts are integers; a float in a catalogue file is an error, not a price.
The coin-pack catalogue (:class:`~spaktok_ledger.PackCatalogue`) uses the same
loaders.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from spaktok_ledger._errors import InvalidAmount, InvalidCatalogue, UnknownGift
from spaktok_ledger._money import check_minor

__all__ = [
    "CATALOGUE_ID",
    "Gift",
    "GiftCatalogue",
    "catalogue_int",
    "parse_catalogue_file",
    "parse_json_catalogue",
    "parse_toml_catalogue",
]

CATALOGUE_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
"""Ids of packs and gifts: lower-case, digits, ``_ . -``; at most 64 characters."""


def catalogue_int(value: object, name: str, *, minimum: int) -> int:
    """An integer field of a catalogue entry, at least ``minimum``."""
    try:
        number = check_minor(value, name=name)
    except InvalidAmount as exc:
        raise InvalidCatalogue(str(exc), field=name) from exc
    if number < minimum:
        raise InvalidCatalogue(f"{name} must be at least {minimum}, got {number}", field=name)
    return number


def _refuse_float(text: str) -> Any:
    raise ValueError(f"prices and counts are integers, got {text}")


def parse_json_catalogue(text: str | bytes) -> Any:
    """Parse JSON, refusing non-integer numbers."""
    try:
        return json.loads(text, parse_float=_refuse_float, parse_constant=_refuse_float)
    except ValueError as exc:
        raise InvalidCatalogue(f"malformed JSON catalogue: {exc}") from exc


def parse_toml_catalogue(text: str) -> Any:
    """Parse TOML (floats are caught by the entries' integer checks)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidCatalogue(f"malformed TOML catalogue: {exc}") from exc


def parse_catalogue_file(path: str | os.PathLike[str]) -> Any:
    """Read and parse a ``.json`` or ``.toml`` catalogue file."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in {".json", ".toml"}:
        raise InvalidCatalogue(f"catalogue files are .json or .toml, got {file.name!r}")
    text = file.read_text(encoding="utf-8")
    return parse_json_catalogue(text) if suffix == ".json" else parse_toml_catalogue(text)


def _entries(data: object, key: str, allowed: frozenset[str], required: set[str]) -> list[Any]:
    """Validate ``{key: [ {...}, ... ]}`` and return the raw entries."""
    if not isinstance(data, Mapping):
        raise InvalidCatalogue(f"a catalogue must be a mapping with a {key!r} list")
    raw = data.get(key)
    if not isinstance(raw, list):
        raise InvalidCatalogue(f"{key!r} must be a list of tables/objects")
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise InvalidCatalogue(f"{key} #{index} must be a table/object")
        unknown, missing = set(item) - allowed, required - set(item)
        if unknown or missing:
            raise InvalidCatalogue(
                f"{key} #{index}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
            )
    return raw


def catalogue_entries(
    data: object, key: str, allowed: frozenset[str], required: set[str], top: frozenset[str]
) -> list[Any]:
    """Check a catalogue mapping's top-level keys and return its validated entries."""
    if isinstance(data, Mapping):
        unknown = set(data) - top
        if unknown:
            raise InvalidCatalogue(f"unknown catalogue keys: {sorted(unknown)}")
    return _entries(data, key, allowed, required)


@dataclass(frozen=True, slots=True)
class Gift:
    """A virtual gift a viewer can send, priced in coins.

    >>> Gift("rose", coins=10, name="Rose").coins
    10
    """

    id: str
    """Stable identifier: ``[a-z0-9][a-z0-9_.-]*``, at most 64 characters."""
    coins: int
    """Price in coins (positive); its USD value is ``coins x coin value``."""
    name: str = ""
    """Display name; defaults to the id."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not CATALOGUE_ID.match(self.id):
            raise InvalidCatalogue(
                f"gift id must match [a-z0-9][a-z0-9_.-]{{0,63}}, got {self.id!r}"
            )
        object.__setattr__(self, "coins", catalogue_int(self.coins, "coins", minimum=1))
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise InvalidCatalogue(f"gift {self.id}: name must be at most 200 characters")
        if not self.name:
            object.__setattr__(self, "name", self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "coins": self.coins}


_GIFT_KEYS: Final = frozenset({"id", "name", "coins"})


@dataclass(frozen=True, slots=True)
class GiftCatalogue:
    """The gifts on offer, validated as a whole (unique ids, at least one gift).

    From code, a mapping, JSON or TOML::

        [[gifts]]
        id = "rose"
        name = "Rose"
        coins = 10

    >>> GiftCatalogue((Gift("rose", 10), Gift("rocket", 5000))).get("rocket").coins
    5000
    """

    gifts: Sequence[Gift]
    """The gifts, in display order (any sequence; stored as a tuple)."""
    _by_id: dict[str, Gift] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.gifts, str | bytes | Mapping) or not hasattr(self.gifts, "__iter__"):
            raise InvalidCatalogue("gifts must be a sequence of Gift")
        gifts = tuple(self.gifts)
        if not gifts:
            raise InvalidCatalogue("a gift catalogue needs at least one gift")
        by_id: dict[str, Gift] = {}
        for gift in gifts:
            if not isinstance(gift, Gift):
                raise InvalidCatalogue(f"gifts must be Gift objects, got {gift!r}")
            if gift.id in by_id:
                raise InvalidCatalogue(f"duplicate gift id {gift.id!r}", gift_id=gift.id)
            by_id[gift.id] = gift
        object.__setattr__(self, "gifts", gifts)
        object.__setattr__(self, "_by_id", by_id)

    def __iter__(self) -> Iterator[Gift]:
        return iter(self.gifts)

    def __len__(self) -> int:
        return len(self.gifts)

    def __contains__(self, gift_id: object) -> bool:
        return gift_id in self._by_id

    def get(self, gift_id: str) -> Gift:
        """The gift with this id, or ``UnknownGift``."""
        try:
            return self._by_id[gift_id]
        except (KeyError, TypeError):
            raise UnknownGift(f"no gift {gift_id!r}", gift_id=gift_id) from None

    def to_dict(self) -> dict[str, Any]:
        return {"gifts": [gift.to_dict() for gift in self.gifts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GiftCatalogue:
        """Build from ``{"gifts": [{"id": ..., "coins": ...}, ...]}``; unknown keys fail."""
        raw = catalogue_entries(data, "gifts", _GIFT_KEYS, {"id", "coins"}, frozenset({"gifts"}))
        return cls(tuple(Gift(**item) for item in raw))

    @classmethod
    def from_json(cls, text: str | bytes) -> GiftCatalogue:
        return cls.from_dict(parse_json_catalogue(text))

    @classmethod
    def from_toml(cls, text: str) -> GiftCatalogue:
        return cls.from_dict(parse_toml_catalogue(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GiftCatalogue:
        """Read a ``.json`` or ``.toml`` gift catalogue file."""
        return cls.from_dict(parse_catalogue_file(path))
