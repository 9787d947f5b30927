"""Structured log records (stdlib ``logging``) and optional OpenTelemetry spans.

The library installs no handlers: records go wherever the host's logging
configuration sends them. Loggers, one per layer:

- ``spaktok_ledger.store``: entries posted (DEBUG), refusals (INFO), retries
  after transient contention (WARNING) and giving up (ERROR);
- ``spaktok_ledger.gifts``: gifts and credits (DEBUG), refusals (INFO);
- ``spaktok_ledger.payments`` / ``spaktok_ledger.payouts``: webhook outcomes
  (INFO), verification and handling failures (WARNING), payout requests and
  payout state changes (INFO);
- ``spaktok_ledger.stripe``: each Stripe API call (DEBUG) and its failures (WARNING).

Structured fields ride on the record through ``extra=`` (``record.event_id``
...): ``operation``, ``outcome``, ``duration_ms``, and where they apply
``entry_id``, ``idempotency_key``, ``event_id``, ``event_type``,
``subject_id``, ``payout_id``, ``status``, ``retries``, ``error``. No message
text from the caller or from Stripe, no amounts tied to a person's name, no card
data (cards never reach the library).

Spans: when ``opentelemetry-api`` is installed, posts, gifts, webhook handling
and Stripe calls run in spans named ``spaktok_ledger.<operation>`` with the
same fields as attributes (``spaktok.*``); without it, nothing happens.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, ParamSpec, TypeVar

__all__ = ["logger", "observed", "span"]

P = ParamSpec("P")
T = TypeVar("T")

ROOT: Final = "spaktok_ledger"
_tracers: list[Any] = []


def logger(layer: str) -> logging.Logger:
    """The logger of one layer: ``spaktok_ledger.<layer>``."""
    return logging.getLogger(f"{ROOT}.{layer}")


def _tracer() -> Any:
    """OpenTelemetry's tracer for the library, or ``None`` without opentelemetry-api,
    or while no tracer provider is set (the API's default: its spans record
    nothing, and starting one per call costs a hot path several microseconds)."""
    if not _tracers:
        try:
            from opentelemetry import trace
        except ImportError:
            _tracers.append(None)
        else:
            _tracers.append((trace, trace.get_tracer(ROOT)))
    found = _tracers[0]
    if found is None:
        return None
    trace, tracer = found
    if isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    ):
        return None
    return tracer


def _attributes(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        f"spaktok.{key}": value
        for key, value in fields.items()
        if isinstance(value, str | int | float | bool) and value is not None
    }


class _NoSpan:
    def is_recording(self) -> bool:
        return False

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass


_NO_SPAN: Final = _NoSpan()


@contextmanager
def span(operation: str, **fields: Any) -> Iterator[Any]:
    """A span ``spaktok_ledger.<operation>`` when OpenTelemetry is installed (else nothing).

    An exception escaping the block is recorded on the span, which ends with an
    error status (OpenTelemetry's default).
    """
    tracer = _tracer()
    if tracer is None:
        yield _NO_SPAN
        return
    with tracer.start_as_current_span(f"{ROOT}.{operation}", attributes=_attributes(fields)) as s:
        yield s


def observed(
    layer: str,
    operation: str,
    *,
    level: int = logging.DEBUG,
    describe: Callable[[Any], Mapping[str, Any]] | None = None,
    refusal_level: int = logging.INFO,
    given: Callable[..., Mapping[str, Any]] | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Wrap a library call in a span and log its outcome on ``spaktok_ledger.<layer>``.

    ``describe(result)`` gives the structured fields of a success (logged at
    ``level``); a :class:`LedgerError` is logged at ``refusal_level`` with its
    type (``error``) and re-raised; any other exception at WARNING. ``given(*args,
    **kwargs)`` gives fields known from the call's arguments (span attributes and log
    fields alike).
    """
    from spaktok_ledger._errors import LedgerError

    log = logger(layer)

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            known = dict(given(*args, **kwargs)) if given is not None else {}
            with span(operation, **known) as current:
                try:
                    result = fn(*args, **kwargs)
                except LedgerError as exc:
                    _log_failure(log, refusal_level, operation, exc, started, "refused", known)
                    raise
                except Exception as exc:
                    _log_failure(log, logging.WARNING, operation, exc, started, "error", known)
                    raise
                recording, logged = current.is_recording(), log.isEnabledFor(level)
                if not (recording or logged):  # no tracing SDK, logging off: nothing to describe
                    return result
                fields = {**known, **(describe(result) if describe is not None else {})}
                if recording:
                    current.set_attributes(_attributes(fields))
            if logged:
                fields.setdefault("outcome", "ok")
                outcome = fields["outcome"]
                log.log(
                    level,
                    "%s %s",
                    operation,
                    outcome,
                    extra={"operation": operation, "duration_ms": _ms(started), **fields},
                )
            return result

        return wrapper

    return decorate


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _log_failure(  # noqa: PLR0917 - private, one caller
    log: logging.Logger,
    level: int,
    operation: str,
    exc: BaseException,
    started: float,
    outcome: str,
    known: Mapping[str, Any],
) -> None:
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s %s: %s",
            operation,
            outcome,
            type(exc).__name__,
            extra={
                **known,
                "operation": operation,
                "outcome": outcome,
                "error": type(exc).__name__,
                "duration_ms": _ms(started),
            },
        )


