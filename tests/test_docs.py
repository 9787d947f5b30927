"""Every Python code block in docs/*.md and README.md runs, top to bottom, per file.

Blocks of one file share a namespace, like a reader typing them into one
session; each file runs in its own empty working directory. A block can show
an expected failure with a ``try``/``except``; there is no way to skip a
block, so the docs cannot rot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

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
