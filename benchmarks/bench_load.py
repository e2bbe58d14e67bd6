"""Benchmark 9: the load scenario at soak length, 1,000,000 evaluations.

8 threads and 200 asyncio tasks evaluate through one pipeline with caps small enough
that every tier is used (tests/telemetry/reliability/load.py, the same scenario the
test suite runs at 100,000): the books must balance exactly and every body validate.
The figures are the rate (microseconds per evaluation, all producers together) and how
long the final shutdown took; under ``--benchmark-disable`` it runs 20,000 evaluations
once and checks the books only.
"""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from tests.intake import Intake
from tests.telemetry.reliability import load

SOAK_N = 1_000_000
QUICK_N = 20_000


def test_load_soak(benchmark: BenchmarkFixture, quick: bool) -> None:
    n = QUICK_N if quick else SOAK_N
    intake = Intake().start()
    try:
        benchmark.group = "9 load soak"
        tel, took = benchmark.pedantic(load.run, args=(intake, n), rounds=1, iterations=1)
    finally:
        intake.stop()
    st = load.check_books(tel, intake, n) if not quick else None
    if quick:  # too few evaluations for every tier: the books only
        stats = tel.stats()
        assert stats.pending == 0 and stats.conserved and stats.evaluations == n
        assert stats.evaluations_posted == intake.evaluations()
    benchmark.extra_info.update(
        {
            "evaluations": n,
            "evaluate_s": round(took["evaluate_s"], 2),
            "us_per_evaluation": round(took["evaluate_s"] / n * 1e6, 2),
            "shutdown_s": round(took["shutdown_s"], 3),
            "flushes": tel.stats().flushes,
            "dropped": dict(st.dropped) if st is not None else None,
            "degraded": dict(st.degraded) if st is not None else None,
            "quick": quick,
        }
    )
