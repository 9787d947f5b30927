"""The long-running commands: ``worker`` (drain the webhook inbox, periodic jobs) and
``relay`` (publish the outbox to Redis Streams and RabbitMQ)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Final

from spaktok_ledger._cli_base import EXIT_FAILED, EXIT_OK, Context, UsageError

__all__ = ["add_commands", "cmd_relay", "cmd_worker"]

ENV_REDIS_URL: Final = "SPAKTOK_REDIS_URL"
ENV_AMQP_URL: Final = "SPAKTOK_AMQP_URL"


def _say(ctx: Context) -> Callable[[str], None]:
    def say(line: str) -> None:
        if not ctx.args.quiet:
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            ctx.err.write(f"{stamp} {line}\n")
            ctx.err.flush()

    return say


def _until_signalled(stop: Callable[[], None]) -> None:
    """SIGTERM (systemd, docker stop) and SIGINT end the loop after the current round."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop()

    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextmanager
def start_up_frozen() -> Iterator[None]:
    """For a long-running loop: what start-up loaded is kept out of the garbage
    collector's full passes (``gc.freeze``), each of which otherwise stalls the
    process for tens of milliseconds (docs/worker.md); given back on the way out."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _seconds(value: str) -> timedelta | None:
    """A schedule option: seconds, or ``off``."""
    if value == "off":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("seconds, or 'off'") from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("at least 1 second")
    return timedelta(seconds=seconds)


def _threads(value: str) -> int:
    """``--threads``: 1 to 16 (the default connection pool serves 15 at once)."""
    try:
        threads = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of threads") from None
    if not 1 <= threads <= 16:
        raise argparse.ArgumentTypeError("threads must be from 1 to 16")
    return threads


def cmd_worker(ctx: Context) -> int:
    from spaktok_ledger._cli_stripe import _money_services
    from spaktok_ledger._service._worker import Worker, WorkerSchedule

    a = ctx.args
    schedule = WorkerSchedule(
        expire_holds=a.expire_holds,
        mature_earnings=a.mature_earnings,
        retry_refunds=a.retry_refunds,
        reconcile_payouts=a.reconcile_payouts,
        sweep=a.sweep,
    )
    with ctx.ledger() as ledger:
        ledger.check_schema()
        payments, payouts = _money_services(ctx, ledger)
        worker = Worker(
            payments,
            payouts,
            schedule=schedule,
            batch=a.batch,
            idle_seconds=a.idle,
            threads=a.threads,
            on_progress=None if a.once else _say(ctx),
        )
        if a.once:
            report = worker.run_once()
            ctx.emit(report.to_dict(), lambda: ctx.out.write(_summary(report.to_dict())))
            return EXIT_FAILED if report.errors else EXIT_OK
        _say(ctx)(
            f"worker {worker.owner[:8]} started (batch {a.batch}, {a.threads} thread(s)); "
            "stop with SIGTERM"
        )
        _until_signalled(worker.stop)
        with start_up_frozen():
            worker.run_forever()
        _say(ctx)("worker stopped")
    return EXIT_OK


def _summary(data: dict[str, Any]) -> str:
    lines = [f"{data['events']} event(s) handled"]
    lines += [f"  {k}: {v}" for k, v in sorted(data["outcomes"].items())]
    if data["jobs"]:
        lines.append("jobs run: " + ", ".join(data["jobs"]))
    lines += [f"error: {e}" for e in data["errors"]]
    return "\n".join(lines) + "\n"


def cmd_relay(ctx: Context) -> int:
    from spaktok_ledger._service._outbox import Outbox
    from spaktok_ledger._service._relay import (
        OutboxPublisher,
        OutboxRelay,
        RabbitMQPublisher,
        RedisStreamsPublisher,
    )

    a = ctx.args
    redis_url = a.redis or ctx.env(ENV_REDIS_URL)
    amqp_url = a.rabbitmq or ctx.env(ENV_AMQP_URL)
    if not redis_url and not amqp_url:
        raise UsageError(
            f"give --redis URL and/or --rabbitmq URL (or ${ENV_REDIS_URL}, ${ENV_AMQP_URL})"
        )
    publishers: list[OutboxPublisher] = []
    if redis_url:
        publishers.append(RedisStreamsPublisher(redis_url, stream_prefix=a.stream_prefix))
    if amqp_url:
        publishers.append(RabbitMQPublisher(amqp_url, exchange=a.exchange))
    with ctx.ledger() as ledger:
        ledger.check_schema()
        relay = OutboxRelay(
            Outbox(ledger),
            publishers,
            batch=a.batch,
            topics=a.topic or None,
            name=a.name,
            idle_seconds=a.idle,
            on_progress=_say(ctx),
        )
        try:
            if a.once:
                count = 0
                while True:
                    published = relay.run_once()
                    count += published
                    if published < relay.batch:
                        break
                ctx.emit(
                    {"published": count},
                    lambda: ctx.out.write(f"{count} event(s) published\n"),
                )
                return EXIT_OK
            _say(ctx)(f"relay {a.name!r} started (batch {a.batch}); stop with SIGTERM")
            _until_signalled(relay.stop)
            with start_up_frozen():
                relay.run_forever()
            _say(ctx)(f"relay stopped after {relay.published} event(s)")
        finally:
            relay.close()
    return EXIT_OK


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``worker`` and ``relay`` with the CLI's ``add(name, handler, help)``."""
    p = add(
        "worker",
        cmd_worker,
        "apply queued webhook events, retry parked ones, run the periodic jobs "
        "($STRIPE_SECRET_KEY); runs until SIGTERM",
    )
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--batch", type=int, default=100, help="events claimed per round")
    p.add_argument("--idle", type=float, default=0.5, help="seconds to sleep when idle")
    p.add_argument(
        "--threads",
        type=_threads,
        default=1,
        help="events applied at once (PostgreSQL: 4 to 8 keep Stripe's latency busy)",
    )
    p.add_argument("--manual", action="store_true", help="the platform runs manual payouts")
    p.add_argument("--packs", help="pack catalogue .toml/.json (default: $SPAKTOK_PACKS or demo)")
    for name, default in (
        ("expire-holds", "60"),
        ("mature-earnings", "300"),
        ("retry-refunds", "300"),
        ("reconcile-payouts", "900"),
        ("sweep", "3600"),
    ):
        p.add_argument(
            f"--{name}",
            type=_seconds,
            default=_seconds(default),
            metavar="SECONDS",
            help=f"how often (default {default}; 'off' to skip)",
        )
    p = add(
        "relay",
        cmd_relay,
        "publish outbox events to Redis Streams and/or RabbitMQ, at least once, in order",
    )
    p.add_argument("--redis", help=f"redis://... (default: ${ENV_REDIS_URL})")
    p.add_argument("--rabbitmq", help=f"amqp://... (default: ${ENV_AMQP_URL})")
    p.add_argument("--stream-prefix", default="spaktok:", help="Redis stream name prefix")
    p.add_argument("--exchange", default="spaktok.outbox", help="RabbitMQ topic exchange")
    p.add_argument("--topic", action="append", help="only this topic (repeatable)")
    p.add_argument("--name", default="default", help="relays with one name take turns")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--idle", type=float, default=0.2, help="seconds to sleep when idle")
    p.add_argument("--once", action="store_true", help="publish what is pending, then exit")
