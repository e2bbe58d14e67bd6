"""Benchmark 6: peak RSS growth while the full tier fills, against the memory budget.

Each scenario runs in a fresh interpreter (benchmarks/_memory_probe.py) so the
resident set is not shaped by earlier benchmarks; see that file for the scenarios and
the method. The figure is peak RSS growth over the baseline / ``memory_budget_bytes``
(64 MiB by default; 8 MiB under --benchmark-disable to stay quick). The target is
<= 1.2 (budget + 20%). Only the accounting invariant is asserted (the tiers' own
estimate never passes the budget); RSS depends on the allocator and is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._harness import HERE

#: scenario -> evaluations at the default 64 MiB budget (each enough to overfill it)
SCENARIOS = {
    "long": 6_000,
    "small": 150_000,
    "wide": 40_000,
    "nested": 20_000,
    "long-keys": 150_000,
}
DEFAULT_BUDGET = 64 * 1024 * 1024
QUICK_BUDGET = 8 * 1024 * 1024


def _probe(scenario: str, evaluations: int, budget: int) -> dict[str, Any]:
    args = ["--evaluations", str(evaluations), "--budget", str(budget)]
    out = subprocess.run(
        [sys.executable, str(HERE / "_memory_probe.py"), scenario, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_memory_growth_against_budget(
    benchmark: BenchmarkFixture, quick: bool, scenario: str
) -> None:
    budget = QUICK_BUDGET if quick else DEFAULT_BUDGET
    evaluations = SCENARIOS[scenario] * budget // DEFAULT_BUDGET
    benchmark.group = "6 memory: peak RSS growth / budget"
    result = benchmark.pedantic(_probe, args=(scenario, evaluations, budget), rounds=1)
    assert result["bytes_held_estimate"] <= budget
    # The budget, not the input size, bounded the tier: some evaluations were refused.
    assert result["degraded_by_reason"].get("memory_budget", 0) > 0
    benchmark.extra_info.update(result)
    benchmark.extra_info["quick"] = quick
