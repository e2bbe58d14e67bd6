"""The load scenario: 8 threads evaluating synchronously plus 200 asyncio tasks
evaluating asynchronously, over 50 flags and 10,000 contexts, with caps small enough
that every tier is used: full buckets, degraded buckets (per-flag cardinality cap and
memory budget), and the degraded cap's drop counter. :func:`run` makes the evaluations
and shuts the pipeline down; :func:`check_books` asserts that the books balance
exactly, that every tier was used and that every body validates, with the caps held
per flush. tests/telemetry/reliability/test_load_exact_books.py runs it at a size that
fits the suite; benchmarks/bench_load.py runs it at soak length and reports the rate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag

from flageval import Stats, Telemetry
from tests.intake import Intake
from tests.schema_util import validate_body
from tests.telemetry.reliability.helpers import assert_conserved, client_with

THREADS = 8
TASKS = 200
N_FLAGS = 50
N_CONTEXTS = 10_000
CAPS = {
    "max_full_buckets": 3_000,
    "max_buckets_per_flag": 150,
    "max_degraded_buckets": 100,
    # ~600 B a full bucket here: the budget binds near 2,000 buckets per flush.
    "memory_budget_bytes": 1_200_000,
}


def _variant_by_plan(flag: InMemoryFlag, ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    variant = str(ctx.attributes.get("plan", "free")) if ctx else "free"
    return FlagResolutionDetails(value=variant != "free", variant=variant, reason="TARGETING_MATCH")


def _flags() -> dict[str, InMemoryFlag]:
    variants = {"free": False, "pro": True, "team": True}
    return {
        f"load-{f}": InMemoryFlag("free", variants, context_evaluator=_variant_by_plan)
        for f in range(N_FLAGS)
    }


def _flag_index(k: int) -> int:
    """Half the traffic on 5 hot flags (they hit the per-flag cap), the rest spread
    over 45 (together they hit the memory budget)."""
    return (k >> 1) % 5 if k % 2 == 0 else 5 + (k >> 1) % 45


def _contexts() -> list[EvaluationContext]:
    plans = ("free", "pro", "team")
    return [
        EvaluationContext(f"user-{j}", {"plan": plans[j % 3], "region": f"r{j % 7}", "j": j})
        for j in range(N_CONTEXTS)
    ]


def run(intake: Intake, n: int) -> tuple[Telemetry, dict[str, float]]:
    """Make ``n`` evaluations through a pipeline posting to ``intake``, then shut it
    down; the pipeline and how long evaluating and shutting down took."""
    # The intake checks bodies afterwards (check_books): validating ~20k rows inline
    # would compete with the evaluating threads for the GIL.
    intake.validate = False
    tel = Telemetry(
        agent_url=intake.url,
        service="rel-load",
        flush_interval_s=4.0,
        request_timeout_s=10.0,
        shutdown_timeout_s=20.0,
        **CAPS,
    )
    try:
        client = client_with(tel, _flags())
        contexts = _contexts()
        flag_keys = [f"load-{f}" for f in range(N_FLAGS)]
        n_async = n * 2 // 5
        per_task = n_async // TASKS
        per_thread = (n - per_task * TASKS) // THREADS
        extra = n - per_task * TASKS - per_thread * THREADS  # done by thread 0
        counts = [0] * THREADS
        errors: list[BaseException] = []

        def sync_worker(t: int) -> None:
            try:
                get = client.get_boolean_value
                todo = per_thread + (extra if t == 0 else 0)
                for i in range(todo):
                    k = t * 7919 + i * 31
                    get(flag_keys[_flag_index(k)], False, contexts[k % N_CONTEXTS])
                    counts[t] += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        async_done = [0]

        async def task(t: int) -> None:
            get = client.get_boolean_value_async
            for i in range(per_task):
                k = t * 104729 + i * 17
                await get(flag_keys[_flag_index(k)], False, contexts[k % N_CONTEXTS])
                async_done[0] += 1

        async def all_tasks() -> None:
            await asyncio.gather(*(task(t) for t in range(TASKS)))

        t0 = time.monotonic()
        threads = [threading.Thread(target=sync_worker, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        asyncio.run(all_tasks())
        for th in threads:
            th.join(600)
        assert not any(th.is_alive() for th in threads)
        assert not errors, errors[:1]
        elapsed = time.monotonic() - t0
        assert sum(counts) + async_done[0] == n
        t1 = time.monotonic()
        tel.shutdown(60.0)
        shutdown_s = time.monotonic() - t1
    finally:
        tel.shutdown(1.0)
    return tel, {"evaluate_s": elapsed, "shutdown_s": shutdown_s}


def check_books(tel: Telemetry, intake: Intake, n: int) -> Stats:
    """Exact books, every tier used, every body valid, the caps held per flush."""
    st = assert_conserved(tel, intake, n)
    # Every tier was used: full rows, degraded rows for both reasons, the degraded cap.
    assert st.degraded.get("cardinality_cap", 0) > 0, st.degraded
    assert st.degraded.get("memory_budget", 0) > 0, st.degraded
    assert st.dropped.get("degraded_cap", 0) > 0, st.dropped
    assert set(st.dropped) <= {"degraded_cap", "queue_overflow"}, st.dropped

    full_per_flush: Counter[int] = Counter()
    per_flag: defaultdict[tuple[int, str], int] = defaultdict(int)
    degraded_per_flush: Counter[int] = Counter()
    contexts_seen = set()
    for rec in intake.accepted():
        validate_body(rec.body)
        for row in rec.json()["flagEvaluations"]:
            ts = row["timestamp"]
            if "targeting_key" in row:
                assert "context" in row
                full_per_flush[ts] += 1
                per_flag[(ts, row["flag"]["key"])] += 1
                contexts_seen.add(row["targeting_key"])
            else:
                assert "context" not in row
                degraded_per_flush[ts] += 1
    assert full_per_flush and degraded_per_flush
    assert max(full_per_flush.values()) <= CAPS["max_full_buckets"]
    assert max(per_flag.values()) <= CAPS["max_buckets_per_flag"]
    assert max(degraded_per_flush.values()) <= CAPS["max_degraded_buckets"]
    assert len(contexts_seen) > 1_000  # many distinct contexts did reach the full tier
    return st
