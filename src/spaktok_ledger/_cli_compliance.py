"""The operator's compliance commands: the review queue, the audit log, keys, erasure.

Registered by :mod:`spaktok_ledger.cli` (see docs/cli.md), on the shared
context of ``_cli_base``. Every command that changes something takes
``--actor`` (who runs it, recorded in the audit log) and ``--reason`` where
the action needs one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from spaktok_ledger._cli_base import Context, table
from spaktok_ledger._errors import InvalidInput

__all__ = ["add_commands"]


def _economy(ledger: Any, ctx: Context) -> Any:
    from spaktok_ledger._compliance._core import Compliance
    from spaktok_ledger._compliance._crypto import ENV_KEYRING, Keyring
    from spaktok_ledger._service import GiftEconomy

    text = ctx.env(ENV_KEYRING)
    keyring = Keyring.parse(text) if text else None
    return GiftEconomy(ledger, compliance=Compliance(ledger, keyring=keyring))


@contextlib.contextmanager
def _output(ctx: Context) -> Iterator[TextIO]:
    if ctx.args.output == "-":
        yield ctx.out
        return
    with open(ctx.args.output, "w", encoding="utf-8", newline="") as out:
        yield out


def _case_row(case: Any) -> list[object]:
    return [
        case.id,
        case.created_at.strftime("%Y-%m-%d %H:%M"),
        case.rule,
        f"{case.subject_role}:{case.subject_id}",
        case.status.value if case.decision is None else f"closed: {case.decision.value}",
        case.assignee or "",
        ", ".join(f"{h.kind}:{h.reference}" for h in case.holds),
        case.reason,
    ]


_CASE_HEADERS = ["case", "opened", "rule", "subject", "status", "assignee", "holds", "reason"]


def cmd_cases(ctx: Context) -> int:
    from spaktok_ledger._compliance._cases import Cases

    args = ctx.args
    with ctx.ledger() as ledger:
        ledger.check_schema()
        cases = Cases(_economy(ledger, ctx))
        action = args.case_action
        if action == "list":
            status = None if args.status == "all" else args.status
            found = cases.find(
                status=status, subject_id=args.subject, rule=args.rule, limit=args.limit
            )
            ctx.emit(
                {"cases": [c.to_dict() for c in found]},
                lambda: (
                    table(ctx.out, _CASE_HEADERS, [_case_row(c) for c in found])
                    if found
                    else ctx.out.write("no cases\n")
                ),
            )
            return 0
        if action == "show":
            case = cases.get(args.case_id)
            ctx.emit(case.to_dict(), lambda: _show(ctx, case))
            return 0
        if action == "assign":
            case = cases.assign(args.case_id, args.reviewer, actor=args.actor)
            ctx.emit(
                case.to_dict(),
                lambda: ctx.out.write(f"case {case.id} assigned to {case.assignee}\n"),
            )
            return 0
        if action == "decide":
            decided = cases.decide(
                args.case_id, args.decision, actor=args.actor, reason=args.reason, block=args.block
            )
            ctx.emit(decided.to_dict(), lambda: _decided(ctx, decided))
            return 0
        progress = ctx.progress("export cases")
        with _output(ctx) as out:
            count = cases.export(
                out,
                fmt=args.format,
                status=None if args.status == "all" else args.status,
                decision=args.decision,
                on_progress=progress,
            )
    if args.output != "-":
        ctx.emit(
            {"format": args.format, "output": args.output, "cases": count},
            lambda: ctx.out.write(f"wrote {count} case(s) to {args.output}\n"),
        )
    return 0


def _show(ctx: Context, case: Any) -> None:
    table(ctx.out, _CASE_HEADERS, [_case_row(case)])
    ctx.out.write(f"evidence entries: {', '.join(f'#{i}' for i in case.evidence_entry_ids)}\n")
    for name, value in sorted(case.facts.items()):
        ctx.out.write(f"  {name}: {value}\n")


def _decided(ctx: Context, decided: Any) -> None:
    case = decided.case
    ctx.out.write(f"case {case.id}: {case.decision.value} by {case.decided_by}\n")
    for label, items in (
        ("payouts released", decided.released_payouts),
        ("payouts refused", decided.refused_payouts),
        ("payouts still waiting for other cases", decided.waiting_payouts),
        ("purchases released", decided.released_purchases),
        ("purchases refused", decided.refused_purchases),
    ):
        if items:
            ctx.out.write(f"{label}: {', '.join(items)}\n")
    for note in decided.notes:
        ctx.out.write(f"note: {note}\n")


def cmd_audit(ctx: Context) -> int:
    args = ctx.args
    with ctx.ledger() as ledger:
        ledger.check_schema()
        compliance = _economy(ledger, ctx).compliance
        if args.output is not None:
            progress = ctx.progress("export audit log")
            with _output(ctx) as out:
                count = compliance.export_audit(out, fmt=args.format, on_progress=progress)
            if args.output != "-":
                ctx.emit(
                    {"format": args.format, "output": args.output, "records": count},
                    lambda: ctx.out.write(f"wrote {count} record(s) to {args.output}\n"),
                )
            return 0
        records = compliance.audit_log(
            subject=args.subject,
            action=args.action,
            actor=args.actor,
            after_id=args.after,
            limit=args.limit,
        )
    ctx.emit(
        {"records": [r.to_dict() for r in records]},
        lambda: (
            table(
                ctx.out,
                ["id", "at", "actor", "action", "subject", "reason", "request id"],
                [
                    [
                        r.id,
                        r.at.strftime("%Y-%m-%d %H:%M:%S"),
                        r.actor,
                        r.action,
                        r.subject or "",
                        r.reason or "",
                        r.request_id or "",
                    ]
                    for r in records
                ],
            )
            if records
            else ctx.out.write("no audit records\n")
        ),
    )
    return 0


def cmd_rotate_keys(ctx: Context) -> int:
    from spaktok_ledger._compliance._crypto import ENV_KEYRING
    from spaktok_ledger._compliance._erasure import rotate_keys

    if not ctx.env(ENV_KEYRING):
        raise InvalidInput(f"rotate-keys needs the keyring in {ENV_KEYRING} (new key first)")
    with ctx.ledger() as ledger:
        ledger.check_schema()
        compliance = _economy(ledger, ctx).compliance
        report = rotate_keys(
            compliance,
            actor=ctx.args.actor,
            batch_size=ctx.args.batch_size,
            on_progress=ctx.progress("rotate keys"),
        )
    retired = sorted(set(report.usage) - {report.active_key_id})

    def human() -> None:
        ctx.out.write(
            f"active key {report.active_key_id}: {report.data_keys_rewrapped} data key(s) "
            f"re-wrapped, {report.payloads_sealed} webhook payload(s) and "
            f"{report.accounts_sealed} connected account(s) sealed\n"
        )
        if retired:
            ctx.out.write(f"still in use: {', '.join(retired)}: run rotate-keys again\n")
        else:
            ctx.out.write("nothing uses the other keys any more: they can leave the keyring\n")

    ctx.emit(report.to_dict(), human)
    return 0 if not retired else 1


def cmd_erase_user(ctx: Context) -> int:
    from spaktok_ledger._compliance._erasure import erase_user

    with ctx.ledger() as ledger:
        ledger.check_schema()
        compliance = _economy(ledger, ctx).compliance
        report = erase_user(
            compliance,
            ctx.args.party,
            actor=ctx.args.actor,
            reason=ctx.args.reason,
            include_aml_records=ctx.args.include_aml_records,
        )
    ctx.emit(
        report.to_dict(),
        lambda: ctx.out.write(
            f"erased {report.party_id}: {report.data_keys_destroyed} data key(s) destroyed, "
            f"{report.webhook_payloads_removed} webhook payload(s) removed; "
            f"{report.entries_kept} entries kept unchanged (audit record #{report.audit_id})\n"
        ),
    )
    return 0


def cmd_generate_key(ctx: Context) -> int:
    from spaktok_ledger._compliance._crypto import Keyring

    entry = Keyring.generate_entry(ctx.args.key_id)
    ctx.emit({"entry": entry}, lambda: ctx.out.write(entry + "\n"))
    if not ctx.args.json and ctx.out is sys.stdout and sys.stdout.isatty():
        ctx.err.write("put it first in SPAKTOK_KEYRING, keep the old keys after it\n")
    return 0


def add_commands(
    add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Register the compliance commands with the CLI's ``add(name, handler, help)``."""
    p = add("cases", cmd_cases, "the review queue: list, show, assign, decide, export")
    actions = p.add_subparsers(dest="case_action", required=True, metavar="ACTION")

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help_, description=help_, parents=[common])

    listing = action("list", "cases, oldest first")
    listing.add_argument("--status", choices=["open", "closed", "all"], default="open")
    listing.add_argument("--subject", help="a payer's or streamer's id")
    listing.add_argument("--rule")
    listing.add_argument("--limit", type=int, default=50)
    action("show", "one case, with its evidence").add_argument("case_id", type=int)
    assign = action("assign", "give a case to a reviewer")
    assign.add_argument("case_id", type=int)
    assign.add_argument("reviewer")
    assign.add_argument("--actor", required=True, help="who assigns it (audited)")
    decide = action("decide", "release or refuse what a case holds (final)")
    decide.add_argument("case_id", type=int)
    decide.add_argument("decision", choices=["release", "refuse"])
    decide.add_argument("--actor", required=True, help="the reviewer (audited)")
    decide.add_argument("--reason", required=True)
    decide.add_argument("--block", action="store_true", help="refuse: also block the streamer")
    export = action("export", "cases with their evidence, for a suspicious-activity report")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--status", choices=["open", "closed", "all"], default="all")
    export.add_argument("--decision", choices=["release", "refuse"])
    export.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")

    p = add("audit", cmd_audit, "the operator audit log (or export it with --output)")
    p.add_argument("--subject", help="user:ID, streamer:ID, case:ID, purchase:ID, party:ID")
    p.add_argument("--action", help="adjust, write_off, refund, decide_case, erase_user...")
    p.add_argument("--actor")
    p.add_argument("--after", type=int, default=0, help="records after this id")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--output", "-o", help="export every record to this file (- for stdout)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    p = add("rotate-keys", cmd_rotate_keys, "re-encrypt under the keyring's active key")
    p.add_argument("--actor", required=True, help="who rotates (audited)")
    p.add_argument("--batch-size", type=int, default=500, help="rows per transaction")

    p = add("erase-user", cmd_erase_user, "erase a party's personal data; the books stay")
    p.add_argument("party", help="the user's or streamer's id")
    p.add_argument("--actor", required=True, help="who erases (audited)")
    p.add_argument("--reason", required=True, help="the request it answers")
    p.add_argument(
        "--include-aml-records",
        action="store_true",
        help="also delete links and screenings (after the AML retention period)",
    )

    add("generate-key", cmd_generate_key, "a new keyring entry (id:base64key)").add_argument(
        "key_id"
    )
