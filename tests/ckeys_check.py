"""The compiled context keys under a memory checker: the tests of the compiled path (or
any pytest arguments) run against flageval/_ckeys.c, in a copy of the source tree, so
the module built in place is left as it is.

    python -m tests.ckeys_check memcheck   # valgrind's memcheck, the usual build
    python -m tests.ckeys_check asan       # a build with -fsanitize=address,undefined
    python -m tests.ckeys_check asan -- tests/telemetry/aggregation -k fast_keys

memcheck fails on any error (invalid read or write, use of an uninitialised value,
invalid free) and any block definitely lost whose stack passes through ``_ckeys``;
errors elsewhere (the interpreter's, other extensions') are counted, and the whole log
is kept (``tests/ckeys_memcheck.supp`` suppresses a known false positive of glibc's).
asan fails on the first error either sanitizer finds (out-of-bounds, use after free,
double free, undefined behaviour). Both run with ``PYTHONMALLOC=malloc``,
so that every allocation, the module's own buffers included, is a block of its own to
the checker. Exit status: the tests' (1 as well for a finding), 2 when the tool or the
build is missing. Slow: under memcheck the default selection takes 20 minutes or more.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The property and differential tests of the keys (the hostile corpus among them) and
#: those of ``untracked``.
DEFAULT_TESTS = [
    "tests/telemetry/aggregation/test_prune_fast_keys.py",
    "tests/telemetry/aggregation/test_ckeys_differential.py",
    "tests/telemetry/recording/test_snapshots_untracked.py",
]
_SKIP = shutil.ignore_patterns(".venv", ".git", "*.so", "__pycache__", ".*_cache", ".hypothesis")
_LOST = re.compile(
    r"^==\d+== [\d,]+ bytes in [\d,]+ blocks are definitely lost.*?(?=^==\d+== $)",
    re.MULTILINE | re.DOTALL,
)
#: An error record: its first line (the kind), then its stacks (and for an
#: uninitialised value, where it was made), up to a blank line.
_ERROR = re.compile(
    r"^==\d+== (?!HEAP|LEAK|ERROR|Memcheck|Copyright|Using|Command|Parent|For |Use --|  )"
    r"[A-Z][^\n]*\n(?:==\d+==  +[^\n]*\n)+",
    re.MULTILINE,
)
#: CPython 3.11's ints of no digits: _PyLong_New leaves their one digit unset and
#: MEDIUM_VALUE multiplies it by the size, 0; memcheck cannot see that the product is
#: defined, so the small int it indexes, and every later use of its address, is
#: "uninitialised" (in the interpreter's own loop as much as here).
_ORIGIN = "Uninitialised value was created by a heap allocation"


def _tree(into: Path, sanitize: str | None) -> Path:
    """A copy of the source tree with the module built in it; its root."""
    tree = into / "tree"
    shutil.copytree(ROOT, tree, ignore=_SKIP)
    sys.path.insert(0, str(ROOT))
    from hatch_build import SANITIZE_ENV, compile_keys, extension_name

    if sanitize:
        os.environ[SANITIZE_ENV] = sanitize
    problem = compile_keys(tree / "flageval" / "_ckeys.c", tree / "flageval" / extension_name())
    os.environ.pop(SANITIZE_ENV, None)
    if problem is not None:
        raise SystemExit(f"ckeys_check: the module was not built: {problem}")
    return tree


def _pytest(tree: Path, args: list[str]) -> list[str]:
    # The copy's flageval first (the editable install points at the original), and a
    # check that it is the compiled module that runs.
    start = (
        "import sys, pytest; sys.path.insert(0, '.'); import flageval._compiled as c; "
        "assert c.CKEYS is not None, c.STATUS; "
        "sys.exit(pytest.main(sys.argv[1:]))"
    )
    # No per-test timeout: under memcheck a property test takes minutes.
    return [
        sys.executable,
        "-c",
        start,
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--timeout=0",
        *args,
    ]


def _ours(record: str) -> bool:
    """A record whose stack passes through the module (tracemalloc's own bookkeeping of
    an allocation made there is tracemalloc's, and an int of CPython's the
    interpreter's)."""
    at_error, _, origin = record.partition(_ORIGIN)
    if "_PyLong_New" in "".join(origin.splitlines()[:3]):
        return False
    return "_ckeys" in at_error and "_tracemalloc.c" not in at_error


def memcheck(args: list[str]) -> int:
    if shutil.which("valgrind") is None:
        print("ckeys_check: valgrind is not installed", file=sys.stderr)
        return 2
    fd, kept = tempfile.mkstemp(prefix="ckeys-memcheck-", suffix=".log")
    os.close(fd)
    log = Path(kept)
    with tempfile.TemporaryDirectory(prefix="ckeys-memcheck-") as tmp:
        tree = _tree(Path(tmp), None)
        cmd = [
            "valgrind",
            "--tool=memcheck",
            "--leak-check=full",
            "--track-origins=yes",
            "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=none",  # the interpreter's own leaks at exit: below
            f"--suppressions={ROOT / 'tests' / 'ckeys_memcheck.supp'}",
            f"--log-file={log}",
            *_pytest(tree, args),
        ]
        env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONHASHSEED="0")
        env.pop("FLAGEVAL_PURE_PYTHON", None)
        status = subprocess.run(cmd, cwd=tree, env=env, check=False).returncode
    report = log.read_text()
    errors = [m.group(0) for m in _ERROR.finditer(report)]
    ours = [e for e in errors if _ours(e)]
    lost = [m.group(0) for m in _LOST.finditer(report) if _ours(m.group(0))]
    summary = re.findall(r"^==\d+== (ERROR SUMMARY: .*)$", report, re.MULTILINE)
    print(f"memcheck: the tests exited {status}; the log is {log}")
    print(f"memcheck: {summary[-1] if summary else 'no summary'}")
    print(f"memcheck: {len(ours)} error context(s) of {len(errors)} pass through _ckeys")
    print(f"memcheck: {len(lost)} definitely lost block(s) allocated through _ckeys")
    for record in ours + lost:
        print(record)
    return status or (1 if ours or lost else 0)


