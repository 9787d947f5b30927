"""The Django example app end to end: ``manage.py runserver`` on 127.0.0.1, PostgreSQL
(the ledger in Django's own database), the fake Stripe.

The shared contract in ``harness.AppContract`` runs as for the other apps; the
tests below add what only Django's example does: the host's ``GiftOrder`` row
and the ledger's gift in one transaction on Django's connection.
"""

from __future__ import annotations

import sys

import httpx
import pytest
import sqlalchemy as sa

from tests.examples.harness import AppContract, problem

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class TestDjangoApp(AppContract):
    prefix = "ex_django_"

    @classmethod
    def command(cls, port: int) -> list[str]:
        manage = "examples/django_app/manage.py"
        py = sys.executable
        # Django's migrations (the host's table), the ledger's, then the server.
        return [
            "sh",
            "-c",
            f'"{py}" {manage} migrate --noinput -v 0 && "{py}" {manage} spaktok_migrate && '
            f'exec "{py}" {manage} runserver 127.0.0.1:{port} --noreload',
        ]

    @staticmethod
    def orders(settings, entry_id: int | None = None) -> list[tuple[str, int, int]]:
        engine = sa.create_engine(settings.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT sender_id, quantity, entry_id FROM gifts_giftorder ORDER BY id"
                ).all()
        finally:
            engine.dispose()
        return [tuple(r) for r in rows]

    def test_host_commit_keeps_the_order_row_and_the_gift(
        self, api: httpx.Client, admin, settings
    ) -> None:
        """A gift writes the host's GiftOrder row and the ledger's entry, both committed."""
        self.fund(admin, "ola", 500)
        sent = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose", "quantity": 3},
            headers=self.as_user("ola", "order-1"),
        )
        assert sent.status_code == 201, sent.text
        entry_id = sent.json()["entry_id"]
        assert ("ola", 3, entry_id) in self.orders(settings)
        assert admin.ledger.entry(entry_id).type == "gift"
        assert self.snapshot(api, "ola")[0]["wallet"]["coins"] == 470
        replay = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose", "quantity": 3},
            headers=self.as_user("ola", "order-1"),
        )
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert [o for o in self.orders(settings) if o[0] == "ola"] == [("ola", 3, entry_id)]

    def test_host_rollback_undoes_the_gift(self, api: httpx.Client, admin, settings) -> None:
        """When the host's INSERT fails after the gift, the gift is rolled back too (409)."""
        self.fund(admin, "pia", 5000)
        before = self.snapshot(api, "pia")
        entries = admin.ledger.count_entries()
        refused = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose", "quantity": 101},  # host: <= 100
            headers=self.as_user("pia", "big-order"),
        )
        problem(refused, 409, "host_rule_violated")
        assert self.snapshot(api, "pia") == before
        assert admin.ledger.count_entries() == entries
        assert [o for o in self.orders(settings) if o[0] == "pia"] == []
        # Nothing was kept, not even the idempotency key: a corrected order goes through.
        fixed = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose", "quantity": 100},
            headers=self.as_user("pia", "big-order"),
        )
        assert fixed.status_code == 201, fixed.text
        assert "Idempotent-Replayed" not in fixed.headers
        assert self.snapshot(api, "pia")[0]["wallet"]["coins"] == 4000
