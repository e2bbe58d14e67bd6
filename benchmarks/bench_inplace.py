"""Benchmark 4c: the worker in place against the worker alone.

In place: one thread evaluates through the SDK with the hook of a running pipeline
(default settings, its worker on its own thread, posting to the agent stand-in),
20,000 evaluations per block over 1,000 distinct 10-attribute contexts (round robin),
then waits until the worker has aggregated them; the worker thread's own CPU clock
(``pthread_getcpuclockid``) over the block and the wait, per evaluation. Alone: the
same stream as snapshot tuples (benchmark 4's builder) drained by ``Worker.drain_once``
on the benchmark's thread into a worker kept across rounds (so its buckets exist, as
they do in place within a flush interval).

Also per round, on the process CPU clock: the same evaluations through a client with
an empty hook, so ``(hook - empty hook)`` is everything flageval adds per evaluation,
whichever thread pays. The hand-off's in-place overhead is that minus the worker alone:
the hook's snapshot and append, the retained snapshots and the collections they cause
(mostly on the evaluating thread), objects made on one core and freed on the other,
GIL switches. Per round, median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import pytest
from openfeature.evaluation_context import EvaluationContext
from pytest_benchmark.fixture import BenchmarkFixture

import flageval
from benchmarks._harness import (
    FLAG_KEY,
    AgentStub,
    EmptyHook,
    context_attrs,
    flageval_settle,
    make_client,
)
from benchmarks.bench_worker import _snapshots, _worker

DISTINCT = 1_000


@pytest.fixture(scope="module")
def pipeline(agent: AgentStub) -> Iterator[flageval.Telemetry]:
    tel = flageval.Telemetry(agent_url=agent.url, service="flageval-bench-inplace")
    tel.start()
    yield tel
    tel.shutdown(10.0)


def _thread_cpu_ns(tel: flageval.Telemetry) -> Callable[[], int]:
    runner_thread = tel._thread  # private on purpose: the benchmark reads the worker's clock
    assert runner_thread is not None and runner_thread._thread.ident is not None
    clock = time.pthread_getcpuclockid(runner_thread._thread.ident)
    return lambda: time.clock_gettime_ns(clock)


def test_worker_in_place_against_alone(
    benchmark: BenchmarkFixture, quick: bool, pipeline: flageval.Telemetry
) -> None:
    n, rounds = (500, 1) if quick else (20_000, 9)
    distinct = min(DISTINCT, n)
    bases = [context_attrs(10, i) for i in range(distinct)]
    ctxs = [EvaluationContext(f"user-{i}", b) for i, b in enumerate(bases)]
    hooked = make_client("bench-inplace-hook", [pipeline.hook]).get_boolean_value
    empty = make_client("bench-inplace-empty", [EmptyHook()]).get_boolean_value
    settle = flageval_settle(pipeline, timeout_s=30.0)
    worker_cpu = _thread_cpu_ns(pipeline)
    alone_worker = _worker(_snapshots(1, distinct, bases.__getitem__))
    alone_worker.handoff.capacity = n + 1
    per: dict[str, list[float]] = {k: [] for k in ("in_place", "alone", "hook", "empty_hook")}

    def evaluate(get: Callable[..., bool]) -> None:
        for i in range(n):
            get(FLAG_KEY, False, ctxs[i % distinct])

    def in_place() -> None:
        w0, c0 = worker_cpu(), time.process_time_ns()
        evaluate(hooked)
        settle()
        per["in_place"].append((worker_cpu() - w0) / n)
        per["hook"].append((time.process_time_ns() - c0) / n)

    def empty_hook() -> None:
        c0 = time.process_time_ns()
        evaluate(empty)
        per["empty_hook"].append((time.process_time_ns() - c0) / n)

    def alone() -> None:
        alone_worker.handoff.queue.extend(_snapshots(n, distinct, bases.__getitem__))
        c0 = time.process_time_ns()
        while alone_worker.drain_once():
            pass
        per["alone"].append((time.process_time_ns() - c0) / n)

    steps = [in_place, empty_hook, alone]

    def run() -> None:
        for step in steps:  # warm-up: buckets, caches, the worker awake
            step()
        for v in per.values():
            v.clear()
        for r in range(rounds):
            k = r % len(steps)
            for step in steps[k:] + steps[:k]:
                step()

    benchmark.group = "4c worker in place against alone"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert pipeline.stats().dropped.get("queue_overflow", 0) == 0

    def med(name: str) -> float:
        return round(statistics.median(per[name]), 1)

    overhead = [a - b for a, b in zip(per["in_place"], per["alone"], strict=True)]
    added = [a - b for a, b in zip(per["hook"], per["empty_hook"], strict=True)]
    caller = [a - b for a, b in zip(added, per["in_place"], strict=True)]
    handoff = [a - b for a, b in zip(added, per["alone"], strict=True)]
    benchmark.extra_info.update(
        {
            "evaluations_per_block": n,
            "rounds": rounds,
            "cpu_ns_per_evaluation_median": {k: med(k) for k in per},
            "in_place_overhead_ns_median": round(statistics.median(overhead), 1),
            "in_place_over_alone": round(
                statistics.median(
                    a / b for a, b in zip(per["in_place"], per["alone"], strict=True)
                ),
                3,
            ),
            "added_by_flageval_ns_median": round(statistics.median(added), 1),
            # Everything flageval adds in place beyond aggregating: the hook's snapshot and
            # append, the retention and the collections it causes, the objects made on one
            # core and freed on another, the GIL switches.
            "handoff_overhead_ns_median": round(statistics.median(handoff), 1),
            "added_on_callers_thread_ns_median": round(statistics.median(caller), 1),
            "quick": quick,
        }
    )
