"""``spaktok-ledger``: the operator's command line.

    spaktok-ledger [--db URL] [--prefix P] [--json] [-q] COMMAND [ARGS]

The global options may also follow the command (``balance ACCOUNT --json``).
The database URL comes from ``--db``, else ``SPAKTOK_DATABASE_URL``, else the
SQLite file ``./spaktok.db``; every command but ``migrate`` refuses a SQLite
file that does not exist rather than create an empty one. Human output is
aligned tables with formatted money; ``--json`` prints one JSON document for
scripts. Errors are one line on stderr. Exit codes (stable, for scripts):

====  =====================================================================
0     success
1     the command ran and found a problem (``verify``), or was refused
      (insufficient funds, idempotency conflict, a rule of the ledger)
2     usage error (bad arguments, an invalid account code or amount), or an
      optional package missing (the message names the extra to install)
3     something named does not exist (account, entry, pack, streamer)
4     the database is unreachable, its schema is missing or out of date, or it
      holds amounts in other units than the library uses (run ``migrate-units``)
====  =====================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from spaktok_ledger._cli_base import (
    DEFAULT_DB,
    ENV_DATABASE_URL,
    ENV_FIXER_KEY,
    ENV_OXR_APP_ID,
    ENV_RATES,
    ENV_TABLE_PREFIX,
    EXIT_DATABASE,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    RATE_SOURCES,
    Context,
    UsageError,
    _pack_catalogue,
    display_width,
    money,
    rate_text,
    table,
)
from spaktok_ledger._cli_compliance import add_commands as add_compliance_commands
from spaktok_ledger._cli_stripe import (
    cmd_debts,
    cmd_reconcile,
    cmd_reconcile_payouts,
    cmd_write_off,
)
from spaktok_ledger._cli_worker import add_commands as add_worker_commands
from spaktok_ledger._errors import InvalidInput, LedgerError, NotFound, SchemaError
from spaktok_ledger._extras import extra_for, missing_module
from spaktok_ledger._store import DEFAULT_PREFIX

__all__ = ["main"]
# display_width, money, table, rate_text and Context are imported from here by
# tests and the demo; they live in _cli_base so the command modules share them.
_SHARED = (display_width, money, table, rate_text, Context)

# -- commands ----------------------------------------------------------------


def cmd_migrate(ctx: Context) -> int:
    with ctx.ledger(create=True) as ledger:
        revision = ledger.migrate()
    ctx.emit(
        {"revision": revision, "prefix": ctx.args.prefix},
        lambda: ctx.out.write(
            f"schema at revision {revision} (tables prefixed {ctx.args.prefix!r})\n"
        ),
    )
    return EXIT_OK


def cmd_migrate_units(ctx: Context) -> int:
    from spaktok_ledger._store import migrate_units

    def step(line: str) -> None:
        if not ctx.args.quiet:
            ctx.err.write(f"migrate-units: {line}\n")
            ctx.err.flush()

    with ctx.ledger() as ledger:
        assert ledger.engine is not None  # the CLI always opens its own engine
        found = migrate_units(
            ledger.engine, ctx.args.prefix, progress=step, dry_run=ctx.args.dry_run
        )
    rows = [p.to_dict() for p in found]

    def human() -> None:
        if not found:
            ctx.out.write("every stored amount already uses the library's units\n")
            return
        table(
            ctx.out,
            ["table", "column", "currency", "from", "to", "rows"],
            [
                (p.table, p.column, p.currency, p.stored_exponent, p.expected_exponent, p.rows)
                for p in found
            ],
            right=(3, 4, 5),
        )
        verb = "would be rescaled (dry run: nothing changed)" if ctx.args.dry_run else "rescaled"
        ctx.out.write(f"{sum(p.rows for p in found)} row(s) {verb}\n")

    ctx.emit({"dry_run": ctx.args.dry_run, "rescaled": rows}, human)
    return EXIT_OK


def cmd_balance(ctx: Context) -> int:
    with ctx.ledger() as ledger:
        ledger.check_schema()
        b = ledger.balance(ctx.args.account)
    data = {
        "account": b.account,
        "kind": b.kind.value,
        "currency": b.currency,
        "posted_minor": b.posted_minor,
        "pending_in_minor": b.pending_in_minor,
        "pending_out_minor": b.pending_out_minor,
        "available_minor": b.available_minor,
    }

    def human() -> None:
        table(
            ctx.out,
            ["account", "kind", "posted", "pending in", "pending out", "available"],
            [
                [
                    b.account,
                    b.kind.value,
                    money(b.posted_minor, b.currency),
                    money(b.pending_in_minor, b.currency),
                    money(b.pending_out_minor, b.currency),
                    money(b.available_minor, b.currency),
                ]
            ],
            right=range(2, 6),
        )

    ctx.emit(data, human)
    return EXIT_OK


def cmd_history(ctx: Context) -> int:
    with ctx.ledger() as ledger:
        ledger.check_schema()
        page = ledger.history(ctx.args.account, limit=ctx.args.limit, cursor=ctx.args.cursor)
    data = {
        "items": [
            {
                "entry_id": i.entry_id,
                "type": i.type,
                "phase": i.phase.value,
                "hold_status": i.hold_status.value if i.hold_status else None,
                "amount_minor": i.amount_minor,
                "balance_change_minor": i.balance_change_minor,
                "currency": i.currency,
                "counterparties": list(i.counterparties),
                "description": i.description,
                "effective_at": i.effective_at,
            }
            for i in page.items
        ],
        "next_cursor": page.next_cursor,
    }

    def human() -> None:
        table(
            ctx.out,
            ["entry", "when", "type", "change", "counterparties", "description"],
            [
                [
                    f"#{i.entry_id}",
                    i.effective_at.strftime("%Y-%m-%d %H:%M"),
                    i.type if i.hold_status is None else f"{i.type} (hold: {i.hold_status})",
                    money(i.balance_change_minor, i.currency),
                    ", ".join(i.counterparties),
                    i.description,
                ]
                for i in page.items
            ],
            right=[3],
        )
        if page.next_cursor:
            ctx.out.write(f"\nmore: --cursor {page.next_cursor}\n")

    ctx.emit(data, human)
    return EXIT_OK


def cmd_trial_balance(ctx: Context) -> int:
    with ctx.ledger() as ledger:
        ledger.check_schema()
        tb = ledger.trial_balance()
    data = {
        "rows": [
            {
                "account": r.account,
                "kind": r.kind.value,
                "currency": r.currency,
                "debit_minor": r.debit_minor,
                "credit_minor": r.credit_minor,
            }
            for r in tb.rows
        ],
        "totals": {c: {"debit_minor": d, "credit_minor": k} for c, (d, k) in tb.totals().items()},
        "balanced": tb.balanced,
    }

    def human() -> None:
        print_trial_balance(ctx.out, tb)

    ctx.emit(data, human)
    return EXIT_OK if tb.balanced else EXIT_FAILED


def print_trial_balance(out: TextIO, tb: Any) -> None:
    """The trial balance as a table, with per-currency totals (shared with the demo)."""
    rows: list[list[str]] = [
        [
            r.account,
            r.kind.value,
            money(r.debit_minor, r.currency) if r.debit_minor else "",
            money(r.credit_minor, r.currency) if r.credit_minor else "",
        ]
        for r in tb.rows
        if r.debit_minor or r.credit_minor
    ]
    for currency, (debit, credit) in sorted(tb.totals().items()):
        rows.append([f"total {currency}", "", money(debit, currency), money(credit, currency)])
    table(out, ["account", "kind", "debit", "credit"], rows, right=[2, 3])
    verdict = "balanced: debits equal credits" if tb.balanced else "NOT BALANCED"
    out.write(f"{verdict}\n")


def cmd_verify(ctx: Context) -> int:
    progress = ctx.progress("verify")
    with ctx.ledger() as ledger:
        ledger.check_schema()
        report = ledger.verify(
            on_progress=lambda _step, done, total: progress(done, total),
            incremental=ctx.args.incremental,
        )
    data = {
        "ok": report.ok,
        "incremental": report.incremental,
        "accounts_checked": report.accounts_checked,
        "entries_checked": report.entries_checked,
        "postings_checked": report.postings_checked,
        "problems": [
            {
                "check": p.check,
                "subject": p.subject,
                "message": p.message,
                "expected": p.expected,
                "actual": p.actual,
            }
            for p in report.problems
        ],
    }

    def human() -> None:
        ctx.out.write(
            f"checked {report.accounts_checked} accounts, {report.entries_checked} entries, "
            f"{report.postings_checked} postings\n"
        )
        if report.ok:
            ctx.out.write("ok: every invariant holds\n")
            return
        table(
            ctx.out,
            ["check", "subject", "problem", "expected", "actual"],
            [[p.check, p.subject, p.message, p.expected, p.actual] for p in report.problems],
        )

    ctx.emit(data, human)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_expire_holds(ctx: Context) -> int:
    with ctx.ledger() as ledger:
        ledger.check_schema()
        expired = ledger.expire_holds(limit=ctx.args.limit)
    data = {"expired": [{"entry_id": e.id, "hold_id": e.hold_id} for e in expired]}
    ctx.emit(data, lambda: ctx.out.write(f"expired {len(expired)} hold(s)\n"))
    return EXIT_OK


def cmd_export(ctx: Context) -> int:
    from spaktok_ledger._export import export_beancount, export_jsonl

    writer = export_jsonl if ctx.args.format == "jsonl" else export_beancount
    progress = ctx.progress(f"export {ctx.args.format}")
    with ctx.ledger() as ledger:
        ledger.check_schema()
        if ctx.args.output == "-":
            count = writer(ledger, ctx.out, on_progress=progress)
        else:
            with open(ctx.args.output, "w", encoding="utf-8") as out:
                count = writer(ledger, out, on_progress=progress)
    if ctx.args.output != "-":
        ctx.emit(
            {"format": ctx.args.format, "output": ctx.args.output, "entries": count},
            lambda: ctx.out.write(f"wrote {count} entries to {ctx.args.output}\n"),
        )
    return EXIT_OK


def cmd_mature_earnings(ctx: Context) -> int:
    from spaktok_ledger._service import GiftEconomy

    with ctx.ledger() as ledger:
        ledger.check_schema()
        matured = GiftEconomy(ledger).mature_earnings(limit=ctx.args.limit)
    data = {
        "matured": [
            {
                "streamer_id": m.streamer_id,
                "amount_minor": m.amount_minor,
                "lots": m.lots,
                "entry_id": m.entry_id,
            }
            for m in matured
        ]
    }

    def human() -> None:
        if not matured:
            ctx.out.write("nothing to mature\n")
            return
        table(
            ctx.out,
            ["streamer", "gift shares", "amount", "entry"],
            [[m.streamer_id, m.lots, money(m.amount_minor), f"#{m.entry_id}"] for m in matured],
            right=[1, 2],
        )

    ctx.emit(data, human)
    return EXIT_OK


def _rate_provider(ctx: Context) -> Any:
    """Rates for ``quote``: a live provider, or a saved response file (offline)."""
    from spaktok_ledger import fx

    if ctx.args.rates_file:
        data = Path(ctx.args.rates_file).read_bytes()
        now = datetime.now().astimezone()
        if data.lstrip().startswith(b"<"):
            table = fx.parse_ecb_xml(data, fetched_at=now, source="file")
        elif b'"success"' in data:
            table = fx.parse_fixer_json(data, fetched_at=now, source="file")
        else:
            table = fx.parse_oxr_json(data, fetched_at=now, source="file")
        # A saved file counts as current: this is for previews and offline use.
        return fx.StaticRateProvider(dict(table.rates), base=table.base, source="file")
    provider: Any
    source = ctx.args.rates or ctx.env(ENV_RATES) or "ecb"
    source = "openexchangerates" if source == "oxr" else source
    if source not in RATE_SOURCES:
        raise UsageError(f"--rates / {ENV_RATES} must be one of {', '.join(RATE_SOURCES)}")
    if source == "ecb":
        provider = fx.ECBRateProvider()
    elif source == "openexchangerates":
        app_id = ctx.env(ENV_OXR_APP_ID)
        if not app_id:
            raise UsageError(
                f"--rates openexchangerates needs the {ENV_OXR_APP_ID} environment variable"
            )
        provider = fx.OpenExchangeRatesProvider(app_id=app_id)
    else:
        key = ctx.env(ENV_FIXER_KEY)
        if not key:
            raise UsageError(f"--rates fixer needs the {ENV_FIXER_KEY} environment variable")
        provider = fx.FixerRateProvider(access_key=key)
    return fx.CachedRateProvider(provider)


def cmd_quote(ctx: Context) -> int:
    from spaktok_ledger._pricing import make_quote
    from spaktok_ledger._service import Pricing

    catalogue = _pack_catalogue(ctx)
    rates = _rate_provider(ctx)
    if ctx.args.save:
        with ctx.ledger() as ledger:
            ledger.check_schema()
            pricing = Pricing(ledger, catalogue, rates)
            quote = pricing.quote(ctx.args.pack, currency=ctx.args.currency, locale=ctx.args.locale)
    else:
        from spaktok_ledger._service._quotes import quote_currency

        currency = quote_currency(currency=ctx.args.currency, locale=ctx.args.locale)
        quote = make_quote(catalogue.get(ctx.args.pack), currency, rates, locale=ctx.args.locale)
    data = quote.to_dict()

    def human() -> None:
        display = quote.display or money(quote.local_amount_minor, quote.currency)
        table(
            ctx.out,
            ["pack", "coins", "USD price", "local price", "rate", "source", "expires"],
            [
                [
                    quote.pack_id,
                    quote.total_coins,
                    money(quote.usd_price_minor),
                    display,
                    f"{rate_text(quote.rate)} {quote.currency}/USD",
                    quote.rate_source,
                    quote.expires_at.strftime("%H:%M:%S UTC"),
                ]
            ],
            right=[1, 2, 3],
        )
        if ctx.args.save:
            ctx.out.write(f"saved as {quote.id}\n")

    ctx.emit(data, human)
    return EXIT_OK


def cmd_demo(ctx: Context) -> int:
    from spaktok_ledger._demo import run_demo

    return run_demo(ctx.args.file, ctx.out)


# -- wiring ------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes; on the subcommands without defaults
    (``SUPPRESS``), so they override the values given before the command only
    when they are given after it."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--db",
        default=default(os.environ.get(ENV_DATABASE_URL, DEFAULT_DB)),
        help=f"database URL (default: ${ENV_DATABASE_URL} or {DEFAULT_DB})",
    )
    parser.add_argument(
        "--prefix",
        default=default(os.environ.get(ENV_TABLE_PREFIX, DEFAULT_PREFIX)),
        help=f"table name prefix (default: ${ENV_TABLE_PREFIX} or {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for scripts"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress output"
    )


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - a list of commands
    parser = argparse.ArgumentParser(
        prog="spaktok-ledger",
        description="Operate a spaktok-ledger database: schema, balances, history, checks.",
    )
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[Context], int], help_: str, *aliases: str) -> Any:
        p = sub.add_parser(
            name, help=help_, aliases=list(aliases), description=help_, parents=[common]
        )
        p.set_defaults(handler=fn)
        return p

    add("migrate", cmd_migrate, "create or upgrade the schema", "init")
    p = add(
        "migrate-units",
        cmd_migrate_units,
        "upgrade the schema and rescale amounts stored at other exponents (after UnitsMismatch)",
    )
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    add("balance", cmd_balance, "an account's balance").add_argument("account")
    p = add("history", cmd_history, "an account's postings, newest first")
    p.add_argument("account")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cursor")
    add("trial-balance", cmd_trial_balance, "posted balances of every account")
    p = add("verify", cmd_verify, "recompute balances and check every invariant")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--incremental",
        action="store_true",
        help="check only what was written since the last clean incremental run, then move "
        "its checkpoint forward",
    )
    mode.add_argument(
        "--full",
        dest="incremental",
        action="store_false",
        help="re-check the whole history (the default)",
    )
    p = add("expire-holds", cmd_expire_holds, "expire holds whose expiry time has passed")
    p.add_argument("--limit", type=int, default=1000)
    p = add(
        "mature-earnings",
        cmd_mature_earnings,
        "move gift shares past their hold period to earnings",
    )
    p.add_argument("--limit", type=int, default=500, help="streamers per run")
    p = add("export", cmd_export, "write every entry as JSON Lines or a Beancount ledger")
    p.add_argument("--format", choices=["jsonl", "beancount"], default="jsonl")
    p.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    p = add(
        "reconcile-payouts",
        cmd_reconcile_payouts,
        "compare open payouts with Stripe and fix the safe cases ($STRIPE_SECRET_KEY)",
    )
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--days", type=int, default=14, help="also recheck payouts settled lately")
    p.add_argument("--manual", action="store_true", help="the platform runs manual payouts")
    p = add(
        "reconcile",
        cmd_reconcile,
        "prove the books equal Stripe: sweep missed events, match every balance transaction, "
        "compare balances; exit 1 on drift ($STRIPE_SECRET_KEY)",
    )
    p.add_argument("--manual", action="store_true", help="the platform runs manual payouts")
    p.add_argument("--packs", help="pack catalogue .toml/.json (default: $SPAKTOK_PACKS or demo)")
    p = add("debts", cmd_debts, "viewers who owe money after refunds or chargebacks")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--packs", help=argparse.SUPPRESS)
    p = add("write-off", cmd_write_off, "give up a viewer's debt (the loss is already booked)")
    p.add_argument("user")
    p.add_argument("--reason", required=True)
    p.add_argument("--idempotency-key", required=True, help="a key for this decision")
    p.add_argument("--actor", help="who decides it (recorded in the audit log)")
    p.add_argument("--packs", help=argparse.SUPPRESS)
    add_compliance_commands(add, common)
    add_worker_commands(add)
    p = add("quote", cmd_quote, "a coin pack's price in a currency or locale")
    p.add_argument("pack")
    p.add_argument("--currency", help="ISO 4217 code (default: the locale's, else USD)")
    p.add_argument("--locale", help="CLDR locale for the currency and formatting, e.g. de_DE")
    p.add_argument("--packs", help="pack catalogue .toml/.json (default: $SPAKTOK_PACKS or demo)")
    p.add_argument(
        "--rates",
        choices=[*RATE_SOURCES, "oxr"],
        help=f"rate provider (default: ${ENV_RATES} or ecb; oxr = openexchangerates)",
    )
    p.add_argument("--rates-file", help="a saved ECB/OXR/Fixer response to price from (offline)")
    p.add_argument("--save", action="store_true", help="store the quote for checkout")
    p = add("demo", cmd_demo, "run the gift-economy demo on a fresh SQLite file")
    p.add_argument("--file", default="spaktok-demo.db", help="SQLite file (recreated)")
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the CLI; returns the exit code (``sys.exit(main())`` in the entry point)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    ctx = Context(args, out, err)
    try:
        return int(args.handler(ctx))
    except (UsageError, InvalidInput) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except NotFound as exc:
        err.write(f"error: {exc}\n")
        return EXIT_NOT_FOUND
    except SchemaError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_DATABASE
    except LedgerError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILED
    except ImportError as exc:
        extra = extra_for(exc)
        if extra is None:
            raise
        err.write(
            f"error: `{args.command}` needs the {missing_module(exc)!r} package: "
            f"pip install 'spaktok-ledger[{extra}]'\n"
        )
        return EXIT_USAGE
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        err.write(f"error: cannot use the database: {first}\n")
        return EXIT_DATABASE
    except BrokenPipeError:
        # `spaktok-ledger export | head`: the reader left; that is not an error.
        # Point stdout at /dev/null so the flush at exit does not complain.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
