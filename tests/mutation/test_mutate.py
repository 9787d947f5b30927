"""The mutation-testing runner: its configuration, equivalents, change detection and scores."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from tests.mutation import mutate
from tests.mutation.mutate import (
    Equivalent,
    Module,
    Result,
    changed_functions,
    classify,
    module_functions,
    normalise_change,
)

SPLIT = Module("_split", "src/spaktok_ledger/_split.py", ("tests/test_split.py",))

DIFF = """\
--- src/spaktok_ledger/_split.py
+++ src/spaktok_ledger/_split.py
@@ -3,6 +3,5 @@
     parts = split(
         value_minor,
-        remainder_to=PLATFORM,
-    )
+        )
     return parts["streamer"], parts[PLATFORM]
"""


def test_modules_file_maps_every_money_module_to_existing_tests():
    """modules.toml names existing sources and test files, and a threshold of at least 90%."""
    threshold, modules = mutate.load_modules()
    assert threshold >= 90
    assert {"_money", "_split", "_currency", "_pricing"} <= set(modules)
    root = mutate.ROOT
    for module in modules.values():
        assert (root / module.source).is_file(), module.source
        for test in module.tests:
            assert (root / test).is_file(), test


def test_module_import_name():
    """A module's dotted name is how mutmut prefixes its mutants."""
    assert SPLIT.dotted == "spaktok_ledger._split"
    assert Module("w", "src/spaktok_ledger/_store/_write.py", ()).dotted == (
        "spaktok_ledger._store._write"
    )


def test_change_ignores_headers_context_and_indentation():
    """A change is the removed and added lines, stripped, without diff headers or context."""
    assert normalise_change(DIFF) == ("-remainder_to=PLATFORM,", "-)", "+)")


def test_equivalents_file_is_reviewed_and_current():
    """Every entry names a mutated function of a configured module, a change and a reason."""
    _, modules = mutate.load_modules()
    prefixes = {module.dotted + "." for module in modules.values()}
    data = tomllib.loads(mutate.EQUIVALENT_FILE.read_text(encoding="utf-8"))
    for entry in mutate.load_equivalents():
        assert any(entry.function.startswith(prefix) for prefix in prefixes), entry.function
        assert entry.change, entry.function
        assert len(entry.reason) > 20, entry.function
    assert len(data.get("equivalent", [])) == len(mutate.load_equivalents())


def test_functions_are_named_as_mutmut_names_them():
    """Functions are x_name, methods xǁClassǁname; decorated ones (but classmethods) are not mutated."""
    source = (
        "from functools import cache\n"
        "def f(x):\n    return x + 1\n"
        "@cache\ndef g(x):\n    return x\n"
        "class C:\n"
        "    def m(self):\n        return 1\n"
        "    @classmethod\n    def k(cls):\n        return cls\n"
        "    @property\n    def p(self):\n        return 2\n"
    )
    found = module_functions(source)
    assert {key: mutated for key, (_, mutated) in found.items()} == {
        "x_f": True,
        "x_g": False,
        "xǁCǁm": True,
        "xǁCǁk": True,
        "xǁCǁp": False,
    }
    assert mutate.readable("xǁCǁm") == "C.m"
    assert mutate.readable("x_f") == "f"


def test_changed_functions_follow_the_code_not_its_formatting():
    """A reformatted function is unchanged; a changed body or a new function is changed."""
    before = module_functions("def f(x):\n    return x + 1\ndef g():\n    return 0\n")
    recorded = {key: digest for key, (digest, _) in before.items()}
    same = module_functions("def f(x):\n    # why\n    return (x + 1)\ndef g():\n    return 0\n")
    assert changed_functions(same, recorded) == []
    edited = module_functions(
        "def f(x):\n    return x - 1\ndef g():\n    return 0\ndef h():\n    pass\n"
    )
    assert changed_functions(edited, recorded) == ["x_f", "x_h"]
    assert changed_functions(edited, None) == ["x_f", "x_g", "x_h"]


