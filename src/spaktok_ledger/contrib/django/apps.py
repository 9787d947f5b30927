"""The Django app of ``spaktok_ledger.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig


class SpaktokLedgerConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "spaktok_ledger.contrib.django"
    label = "spaktok_ledger"
    verbose_name = "spaktok-ledger"

    def ready(self) -> None:
        from spaktok_ledger.contrib.django import ledger_settings

        ledger_settings()  # a misconfigured SPAKTOK_LEDGER fails at start-up, not mid-request
