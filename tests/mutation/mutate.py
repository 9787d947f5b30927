"""Mutation testing of the money modules with mutmut 3 (``python3 dev.py mutate``).

Each module named in ``modules.toml`` is mutated on its own, in
``build/mutation/<module>/``, and every mutant is checked only by the test files
that target the module, so one module takes seconds to a few minutes. The
result per module: mutants, killed (timeouts count as killed: the tests noticed),
equivalent (listed with a reason in ``equivalent.toml``), survived, and the score
``killed / (mutants - equivalent)``.

Equivalent mutants are matched by their change (the diff ``mutmut show``
prints), not by mutmut's number, so an entry survives renumbering; an entry
that matches no mutant any more, or a mutant the tests now kill, is reported as
stale and fails the run, so the list stays reviewed instead of growing silently.

``--changed`` (what CI runs) mutates only the functions whose code differs from
``baseline.toml`` (written by ``--record`` after a full run) and fails on any
survivor not listed as equivalent: a change to money code must come with tests
that notice it. ``--budget`` bounds the wall-clock time; mutants not reached
are reported as not run.

Run it through ``python3 dev.py mutate [module ...] [--changed] [--budget S]
[--jobs N] [--record]``; it needs the project's ``.venv`` (mutmut is in the
``dev`` extra).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODULES_FILE = HERE / "modules.toml"
EQUIVALENT_FILE = HERE / "equivalent.toml"
BASELINE_FILE = HERE / "baseline.toml"
WORK = ROOT / "build" / "mutation"
PACKAGE_DIR = "src/spaktok_ledger"

# mutmut's names for functions: x_<function> and xǁ<Class>ǁ<method>.
SEPARATOR = "\u01c1"
# What mutmut's statuses mean here (mutmut.stats.status_by_exit_code).
KILLED = frozenset({"killed", "timeout", "caught by type check"})
NOT_RUN = frozenset({"not checked", "check was interrupted by user", "skipped"})
# A decorated function is not mutated by mutmut 3, except under these decorators.
MUTATED_DECORATORS = frozenset({"staticmethod", "classmethod"})


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """A module to mutate and the tests that target it."""

    name: str
    source: str
    tests: tuple[str, ...]
    pytest_args: tuple[str, ...] = ()
    functions: tuple[str, ...] | None = None
    """mutmut keys of the functions in scope (``functions = [...]`` in modules.toml,
    readable names like ``Ledger.post``); None: the whole module."""
    pending: str | None = None
    """``pending = "why"`` in modules.toml: the module's baseline must be re-recorded
    (a full run) before ``--changed`` can gate it; until then CI says so and skips it."""

    def scoped(self, keys: Iterable[str]) -> list[str]:
        """The keys in this module's function scope."""
        if self.functions is None:
            return list(keys)
        return [key for key in keys if key in self.functions]

    @property
    def dotted(self) -> str:
        """The module's import name, as mutmut prefixes its mutants with it."""
        return self.source.removeprefix("src/").removesuffix(".py").replace("/", ".")


@dataclass(frozen=True)
class Equivalent:
    """A mutant that behaves like the original, and why."""

    function: str
    change: tuple[str, ...]
    reason: str
    mutant: int | None = None


def load_modules(path: Path = MODULES_FILE) -> tuple[float, dict[str, Module]]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    modules = {
        name: Module(
            name=name,
            source=spec["source"],
            tests=tuple(spec["tests"]),
            pytest_args=tuple(spec.get("pytest_args", ())),
            functions=_function_keys(spec["functions"]) if "functions" in spec else None,
            pending=spec.get("pending"),
        )
        for name, spec in data["modules"].items()
    }
    return float(data["threshold"]), modules


def function_key(name: str) -> str:
    """``Ledger.post`` -> ``xǁLedgerǁpost``; ``split`` -> ``x_split`` (mutmut's keys)."""
    cls, dot, method = name.rpartition(".")
    return f"x{SEPARATOR}{cls}{SEPARATOR}{method}" if dot else f"x_{name}"


