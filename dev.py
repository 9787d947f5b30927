#!/usr/bin/env python3
"""Project tasks that need nothing but Python 3.11+.

    python3 dev.py demo         # the gift-economy demo on ./spaktok-demo.db
    python3 dev.py test         # the whole test suite, one worker per core (PostgreSQL too)
    python3 dev.py lint         # ruff and mypy --strict on src/
    python3 dev.py bench        # the ledger and hot-account benchmarks
    python3 dev.py mutate       # mutation testing of the money modules (see CONTRIBUTING.md)
    python3 dev.py api          # regenerate docs/api.md from the public names' docstrings
    python3 dev.py lock         # re-resolve requirements/dev.lock from the registry (fresh venv)
    python3 dev.py test-newest  # -m money on the newest versions the registry serves
    python3 dev.py test-oldest  # -m money on the oldest versions pyproject.toml allows

The first six use ``.venv``, installed from ``requirements/dev.lock`` (exact
``==`` pins, so every machine tests the same versions) and re-installed
whenever ``pyproject.toml`` or the lock changes: a fresh clone needs no other
set-up. ``test-newest`` and ``test-oldest`` use their own ``.venv-newest`` and
``.venv-oldest`` (re-resolved at most once a day, or with ``--refresh``), run
the fast money/pricing/formatting subset unless given other pytest arguments,
and on failure print how their versions differ from the lock, so an upstream
change shows up as a failure that names the package.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements" / "dev.lock"
TASKS = ("demo", "test", "lint", "bench", "mutate", "api", "lock", "test-newest", "test-oldest")
# What the newest/oldest runs test by default: the money/pricing/formatting subset
# (tests marked `money`), collected only from the files that use the marker, since
# other test files import dev-only packages (beancount, fastapi, django) at the top.
def money_tests() -> list[str]:
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("test_*.py")
        if "mark.money" in path.read_text()
    )
    return ["-m", "money", *files]


# test-newest / test-oldest re-resolve their environment at most this often.
REFRESH_SECONDS = 24 * 3600


def python_in(env: Path) -> Path:
    return (
        env
        / ("Scripts" if os.name == "nt" else "bin")
        / ("python.exe" if os.name == "nt" else "python")
    )


PYTHON = python_in(VENV)


# Writes docs/api.md: every public name, grouped by the module that defines it,
# with the first line of its docstring (tests/test_exported_members.py checks
# that no public name is missing).
API_DOCS = r"""
import inspect, spaktok_ledger, spaktok_ledger.fx, spaktok_ledger.http, spaktok_ledger.testing
import spaktok_ledger.compliance
GROUPS = [
    ("The ledger store", ("spaktok_ledger._store",)),
    ("Domain types", ("spaktok_ledger._domain",)),
    ("Money and currencies", ("spaktok_ledger._money", "spaktok_ledger._currency",
                              "spaktok_ledger._format", "spaktok_ledger._split",
                              "spaktok_ledger._clock")),
    ("Catalogues, prices and quotes", ("spaktok_ledger._catalogue", "spaktok_ledger._pricing",
                                       "spaktok_ledger._service._quotes")),
    ("The gift economy", ("spaktok_ledger._service._gifts", "spaktok_ledger._service._outbox",
                          "spaktok_ledger._service._ids")),
    ("Payments (Stripe Checkout)", ("spaktok_ledger._service._payments",
                                    "spaktok_ledger._service._webhooks")),
    ("Payouts (Stripe Connect)", ("spaktok_ledger._service._payouts",)),
    ("The payment gateway", ("spaktok_ledger._service._gateway", "spaktok_ledger._stripe")),
    ("Exports", ("spaktok_ledger._export",)),
    ("Errors", ("spaktok_ledger._errors",)),
]
def first_line(obj):
    doc = inspect.getdoc(obj) if not isinstance(obj, (str, int, tuple, frozenset)) else None
    if not doc or doc.startswith(getattr(obj, "__name__", "?") + "("):
        return ""
    return doc.split(chr(10) * 2)[0].replace(chr(10), " ").rstrip(":")
def home(name, obj):
    module = getattr(obj, "__module__", None) or ""
    for title, prefixes in GROUPS:
        if module.startswith(prefixes):
            return title
    return "Constants and helpers"
out = ["# API reference", "",
       "Every public name, by layer, with the first line of its docstring; the",
       "docstrings themselves (`help(name)`) have the details and examples. Generated",
       "by `python3 dev.py api`; a test fails if a public name is missing here.", ""]
sections = {}
for name in spaktok_ledger.__all__:
    obj = getattr(spaktok_ledger, name)
    sections.setdefault(home(name, obj), []).append((name, obj))
