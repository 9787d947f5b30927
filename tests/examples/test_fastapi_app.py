"""The FastAPI example app end to end: uvicorn on 127.0.0.1, PostgreSQL, the fake Stripe.

The tests themselves are the shared contract in ``harness.AppContract``.
"""

from __future__ import annotations

import sys

import pytest

from tests.examples.harness import AppContract

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class TestFastAPIApp(AppContract):
    prefix = "ex_fastapi_"
    openapi_path = "/openapi.json"

    @classmethod
    def command(cls, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
