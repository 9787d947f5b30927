"""The Flask example app end to end: the werkzeug server (``flask run``) on 127.0.0.1,
PostgreSQL, the fake Stripe.

The tests themselves are the shared contract in ``harness.AppContract``.
"""

from __future__ import annotations

import sys

import pytest

from tests.examples.harness import AppContract

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class TestFlaskApp(AppContract):
    prefix = "ex_flask_"

    @classmethod
    def command(cls, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "examples.flask_app.app",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-reload",
            "--no-debugger",
        ]
