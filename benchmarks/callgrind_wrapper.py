"""Instructions per evaluation through ``flageval.instrument``, counted by callgrind.

What the evaluating thread pays, exactly: a child process evaluates the benchmarks'
flag (``InMemoryProvider``, a 10-attribute context, sync) ``n`` times through the
wrapper, feeding a pipeline whose worker never starts (``autostart=False``: only the
snapshot and the hand-off run), under ``valgrind --tool=callgrind``; the difference of
the instruction totals of a long and a short run, divided by the difference of their
evaluations, is the cost of one. ``PYTHONHASHSEED=0``. Run from two trees with one venv
(``cd TREE && python -m benchmarks.callgrind_wrapper``) to compare two versions.

    python -m benchmarks.callgrind_wrapper              # 1,000 and 21,000 evaluations
    python -m benchmarks.callgrind_wrapper 1000 11000   # any two counts
"""

from __future__ import annotations

import os
import sys

from benchmarks.callgrind_worker import callgrind_totals


def _run(n: int) -> None:
    """In the child: ``n`` evaluations through the wrapper, nothing drained."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    import flageval
    from benchmarks._harness import FLAG_KEY, TARGETING_KEY, context_attrs, make_provider

    tel = flageval.Telemetry(agent_url="http://127.0.0.1:9", autostart=False, queue_size=n + 1)
    api.set_provider_and_wait(flageval.instrument(make_provider(), tel), domain="callgrind")
    get = api.get_client("callgrind").get_boolean_value
    ctx = EvaluationContext(TARGETING_KEY, context_attrs(10))
    for _ in range(n):
        get(FLAG_KEY, False, ctx)
    assert tel.handoff is not None and len(tel.handoff.queue) == n
    os._exit(0)  # no exit flush: nothing of the pipeline's end is counted


def _instructions(n: int) -> int:
    return callgrind_totals("benchmarks.callgrind_wrapper", str(n))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _run(int(argv[1]))
        return 0
    short, long = (int(a) for a in argv) if argv else (1_000, 21_000)
    per = (_instructions(long) - _instructions(short)) / (long - short)
    print(f"wrapper: {per:,.0f} instructions per evaluation ({short:,} and {long:,} evaluations)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
