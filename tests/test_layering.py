"""Layering: the pure core imports no I/O; importing the package creates nothing.

DESIGN.md's three layers import only downwards. The pure core (money,
currencies, split, pricing, the domain types) may import the standard library,
babel (CLDR data files) and other pure modules: no SQLAlchemy, no Stripe, no
HTTP client. Checked statically on each module's own import statements.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import spaktok_ledger

PACKAGE = Path(spaktok_ledger.__file__).parent
PURE = [
    "_money",
    "_currency",
    "_iso4217",
    "_domain",
    "_errors",
    "_split",
    "_pricing",
    "_format",
    "_catalogue",
    "_clock",
    "_extras",
    "_validate",
]
PURE_MODULES = {f"spaktok_ledger.{m}" for m in PURE} | {"spaktok_ledger.fx._rates"}
# babel reads CLDR data files shipped in the package; py-moneyed is a value type
# imported inside the interop functions only.
ALLOWED_THIRD_PARTY = {"babel", "moneyed"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", [m for m in PURE if (PACKAGE / f"{m}.py").exists()])
def test_pure_modules_import_no_io(module: str) -> None:
    """A pure-core module imports only the stdlib, babel and other pure modules."""
    for name in _imports(PACKAGE / f"{module}.py"):
        top = name.split(".")[0]
        if top == "spaktok_ledger":
            assert name in PURE_MODULES, f"{module} imports {name}, which is not pure"
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
                f"{module} imports {name}"
            )


def test_package_import_creates_no_engine() -> None:
    """Importing the package creates no engine and imports neither Stripe nor httpx."""
    code = (
        "import sys, gc, spaktok_ledger, sqlalchemy; "
        "engines = [o for o in gc.get_objects() if isinstance(o, sqlalchemy.engine.Engine)]; "
        "print(len(engines), 'stripe' in sys.modules, 'httpx' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "0 False False"


def test_services_speak_the_gateway_port_only() -> None:
    """The services never import the Stripe adapter nor the SDK: Stripe's payload shapes
    are read in spaktok_ledger._stripe, which turns them into the port's types."""
    for path in sorted((PACKAGE / "_service").glob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("spaktok_ledger._stripe", "stripe")), (path.name, name)
