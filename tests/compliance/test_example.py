"""examples/compliance_review.py runs, and says what it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_compliance_example_runs() -> None:
    """The script holds the payout, refuses it after review, erases and audits."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "compliance_review.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    out = result.stdout
    assert ": review (transfer: None)" in out
    assert "[rapid_in_out]" in out and "[concentration]" in out
    assert "after review: refused; back in earnings: 4000 US cents" in out
    assert "after erasure: [erased]; books unchanged, verify ok" in out
    assert "dpo erase_user party:mule" in out
