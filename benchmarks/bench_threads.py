"""Benchmark 3: threads evaluating as fast as they can, flageval against the floor.

Each round runs a fixed count of evaluations (4 threads x ``PER_THREAD``) with the empty
hook and with the flageval hook (the session pipeline: default 65,536-slot hand-off,
its worker on its own thread sharing the GIL with the four evaluators), in alternating
order. Figures: evaluations per second per variant (median over rounds) and the median
per-round ratio. ``queue_overflow`` must stay 0: the worker keeps up at the rate four
threads can reach. The deepest the queue got (sampled every 5 ms) shows the margin.

``test_threads_for_ten_seconds``: 1, 4 and 8 threads evaluating for 10 s each, through
the hook and through the wrapper (``flageval.instrument``, its own pipeline), one after
the other: evaluations/s, ``queue_overflow`` (must stay 0) and the deepest queue.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import pytest
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from pytest_benchmark.fixture import BenchmarkFixture

import flageval
from benchmarks._harness import (
    FLAG_KEY,
    TARGETING_KEY,
    EmptyHook,
    context_attrs,
    flageval_settle,
    make_client,
    make_wrapped_client,
)

THREADS = 4
PER_THREAD = 25_000


def _run_threads(client: OpenFeatureClient, per_thread: int) -> float:
    """Wall seconds for THREADS threads to do ``per_thread`` evaluations each."""
    ctx = EvaluationContext(TARGETING_KEY, context_attrs(10))
    get = client.get_boolean_value
    assert get(FLAG_KEY, False, ctx) is True  # the provider answers (not a default)
    start = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(10)
            for _ in range(per_thread):
                get(FLAG_KEY, False, ctx)
        except BaseException as exc:  # surfaced below, never swallowed
            errors.append(exc)

    pool = [threading.Thread(target=work, name=f"bench-eval-{i}") for i in range(THREADS)]
    for t in pool:
        t.start()
    start.wait(10)
    t0 = time.perf_counter()
    for t in pool:
        t.join(120)
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:1]
    assert not any(t.is_alive() for t in pool)
    return elapsed


def _sample_depth(queue_len: Callable[[], int], stop: threading.Event, out: list[int]) -> None:
    deepest = 0
    while not stop.wait(0.005):
        deepest = max(deepest, queue_len())
    out.append(deepest)


def test_four_threads_throughput(
    benchmark: BenchmarkFixture, telemetry: flageval.Telemetry, quick: bool
) -> None:
    per_thread, rounds = (500, 1) if quick else (PER_THREAD, 5)
    clients = {
        "empty_hook": make_client("bench-threads-empty", [EmptyHook()]),
        "flageval": make_client("bench-threads-flageval", [telemetry.hook]),
    }
    settle = flageval_settle(telemetry, timeout_s=30.0)
    total = THREADS * per_thread
    rates: dict[str, list[float]] = {name: [] for name in clients}
    deepest: list[int] = []
    overflow_before = telemetry.stats().dropped.get("queue_overflow", 0)

    def rounds_fn() -> None:
        for r in range(rounds):
            order = list(clients) if r % 2 == 0 else list(reversed(clients))
            for name in order:
                stop = threading.Event()
                sampler = None
                if name == "flageval":
                    q = telemetry.handoff.queue
                    sampler = threading.Thread(
                        target=_sample_depth, args=(q.__len__, stop, deepest), daemon=True
                    )
                    sampler.start()
                elapsed = _run_threads(clients[name], per_thread)
                stop.set()
                if sampler is not None:
                    sampler.join(5)
                    settle()
                rates[name].append(total / elapsed)

    benchmark.group = "3 four threads"
    benchmark.pedantic(rounds_fn, rounds=1, iterations=1)
    overflow = telemetry.stats().dropped.get("queue_overflow", 0) - overflow_before
    ratios = [f / e for f, e in zip(rates["flageval"], rates["empty_hook"], strict=True)]
    benchmark.extra_info.update(
        {
            "threads": THREADS,
            "evaluations_per_round": total,
            "rounds": rounds,
            "evals_per_s_median": {k: round(statistics.median(v)) for k, v in rates.items()},
            "throughput_flageval_over_empty_hook": round(statistics.median(ratios), 4),
            "queue_overflow": overflow,
            "deepest_queue": max(deepest) if deepest else 0,
            "queue_capacity": telemetry.settings.queue_size,
            "quick": quick,
        }
    )
    # A count, not a time: the worker kept up, nothing was dropped at this rate.
    assert overflow == 0


def _run_for(client: OpenFeatureClient, threads: int, seconds: float) -> tuple[int, float]:
    """(evaluations, wall seconds) of ``threads`` threads evaluating until one shared
    deadline ``seconds`` after they are released together."""
    ctx = EvaluationContext(TARGETING_KEY, context_attrs(10))
    get = client.get_boolean_value
    assert get(FLAG_KEY, False, ctx) is True
    start = threading.Barrier(threads + 1)
    deadline = [0.0]
    done = [0] * threads
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait(10)
            n = 0
            while time.perf_counter() < deadline[0]:
                for _ in range(100):
                    get(FLAG_KEY, False, ctx)
                n += 100
            done[i] = n
        except BaseException as exc:  # surfaced below, never swallowed
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,), name=f"bench-run-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait(10)
    for t in pool:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:1]
    assert not any(t.is_alive() for t in pool)
    return sum(done), elapsed


@pytest.mark.parametrize("threads", [1, 4, 8])
def test_threads_for_ten_seconds(
    benchmark: BenchmarkFixture,
    telemetry: flageval.Telemetry,
    wrapper_telemetry: flageval.Telemetry,
    quick: bool,
    threads: int,
) -> None:
    seconds = 0.2 if quick else 10.0
    variants = {
        "flageval": (make_client(f"bench-run-hook-{threads}", [telemetry.hook]), telemetry),
        "wrapper": (
            make_wrapped_client(f"bench-run-wrapper-{threads}", wrapper_telemetry),
            wrapper_telemetry,
        ),
    }
    out: dict[str, dict[str, int]] = {}

    def run() -> None:
        for name, (client, tel) in variants.items():
            settle = flageval_settle(tel, timeout_s=30.0)
            settle()
            overflow = tel.stats().dropped.get("queue_overflow", 0)
            stop, deepest = threading.Event(), []
            sampler = threading.Thread(
                target=_sample_depth, args=(tel.handoff.queue.__len__, stop, deepest), daemon=True
            )
            sampler.start()
            n, elapsed = _run_for(client, threads, seconds)
            stop.set()
            sampler.join(5)
            settle()
            out[name] = {
                "evaluations": n,
                "evals_per_s": round(n / elapsed),
                "queue_overflow": tel.stats().dropped.get("queue_overflow", 0) - overflow,
                "deepest_queue": deepest[0] if deepest else 0,
            }

    benchmark.group = "3 threads for ten seconds"
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"threads": threads, "seconds": seconds, "variants": out, "quick": quick}
    )
    # Counts, not times: at whatever rate these threads reach, nothing was dropped.
    assert out["flageval"]["queue_overflow"] == 0
    assert out["wrapper"]["queue_overflow"] == 0