def _result(statuses, changes):
    result = Result(SPLIT, statuses=dict(statuses))
    result.changes = dict(changes)
    return result


ENTRY = Equivalent(
    function="spaktok_ledger._split.xǁRevenueSplitǁsplit",
    change=normalise_change(DIFF),
    reason="remainder_to defaults to the platform",
    mutant=7,
)


def test_listed_survivor_is_equivalent_and_leaves_the_score():
    """A survivor whose change is listed counts as equivalent: out of the score, not a survivor."""
    name = "spaktok_ledger._split.xǁRevenueSplitǁsplit__mutmut_9"
    other = "spaktok_ledger._split.x_split__mutmut_1"
    result = _result(
        {name: "survived", other: "killed", "spaktok_ledger._split.x_split__mutmut_2": "timeout"},
        {name: ENTRY.change},
    )
    classify(result, [ENTRY], full=True)
    assert result.equivalent == {name: ENTRY}
    assert result.survived == []
    assert result.killed == [other, "spaktok_ledger._split.x_split__mutmut_2"]
    assert result.score == 100.0
    assert result.stale == []


def test_unlisted_survivor_lowers_the_score():
    """A survivor with another change is a survivor; the entry that matches nothing is stale."""
    name = "spaktok_ledger._split.xǁRevenueSplitǁsplit__mutmut_7"
    result = _result(
        {name: "survived", "spaktok_ledger._split.x_split__mutmut_1": "killed"},
        {name: ("-a", "+b")},
    )
    classify(result, [ENTRY], full=True)
    assert result.survived == [name]
    assert result.score == 50.0
    assert [why for _, why in result.stale] == [
        "no surviving mutant makes this change: the tests kill it now, or the code changed"
    ]


@pytest.mark.parametrize("full", [True, False])
def test_entry_of_a_function_without_mutants(full):
    """An entry whose function has no mutants is stale after a full run, ignored after a partial one."""
    result = _result({"spaktok_ledger._split.x_split__mutmut_1": "killed"}, {})
    classify(result, [ENTRY], full=full)
    assert bool(result.stale) is full


def test_unfinished_functions_are_not_judged():
    """Mutants the time budget did not reach are neither counted nor used to call entries stale."""
    name = "spaktok_ledger._split.xǁRevenueSplitǁsplit__mutmut_7"
    result = _result({name: "not checked", "spaktok_ledger._split.x_split__mutmut_1": "killed"}, {})
    classify(result, [ENTRY], full=False)
    assert result.stale == []
    assert result.not_run == 1
    assert len(result.tested) == 1
    assert result.score == 100.0


def test_baseline_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--record writes function hashes that --changed reads back; other modules keep theirs."""
    path = tmp_path / "baseline.toml"
    path.write_text(
        '[_other]\nmutants = 3\n\n[_other.functions]\n"x_f" = "abc"\n', encoding="utf-8"
    )
    result = _result({"spaktok_ledger._split.x_split__mutmut_1": "killed"}, {})
    mutate.write_baseline([result], path)
    data = mutate.load_baseline(path)
    assert data["_other"] == {"mutants": 3, "functions": {"x_f": "abc"}}
    source = (mutate.ROOT / SPLIT.source).read_text(encoding="utf-8")
    assert changed_functions(module_functions(source), data["_split"]["functions"]) == []
    assert (data["_split"]["mutants"], data["_split"]["killed"]) == (1, 1)


def test_module_names_on_the_command_line():
    """Modules are named as in modules.toml, with or without the underscore or a path."""
    _, modules = mutate.load_modules()
    assert [
        m.name for m in mutate.pick(modules, ["split", "_money", "src/spaktok_ledger/_pricing.py"])
    ] == [
        "_split",
        "_money",
        "_pricing",
    ]
    with pytest.raises(SystemExit):
        mutate.pick(modules, ["no_such_module"])


def test_function_scope():
    """`functions` in modules.toml (source names) limits a module to mutmut's keys of them."""
    assert mutate.function_key("Ledger.post") == "xǁLedgerǁpost"
    assert mutate.function_key("split") == "x_split"
    scoped = Module("_w", "src/spaktok_ledger/_w.py", (), functions=("xǁLedgerǁpost", "x_f"))
    assert scoped.scoped(["x_f", "xǁLedgerǁbalance", "xǁLedgerǁpost"]) == ["x_f", "xǁLedgerǁpost"]
    assert SPLIT.functions is None
    assert SPLIT.scoped(["x_a", "x_b"]) == ["x_a", "x_b"]


