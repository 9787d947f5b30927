"""The compliance commands of ``spaktok-ledger``: cases, audit, rotate-keys, erase-user."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace

import pytest

from spaktok_ledger import Ledger
from spaktok_ledger.cli import main
from spaktok_ledger.compliance import Keyring, Sensitive
from spaktok_ledger.testing import FakeClock
from tests.compliance.conftest import QUIET, build, fund


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    """A SQLite ledger with one open case (a held credit) and sealed metadata."""
    url = f"sqlite:///{tmp_path / 'compliance.db'}"
    monkeypatch.setenv("SPAKTOK_KEYRING", f"k1:{Keyring.generate_entry('x').split(':')[1]}")
    keyring = Keyring.from_env()
    clock = FakeClock()
    with Ledger(url, clock=clock) as ledger:
        ledger.migrate()
        compliance, economy = build(
            ledger, clock, keyring=keyring, config=replace(QUIET, max_purchases=1)
        )
        fund(economy, "alice", 100, "p1", metadata={"ip": Sensitive("198.51.100.9")})
        fund(economy, "alice", 200, "p2")
    return url


def test_cases_list_show_assign_decide(db: str) -> None:
    """The queue in a table and as JSON; assign and decide are audited under --actor."""
    code, out, _ = run("--db", db, "cases", "list")
    assert code == 0 and "velocity_purchases" in out and "payer:alice" in out
    code, out, _ = run("--db", db, "cases", "list", "--json")
    (case,) = json.loads(out)["cases"]
    assert case["holds"][0]["kind"] == "credit"
    code, out, _ = run("--db", db, "cases", "show", str(case["id"]))
    assert code == 0 and "evidence entries" in out
    assert run("--db", db, "cases", "assign", str(case["id"]), "rita")[0] == 2  # no --actor
    assert run("--db", db, "cases", "assign", str(case["id"]), "rita", "--actor", "lead")[0] == 0
    code, out, _ = run(
        "--db", db, "cases", "decide", str(case["id"]), "release", "--actor", "rita",
        "--reason", "regular fan",
    )
    assert code == 0 and "release by rita" in out
    code, _, err = run(
        "--db", db, "cases", "decide", str(case["id"]), "refuse", "--actor", "rita", "--reason", "x"
    )
    assert code == 1 and "already decided" in err
    assert run("--db", db, "cases", "show", "999")[0] == 3
    code, out, _ = run("--db", db, "balance", "user:alice:wallet", "--json")
    assert json.loads(out)["available_minor"] == 300


def test_cases_and_audit_exports(db: str, tmp_path) -> None:
    """Cases export as JSON Lines or CSV; the audit log lists and exports."""
    code, out, _ = run("--db", db, "cases", "export")
    (line,) = out.splitlines()
    assert json.loads(line)["case"]["rule"] == "velocity_purchases"
    target = tmp_path / "cases.csv"
    code, out, err = run("--db", db, "cases", "export", "--format", "csv", "-o", str(target))
    assert code == 0 and "wrote 1 case(s)" in out and "export cases" in err
    rows = list(csv.DictReader(target.open()))
    assert rows[0]["rule"] == "velocity_purchases" and rows[0]["entry_type"] == "purchase"
    (case_id,) = {r["case_id"] for r in rows}
    run("--db", db, "cases", "decide", case_id, "refuse", "--actor", "rita", "--reason", "fraud")
    code, out, _ = run("--db", db, "audit")
    assert code == 0 and "decide_case" in out and "rita" in out
    code, out, _ = run("--db", db, "audit", "--action", "decide_case", "--json")
    (record,) = json.loads(out)["records"]
    assert (record["actor"], record["reason"]) == ("rita", "fraud")
    target = tmp_path / "audit.jsonl"
    code, out, _ = run("--db", db, "audit", "-o", str(target))
    assert code == 0 and "wrote 1 record(s)" in out
    assert json.loads(target.read_text().splitlines()[0])["action"] == "decide_case"


def test_rotate_keys_and_erase_user(db: str, monkeypatch) -> None:
    """rotate-keys moves data to the new key (progress on stderr); erase-user keeps the books."""
    old = Keyring.from_env()
    assert old is not None
    new_entry = Keyring.generate_entry("k2")
    old_entry = "k1:" + os.environ["SPAKTOK_KEYRING"].split(":", 1)[1]
    monkeypatch.setenv("SPAKTOK_KEYRING", f"{new_entry},{old_entry}")
    code, out, err = run("--db", db, "rotate-keys", "--actor", "sre")
    assert code == 0 and "1 data key(s) re-wrapped" in out and "rotate keys" in err
    assert "can leave the keyring" in out
    monkeypatch.setenv("SPAKTOK_KEYRING", new_entry)
    code, out, _ = run("--db", db, "trial-balance", "--json")
    before = json.loads(out)
    code, out, _ = run(
        "--db", db, "erase-user", "alice", "--actor", "dpo", "--reason", "GDPR request"
    )
    assert code == 0 and "1 data key(s) destroyed" in out and "2 entries kept" in out
    assert json.loads(run("--db", db, "trial-balance", "--json")[1]) == before
    assert run("--db", db, "verify")[0] == 0
    code, out, _ = run("--db", db, "audit", "--subject", "party:alice", "--json")
    assert [r["action"] for r in json.loads(out)["records"]] == ["erase_user"]


def test_rotate_keys_needs_a_keyring(db: str, monkeypatch) -> None:
    """Without SPAKTOK_KEYRING there is nothing to rotate to: a usage error."""
    monkeypatch.delenv("SPAKTOK_KEYRING")
    code, _, err = run("--db", db, "rotate-keys", "--actor", "sre")
    assert code == 2 and "SPAKTOK_KEYRING" in err


def test_generate_key() -> None:
    """generate-key prints a keyring entry the keyring accepts."""
    code, out, _ = run("generate-key", "2026-12")
    assert code == 0
    assert Keyring.parse(out.strip()).active_key_id == "2026-12"
    assert run("generate-key", "bad id")[0] == 2