# -- what a result says, as log fields (read by attribute: no service imports) ----------


def entry_fields(entry: Any) -> dict[str, Any]:
    """An entry (or a gift receipt): its id, key and whether it was a replay."""
    fields: dict[str, Any] = {
        "entry_id": entry.entry_id if hasattr(entry, "entry_id") else entry.id
    }
    if hasattr(entry, "idempotency_key"):
        fields["idempotency_key"] = entry.idempotency_key
    if hasattr(entry, "type"):
        fields["entry_type"] = str(entry.type)
    fields["outcome"] = "replayed" if getattr(entry, "replayed", False) else "written"
    return fields


def webhook_fields(result: Any) -> dict[str, Any]:
    """A webhook result: event id and type, outcome, the purchase or payout it was about."""
    return {
        "event_id": result.event_id,
        "event_type": result.type,
        "outcome": result.outcome,
        "subject_id": result.subject_id,
        "duplicate": result.duplicate,
    }


def payout_fields(record: Any) -> dict[str, Any]:
    """A payout record: its id, status and whether it was a replay."""
    return {
        "payout_id": record.payout_id,
        "status": str(record.status),
        "outcome": "replayed" if getattr(record, "replayed", False) else str(record.status),
    }


def log_payout_status(payout_id: str, values: Mapping[str, Any]) -> None:
    """A payout's state change, as written (in its transaction)."""
    if "status" in values or "ledger_state" in values:
        logger("payouts").info(
            "payout %s status %s",
            payout_id,
            values.get("status", "-"),
            extra={
                "operation": "payout_state",
                "payout_id": payout_id,
                "status": values.get("status"),
                "ledger_state": values.get("ledger_state"),
                "outcome": values.get("status") or values.get("ledger_state"),
            },
        )


def log_retry(attempt: int, attempts: int, delay_s: float, exc: BaseException) -> None:
    """A transient database error (deadlock, serialization failure, busy SQLite) retried."""
    orig = getattr(exc, "orig", None)
    logger("store").warning(
        "transient contention, retry %d of %d",
        attempt,
        attempts - 1,
        extra={
            "operation": "retry",
            "outcome": "retry",
            "retries": attempt,
            "delay_ms": round(delay_s * 1000, 3),
            "sqlstate": getattr(orig, "sqlstate", None),
            "error": type(orig).__name__ if orig is not None else type(exc).__name__,
        },
    )


def log_gave_up(attempts: int) -> None:
    logger("store").error(
        "the database stayed busy after %d attempts",
        attempts,
        extra={"operation": "retry", "outcome": "gave_up", "retries": attempts},
    )


def key_given(*_args: Any, **kwargs: Any) -> dict[str, Any]:
    """The call's ``idempotency_key`` (keyword), for ``observed(given=...)``."""
    key = kwargs.get("idempotency_key")
    return {"idempotency_key": key} if isinstance(key, str) else {}
