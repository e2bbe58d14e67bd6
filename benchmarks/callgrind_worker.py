"""Instructions per evaluation of the worker, counted by valgrind's callgrind.

Timings on a shared machine move by tens of percent; instruction counts do not. For
each width, the same fixed corpus as benchmark 4b (1,000 distinct flat contexts of
``context_attrs``, each seen 3 times, round robin, as snapshot tuples) is drained by a
fresh ``Worker`` in a child process run under ``valgrind --tool=callgrind``, once with
the drain and once without (everything else the same: interpreter start, imports, the
corpus, the worker), and the difference of the two instruction totals is divided by
the number of evaluations. ``PYTHONHASHSEED=0`` keeps set and dict orders, and so the
counts, the same from run to run.

    python -m benchmarks.callgrind_worker                 # widths 10, 64, 256
    python -m benchmarks.callgrind_worker 10 64 256 300   # any widths
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISTINCT = 1_000
SEEN = 3


def _run(width: int, drain: bool) -> None:
    """In the child: build the corpus and a worker; drain it if asked."""
    from benchmarks._harness import context_attrs
    from benchmarks.bench_worker import _snapshots, _worker

    bases = [context_attrs(width, i) for i in range(DISTINCT)]
    snaps = _snapshots(DISTINCT * SEEN, DISTINCT, bases.__getitem__)
    w = _worker(snaps)
    if drain:
        while w.drain_once():
            pass
        assert w.tiers.evaluations_held == len(snaps)


def callgrind_totals(module: str, *args: str) -> int:
    """Instructions of ``python -m module --child *args`` under callgrind (hash seed fixed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            module,
            "--child",
            *args,
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        m = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
        assert m is not None, "no totals line in the callgrind output"
        return int(m.group(1))


def _instructions(width: int, drain: bool) -> int:
    return callgrind_totals("benchmarks.callgrind_worker", str(width), "1" if drain else "0")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _run(int(argv[1]), argv[2] == "1")
        return 0
    widths = [int(a) for a in argv] or [10, 64, 256]
    n = DISTINCT * SEEN
    print(f"worker instructions per evaluation ({DISTINCT:,} distinct contexts x {SEEN})")
    print("| attributes | instructions / evaluation |")
    print("|---|---|")
    for width in widths:
        per = (_instructions(width, True) - _instructions(width, False)) / n
        print(f"| {width} | {per:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
