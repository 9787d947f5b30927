"""Sanctions and identity screening: a provider port, and a static-list provider.

The host plugs in its screening provider (a vendor's API, an internal
service) behind :class:`ScreeningProvider`; :class:`StaticListScreening`
screens against a list given in memory (for tests, or a list the host
downloads and loads itself, such as a consolidated sanctions list).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from spaktok_ledger._errors import InvalidInput

__all__ = [
    "Identity",
    "ListedParty",
    "ScreeningMatch",
    "ScreeningProvider",
    "ScreeningResult",
    "ScreeningStatus",
    "StaticListScreening",
    "normalise_name",
]


class ScreeningStatus(StrEnum):
    """What a screening found."""

    CLEAR = "clear"
    POTENTIAL_MATCH = "potential_match"
    """Similar to a listed name: a person must compare (payouts wait)."""
    MATCH = "match"
    """The same name (and birth date, when both are known): payouts are refused."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is screened: what the host knows of the person (personal data: sealed at rest)."""

    full_name: str
    birth_date: date | None = None
    country: str | None = None
    """ISO 3166 alpha-2."""

    def __post_init__(self) -> None:
        if not isinstance(self.full_name, str) or not normalise_name(self.full_name):
            raise InvalidInput("an identity needs a full name")

    def __repr__(self) -> str:
        return "Identity(***)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "full_name": self.full_name,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "country": self.country,
        }


@dataclass(frozen=True, slots=True)
class ListedParty:
    """An entry of a sanctions list (public data)."""

    list_name: str
    name: str
    birth_date: date | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScreeningMatch:
    """A list entry the identity resembles."""

    list_name: str
    listed_name: str
    score_bps: int
    """Similarity of the names in basis points (10,000: the same words)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "list_name": self.list_name,
            "listed_name": self.listed_name,
            "score_bps": self.score_bps,
        }


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    """What a provider found."""

    status: ScreeningStatus
    provider: str
    matches: tuple[ScreeningMatch, ...] = field(default=())


@runtime_checkable
class ScreeningProvider(Protocol):
    """A sanctions / identity screening service. Raise ``ScreeningUnavailable`` when it
    cannot answer (nothing is recorded, the call may be retried)."""

    name: str

    def screen(self, identity: Identity) -> ScreeningResult: ...


_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalise_name(name: str) -> tuple[str, ...]:
    """A name as sorted, accent-free, lower-case words: ``"Ólafur  Jónsson"`` and
    ``"JONSSON, Olafur"`` compare equal."""
    folded = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    return tuple(sorted(w for w in _NOT_WORD.split(plain) if w))


class StaticListScreening:
    """Screens names against a list held in memory.

    A name with the same words as a listed name (or alias) is a ``MATCH``,
    unless both birth dates are known and differ (then a potential match);
    a name sharing at least ``potential_bps`` of its words with one is a
    ``POTENTIAL_MATCH``.

    >>> screening = StaticListScreening([ListedParty("EU", "Ivan Petrov")])
    >>> screening.screen(Identity("PETROV, Ivan")).status.value
    'match'
    >>> screening.screen(Identity("Ivan Petrovsky")).status.value
    'clear'
    """

    def __init__(
        self, entries: Iterable[ListedParty], *, potential_bps: int = 6_000, name: str = "static"
    ) -> None:
        if isinstance(potential_bps, bool) or not 1 <= potential_bps <= 10_000:
            raise InvalidInput("potential_bps must be from 1 to 10,000")
        self.name = name
        self.potential_bps = potential_bps
        self._entries = [
            (entry, normalise_name(alias))
            for entry in entries
            for alias in (entry.name, *entry.aliases)
        ]

    def screen(self, identity: Identity) -> ScreeningResult:
        words = set(normalise_name(identity.full_name))
        found: list[tuple[ScreeningStatus, ScreeningMatch]] = []
        for entry, listed in self._entries:
            listed_words = set(listed)
            score = len(words & listed_words) * 10_000 // len(words | listed_words)
            if score == 10_000:
                dates_differ = (
                    identity.birth_date is not None
                    and entry.birth_date is not None
                    and identity.birth_date != entry.birth_date
                )
                status = ScreeningStatus.POTENTIAL_MATCH if dates_differ else ScreeningStatus.MATCH
            elif score >= self.potential_bps:
                status = ScreeningStatus.POTENTIAL_MATCH
            else:
                continue
            found.append((status, ScreeningMatch(entry.list_name, entry.name, score)))
        if not found:
            return ScreeningResult(ScreeningStatus.CLEAR, self.name)
        status = (
            ScreeningStatus.MATCH
            if any(s is ScreeningStatus.MATCH for s, _ in found)
            else ScreeningStatus.POTENTIAL_MATCH
        )
        matches = tuple(dict.fromkeys(m for _, m in found))
        return ScreeningResult(status, self.name, matches)
