"""Time: the clock type every component takes, and its default.

Pure. Every component that needs "now" takes a ``clock`` callable so tests
can inject :class:`spaktok_ledger.testing.FakeClock`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]
"""A zero-argument callable returning the current time, timezone-aware."""


def utc_now() -> datetime:
    """The system clock, in UTC (the default :data:`Clock`)."""
    return datetime.now(UTC)
