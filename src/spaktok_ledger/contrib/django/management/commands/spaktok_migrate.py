"""``manage.py spaktok_migrate``: create or upgrade the ledger's tables on Django's database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from spaktok_ledger._service import GiftEconomy
from spaktok_ledger.contrib.django import get_ledger, ledger_settings


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "Create or upgrade the spaktok-ledger tables (its own Alembic history, table prefix "
        "from SPAKTOK_LEDGER) and open the platform accounts. Idempotent."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--database", help="Django database alias (default: the setting's)")

    def handle(self, *args: Any, **options: Any) -> None:
        ledger = get_ledger(options.get("database"))
        GiftEconomy(ledger).setup()
        revision = ledger.migrate()  # already there: reports the revision
        self.stdout.write(
            f"spaktok-ledger schema at revision {revision} "
            f"(tables prefixed {ledger_settings().prefix!r})"
        )