def test_ledger_write_path_scope_names_mutated_functions():
    """The write-path scope names functions the ledger module has and mutmut mutates (a
    function moved or renamed must be renamed here too)."""
    _, modules = mutate.load_modules()
    ledger = modules["_ledger"]
    assert ledger.functions is not None
    found = module_functions((mutate.ROOT / ledger.source).read_text(encoding="utf-8"))
    for key in ledger.functions:
        assert key in found and found[key][1], mutate.readable(key)


def test_scoped_baseline_records_only_the_scope(tmp_path: Path):
    """A scoped module's baseline lists only its scope, so --changed ignores the rest."""
    path = tmp_path / "baseline.toml"
    scoped = Module("_split", SPLIT.source, SPLIT.tests, functions=("x_split",))
    mutate.write_baseline([Result(scoped)], path)
    assert list(mutate.load_baseline(path)["_split"]["functions"]) == ["x_split"]


def test_a_pending_module_is_named_and_skipped_by_changed(capsys, monkeypatch):
    """`pending = "why"`: `--changed` (CI) prints the reason and mutates nothing of it.
    No module is pending now: every one of them, the write path too, is gated."""
    threshold, modules = mutate.load_modules()
    assert not any(module.pending for module in modules.values())
    why = "recorded before a rewrite; run `python3 dev.py mutate ledger --record`"
    pending = {**modules, "_ledger": dataclasses.replace(modules["_ledger"], pending=why)}
    monkeypatch.setattr(mutate, "load_modules", lambda *a, **k: (threshold, pending))
    ran: list[str] = []
    monkeypatch.setattr(mutate, "mutate", lambda module, *a, **k: ran.append(module.name))
    assert mutate.main(["ledger", "--changed"]) == 0
    assert ran == []
    out = capsys.readouterr().out
    assert "not gated until its baseline is re-recorded" in out
    assert why in out


def test_functions_option_restricts_a_run_to_named_functions(capsys, monkeypatch):
    """`--functions A.b,C.d` mutates only those functions of the module's scope (a partial
    run, like --changed's `only`); a name outside the scope or the module is refused, and so
    is --functions with --record or --changed."""
    calls: list[tuple[str, object]] = []

    def fake(module, equivalents, *, only, jobs, deadline):
        calls.append((module.name, only))
        return Result(module)

    monkeypatch.setattr(mutate, "mutate", fake)
    mutate.main(["ledger", "--functions", "Ledger._collect, Ledger._end_unit", "--jobs", "1"])
    assert calls == [("_ledger", ["xǁLedgerǁ_collect", "xǁLedgerǁ_end_unit"])]
    assert "only Ledger._collect, Ledger._end_unit" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="outside _ledger's scope"):
        mutate.main(["ledger", "--functions", "Ledger.balance"])
    with pytest.raises(SystemExit, match=r"no mutated function 'Ledger\.nope'"):
        mutate.main(["ledger", "--functions", "Ledger.nope"])
    with pytest.raises(SystemExit, match="names no function"):
        mutate.main(["ledger", "--functions", " , "])
    for other in ("--record", "--changed"):
        with pytest.raises(SystemExit) as refused:
            mutate.main(["ledger", "--functions", "Ledger._collect", other])
        assert refused.value.code == 2
    assert len(calls) == 1
