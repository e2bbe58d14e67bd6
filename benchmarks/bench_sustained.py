"""Benchmark 11: sustained load with wide contexts, flushed every 10 s.

Application threads evaluate flat out through the hook, each evaluation with a context
of its own: a new targeting key and 64 flat attributes of mixed types (``context_attrs``),
so every one is a new full bucket (until the per-flag cap) and takes the pruner's path
for wide contexts. Two scenarios: 1 thread for 60 s and 8 threads for 30 s, each with a
pipeline of its own (default settings but ``flush_interval_s=10``) posting to the
intake stand-in in another process (``_intake.py --record``), which logs every POST.

Checked: the books balance exactly (evaluations made = posted + dropped, nothing
pending, what the intake counted = what was posted), and every flush made during the
load posted (as many distinct flush times reached the intake). Figures: evaluations/s,
``queue_overflow`` (target 0), the deepest queue (sampled every 10 ms), the flushes made
during the load, and the longest an evaluation waited to be posted while the load
lasted (arrival of a body minus its rows' oldest evaluation; target: two flush
intervals). Under ``--benchmark-disable`` each scenario runs 3 s with a 1 s flush.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from pytest_benchmark.fixture import BenchmarkFixture

import flageval
from benchmarks._harness import FLAG_KEY, context_attrs, make_client, start_agent_stub

WIDTH = 64
FLUSH_S, QUICK_FLUSH_S = 10.0, 1.0
QUICK_S = 3.0
SCENARIOS = [(1, 60.0), (8, 30.0)]


def _load(client: Any, threads: int, seconds: float, tel: flageval.Telemetry) -> dict[str, Any]:
    """``threads`` threads evaluating distinct wide contexts for ``seconds``."""
    stop = threading.Event()
    made = [0] * threads
    errors: list[BaseException] = []

    def work(t: int) -> None:
        get = client.get_boolean_value
        i = 0
        try:
            while not stop.is_set():
                seed = t * 1_000_000_000 + i
                get(FLAG_KEY, False, EvaluationContext(f"user-{seed}", context_attrs(WIDTH, seed)))
                i += 1
        except BaseException as exc:  # surfaced below, never swallowed
            errors.append(exc)
        made[t] = i

    handoff = tel.handoff
    assert handoff is not None
    pool = [
        threading.Thread(target=work, args=(t,), name=f"bench-load-{t}") for t in range(threads)
    ]
    began = time.time()
    for th in pool:
        th.start()
    deepest = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        deepest = max(deepest, len(handoff.queue))
        time.sleep(0.01)
    flushes_during = tel.stats().flushes
    stop.set()
    for th in pool:
        th.join(60)
    ended = time.time()
    assert not errors, errors[:1]
    assert not any(th.is_alive() for th in pool)
    return {
        "made": sum(made),
        "began_ms": began * 1000,
        "ended_ms": ended * 1000,
        "seconds": ended - began,
        "deepest_queue": deepest,
        "flushes_during_load": flushes_during,
    }


@pytest.mark.parametrize(("threads", "seconds"), SCENARIOS, ids=["1-thread-60s", "8-threads-30s"])
def test_sustained_wide_contexts(
    benchmark: BenchmarkFixture, quick: bool, tmp_path: Path, threads: int, seconds: float
) -> None:
    seconds = QUICK_S if quick else seconds
    flush_s = QUICK_FLUSH_S if quick else FLUSH_S
    record = tmp_path / "posts.jsonl"
    stub = start_agent_stub(record)
    tel = flageval.Telemetry(
        agent_url=stub.url,
        service=f"bench-sustained-{threads}",
        flush_interval_s=flush_s,
        shutdown_timeout_s=30.0,
    )
    try:
        client = make_client(f"sustained-{threads}", [tel.hook])
        benchmark.group = "11 sustained load"
        run = benchmark.pedantic(
            _load, args=(client, threads, seconds, tel), rounds=1, iterations=1
        )
        tel.shutdown(30.0)
    finally:
        tel.shutdown(1.0)
        stub.stop()
    posts = [json.loads(line) for line in record.read_text().splitlines()]
    st = tel.stats()
    # Exact books: everything made is posted or counted, and the intake has what was posted.
    assert st.pending == 0 and st.conserved, st
    assert st.evaluations == run["made"], (st, run["made"])
    assert st.evaluations_posted == sum(p["evaluations"] for p in posts), st
    assert set(st.dropped) <= {"queue_overflow"}, st.dropped
    # Every flush made while the load lasted posted (each had rows): its flush time is
    # in a body the intake received.
    flush_times = {t for p in posts for t in p["flushes"]}
    assert len(flush_times) >= run["flushes_during_load"], (flush_times, run)
    during = [p for p in posts if p["at_ms"] <= run["ended_ms"]]
    lag_s = max(((p["at_ms"] - p["oldest_ms"]) / 1000 for p in during), default=None)
    benchmark.extra_info.update(
        {
            "threads": threads,
            "seconds": round(run["seconds"], 1),
            "flush_interval_s": flush_s,
            "evaluations": run["made"],
            "evaluations_per_s": round(run["made"] / run["seconds"]),
            "queue_overflow": st.dropped.get("queue_overflow", 0),
            "deepest_queue": run["deepest_queue"],
            "flushes_during_load": run["flushes_during_load"],
            "posts_during_load": len(during),
            "flushes_posted_during_load": len({t for p in during for t in p["flushes"]}),
            "longest_wait_to_post_s": None if lag_s is None else round(lag_s, 2),
            "degraded": dict(st.degraded),
            "quick": quick,
        }
    )
