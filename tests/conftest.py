"""Shared fixtures: Hypothesis profiles and the parametrised SQLite/PostgreSQL store.

PostgreSQL: the server comes from ``SPAKTOK_TEST_PG_URL`` (default: this
machine's ``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Each test run
creates a throwaway database and drops it at the end, so leftovers from an
earlier run never matter; each test gets its own table prefix inside it.
When ``CI`` is set, PostgreSQL tests must run: an unreachable server fails the
run instead of skipping.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from spaktok_ledger import Ledger, create_engine
from spaktok_ledger.testing import FakeClock
from tests.apis import dispose_engines, open_ledger

# A fast default for local runs, a little more in CI, and a thorough profile
# (HYPOTHESIS_PROFILE=thorough) for a long run before a release. Every property
# runs on SQLite and PostgreSQL and, for the store and the services, through the
# sync and the async API: CI's 150 examples each no longer fitted its time on
# 2 cores once the async API doubled the property suites, and 50 each kept the
# whole CI run near 30 minutes; at 25 the property suites still run every
# invariant on both databases and both APIs in each CI run, and the thorough
# profile is the long run before a release (CONTRIBUTING.md).
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
# Mutation testing (python3 dev.py mutate) runs each mutant's tests once: the same
# examples every run, so a mutant is killed or survives for good, not by luck.
settings.register_profile(
    "mutation",
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

PG_SERVER_URL = os.environ.get(
    "SPAKTOK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = bool(os.environ.get("CI"))
_prefixes = itertools.count()
# The run's throwaway PostgreSQL database: named at import so that Django (below)
# can be configured once, before any test, for the whole process.
PG_TEST_DATABASE = f"spaktok_test_{os.getpid()}_{secrets.token_hex(4)}"


def _pg_django_settings() -> dict[str, str]:
    url = sa.make_url(PG_SERVER_URL)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": PG_TEST_DATABASE,
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.host or "",
        "PORT": str(url.port or ""),
    }


def pytest_configure(config: pytest.Config) -> None:
    """Configure Django once per process when it is installed.

    Django's settings can be configured only once per process; the contrib
    tests (on the run's PostgreSQL database) and the executed Django examples
    in docs/ share this configuration, whatever order they run in. Nothing
    connects until a test uses Django's database.
    """
    try:
        import django
        from django.conf import settings as django_settings
    except ImportError:
        return
    if not django_settings.configured:
        django_settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["testserver"],
            DATABASES={"default": _pg_django_settings()},
            INSTALLED_APPS=["spaktok_ledger.contrib.django"],
            SPAKTOK_LEDGER={"PREFIX": "dj_", "GIFTS": None},
            USE_TZ=True,
        )
        django.setup()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the ``slow`` tests first (stable order otherwise): with xdist the long
    ones then overlap the many short ones instead of ending the run on one core."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI is set, so PostgreSQL tests must run, but: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run (dropped at the end)."""
    server = sa.make_url(PG_SERVER_URL)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = PG_TEST_DATABASE
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _pg_unavailable(str(exc).splitlines()[0])
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_database_url, pool_size=10, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each store test runs once on SQLite and once on PostgreSQL."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> str:
    """A database URL for this test: a fresh SQLite file or the run's PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
def engine(backend: str, db_url: str, request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    if backend == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def prefix() -> str:
    """A table prefix no other test uses, so tests on one database never meet."""
    return f"t{os.getpid()}_{next(_prefixes)}_"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def api() -> str:
    """Which API the ``ledger`` fixture speaks: "sync" here; a module that runs against
    both overrides it with ``params=tests.apis.APIS`` (the async one behind a facade)."""
    return "sync"


@pytest.fixture
def ledger(engine: sa.Engine, prefix: str, clock: FakeClock, api: str) -> Iterator[Ledger]:
    """A migrated, empty ledger on the test's backend (and API, see ``api``)."""
    ledger = open_ledger(api, engine, prefix=prefix, clock=clock)
    ledger.migrate()
    yield ledger
    if api != "sync":
        dispose_engines()


_skipped_postgres: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "postgres" in report.keywords:
        _skipped_postgres.append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a skipped PostgreSQL test fails the run."""
    if IN_CI and _skipped_postgres:
        print(
            f"\nCI is set but {len(_skipped_postgres)} PostgreSQL test(s) were skipped, "
            f"e.g. {_skipped_postgres[0]}: failing the run"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def wait_for_a_lock_wait(engine: sa.Engine, timeout: float = 10) -> None:
    """Until a session of ``engine``'s PostgreSQL database waits on a lock (a test's
    statement meeting a row another transaction holds), or fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar():
                return
        time.sleep(0.01)
    raise AssertionError("no session waited on a lock")
