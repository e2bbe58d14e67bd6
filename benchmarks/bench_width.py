"""Benchmark 4b: the worker's CPU per evaluation against the context's width.

Every scenario is 1,000 distinct contexts, each seen 3 times (round robin: a context
comes back 1,000 evaluations later, so a cache of the previous context alone never
hits), as snapshot tuples shaped as the hook makes them (benchmark 4's builder: a fresh
top-level dict per evaluation, the caller's value objects, a copy of the flag's
metadata). Per round, every scenario drains 3,000 snapshots through a real
``Worker.drain_once`` into fresh default tiers (a fresh worker, so its key caches start
empty), and the SDK evaluates the same 3,000 contexts with no hook
(``client.get_boolean_value`` with an ``InMemoryProvider``, the context passed per
call); the order of the blocks is rotated per round. Figures are process CPU time per
evaluation; ratios are computed per round and their median reported, as in
``_harness.run_paired``.

Scenarios: flat contexts of mixed str/int/float/bool values (``context_attrs``) of 10,
50, 64, 100, 256 and 300 attributes, and 10 attributes that are strings of 5,000
characters (skipped by pruning: the row carries no context).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._harness import FLAG_KEY, context_attrs, make_client
from benchmarks.bench_worker import _snapshots, _worker

DISTINCT = 1_000
SEEN = 3


def long_strings(n: int, seed: int) -> dict[str, Any]:
    """``n`` attributes, each a distinct string of 5,000 characters."""
    return {f"attr_{i:03d}": f"{seed}-{i}-" + "x" * 5_000 for i in range(n)}


#: name -> builder of context ``seed``
SCENARIOS: dict[str, Callable[[int], dict[str, Any]]] = {
    "10 attrs": lambda s: context_attrs(10, s),
    "50 attrs": lambda s: context_attrs(50, s),
    "64 attrs": lambda s: context_attrs(64, s),
    "100 attrs": lambda s: context_attrs(100, s),
    "256 attrs": lambda s: context_attrs(256, s),
    "300 attrs": lambda s: context_attrs(300, s),
    "10 x 5,000-char strings": lambda s: long_strings(10, s),
}
#: Scenarios whose SDK evaluation is timed too (the worker / SDK ratio).
WITH_SDK = ("10 attrs", "64 attrs", "256 attrs")


def _worker_block(snaps: list[Any]) -> Callable[[], float]:
    def block() -> float:
        w = _worker(snaps)
        c0 = time.process_time_ns()
        while w.drain_once():
            pass
        ns = (time.process_time_ns() - c0) / len(snaps)
        t = w.tiers
        # Complete work only: every evaluation is in a bucket or a counter.
        assert t.received == len(snaps) and t.evaluations_held == len(snaps)
        return ns

    return block


def _sdk_block(contexts: list[EvaluationContext], n: int) -> Callable[[], float]:
    client = make_client("bench-width-no-hook", [])
    get = client.get_boolean_value

    def block() -> float:
        c0 = time.process_time_ns()
        for i in range(n):
            get(FLAG_KEY, False, contexts[i % len(contexts)])
        return (time.process_time_ns() - c0) / n

    return block


def test_worker_cpu_by_width(benchmark: BenchmarkFixture, quick: bool) -> None:
    distinct, rounds = (20, 1) if quick else (DISTINCT, 15)
    n = distinct * SEEN
    blocks: dict[str, Callable[[], float]] = {}
    for name, build in SCENARIOS.items():
        bases = [build(i) for i in range(distinct)]
        blocks[name] = _worker_block(_snapshots(n, distinct, bases.__getitem__))
        if name in WITH_SDK:
            ctxs = [EvaluationContext(f"user-{i}", b) for i, b in enumerate(bases)]
            blocks[f"sdk, {name}"] = _sdk_block(ctxs, n)
    per: dict[str, list[float]] = {k: [] for k in blocks}
    names = list(blocks)

    def run() -> None:
        for r in range(rounds):
            k = (r * 3) % len(names)
            for name in names[k:] + names[:k]:
                per[name].append(blocks[name]())

    benchmark.group = "4b worker CPU by context width"
    benchmark.pedantic(run, rounds=1, iterations=1)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(per[a], per[b], strict=True))

    benchmark.extra_info.update(
        {
            "evaluations_per_block": n,
            "rounds": rounds,
            "cpu_ns_per_evaluation_median": {
                k: round(statistics.median(v), 1) for k, v in per.items()
            },
            "cpu_ns_per_evaluation_min": {k: round(min(v), 1) for k, v in per.items()},
            "ratio_to_10_attrs": {k: round(ratio(k, "10 attrs"), 3) for k in SCENARIOS},
            "ratio_to_sdk": {k: round(ratio(k, f"sdk, {k}"), 3) for k in WITH_SDK},
            "quick": quick,
        }
    )
