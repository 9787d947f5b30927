"""Parsers for the rate providers' documented response formats.

Pure: bytes in, :class:`RateTable` out; no HTTP (that is ``_http.py``), so
the formats are testable without ``httpx``. Numbers are read straight into
``Decimal`` (XML attributes as text, JSON with ``parse_float=Decimal``):
a rate never passes through a float. Anything malformed raises
``RateUnavailable``; currency codes the library does not know (``BTC``,
``XAG`` variants...) are skipped, not errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spaktok_ledger._currency import known_currencies
from spaktok_ledger._errors import InvalidInput, RateUnavailable
from spaktok_ledger.fx._rates import RateTable

__all__ = ["ECB_PUBLICATION_TIME", "parse_ecb_xml", "parse_fixer_json", "parse_oxr_json"]

Scrub = Callable[[str], str]

ECB_PUBLICATION_TIME: Final = time(16, 0)
"""The ECB publishes its reference rates "around 16:00 CET" on TARGET working days;
a table dated D counts as published at D 16:00 Frankfurt time."""

_CODE = re.compile(r"^[A-Z]{3}$")


def _no_scrub(text: str) -> str:
    return text


def _ecb_published_at(day: date) -> datetime:
    zone: tzinfo
    try:
        zone = ZoneInfo("Europe/Berlin")
    except ZoneInfoNotFoundError:  # pragma: no cover - no tz database: CET, no summer time
        zone = timezone(timedelta(hours=1), "CET")
    return datetime.combine(day, ECB_PUBLICATION_TIME, tzinfo=zone).astimezone(UTC)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _rate(source: str, code: str, raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise RateUnavailable(f"{source}: the {code} rate is not a number", source=source)
    try:
        value = Decimal(raw) if not isinstance(raw, Decimal) else raw
    except InvalidOperation as exc:
        raise RateUnavailable(f"{source}: the {code} rate is not a number", source=source) from exc
    if not value.is_finite() or value <= 0:
        raise RateUnavailable(f"{source}: the {code} rate is not positive", source=source)
    return value


def _collect(
    source: str, items: Mapping[str, object] | list[tuple[str, object]]
) -> dict[str, Decimal]:
    pairs = items.items() if isinstance(items, Mapping) else items
    known = known_currencies()
    rates: dict[str, Decimal] = {}
    for code, raw in pairs:
        if not isinstance(code, str) or not _CODE.match(code) or code not in known:
            continue  # BTC, CNH-like extras: not an ISO currency we price in
        rates[code] = _rate(source, code, raw)
    if not rates:
        raise RateUnavailable(f"{source}: the response holds no rates", source=source)
    return rates


def _table(
    source: str, base: object, rates: dict[str, Decimal], published: datetime, fetched: datetime
) -> RateTable:
    if not isinstance(base, str) or base not in known_currencies():
        raise RateUnavailable(f"{source}: missing or unknown base currency", source=source)
    try:
        return RateTable(base, rates, source, published, fetched)
    except InvalidInput as exc:
        raise RateUnavailable(f"{source}: inconsistent rate table", source=source) from exc


def parse_ecb_xml(content: bytes, *, fetched_at: datetime, source: str = "ecb") -> RateTable:
    """Parse the ECB's ``eurofxref-daily.xml`` (or the 90-day/historic file: newest day wins).

    The document is ``gesmes:Envelope`` with ``Cube`` elements in the
    ``eurofxref`` default namespace; elements are matched by local name so a
    namespace prefix change does not break parsing. A document with a DTD
    is refused (entity-expansion attacks) before it reaches the parser.
    """
    if not isinstance(content, bytes):
        raise RateUnavailable(f"{source}: expected bytes", source=source)
    if b"<!DOCTYPE" in content or b"<!ENTITY" in content:
        raise RateUnavailable(f"{source}: refusing an XML document with a DTD", source=source)
    try:
        root = ET.fromstring(content)  # noqa: S314 - no DTD, see above
    except ET.ParseError as exc:
        raise RateUnavailable(f"{source}: malformed XML", source=source) from exc
    days: dict[date, list[tuple[str, object]]] = {}
    for element in root.iter():
        if _local(element.tag) != "Cube" or "time" not in element.attrib:
            continue
        try:
            day = date.fromisoformat(element.attrib["time"])
        except ValueError as exc:
            raise RateUnavailable(f"{source}: malformed date", source=source) from exc
        days[day] = [
            (child.attrib.get("currency", ""), child.attrib.get("rate"))
            for child in element
            if _local(child.tag) == "Cube"
        ]
    if not days:
        raise RateUnavailable(f"{source}: no dated Cube element in the response", source=source)
    newest = max(days)
    rates = _collect(source, days[newest])
    return _table(source, "EUR", rates, _ecb_published_at(newest), fetched_at)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _load_json(source: str, content: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(content, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RateUnavailable(f"{source}: malformed JSON", source=source) from exc
    if not isinstance(payload, dict):
        raise RateUnavailable(f"{source}: expected a JSON object", source=source)
    return payload


def _timestamp(source: str, raw: object) -> datetime:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RateUnavailable(f"{source}: missing or malformed timestamp", source=source)
    try:
        return datetime.fromtimestamp(raw, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise RateUnavailable(f"{source}: timestamp out of range", source=source) from exc


def _rates_object(source: str, payload: Mapping[str, Any]) -> dict[str, Decimal]:
    raw = payload.get("rates")
    if not isinstance(raw, dict):
        raise RateUnavailable(f"{source}: missing rates object", source=source)
    return _collect(source, raw)


def _text(value: object, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


def parse_oxr_json(
    content: bytes,
    *,
    fetched_at: datetime,
    source: str = "openexchangerates",
    scrub: Scrub = _no_scrub,
) -> RateTable:
    """Parse Open Exchange Rates' ``latest.json`` (USD base on the free plan).

    An error body (``{"error": true, "status": 401, "message": ...}``) raises
    ``RateUnavailable`` naming the provider's message; ``scrub`` cleans any
    provider text before it goes into the exception.
    """
    payload = _load_json(source, content)
    if payload.get("error"):
        message = scrub(_text(payload.get("message")) or "error")
        description = scrub(_text(payload.get("description")))
        raise RateUnavailable(
            f"{source}: {message}" + (f" ({description})" if description else ""),
            source=source,
            status=payload.get("status") if isinstance(payload.get("status"), int) else None,
            provider_error=message,
        )
    published = _timestamp(source, payload.get("timestamp"))
    return _table(
        source, payload.get("base"), _rates_object(source, payload), published, fetched_at
    )


def parse_fixer_json(
    content: bytes, *, fetched_at: datetime, source: str = "fixer", scrub: Scrub = _no_scrub
) -> RateTable:
    """Parse Fixer's ``/latest`` response (EUR base on the free plan).

    Fixer reports errors with HTTP 200 and ``"success": false``; that body
    raises ``RateUnavailable`` with Fixer's error code and type.
    """
    payload = _load_json(source, content)
    if payload.get("success") is not True:
        error = payload.get("error")
        error = error if isinstance(error, dict) else {}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        kind = scrub(_text(error.get("type")) or "error")
        info = scrub(_text(error.get("info")))
        raise RateUnavailable(
            f"{source}: error {code} {kind}" + (f" ({info})" if info else ""),
            source=source,
            provider_error=kind,
            provider_code=code,
        )
    published = _timestamp(source, payload.get("timestamp"))
    return _table(
        source, payload.get("base"), _rates_object(source, payload), published, fetched_at
    )
