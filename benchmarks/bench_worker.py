"""Benchmark 4: the worker's CPU per evaluation (drain, prune, key, aggregate).

Prebuilt snapshot tuples, shaped exactly as the hook makes them (a fresh attribute
dict per evaluation, as the SDK's context merge gives, and a copy of the flag's
metadata per evaluation, as handoff.put takes it), are put on a real ``Handoff``
and consumed by a real ``Worker.drain_once`` (batches of 4,096) into fresh tiers with
the default settings. The figure is process CPU time (``time.process_time``) per
evaluation, median over rounds; pytest-benchmark's own (wall-clock) figures are per
round. The median is the figure; the minimum is
shown too, because on this shared machine interference only ever adds.

Scenarios: 10 attributes with 1,000 distinct contexts (and targeting keys); 10
attributes, every context identical; 100,000 distinct contexts on one flag (cap
pressure: the per-flag cap of 10,000 sends 90% to the degraded tier after keying);
256 leaves in nested mappings and lists (the pruner's slow path), 1,000 distinct.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._harness import FLAG_KEY, FLAG_METADATA, context_attrs, nested_attrs
from flageval._config import Settings
from flageval._handoff import Handoff, Snapshot
from flageval._worker import Worker

#: name -> (evaluations per round, rounds, distinct contexts, builder of one context)
SCENARIOS: dict[str, tuple[int, int, int, Callable[[int], dict[str, Any]]]] = {
    "10 attrs, 1,000 distinct": (100_000, 7, 1_000, lambda i: context_attrs(10, i)),
    "10 attrs, identical": (100_000, 7, 1, lambda i: context_attrs(10, i)),
    "10 attrs, 100,000 distinct": (100_000, 5, 100_000, lambda i: context_attrs(10, i)),
    "256-leaf nested, 1,000 distinct": (4_000, 3, 1_000, lambda i: nested_attrs(256, i)),
}


def _snapshots(n: int, distinct: int, build: Callable[[int], dict[str, Any]]) -> list[Snapshot]:
    bases = [build(i) for i in range(min(n, distinct))]
    # The caller's objects: one targeting-key string per distinct context, as the
    # hook passes ctx.targeting_key on (like the attribute values, which the SDK's
    # merge copies by reference into a fresh top-level dict per evaluation).
    keys = [f"user-{i}" for i in range(len(bases))]
    now = time.time_ns()
    return [
        (
            FLAG_KEY,
            "on",
            None,
            None,
            dict(FLAG_METADATA),  # the hook copies the flag's metadata per evaluation
            keys[i % len(bases)],
            dict(bases[i % len(bases)]),
            now + i * 1000,
            "TARGETING_MATCH",
        )
        for i in range(n)
    ]


def _worker(snaps: list[Snapshot]) -> Worker:
    settings = Settings.from_env(agent_url="http://127.0.0.1:9", service="flageval-bench")
    handoff = Handoff(len(snaps) + 1)
    handoff.queue.extend(snaps)
    return Worker(settings, handoff)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_worker_cpu_per_evaluation(benchmark: BenchmarkFixture, quick: bool, scenario: str) -> None:
    n, rounds, distinct, build = SCENARIOS[scenario]
    if quick:
        n, rounds = max(100, n // 100), 1
    snaps = _snapshots(n, distinct, build)
    cpu_ns: list[float] = []
    workers: list[Worker] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        workers.append(_worker(snaps))
        return (workers[-1],), {}

    def drain_all(w: Worker) -> None:
        c0 = time.process_time_ns()
        while w.drain_once():
            pass
        cpu_ns.append((time.process_time_ns() - c0) / n)

    benchmark.group = "4 worker CPU per evaluation"
    benchmark.pedantic(drain_all, setup=setup, rounds=rounds, iterations=1)
    w = workers[-1]
    t = w.tiers
    # Every evaluation is in a bucket or a counter: the figure is for complete work.
    assert t.received == n and w.counts.drained == n
    assert t.evaluations_held + sum(t.ledger.dropped.values()) == n
    benchmark.extra_info.update(
        {
            "scenario": scenario,
            "evaluations_per_round": n,
            "cpu_ns_per_evaluation_median": round(statistics.median(cpu_ns), 1),
            "cpu_ns_per_evaluation_min": round(min(cpu_ns), 1),
            "cpu_ns_per_evaluation_all": [round(x, 1) for x in cpu_ns],
            "full_buckets": len(t.full),
            "degraded_by_reason": dict(t.ledger.degraded),
            "quick": quick,
        }
    )


def test_ddtrace_aggregate_per_event(benchmark: BenchmarkFixture, quick: bool) -> None:
    """The peer's worker side for the same 10-attribute / 1,000-distinct input: its
    drain thread runs ``_aggregate`` per event (the hook already flattened the context
    on the caller's thread; that part is in the hot-path figures, not here)."""
    from ddtrace.internal.openfeature._flagevaluation_writer import (
        FlagEvaluationWriter,
        _EvalEvent,
        flatten_and_prune_context,
    )

    n, rounds = (1_000, 1) if quick else (50_000, 5)
    now_ms = time.time_ns() // 1_000_000
    bases = [flatten_and_prune_context(context_attrs(10, i))[0] for i in range(1_000)]
    events = [
        _EvalEvent(
            flag_key=FLAG_KEY,
            variant="on",
            allocation_key="default-allocation",
            targeting_key=f"user-{i % 1000}",
            attrs=bases[i % 1000],
            runtime_default=False,
            error_message="",
            eval_time_ms=now_ms,
            observe_full_evaluation_data=True,
            error_code="",
        )
        for i in range(n)
    ]
    cpu_ns: list[float] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (FlagEvaluationWriter(interval=3600.0),), {}

    def aggregate_all(w: Any) -> None:
        agg = w._aggregate
        c0 = time.process_time_ns()
        for e in events:
            agg(e)
        cpu_ns.append((time.process_time_ns() - c0) / n)

    benchmark.group = "4 worker CPU per evaluation"
    benchmark.pedantic(aggregate_all, setup=setup, rounds=rounds, iterations=1)
    benchmark.extra_info.update(
        {
            "scenario": "ddtrace _aggregate, 10 attrs, 1,000 distinct",
            "evaluations_per_round": n,
            "cpu_ns_per_evaluation_median": round(statistics.median(cpu_ns), 1),
            "cpu_ns_per_evaluation_min": round(min(cpu_ns), 1),
            "quick": quick,
        }
    )
