"""Shared fixtures: Hypothesis profiles and the parametrised SQLite/PostgreSQL store."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# A fast default for local runs and a thorough profile for CI.
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