order = [t for t, _ in GROUPS] + ["Constants and helpers"]
out += ["## `spaktok_ledger`", ""]
for title in order:
    if title not in sections:
        continue
    out += [f"### {title}", "", "| name | what it is |", "| --- | --- |"]
    for name, obj in sections[title]:
        out.append(f"| `{name}` | {first_line(obj)} |")
    out.append("")
for module in (spaktok_ledger.compliance, spaktok_ledger.fx, spaktok_ledger.http,
               spaktok_ledger.testing):
    summary = (inspect.getdoc(module) or "").split(chr(10) * 2)[0].replace(chr(10), " ")
    out += [f"## `{module.__name__}`", "", summary, "",
            "| name | what it is |", "| --- | --- |"]
    for name in module.__all__:
        out.append(f"| `{name}` | {first_line(getattr(module, name))} |")
    out.append("")
open("docs/api.md", "w").write(chr(10).join(out))
print("wrote docs/api.md")
"""


def _pip(env: Path) -> list[str]:
    return [str(python_in(env)), "-m", "pip", "--disable-pip-version-check"]


def _create(env: Path) -> None:
    print(f"creating {env.relative_to(ROOT)} with {sys.executable}", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env)


def freeze(env: Path) -> dict[str, str]:
    """name -> version of every distribution installed in ``env`` (the project excluded)."""
    out = subprocess.run(
        [*_pip(env), "freeze", "--exclude-editable", "--all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return _pins(out)


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    for tool in ("pip", "setuptools", "wheel"):
        pins.pop(tool, None)
    return pins


def diff_against_lock(env: Path) -> list[str]:
    """How the versions installed in ``env`` differ from the lock, one line per package."""
    have, locked = freeze(env), _pins(LOCK.read_text())
    lines = []
    for name in sorted(have):
        if have.get(name) != locked.get(name):
            lines.append(
                f"  {name}: lock {locked.get(name, '(absent)')}, here {have.get(name, '(absent)')}"
            )
    return lines


def ensure_locked_env() -> None:
    """Create .venv from requirements/dev.lock unless it is already installed from it."""
    if sys.version_info < (3, 11):
        sys.exit(f"spaktok-ledger needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not LOCK.exists():
        sys.exit(f"{LOCK.relative_to(ROOT)} is missing: run `python3 dev.py lock`")
    stamp_value = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes()
    ).hexdigest()
    stamp = VENV / ".installed-lock"
    if stamp.exists() and stamp.read_text() == stamp_value and PYTHON.exists():
        return
    if not PYTHON.exists():
        _create(VENV)
    print("installing spaktok-ledger[dev] into .venv from requirements/dev.lock", flush=True)
    pip = _pip(VENV)
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "install", "--quiet", "-r", str(LOCK), "-c", str(LOCK), "-e", ".[dev]"],
        check=True,
        cwd=ROOT,
    )
    drift = diff_against_lock(VENV)
    if drift:
        print(
            "requirements/dev.lock does not cover pyproject.toml's dependencies:",
            *drift,
            "run `python3 dev.py lock` and commit the result",
            sep="\n",
            file=sys.stderr,
        )
        sys.exit(1)
    stamp.write_text(stamp_value)


def lock() -> int:
    """Resolve pyproject.toml's dev set in a fresh venv and write requirements/dev.lock."""
    with tempfile.TemporaryDirectory(prefix="spaktok-lock-") as tmp:
        env = Path(tmp) / "venv"
        print("resolving spaktok-ledger[dev] in a fresh venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(env)
        pip = _pip(env)
        subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "install", "--quiet", "-e", ".[dev]"], check=True, cwd=ROOT)
        pins = freeze(env)
    LOCK.parent.mkdir(exist_ok=True)
    version = ".".join(map(str, sys.version_info[:2]))
    LOCK.write_text(
        "# The development and test environment, pinned: python3 dev.py installs .venv from it.\n"
        f"# Generated by `python3 dev.py lock` on Python {version}; do not edit by hand.\n"
        + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))
    )
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(pins)} packages)")
    return 0


