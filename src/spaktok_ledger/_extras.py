"""Optional dependencies: which extra installs which module, and a clear message when missing.

A missing optional package is reported as a ``ModuleNotFoundError`` (so
``except ImportError`` keeps working) whose message names the extra to
install, instead of a bare ``No module named 'psycopg'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["EXTRAS", "extra_for", "missing_extra", "missing_module", "needs_extra"]

# Top-level module -> the extra of spaktok-ledger that installs it (pyproject.toml).
EXTRAS: Final = {
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "stripe": "stripe",
    "httpx": "fx",
    "moneyed": "moneyed",
    "django": "django",
    "redis": "redis",
    "pika": "rabbitmq",
    "greenlet": "async",
    "aiosqlite": "async",
}


def extra_for(exc: ImportError) -> str | None:
    """The extra that installs the module ``exc`` (or the error it was raised from) is
    about, if it is one of ours."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImportError) and seen.name:
            return EXTRAS.get(seen.name.split(".")[0])
        seen = seen.__cause__
    return None


def missing_module(exc: ImportError) -> str | None:
    """The name of the missing module behind ``exc`` (following ``raise ... from``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImportError) and seen.name:
            return seen.name
        seen = seen.__cause__
    return None


def missing_extra(exc: ModuleNotFoundError, feature: str) -> ModuleNotFoundError:
    """``exc`` with a message naming the extra: ``pip install 'spaktok-ledger[postgres]'``."""
    extra = extra_for(exc)
    if extra is None:
        return exc
    message = (
        f"{feature} needs the {exc.name!r} package, which the {extra!r} extra installs: "
        f"pip install 'spaktok-ledger[{extra}]'"
    )
    return ModuleNotFoundError(message, name=exc.name, path=exc.path)


@contextmanager
def needs_extra(feature: str) -> Iterator[None]:
    """Re-raise a missing optional module with the extra's name in the message."""
    try:
        yield
    except ModuleNotFoundError as exc:
        better = missing_extra(exc, feature)
        if better is exc:
            raise
        raise better from exc
