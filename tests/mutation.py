"""Mutation run over the modules that carry the contract (docs/mutation.md).

    python -m tests.mutation                 # every module, one at a time
    python -m tests.mutation prune wire      # some of them
    python -m tests.mutation --list          # what each module mutates and runs

Each module runs mutmut in its own scratch copy of the project (flageval/, tests/,
schemas/, pyproject.toml) with only that module's files mutated and only its tests
selected, so one run fits a shared 2-core machine. Survivors listed in
tests/mutation_equivalents.toml (with the mutated line and why no test can tell) are
counted apart; a listed mutant that no longer survives, or whose mutated line changed,
is reported stale. Not part of CI's run: it takes minutes per module.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.toml"
#: What a scratch copy needs: the package, the tests and what the tests read.
COPIED = ("flageval", "tests", "schemas", "pyproject.toml")
# Hypothesis draws the same examples every run, so a mutant's verdict does not vary.
PYTEST_ARGS = ["-p", "no:cacheprovider", "-q", "-x", "--hypothesis-seed=0"]


@dataclass(frozen=True)
class Module:
    name: str
    files: tuple[str, ...]
    #: fnmatch globs over mutmut's mutant names: what is in scope for the score.
    mutants: tuple[str, ...]
    tests: tuple[str, ...]


HOSTILE = "tests/telemetry/reliability/test_hostile_contexts.py::"
MODULES: dict[str, Module] = {
    m.name: m
    for m in (
        Module(
            "prune",
            ("flageval/_prune.py",),
            # flatten, the walker, the leaf rule, canonical and the cut (the keys' fast
            # paths and memo are _keys.py's, checked against these by property tests).
            ("flageval._prune.x_*", "flageval._prune.xǁ_Walkǁ*"),
            (
                "tests/telemetry/aggregation/test_prune_rules.py",
                "tests/telemetry/aggregation/test_prune_budgets_and_order.py",
                HOSTILE + "test_pruning_is_bounded_and_independent_of_insertion_order",
                HOSTILE + "test_keys_that_print_alike_never_let_insertion_order_decide",
                HOSTILE + "test_keys_whose_str_raises_and_repr_ties_never_decide_by_order",
            ),
        ),
        Module(
            "tiers",
            ("flageval/_tiers.py",),
            ("flageval._tiers.*",),
            (
                "tests/telemetry/aggregation/test_tier_buckets.py",
                "tests/telemetry/aggregation/test_tier_degrading_and_take.py",
            ),
        ),
        Module(
            "fields",
            ("flageval/_fields.py",),
            ("flageval._fields.*",),
            (
                "tests/telemetry/aggregation/test_tier_buckets.py",
                "tests/telemetry/test_ddtrace_parity.py",
                "tests/telemetry/aggregation/test_tier_degrading_and_take.py",
            ),
        ),
        Module(
            "wire",
            ("flageval/_wire.py",),
            ("flageval._wire.*",),
            (
                "tests/telemetry/wire/test_rows_and_bodies.py",
                "tests/telemetry/wire/test_intake_schema.py",
                "tests/telemetry/wire/test_body_limit_edge.py",
            ),
        ),
        Module(
            "retry_after",
            ("flageval/_common.py",),
            ("flageval._common.x_parse_retry_after*", "flageval._common.x_backoff_s*"),
            (
                "tests/test_retry_after.py",
                "tests/telemetry/transport/test_backoff_and_retry_after_bounds.py",
            ),
        ),
        Module(
            "transport",
            ("flageval/_transport.py", "flageval/_http.py"),
            # The retry decisions: which answers are retried, how long to wait, when to stop.
            (
                "flageval._transport.xǁSenderǁsend_all*",
                "flageval._transport.xǁSenderǁ_send_one*",
                "flageval._transport.xǁSenderǁ_post*",
                "flageval._transport.xǁSenderǁ_sleep*",
                "flageval._http.x_not_sent*",
                "flageval._http.x_no_answer*",
            ),
            (
                "tests/telemetry/transport/test_posting_to_the_intake.py",
                "tests/telemetry/transport/test_intake_cannot_exhaust_the_client.py",
                "tests/telemetry/transport/test_unreadable_retry_after.py",
                "tests/telemetry/transport/test_api_key_never_follows_a_redirect.py",
                "tests/telemetry/transport/test_what_each_answer_means.py",
                "tests/telemetry/transport/test_backoff_and_retry_after_bounds.py",
                "tests/telemetry/transport/test_sender_waits_deadlines_and_logs.py",
                # What only a real agent, TLS or a lost answer shows: the 404 route rule,
                # no EVP proxy, an untrusted certificate, delivery_unknown.
                "tests/telemetry/transport/test_agent_routes.py",
                "tests/telemetry/reliability/test_secrets_and_privacy.py",
                "tests/telemetry/reliability/test_at_most_once_delivery.py",
            ),
        ),
        Module(
            "ofrep_headers",
            ("flageval/ofrep/_headers.py",),
            ("flageval.ofrep._headers.*",),
            ("tests/ofrep/test_headers_config.py", "tests/ofrep/test_rules_contract.py"),
        ),
        Module(
            "ofrep_coalesce",
            ("flageval/ofrep/_coalesce.py", "flageval/ofrep/_queue.py"),
            ("flageval.ofrep._coalesce.*", "flageval.ofrep._queue.*"),
            (
                "tests/ofrep/test_coalescing.py",
                "tests/ofrep/test_fetch_queue.py",
                "tests/ofrep/test_rules_contract.py",
            ),
        ),
    )
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout"}
STATUS.update({-24: "timeout", 152: "timeout", 255: "timeout", 5: "no_tests", 33: "no_tests"})
COLUMNS = ("killed", "survived", "no_tests", "timeout", "equivalent", "other")


def load_equivalents(path: Path = EQUIVALENTS) -> list[dict[str, str]]:
    """The mutants judged equivalent: module, mutant, change (the mutated line), reason."""
    if not path.exists():
        return []
    entries: list[dict[str, str]] = tomllib.loads(path.read_text("utf-8")).get("equivalent", [])
    return entries


def _scratch_copy(module: Module, into: Path) -> None:
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=ignore)
        else:
            shutil.copy2(src, into / name)
    pyproject = (into / "pyproject.toml").read_text("utf-8")
    if "[tool.mutmut]" in pyproject:  # ours is written below, from MODULES
        head, _, tail = pyproject.partition("[tool.mutmut]")
        rest = tail.split("\n[", 1)
        pyproject = head + ("[" + rest[1] if len(rest) > 1 else "")
    # A test file not written yet (a run on an older commit) is left out, and said so.
    tests = [t for t in module.tests if (ROOT / t.partition("::")[0]).exists()]
    for t in sorted(set(module.tests) - set(tests)):
        print(f"{module.name}: not present, left out: {t}", flush=True)
    cfg = {
        "source_paths": ["flageval"],
        "only_mutate": list(module.files),
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": PYTEST_ARGS,
        "also_copy": ["schemas"],
        "use_git_change_detection": False,
        "use_setproctitle": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
    (into / "pyproject.toml").write_text(pyproject + "\n".join(lines) + "\n", "utf-8")


#: Address space per process of a run: a mutant that loops appending (seen: 8 GB before
#: its timeout) fails with MemoryError instead of pressing a shared machine.
MEMORY_LIMIT_BYTES = 4 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def _statuses(module: Module, where: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for file in module.files:
        meta = where / "mutants" / (file + ".meta")
        if not meta.exists():
            continue
        for name, code in json.loads(meta.read_text("utf-8"))["exit_code_by_key"].items():
            if any(fnmatch.fnmatchcase(name, g) for g in module.mutants):
                out[name] = "not checked" if code is None else STATUS.get(code, "suspicious")
    return out


def _diff(name: str, where: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout


def _mutated_lines(diff: str) -> list[str]:
    return [
        ln[1:].strip()
        for ln in diff.splitlines()
        if ln.startswith("+") and not ln.startswith("+++")
    ]


def run_module(
    module: Module, work: Path, jobs: int, show: bool, rerun: bool = True
) -> dict[str, int]:
    where = work / module.name
    started = time.monotonic()
    log = where / "mutmut.log"
    code = 0
    if rerun or not (where / "mutants").is_dir():
        _scratch_copy(module, where)
        with log.open("w") as sink:
            code = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mutmut",
                    "run",
                    "--max-children",
                    str(jobs),
                    *module.mutants,
                ],
                cwd=where,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=3 * 3600,
                check=False,
                preexec_fn=_limit_memory,  # this process runs no threads
            ).returncode
    statuses = _statuses(module, where)
    if code != 0 or not statuses:
        print(f"{module.name}: mutmut failed (exit {code}); see {log}", flush=True)
        return {"failed": 1}
    equivalent = {e["mutant"]: e for e in load_equivalents() if e["module"] == module.name}
    counts = dict.fromkeys(COLUMNS, 0)
    counts["total"] = len(statuses)
    stale: list[str] = []
    for name, status in sorted(statuses.items()):
        if name in equivalent:
            entry = equivalent.pop(name)
            if status != "survived":
                stale.append(f"{name}: listed equivalent but {status}")
            elif entry["change"].strip() not in _mutated_lines(_diff(name, where)):
                stale.append(f"{name}: listed equivalent but its mutated line changed")
            else:
                counts["equivalent"] += 1
                continue
        key = status if status in counts else "other"
        counts[key] += 1
        if status in ("survived", "no_tests") and show:
            print(_diff(name, where), flush=True)
    stale += [f"{name}: listed equivalent but no such mutant" for name in equivalent]
    for line in stale:
        print(f"{module.name}: stale equivalent entry: {line}", flush=True)
    counts["stale"] = len(stale)
    counts["seconds"] = round(time.monotonic() - started)
    return counts


def _score(c: dict[str, int]) -> str:
    # Survivors and mutants no selected test reaches both count as not caught.
    judged = c["total"] - c["equivalent"]
    return f"{100.0 * (c['killed'] + c['timeout']) / judged:.1f}%" if judged else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("modules", nargs="*", help=f"any of: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print each module's files and tests")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--show", action="store_true", help="print the diff of each survivor")
    parser.add_argument(
        "--report", action="store_true", help="score the last run in --work again, do not rerun"
    )
    parser.add_argument(
        "--equivalents", action="store_true", help="print the equivalents list as a table"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "flageval-mutation",
        help="where the scratch copies go (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s): {', '.join(unknown)}")
    chosen = [MODULES[m] for m in args.modules or MODULES]
    if args.equivalents:
        print("| module | mutant | mutated line | why it is equivalent |\n|---|---|---|---|")
        for e in load_equivalents():
            if e["module"] in {m.name for m in chosen}:
                name = e["mutant"].rpartition(".")[2]
                change = e["change"].replace("|", "\\|")
                print(f"| {e['module']} | `{name}` | `{change}` | {e['reason']} |")
        return 0
    if args.list:
        for m in chosen:
            print(f"{m.name}: mutates {', '.join(m.files)} ({', '.join(m.mutants)})")
            print(f"    tests: {' '.join(m.tests)}")
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    header = ("module", *COLUMNS, "total", "score")
    print("  ".join(f"{h:>10}" for h in header), flush=True)
    bad = 0
    for m in chosen:
        c = run_module(m, args.work, args.jobs, args.show, rerun=not args.report)
        if "failed" in c:
            bad += 1
            continue
        row = [m.name, *(str(c[k]) for k in header[1:-1]), _score(c)]
        print("  ".join(f"{v:>10}" for v in row) + f"   ({c['seconds']} s)", flush=True)
        bad += c["survived"] + c["no_tests"] + c["stale"] + c["other"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
