"""Lazy exports: a process that only posts loads no Alembic, Stripe, payout or compliance code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import spaktok_ledger
from spaktok_ledger import AccountKind, AccountSpec, Ledger

# Modules a posting process must not load (prefixes of sys.modules keys).
HEAVY = (
    "alembic",
    "stripe",
    "spaktok_ledger._stripe",
    "spaktok_ledger._service",
    "spaktok_ledger._compliance",
    "spaktok_ledger.compliance",
    "spaktok_ledger.fx",
    "spaktok_ledger.testing",
)


def loaded_after(code: str) -> list[str]:
    """The heavy modules in sys.modules after running ``code`` in a fresh interpreter."""
    script = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_import_loads_nothing_heavy() -> None:
    """``import spaktok_ledger`` imports none of the package's modules, let alone Alembic or Stripe."""
    assert loaded_after("import spaktok_ledger") == []
    # nor SQLAlchemy's PostgreSQL dialect (the schema's JSONB is resolved per connection)
    assert loaded_after("import spaktok_ledger._store") == []
    script = "import sys, spaktok_ledger._store; print('sqlalchemy.dialects.postgresql' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False"]


def test_posting_process_loads_nothing_heavy(tmp_path) -> None:
    """Posting, reading a balance and a history page on a migrated SQLite file needs none of them."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.migrate()
    ledger.open_accounts(
        [
            AccountSpec("user:1:wallet", AccountKind.LIABILITY, allow_overdraft=True),
            AccountSpec("platform:revenue", AccountKind.REVENUE),
        ]
    )
    ledger.close()
    code = (
        "from spaktok_ledger import EntryDraft, Ledger, Posting\n"
        f"ledger = Ledger({url!r})\n"
        "ledger.post(EntryDraft('gift', (Posting.debit('user:1:wallet', 5),"
        " Posting.credit('platform:revenue', 5)), 'k1'))\n"
        "assert ledger.balance('platform:revenue').posted_minor == 5\n"
        "assert len(ledger.history('user:1:wallet').items) == 1\n"
        "assert ledger.verify().ok\n"
    )
    assert loaded_after(code) == []


def test_every_export_resolves_and_is_listed() -> None:
    """Each name in ``__all__`` is importable and listed by ``dir()``; unknown names raise."""
    for name in spaktok_ledger.__all__:
        assert getattr(spaktok_ledger, name) is not None
    assert set(spaktok_ledger.__all__) <= set(dir(spaktok_ledger))
    with pytest.raises(AttributeError, match="NoSuchName"):
        spaktok_ledger.NoSuchName  # type: ignore[attr-defined]  # noqa: B018


def test_subpackages_stay_reachable_as_attributes() -> None:
    """``spaktok_ledger.fx`` and friends resolve after a bare ``import spaktok_ledger``."""
    out = subprocess.run(
        [sys.executable, "-c", "import spaktok_ledger as s; print(s.fx.__name__, s.testing.__name__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.split() == ["spaktok_ledger.fx", "spaktok_ledger.testing"]
