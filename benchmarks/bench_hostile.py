"""Benchmark 7: worker CPU per evaluation for hostile context shapes.

Each shape is a context an application can hand over by mistake or on purpose; the
pruner must bound its work whatever the shape (flageval/_prune.py: at most 4,096 entries
read and 4,096 values visited per context). Snapshots shaped as the hook makes them (a
fresh top-level dict per evaluation, the caller's nested objects shared, as the SDK's
merge gives) go on a real ``Handoff`` and through a real ``Worker.drain_once`` into
default tiers; the figure is process CPU time per evaluation, median over rounds.
Target: <= 5 ms per evaluation for every shape. Conservation is asserted; with timing
enabled, also a loose ceiling (10x the target). Under ``--benchmark-disable`` (CI) no
figure is asserted: a loaded machine's CPU time is not the code's, and the bound on the
pruner's work is a count, asserted by the test suite
(tests/telemetry/aggregation/test_prune_rules.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._harness import FLAG_KEY, FLAG_METADATA
from flageval._config import Settings
from flageval._handoff import Handoff, Snapshot
from flageval._worker import Worker

TARGET_MS = 5.0
CEILING_MS = 10 * TARGET_MS


class Same:
    """Distinct objects that all print alike (hashable by identity)."""

    def __str__(self) -> str:
        return "same"


def _big_set() -> dict[str, Any]:
    return {"plan": "pro", "ids": set(range(1_000_000))}


def _shared_set() -> dict[str, Any]:
    shared = set(range(100_000))
    return {f"ref{i:02d}": shared for i in range(64)}


def _wide_dict() -> dict[str, Any]:
    return {f"k{i:06d}": i for i in range(200_000)}


def _alike_keys() -> dict[Any, Any]:
    inner = {f"k{j:04d}": j for j in range(2_000)}
    return {Same(): inner for _ in range(2_000)}


#: name -> (builder of the caller's context, evaluations per round)
SHAPES: dict[str, tuple[Callable[[], dict[Any, Any]], int]] = {
    "set of 1,000,000 items": (_big_set, 20),
    "64 references to one 100,000-item set": (_shared_set, 20),
    "200,000-key dict": (_wide_dict, 20),
    "2,000 keys that print alike": (_alike_keys, 20),
}


def _worker(snaps: list[Snapshot]) -> Worker:
    settings = Settings.from_env(agent_url="http://127.0.0.1:9", service="flageval-bench")
    handoff = Handoff(len(snaps) + 1)
    handoff.queue.extend(snaps)
    return Worker(settings, handoff)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_worker_cpu_per_hostile_evaluation(
    benchmark: BenchmarkFixture, quick: bool, shape: str
) -> None:
    build, n = SHAPES[shape]
    rounds = 5
    if quick:
        n, rounds = 2, 1
    base = build()
    now = time.time_ns()
    cpu_ms: list[float] = []
    workers: list[Worker] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        # A fresh top-level dict per evaluation (the SDK's merge), built untimed.
        snaps: list[Snapshot] = [
            (
                FLAG_KEY,
                "on",
                None,
                None,
                dict(FLAG_METADATA),
                f"u{i}",
                dict(base),
                now + i,
                "STATIC",
            )
            for i in range(n)
        ]
        workers.append(_worker(snaps))
        return (workers[-1],), {}

    def drain_all(w: Worker) -> None:
        c0 = time.process_time_ns()
        while w.drain_once():
            pass
        cpu_ms.append((time.process_time_ns() - c0) / n / 1e6)

    benchmark.group = "7 worker CPU per hostile evaluation"
    benchmark.pedantic(drain_all, setup=setup, rounds=rounds, iterations=1)
    w = workers[-1]
    t = w.tiers
    assert t.received == n and w.counts.drained == n
    assert t.evaluations_held + sum(t.ledger.dropped.values()) == n
    median = statistics.median(cpu_ms)
    benchmark.extra_info.update(
        {
            "shape": shape,
            "evaluations_per_round": n,
            "cpu_ms_per_evaluation_median": round(median, 3),
            "cpu_ms_per_evaluation_min": round(min(cpu_ms), 3),
            "cpu_ms_per_evaluation_all": [round(x, 3) for x in cpu_ms],
            "target_ms": TARGET_MS,
            "degraded_by_reason": dict(t.ledger.degraded),
            "quick": quick,
        }
    )
    if not quick:
        assert median <= CEILING_MS, f"{shape}: {median:.1f} ms per evaluation"
