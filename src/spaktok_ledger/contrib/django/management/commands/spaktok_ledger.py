"""``manage.py spaktok_ledger COMMAND ...``: the ``spaktok-ledger`` CLI on Django's database.

The database URL and the table prefix come from Django's settings, so
``manage.py spaktok_ledger verify`` checks the ledger the app uses. Every
argument after ``spaktok_ledger`` goes to the CLI unchanged (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from spaktok_ledger.cli import main
from spaktok_ledger.contrib.django import database_url, ledger_settings


def _run(args: list[str], out: Any, err: Any) -> int:
    conf = ledger_settings()
    url = database_url(conf.database).render_as_string(hide_password=False)
    return main(["--db", url, "--prefix", conf.prefix, *args], out=out, err=err)


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = "Run the spaktok-ledger command line (migrate, verify, balance...) on Django's database."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="spaktok-ledger arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        # Django's parser would claim options meant for the CLI (--json, -q): hand
        # everything after the command name to the CLI, minus Django's own
        # --settings / --pythonpath (already applied by manage.py).
        args, skip = [], False
        for arg in argv[2:]:
            if skip:
                skip = False
                continue
            if arg in ("--settings", "--pythonpath"):
                skip = True
                continue
            if arg.startswith(("--settings=", "--pythonpath=")):
                continue
            args.append(arg)
        sys.exit(_run(args, sys.stdout, sys.stderr))

    def handle(self, *args: Any, **options: Any) -> None:
        # call_command("spaktok_ledger", "verify", stdout=...): the raw streams, since
        # Django's OutputWrapper would add a newline to every partial write.
        out = getattr(self.stdout, "_out", self.stdout)
        err = getattr(self.stderr, "_out", self.stderr)
        code = _run(list(options.get("cli_args") or []), out, err)
        if code:
            raise CommandError(f"spaktok-ledger exited with code {code}", returncode=code)
