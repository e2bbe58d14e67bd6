"""The command line: ``python -m flageval demo`` and ``python -m flageval bench``.

``demo`` evaluates five flags through an OpenFeature client with the hook, from threads
and asyncio tasks, against an embedded local intake, then prints rows exactly as the
intake received them, the evaluations per flag, variant and allocation, the pipeline's
counters, and how to point the hook at a real Datadog agent. Nothing leaves the machine.
Exits 0 only when the books balance. ``bench`` measures what an evaluation costs with
no hook, an empty hook, the hook and the wrapper, on this machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench
from .demo import balanced, report, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flageval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the pipeline against an embedded local intake")
    demo.add_argument("--threads", type=int, default=4)
    demo.add_argument("--per-thread", type=int, default=2_000)
    demo.add_argument("--tasks", type=int, default=50)
    demo.add_argument("--per-task", type=int, default=40)
    bench.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return int(args.run(args))
    for name in ("threads", "per_thread", "tasks", "per_task"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    outcome = run(args.threads, args.per_thread, args.tasks, args.per_task)
    report(outcome, sys.stdout)
    return 0 if balanced(outcome) else 1
