"""What the ``spaktok-ledger`` commands share: exit codes, environment variables, the
context a command runs in, tables, money and progress output."""

from __future__ import annotations

import argparse
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Final, TextIO

import sqlalchemy as sa

from spaktok_ledger._errors import SchemaError
from spaktok_ledger._format import format_price
from spaktok_ledger._store import Ledger

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_DATABASE = 4
DEFAULT_DB = "sqlite:///spaktok.db"

# The environment variables the CLI reads: the same names as the example apps
# (docs/cli.md#environment-variables and examples/README.md list them).
ENV_DATABASE_URL: Final = "SPAKTOK_DATABASE_URL"
ENV_TABLE_PREFIX: Final = "SPAKTOK_TABLE_PREFIX"
ENV_PACKS: Final = "SPAKTOK_PACKS"
ENV_RATES: Final = "SPAKTOK_RATES"
ENV_OXR_APP_ID: Final = "OPENEXCHANGERATES_APP_ID"
ENV_FIXER_KEY: Final = "FIXER_ACCESS_KEY"
ENV_STRIPE_KEY: Final = "STRIPE_SECRET_KEY"
ENV_STRIPE_BASE: Final = "STRIPE_API_BASE"
ENV_CONNECT_SECRET: Final = "STRIPE_CONNECT_WEBHOOK_SECRET"  # noqa: S105 - a variable's name
ENV_WEBHOOK_SECRET: Final = "STRIPE_WEBHOOK_SECRET"  # noqa: S105 - a variable's name
# Older names still read, with a warning: old name -> current name.
DEPRECATED_ENV: Final[Mapping[str, str]] = {"OXR_APP_ID": ENV_OXR_APP_ID}
# What each command needs beyond the core, for the message when it is missing.
RATE_SOURCES: Final = ("ecb", "openexchangerates", "fixer")


class UsageError(Exception):
    """Bad arguments that argparse could not catch (exit code 2)."""


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    err: TextIO

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def ledger(self, *, create: bool = False) -> Ledger:
        """The ledger at ``--db``; unless ``create``, a SQLite file must already exist
        (a mistyped path is an error, not a new empty database)."""
        if not create:
            _require_sqlite_file(self.args.db)
        return Ledger(self.args.db, prefix=self.args.prefix)

    def env(self, name: str) -> str | None:
        """An environment variable, or its deprecated older name (with a warning)."""
        value = os.environ.get(name, "").strip()
        if value:
            return value
        for old, new in DEPRECATED_ENV.items():
            if new == name and os.environ.get(old, "").strip():
                self.err.write(f"warning: {old} is deprecated; set {new} instead\n")
                return os.environ[old].strip()
        return None

    def emit(self, data: Any, human: Callable[[], object]) -> None:
        if self.json:
            json.dump(data, self.out, indent=2, default=_json_default, ensure_ascii=False)
            self.out.write("\n")
        else:
            human()

    def progress(self, label: str) -> Progress:
        return Progress(label, self.err, enabled=not self.args.quiet)


def _require_sqlite_file(url: str) -> None:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return  # Ledger() reports a bad URL
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).exists():
        raise SchemaError(
            f"no SQLite database at {database} (a mistyped path?); "
            "`spaktok-ledger migrate` creates one"
        )


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def money(amount_minor: int, currency: str = "USD") -> str:
    """Money for humans: ``$1,234.56`` (en_US conventions for the operator's console)."""
    return format_price(amount_minor, currency, "en_US")


def table(
    out: TextIO,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
) -> None:
    """Print an aligned text table; columns in ``right`` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    right_set = set(right)

    def pad(cell: str, i: int) -> str:
        fill = " " * (widths[i] - display_width(cell))
        return fill + cell if i in right_set else cell + fill

    def line(row: Sequence[str]) -> str:
        return "  ".join(pad(cell, i) for i, cell in enumerate(row)).rstrip()

    out.write(line(cells[0]) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells[1:]:
        out.write(line(row) + "\n")


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide and fullwidth characters take
    two (``unicodedata.east_asian_width`` "W"/"F": ``￥``, CJK), combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def rate_text(rate: Decimal, significant: int = 6) -> str:
    """A rate for people: ``significant`` digits (more only for the integer part),
    rounded half-even; ``160.61653432975245213`` -> ``160.617``. JSON keeps every digit."""
    places = max(significant - (rate.adjusted() + 1), 0)
    shown = rate.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return f"{shown:f}"


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per 10 % otherwise."""

    def __init__(self, label: str, stream: TextIO, *, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        fraction = done / total if total else 1.0
        if self.tty:
            filled = int(fraction * 30)
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(f"{self.label}: {done}/{total} ({fraction:.0%})\n")
            self.stream.flush()


def _pack_catalogue(ctx: Context) -> Any:
    from spaktok_ledger._catalogue import PackCatalogue

    path = ctx.args.packs or ctx.env(ENV_PACKS)
    if path:
        return PackCatalogue.load(path)
    from spaktok_ledger._demo import PACKS

    return PACKS
