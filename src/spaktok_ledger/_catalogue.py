"""Catalogues the host configures: the gifts viewers send and the coin packs they buy.

Pure: no I/O beyond reading a catalogue file the caller names. Prices and
counts are integers; a float in a catalogue file is an error, not a price.
Both catalogues share the loaders below.
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

from spaktok_ledger._errors import InvalidAmount, InvalidCatalogue, UnknownGift, UnknownPack
from spaktok_ledger._money import check_minor
from spaktok_ledger._validate import shown

__all__ = [
    "CATALOGUE_ID",
    "CoinPack",
    "Gift",
    "GiftCatalogue",
    "PackCatalogue",
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
            raise UnknownGift(f"no gift {shown(gift_id)}", gift_id=shown(gift_id)) from None

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


# --- the coin-pack catalogue -------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoinPack:
    """A pack of coins sold for a USD list price.

    Its face value ``F = (coins + bonus_coins) · coin_value_usd_minor`` may
    differ from its price ``P``; the ledger books ``P - F`` to
    ``platform:coin_pricing``.

    >>> pack = CoinPack("starter", usd_price_minor=499, coins=500, bonus_coins=25)
    >>> pack.total_coins, pack.face_value_usd_minor(), pack.pricing_difference_usd_minor()
    (525, 525, -26)
    """

    id: str
    """Stable identifier: ``[a-z0-9][a-z0-9_.-]*``, at most 64 characters."""
    usd_price_minor: int
    """The list price P in US cents (positive)."""
    coins: int
    """Coins bought (positive)."""
    bonus_coins: int = 0
    """Extra coins given free (non-negative)."""
    name: str = ""
    """Display name; defaults to the id."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not CATALOGUE_ID.match(self.id):
            raise InvalidCatalogue(
                f"pack id must match [a-z0-9][a-z0-9_.-]{{0,63}}, got {self.id!r}"
            )
        object.__setattr__(
            self,
            "usd_price_minor",
            catalogue_int(self.usd_price_minor, "usd_price_minor", minimum=1),
        )
        object.__setattr__(self, "coins", catalogue_int(self.coins, "coins", minimum=1))
        object.__setattr__(
            self, "bonus_coins", catalogue_int(self.bonus_coins, "bonus_coins", minimum=0)
        )
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise InvalidCatalogue(
                f"pack {self.id}: name must be a string of at most 200 characters"
            )
        if not self.name:
            object.__setattr__(self, "name", self.id)

    @property
    def total_coins(self) -> int:
        """Coins credited to the wallet: bought plus bonus."""
        return self.coins + self.bonus_coins

    def face_value_usd_minor(self, coin_value_usd_minor: int = 1) -> int:
        """F: what the credited coins are worth, in US cents."""
        return self.total_coins * catalogue_int(
            coin_value_usd_minor, "coin_value_usd_minor", minimum=1
        )

    def pricing_difference_usd_minor(self, coin_value_usd_minor: int = 1) -> int:
        """P - F: positive when priced above face value, negative with bonus coins."""
        return self.usd_price_minor - self.face_value_usd_minor(coin_value_usd_minor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "usd_price_minor": self.usd_price_minor,
            "coins": self.coins,
            "bonus_coins": self.bonus_coins,
        }


_PACK_KEYS: Final = frozenset({"id", "name", "usd_price_minor", "coins", "bonus_coins"})
_CATALOGUE_KEYS: Final = frozenset({"packs", "coin_value_usd_minor"})


@dataclass(frozen=True, slots=True)
class PackCatalogue:
    """The coin packs on sale, validated as a whole (unique ids, at least one pack).

    Load it from code, a mapping, JSON or TOML; all prices are integer US
    cents (a float in the file is an error, not a price)::

        coin_value_usd_minor = 1     # 1 coin = 1 US cent of face value

        [[packs]]
        id = "starter"
        name = "Starter"
        usd_price_minor = 499
        coins = 500

    >>> catalogue = PackCatalogue((CoinPack("starter", 499, 500),))
    >>> catalogue.get("starter").coins
    500
    """

    packs: Sequence[CoinPack]
    """The packs, in display order (any sequence; stored as a tuple)."""
    coin_value_usd_minor: int = 1
    """Face value of one coin in US cents."""
    _by_id: dict[str, CoinPack] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.packs, str | bytes | Mapping) or not hasattr(self.packs, "__iter__"):
            raise InvalidCatalogue("packs must be a sequence of CoinPack")
        packs = tuple(self.packs)
        if not packs:
            raise InvalidCatalogue("a catalogue needs at least one pack")
        by_id: dict[str, CoinPack] = {}
        for pack in packs:
            if not isinstance(pack, CoinPack):
                raise InvalidCatalogue(f"packs must be CoinPack objects, got {pack!r}")
            if pack.id in by_id:
                raise InvalidCatalogue(f"duplicate pack id {pack.id!r}", pack_id=pack.id)
            by_id[pack.id] = pack
        object.__setattr__(self, "packs", packs)
        object.__setattr__(
            self,
            "coin_value_usd_minor",
            catalogue_int(self.coin_value_usd_minor, "coin_value_usd_minor", minimum=1),
        )
        object.__setattr__(self, "_by_id", by_id)

    def __iter__(self) -> Iterator[CoinPack]:
        return iter(self.packs)

    def __len__(self) -> int:
        return len(self.packs)

    def __contains__(self, pack_id: object) -> bool:
        return pack_id in self._by_id

    def get(self, pack_id: str) -> CoinPack:
        """The pack with this id, or ``UnknownPack``."""
        try:
            return self._by_id[pack_id]
        except (KeyError, TypeError):
            raise UnknownPack(f"no coin pack {shown(pack_id)}", pack_id=shown(pack_id)) from None

    def face_value_usd_minor(self, pack_id: str) -> int:
        """F for a pack at this catalogue's coin value."""
        return self.get(pack_id).face_value_usd_minor(self.coin_value_usd_minor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "coin_value_usd_minor": self.coin_value_usd_minor,
            "packs": [pack.to_dict() for pack in self.packs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackCatalogue:
        """Build from ``{"coin_value_usd_minor": 1, "packs": [{...}, ...]}``; unknown keys fail."""
        raw = catalogue_entries(
            data, "packs", _PACK_KEYS, {"id", "usd_price_minor", "coins"}, _CATALOGUE_KEYS
        )
        return cls(tuple(CoinPack(**item) for item in raw), data.get("coin_value_usd_minor", 1))

    @classmethod
    def from_json(cls, text: str | bytes) -> PackCatalogue:
        """Parse a JSON catalogue; non-integer numbers are refused."""
        return cls.from_dict(parse_json_catalogue(text))

    @classmethod
    def from_toml(cls, text: str) -> PackCatalogue:
        """Parse a TOML catalogue (``[[packs]]`` tables)."""
        return cls.from_dict(parse_toml_catalogue(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PackCatalogue:
        """Read a ``.json`` or ``.toml`` catalogue file."""
        return cls.from_dict(parse_catalogue_file(path))
