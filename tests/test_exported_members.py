"""The public surface: every exported name exists, is documented, and nothing leaks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import spaktok_ledger
import spaktok_ledger.compliance
import spaktok_ledger.fx
import spaktok_ledger.http
import spaktok_ledger.testing

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
MODULES = [
    spaktok_ledger,
    spaktok_ledger.compliance,
    spaktok_ledger.fx,
    spaktok_ledger.http,
    spaktok_ledger.testing,
]


@pytest.mark.parametrize("module", MODULES)
def test_all_is_sorted_and_resolvable(module) -> None:
    """__all__ is sorted (constants, classes, functions: ruff's order), unique, importable."""
    names = list(module.__all__)

    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)

    assert names == sorted(set(names), key=order)
    for name in names:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module", MODULES)
def test_public_names_are_all_exported(module) -> None:
    """Every public (non-underscore, non-module) attribute of the package is in __all__."""
    import types

    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING"}
    }
    assert public <= set(module.__all__) | {"cli"}


def test_every_public_name_is_in_the_api_reference() -> None:
    """docs/api.md mentions every exported name (so the reference cannot fall behind)."""
    text = API_DOC.read_text()
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", text))
    missing = [
        f"{module.__name__}.{name}"
        for module in MODULES
        for name in module.__all__
        if name not in documented
    ]
    assert not missing, missing


def test_exceptions_share_one_root() -> None:
    """Every exported exception derives from LedgerError; misuse errors are ValueErrors."""
    for name in spaktok_ledger.__all__:
        value = getattr(spaktok_ledger, name)
        if isinstance(value, type) and issubclass(value, Exception) and not issubclass(
            value, Warning
        ):
            assert issubclass(value, spaktok_ledger.LedgerError), name
    assert issubclass(spaktok_ledger.InvalidInput, ValueError)
    assert issubclass(spaktok_ledger.InvalidAmountType, TypeError)
    assert issubclass(spaktok_ledger.NotFound, LookupError)