def _lower_bounds() -> list[str]:
    """``name==lowest`` for every requirement pyproject.toml bounds from below (test extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    seen, pins = set(), []

    def visit(requirements: list[str]) -> None:
        for requirement in requirements:
            own = re.fullmatch(r"spaktok-ledger\[([a-z,]+)\]", requirement)
            if own:
                for extra in own.group(1).split(","):
                    if extra not in seen:
                        seen.add(extra)
                        visit(extras[extra])
                continue
            bound = re.match(
                r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?:>=|~=|==)\s*([0-9][^,;\s]*)", requirement
            )
            if bound:
                pins.append(f"{bound.group(1)}=={bound.group(2)}")

    visit(project["dependencies"])
    visit(["spaktok-ledger[test]"])
    return pins


def ensure_side_env(kind: str, refresh: bool) -> Path:
    """.venv-newest (newest versions served) or .venv-oldest (pyproject's lower bounds)."""
    env = ROOT / f".venv-{kind}"
    stamp = env / ".installed"
    inputs = (ROOT / "pyproject.toml").read_bytes()
    stamp_value = hashlib.sha256(inputs).hexdigest()
    fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < REFRESH_SECONDS
    if not refresh and fresh and stamp.read_text() == stamp_value:
        return env
    _create(env)
    pip = _pip(env)
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    if kind == "newest":
        print("installing spaktok-ledger[test] with the newest versions served", flush=True)
        command = [
            *pip,
            "install",
            "--quiet",
            "--upgrade",
            "--upgrade-strategy",
            "eager",
            "-e",
            ".[test]",
        ]
    else:
        constraints = env / "oldest-constraints.txt"
        constraints.write_text("\n".join(_lower_bounds()) + "\n")
        print(
            "installing spaktok-ledger[test] with the oldest versions pyproject.toml allows:",
            ", ".join(_lower_bounds()),
            flush=True,
        )
        command = [*pip, "install", "--quiet", "-c", str(constraints), "-e", ".[test]"]
    subprocess.run(command, check=True, cwd=ROOT)
    stamp.write_text(stamp_value)
    return env


def test_side(kind: str, rest: list[str]) -> int:
    refresh = "--refresh" in rest
    rest = [arg for arg in rest if arg != "--refresh"]
    env = ensure_side_env(kind, refresh)
    code = run(str(python_in(env)), "-m", "pytest", *(rest or money_tests()))
    if code not in (0, 5):
        drift = diff_against_lock(env)
        print(
            f"\nthe {kind} set failed; its versions that differ from requirements/dev.lock "
            "(the packages to suspect):",
            *(drift or ["  (none)"]),
            sep="\n",
        )
    return code


def run(*args: str) -> int:
    return subprocess.run(list(args), cwd=ROOT, check=False).returncode


def test_workers(rest: list[str]) -> list[str]:
    """``-n N`` for pytest-xdist: one worker per core (at most 4), unless the
    caller chose (``-n``/``--numprocesses``, or ``-p no:xdist``) or there is one core."""
    chosen = any(
        arg in ("-n", "--numprocesses", "no:xdist")
        or arg.startswith(("-n", "--numprocesses="))
        for arg in rest
    )
    cores = os.cpu_count() or 1
    if chosen or cores < 2:
        return []
    # worksteal: an idle worker takes queued tests from a busy one, so a few long
    # property tests do not leave one core running alone at the end of the run.
    return ["-n", str(min(cores, 4)), "--dist", "worksteal"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TASKS:
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    if task == "lock":
        return lock()
    if task in ("test-newest", "test-oldest"):
        return test_side(task.removeprefix("test-"), rest)
    ensure_locked_env()
    py = str(PYTHON)
    if task == "demo":
        return run(py, "-m", "spaktok_ledger", "demo", *rest)
    if task == "test":
        return run(py, "-m", "pytest", *test_workers(rest), *rest)
    if task == "api":
        return run(py, "-c", API_DOCS)
    if task == "mutate":
        # [module ...] [--changed] [--budget SECONDS] [--jobs N] [--record]: see --help
        return run(py, "tests/mutation/mutate.py", *rest)
    if task == "lint":
        code = run(py, "-m", "ruff", "check", "src", "tests", "examples", "bench", "dev.py")
        code |= run(py, "-m", "ruff", "format", "--check", "src")
        code |= run(py, "-m", "mypy", "--strict", "src/spaktok_ledger")
        return code
    # bench: extra arguments go to the ledger benchmark (see its --help)
    code = run(py, "bench/ledger_bench.py", *rest)
    skip = ["--skip-postgres"] if "--skip-postgres" in rest else []
    # Further benches run after it when present (bench/gift_bench.py: send_gift and
    # group commit; bench/growth_bench.py: reads and verify as the history grows).
    extras = ("gift_bench.py", "growth_bench.py", "hot_account_bench.py", "compliance_bench.py")
    for extra in extras:
        path = ROOT / "bench" / extra
        if path.exists():
            code |= run(py, str(path), *skip)
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(f"dev.py: `{' '.join(map(str, exc.cmd))}` failed (exit {exc.returncode})")
