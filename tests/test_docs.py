"""Every Python code block in docs/*.md and README.md runs, top to bottom, per file,
and passes ``mypy --strict``; every docstring example in the package runs too.

Blocks of one file share a namespace, like a reader typing them into one
session; each file runs in its own empty working directory. A block can show
an expected failure with a ``try``/``except``; there is no way to skip a
block, so the docs cannot rot.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
from pathlib import Path

import pytest

import spaktok_ledger

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
# Pages with Python examples (api.md, a generated table, has none).
RUNNABLE = [path for path in DOCS if "```python" in path.read_text()]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [
        (text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)
    ]


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_doc_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's Python examples execute without error."""
    blocks = python_blocks(path)
    assert blocks, f"{path.name} lost its Python examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPAKTOK_DOCS_ROOT", str(ROOT))
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for line, source in blocks:
        code = compile(source, f"{path.relative_to(ROOT)}:{line}", "exec")
        exec(code, namespace)
    os.chdir(ROOT)


# --- the same blocks, type-checked -------------------------------------------------
#
# A reader's editor runs a type checker over what they paste: every page's blocks,
# joined in order as one module, must pass ``mypy --strict`` like the library does.
# One mypy run covers every page (its cache lives in .mypy_cache/docs).


def _module_for(path: Path) -> tuple[str, list[int]]:
    """The page's blocks as one module, and for each module line the page line it came from."""
    lines: list[str] = []
    origin: list[int] = []
    for start, source in python_blocks(path):
        for offset, text in enumerate(source.splitlines()):
            lines.append(text)
            origin.append(start + 1 + offset)
    return "\n".join(lines) + "\n", origin


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Run mypy --strict once over every page's blocks; errors per page, at page lines."""
    from mypy import api

    folder = tmp_path_factory.mktemp("doc_blocks")
    origins: dict[str, tuple[Path, list[int]]] = {}
    for path in RUNNABLE:
        module = f"docs_{path.stem.replace('-', '_').lower()}"
        text, origin = _module_for(path)
        (folder / f"{module}.py").write_text(text)
        origins[module] = (path, origin)
    stdout, stderr, _status = api.run([
        "--strict",
        "--python-version", "3.11",
        "--cache-dir", str(ROOT / ".mypy_cache" / "docs"),
        "--no-error-summary",
        "--show-error-codes",
        "--config-file", str(ROOT / "pyproject.toml"),
        *sorted(str(p) for p in folder.glob("*.py")),
    ])
    assert not stderr, stderr
    errors: dict[str, list[str]] = {path.name: [] for path in RUNNABLE}
    pattern = re.compile(r"^.*?(docs_\w+)\.py:(\d+): (error|note): (.*)$")
    for line in stdout.splitlines():
        match = pattern.match(line)
        assert match, f"unexpected mypy output: {line}"
        module, number, kind, message = match.groups()
        if kind != "error":
            continue
        path, origin = origins[module]
        errors[path.name].append(f"{path.name}:{origin[int(number) - 1]}: {message}")
    return errors


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_doc_examples_type_check(path: Path, mypy_errors: dict[str, list[str]]) -> None:
    """The file's Python examples pass mypy --strict, as a reader's editor would check them."""
    assert mypy_errors[path.name] == [], "\n".join(mypy_errors[path.name])


# --- docstring examples -------------------------------------------------------------

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(spaktok_ledger.__path__, "spaktok_ledger.")
    if ".migrations" not in name and not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``>>>`` examples in the module's docstrings produce what they show."""
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
