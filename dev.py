#!/usr/bin/env python3
"""Project tasks that need nothing but Python 3.11+.

    python3 dev.py demo    # the gift-economy demo on ./spaktok-demo.db
    python3 dev.py test    # the whole test suite (PostgreSQL tests run when a server answers)
    python3 dev.py lint    # ruff and mypy --strict on src/
    python3 dev.py bench   # the ledger and hot-account benchmarks
    python3 dev.py api     # regenerate docs/api.md from the public names' docstrings

Each task creates ``.venv`` on first use and re-installs the project into it
whenever ``pyproject.toml`` changes, so a fresh clone needs no other set-up.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")

# Which extras each task needs installed.
EXTRAS = {"demo": "all", "test": "dev", "lint": "dev", "bench": "dev", "api": "dev"}


# Writes docs/api.md: every public name, grouped by the module that defines it,
# with the first line of its docstring (tests/test_exported_members.py checks
# that no public name is missing).
API_DOCS = r"""
import inspect, spaktok_ledger, spaktok_ledger.fx, spaktok_ledger.http, spaktok_ledger.testing
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
for module in (spaktok_ledger.fx, spaktok_ledger.http, spaktok_ledger.testing):
    summary = (inspect.getdoc(module) or "").split(chr(10) * 2)[0].replace(chr(10), " ")
    out += [f"## `{module.__name__}`", "", summary, "",
            "| name | what it is |", "| --- | --- |"]
    for name in module.__all__:
        out.append(f"| `{name}` | {first_line(getattr(module, name))} |")
    out.append("")
open("docs/api.md", "w").write(chr(10).join(out))
print("wrote docs/api.md")
"""


def ensure_env(extra: str) -> None:
    """Create .venv and install the project with ``extra`` unless already done."""
    if sys.version_info < (3, 11):
        sys.exit(f"spaktok-ledger needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp_value = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / f".installed-{extra}"
    if stamp.exists() and stamp.read_text() == stamp_value and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV.relative_to(ROOT)} with {sys.executable}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print(f"installing spaktok-ledger[{extra}] into .venv (first run only)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--quiet", "-e", f".[{extra}]"], check=True, cwd=ROOT)
    stamp.write_text(stamp_value)


def run(*args: str) -> int:
    return subprocess.run(list(args), cwd=ROOT, check=False).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    ensure_env(EXTRAS[task])
    py = str(PYTHON)
    if task == "demo":
        return run(py, "-m", "spaktok_ledger", "demo", *rest)
    if task == "test":
        return run(py, "-m", "pytest", *rest)
    if task == "api":
        return run(py, "-c", API_DOCS)
    if task == "lint":
        code = run(py, "-m", "ruff", "check", "src", "tests", "examples", "bench", "dev.py")
        code |= run(py, "-m", "ruff", "format", "--check", "src")
        code |= run(py, "-m", "mypy", "--strict", "src/spaktok_ledger")
        return code
    # bench: extra arguments go to the ledger benchmark (see its --help)
    code = run(py, "bench/ledger_bench.py", *rest)
    hot = ROOT / "bench" / "hot_account_bench.py"
    if hot.exists():
        skip = ["--skip-postgres"] if "--skip-postgres" in rest else []
        code |= run(py, str(hot), *skip)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