def asan(args: list[str]) -> int:
    compiler = os.environ.get("CC") or "gcc"
    runtimes = []
    for lib in ("libasan.so", "libubsan.so"):
        found = subprocess.run(
            [compiler, f"-print-file-name={lib}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if not os.path.isabs(found):
            print(f"ckeys_check: {compiler} has no {lib}", file=sys.stderr)
            return 2
        runtimes.append(found)
    with tempfile.TemporaryDirectory(prefix="ckeys-asan-") as tmp:
        tree = _tree(Path(tmp), "address,undefined")
        reports = Path(tmp) / "report"
        env = dict(
            os.environ,
            LD_PRELOAD=":".join(runtimes),
            PYTHONMALLOC="malloc",
            # The interpreter frees little at exit: leaks are the leak test's and
            # memcheck's. Everything else stops the run at the first finding, reported
            # to a file (pytest captures the test's stderr, and a halted run loses it).
            ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=1:log_path={reports}",
            UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={reports}",
        )
        env.pop("FLAGEVAL_PURE_PYTHON", None)
        status = subprocess.run(_pytest(tree, args), cwd=tree, env=env, check=False).returncode
        found = sorted(Path(tmp).glob("report.*"))
        for report in found:
            print(report.read_text(), file=sys.stderr)
        print(f"asan: exit status {status}, {len(found)} sanitizer report(s)")
        return status or (1 if found else 0)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("memcheck", "asan"):
        print(__doc__, file=sys.stderr)
        return 2
    args = argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    return (memcheck if argv[0] == "memcheck" else asan)(args or DEFAULT_TESTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