def _function_keys(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not names:
        raise SystemExit("modules.toml: `functions` must be a non-empty list of names")
    return tuple(function_key(name) for name in names)


def normalise_change(diff: str) -> tuple[str, ...]:
    """The removed and added lines of a unified diff, stripped: ``("-a = 1", "+a = 2")``."""
    lines = []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")) or not line.startswith(("-", "+")):
            continue
        lines.append(line[0] + line[1:].strip())
    return tuple(lines)


def load_equivalents(path: Path = EQUIVALENT_FILE) -> list[Equivalent]:
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    found = []
    for entry in data.get("equivalent", []):
        reason = entry.get("reason", "").strip()
        if not reason:
            raise SystemExit(f"{path.name}: {entry.get('function')} has no reason")
        found.append(
            Equivalent(
                function=entry["function"],
                change=normalise_change(entry["change"]),
                reason=reason,
                mutant=entry.get("mutant"),
            )
        )
    return found


# --- functions, as mutmut names them ---------------------------------------------------


def _is_mutated(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    if not node.decorator_list:
        return True
    if len(node.decorator_list) > 1:
        return False
    decorator = node.decorator_list[0]
    return isinstance(decorator, ast.Name) and decorator.id in MUTATED_DECORATORS


def module_functions(source: str) -> dict[str, tuple[str, bool]]:
    """mutmut's key of each function and method -> (hash of its code, whether mutmut mutates it).

    The hash covers the function's syntax tree (formatting and comments aside),
    so a changed body, signature or docstring changes it.
    """
    tree = ast.parse(source)
    found: dict[str, tuple[str, bool]] = {}

    def add(key: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        digest = hashlib.sha256(ast.dump(node).encode()).hexdigest()[:16]
        found[key] = (digest, _is_mutated(node))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            add(f"x_{node.name}", node)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    add(f"x{SEPARATOR}{node.name}{SEPARATOR}{item.name}", item)
    return found


def readable(key: str) -> str:
    """``xǁQuoteǁfrom_dict`` -> ``Quote.from_dict``; ``x_split`` -> ``split``."""
    if key.startswith(f"x{SEPARATOR}"):
        return key[2:].replace(SEPARATOR, ".")
    return key.removeprefix("x_")


def load_baseline(path: Path = BASELINE_FILE) -> dict[str, dict[str, object]]:
    if not path.exists():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8"))


def changed_functions(
    current: Mapping[str, tuple[str, bool]], recorded: Mapping[str, object] | None
) -> list[str]:
    """Keys of the mutated functions that are new or differ from the baseline."""
    if recorded is None:
        return sorted(key for key, (_, mutated) in current.items() if mutated)
    return sorted(
        key for key, (digest, mutated) in current.items() if mutated and recorded.get(key) != digest
    )


# --- results ------------------------------------------------------------------------------


@dataclass
class Result:
    """One module's mutants after a run."""

    module: Module
    statuses: dict[str, str] = field(default_factory=dict)
    changes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    diffs: dict[str, str] = field(default_factory=dict)
    equivalent: dict[str, Equivalent] = field(default_factory=dict)
    stale: list[tuple[Equivalent, str]] = field(default_factory=list)
    not_mutated: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def tested(self) -> dict[str, str]:
        return {name: s for name, s in self.statuses.items() if s not in NOT_RUN}

    @property
    def killed(self) -> list[str]:
        return sorted(name for name, s in self.tested.items() if s in KILLED)

    @property
    def survived(self) -> list[str]:
        return sorted(
            name
            for name, s in self.tested.items()
            if s not in KILLED and name not in self.equivalent
        )

    @property
    def not_run(self) -> int:
        return len(self.statuses) - len(self.tested)

    @property
    def score(self) -> float | None:
        counted = len(self.tested) - len(self.equivalent)
        return None if counted <= 0 else 100.0 * len(self.killed) / counted


def function_of(mutant: str) -> str:
    """``spaktok_ledger._split.x_split__mutmut_7`` -> ``spaktok_ledger._split.x_split``."""
    return mutant.partition("__mutmut_")[0]


def classify(result: Result, equivalents: Sequence[Equivalent], *, full: bool) -> None:
    """Mark the survivors that equivalent.toml lists; record its stale entries.

    An entry is stale when its function was mutated completely in this run and no
    surviving mutant makes its change (the tests kill it now, or the code
    changed), or, after a full run of the module, when its function has no
    mutants at all.
    """
    prefix = result.module.dotted + "."
    by_function: dict[str, list[str]] = {}
    for name in result.statuses:
        by_function.setdefault(function_of(name), []).append(name)
    for entry in equivalents:
        if not entry.function.startswith(prefix):
            continue
        names = by_function.get(entry.function)
        if names is None:
            if full:
                result.stale.append((entry, "its function has no mutants any more"))
            continue
        if any(result.statuses[name] in NOT_RUN for name in names):
            continue  # stopped by the time budget before this function was done
        survivors = [
            name
            for name in names
            if result.statuses[name] not in KILLED and result.changes.get(name) == entry.change
        ]
        if not survivors:
            result.stale.append(
                (
                    entry,
                    "no surviving mutant makes this change: the tests kill it now, "
                    "or the code changed",
                )
            )
        for name in survivors:
            result.equivalent[name] = entry


# --- running mutmut --------------------------------------------------------------------------

PROGRESS = re.compile(r"(\d+)/(\d+)\s+🎉 (\d+)\s+🫥 (\d+)\s+⏰ (\d+)\s+🤔 (\d+)\s+🙁 (\d+)")


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def prepare(module: Module) -> Path:
    """A fresh working directory: src and tests linked, pyproject.toml with mutmut's settings."""
    workdir = WORK / module.name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "src").symlink_to(ROOT / "src", target_is_directory=True)
    (workdir / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in project:
        raise SystemExit("pyproject.toml has its own [tool.mutmut]: settings belong here")
    settings = f"""
[tool.mutmut]
source_paths = ["{PACKAGE_DIR}"]
only_mutate = {_toml_list([module.source])}
pytest_add_cli_args_test_selection = {_toml_list(module.tests)}
pytest_add_cli_args = {_toml_list(["-p", "no:cacheprovider", *module.pytest_args])}
"""
    (workdir / "pyproject.toml").write_text(project + settings, encoding="utf-8")
    return workdir


def mutmut_command() -> str:
    found = Path(sys.executable).parent / "mutmut"
    if not found.exists():
        raise SystemExit("mutmut is not installed in this environment: run `python3 dev.py mutate`")
    return str(found)


def _progress(log: Path) -> tuple[int, ...] | None:
    try:
        with log.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    matches = PROGRESS.findall(tail)
    return tuple(int(x) for x in matches[-1]) if matches else None


def run_mutmut(workdir: Path, globs: Sequence[str], jobs: int, deadline: float | None) -> str:
    """Run ``mutmut run``; returns "done", "budget" (stopped at the deadline) or "failed"."""
    log = workdir / "mutmut.log"
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation"}
    command = [mutmut_command(), "run", "--max-children", str(jobs), *globs]
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        shown = None
        stopped = False
        while True:
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                pass
            progress = _progress(log)
            if progress and progress[:2] != (shown or (None, None))[:2]:
                done, total, killed, _, timeouts, _, survived = progress
                print(
                    f"  {done}/{total} mutants tested: {killed + timeouts} killed, "
                    f"{survived} survived so far",
                    flush=True,
                )
                shown = progress
            if deadline is not None and time.monotonic() > deadline and not stopped:
                print("  time budget spent: stopping mutmut", flush=True)
                proc.send_signal(signal.SIGINT)  # mutmut stops its workers and saves
                stopped = True
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
    if stopped:
        return "budget"
    return "done" if proc.returncode == 0 else "failed"


def mutmut_results(workdir: Path) -> dict[str, str]:
    """mutant name -> status, from ``mutmut results --all true``."""
    out = subprocess.run(
        [mutmut_command(), "results", "--all", "true"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    statuses = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def mutmut_diff(workdir: Path, mutant: str) -> str:
    return subprocess.run(
        [mutmut_command(), "show", mutant], cwd=workdir, capture_output=True, text=True, check=True
    ).stdout


def mutate(
    module: Module,
    equivalents: Sequence[Equivalent],
    *,
    only: Sequence[str] | None,
    jobs: int,
    deadline: float | None,
) -> Result:
    """Mutate ``module`` (or only the functions ``only`` names) and classify the results."""
    result = Result(module)
    source = (ROOT / module.source).read_text(encoding="utf-8")
    functions = module_functions(source)
    full = only is None
    if module.functions is not None:
        unknown = sorted(readable(key) for key in module.functions if key not in functions)
        if unknown:
            result.error = f"modules.toml names functions {module.source} lacks: {unknown}"
            return result
        only = module.scoped(only if only is not None else functions)
        if not only:
            return result
    if full:
        result.not_mutated = sorted(
            readable(key) for key in module.scoped(functions) if not functions[key][1]
        )
    workdir = prepare(module)
    globs = [f"{module.dotted}.{key}__mutmut_*" for key in only] if only is not None else []
    started = time.monotonic()
    outcome = run_mutmut(workdir, globs, jobs, deadline)
    result.seconds = time.monotonic() - started
    log = (workdir / "mutmut.log").read_text(encoding="utf-8", errors="replace")
    if outcome == "failed":
        if "Filtered for specific mutants, but nothing matches" in log:
            return result  # the changed functions have nothing mutmut mutates
        result.error = "mutmut failed; its output is in " + str(workdir / "mutmut.log")
        tail = log[-3000:].replace("\r", "\n")
        print(tail, file=sys.stderr)
        return result
    result.statuses = mutmut_results(workdir)
    if only is not None:
        wanted = {f"{module.dotted}.{key}" for key in only}
        result.statuses = {n: s for n, s in result.statuses.items() if function_of(n) in wanted}
    for name, status in result.statuses.items():
        if status not in NOT_RUN and status not in KILLED:
            diff = mutmut_diff(workdir, name)
            result.diffs[name] = diff
            result.changes[name] = normalise_change(diff)
    classify(result, equivalents, full=full and outcome == "done")
    return result


# --- reporting ------------------------------------------------------------------------------


def report(results: Sequence[Result], threshold: float) -> bool:
    """Print the table and the survivors; True when every module passes."""
    ok = True
    print()
    print(f"{'module':<12} {'mutants':>7} {'killed':>7} {'equivalent':>10} {'survived':>8}  score")
    for r in results:
        score = r.score
        timeouts = sum(1 for s in r.tested.values() if s == "timeout")
        text = "-" if score is None else f"{score:.1f}%"
        extra = f"  ({timeouts} by timeout)" if timeouts else ""
        if r.not_run:
            extra += f"  ({r.not_run} not run: time budget)"
        print(
            f"{r.module.name:<12} {len(r.tested):>7} {len(r.killed):>7} "
            f"{len(r.equivalent):>10} {len(r.survived):>8}  {text}{extra}"
        )
    for r in results:
        if r.error:
            ok = False
            print(f"\n{r.module.name}: {r.error}")
        if r.score is not None and r.score < threshold:
            ok = False
            print(f"\n{r.module.name}: score {r.score:.1f}% is below {threshold:.0f}%")
        if r.not_run:
            print(
                f"\n{r.module.name}: {r.not_run} mutants not run within the time budget; "
                f"run `python3 dev.py mutate {r.module.name}` for all of them"
            )
        if r.not_mutated:
            print(
                f"\n{r.module.name}: not mutated by mutmut (decorated other than "
                f"@staticmethod/@classmethod): {', '.join(r.not_mutated)}"
            )
        for entry, why in r.stale:
            ok = False
            print(
                f"\n{r.module.name}: stale entry in equivalent.toml for "
                f"{entry.function} (mutant {entry.mutant}): {why}"
            )
        if r.survived:
            print(
                f"\n{r.module.name}: {len(r.survived)} surviving mutant(s) not listed as equivalent:"
            )
            for name in r.survived:
                print(f"  {name} ({r.tested[name]})")
                body = [line for line in r.diffs.get(name, "").splitlines()[1:] if line]
                print("\n".join("    " + line for line in body))
    return ok


def _toml_value(value: object) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def write_baseline(results: Sequence[Result], path: Path = BASELINE_FILE) -> None:
    """Record each measured module's function hashes and counts (other modules keep theirs)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    sections: dict[str, dict[str, object]] = dict(load_baseline(path))
    for r in results:
        source = (ROOT / r.module.source).read_text(encoding="utf-8")
        sections[r.module.name] = {
            "recorded_at": datetime.now(UTC).date().isoformat(),
            "commit": commit,
            "mutants": len(r.tested),
            "killed": len(r.killed),
            "equivalent": len(r.equivalent),
            "survived": len(r.survived),
            **({"not_run": r.not_run} if r.not_run else {}),
            "functions": {
                key: digest
                for key, (digest, _) in module_functions(source).items()
                if key in r.module.scoped([key])
            },
        }
    lines = [
        "# Written by `python3 dev.py mutate --record` after a full run: the functions as",
        "# they were measured. CI (`--changed`) mutates only functions whose hash differs.",
        "",
    ]
    for name in sorted(sections):
        section = dict(sections[name])
        functions = section.pop("functions", {})
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in section.items()]
        lines += ["", f"[{name}.functions]"]
        lines += [f'"{key}" = "{digest}"' for key, digest in functions.items()]  # type: ignore[attr-defined]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {path}")


# --- command line -----------------------------------------------------------------------------


def chosen_functions(module: Module, names: str) -> list[str]:
    """mutmut's keys of ``--functions a,B.c``: each must be a function of ``module`` that
    mutmut mutates and, for a scoped module, in its scope (a typo would run nothing)."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted:
        raise SystemExit("--functions names no function")
    found = module_functions((ROOT / module.source).read_text(encoding="utf-8"))
    keys = []
    for name in wanted:
        key = function_key(name)
        if key not in found or not found[key][1]:
            raise SystemExit(f"--functions: {module.source} has no mutated function {name!r}")
        if module.scoped([key]) != [key]:
            raise SystemExit(f"--functions: {name!r} is outside {module.name}'s scope")
        keys.append(key)
    return keys


def pick(modules: Mapping[str, Module], names: Sequence[str]) -> list[Module]:
    if not names:
        return list(modules.values())
    picked = []
    for raw in names:
        name = Path(raw).stem
        name = name if name.startswith("_") else "_" + name
        if name not in modules:
            raise SystemExit(f"unknown module {raw!r}; known: {', '.join(modules)}")
        picked.append(modules[name])
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py mutate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "modules", nargs="*", help="modules to mutate (default: all in modules.toml)"
    )
    parser.add_argument(
        "--changed",
        action="store_true",
        help="only functions changed since baseline.toml; any unlisted survivor fails",
    )
    parser.add_argument("--budget", type=float, default=None, help="wall-clock seconds for the run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel mutants")
    parser.add_argument(
        "--record", action="store_true", help="write baseline.toml after a full run"
    )
    parser.add_argument(
        "--functions",
        default=None,
        help="comma-separated functions of the module's scope to mutate, e.g. "
        "Ledger._collect,Ledger._end_unit (a partial run: no --record, no --changed)",
    )
    args = parser.parse_args(argv)
    if args.record and args.changed:
        parser.error("--record needs a full run (no --changed)")
    if args.functions is not None and (args.record or args.changed):
        parser.error("--functions is a partial run: not with --record or --changed")

    threshold, modules = load_modules()
    equivalents = load_equivalents()
    baseline = load_baseline()
    deadline = None if args.budget is None else time.monotonic() + args.budget
    results = []
    for module in pick(modules, args.modules):
        only = None
        if args.changed and module.pending:
            print(f"{module.name}: not gated until its baseline is re-recorded: {module.pending}")
            continue
        if args.functions is not None:
            only = chosen_functions(module, args.functions)
            print(f"{module.name}: only {', '.join(readable(key) for key in only)}")
        if args.changed:
            source = (ROOT / module.source).read_text(encoding="utf-8")
            recorded = baseline.get(module.name, {}).get("functions")
            only = module.scoped(changed_functions(module_functions(source), recorded))  # type: ignore[arg-type]
            if not only:
                print(f"{module.name}: no function changed since {BASELINE_FILE.name}")
                continue
            print(
                f"{module.name}: changed since {BASELINE_FILE.name}: "
                f"{', '.join(readable(key) for key in only)}"
            )
        if deadline is not None and time.monotonic() > deadline:
            print(f"{module.name}: not run, the time budget is spent")
            continue
        print(f"mutating {module.source} against {', '.join(module.tests)}", flush=True)
        results.append(mutate(module, equivalents, only=only, jobs=args.jobs, deadline=deadline))
        print(f"  {results[-1].seconds:.0f} s", flush=True)
    if not results:
        print("nothing to mutate")
        return 0
    ok = report(results, threshold)
    if args.changed and any(r.survived for r in results):
        ok = False
        print(
            "\nchanged money code has surviving mutants: add tests that notice them "
            "(or list true equivalents in tests/mutation/equivalent.toml)"
        )
    elif args.changed and ok:
        print(
            "\nthe changed functions pass; after a full `python3 dev.py mutate --record`, "
            "later runs skip them"
        )
    if args.record:
        if not ok:
            print("not recording a baseline from a failing run")
            return 1
        write_baseline(results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
