"""Under load the books balance exactly: 8 threads and 200 asyncio tasks evaluate
100,000 times (``FLAGEVAL_LOAD_N``) with caps small enough that every tier is used
(tests/telemetry/reliability/load.py); a hand-off too small on purpose counts its
overflow exactly; the full-bucket cap binds exactly under threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext

from flageval._handoff import Handoff
from tests.intake import Intake
from tests.telemetry.reliability import load
from tests.telemetry.reliability.helpers import FLAG, assert_conserved, client_with, record

pytestmark = pytest.mark.reliability

#: Every tier is used from about 50,000 evaluations on (one flush window); soak-length
#: runs are benchmarks/bench_load.py's.
LOAD_N = int(os.environ.get("FLAGEVAL_LOAD_N", "100000"))


def test_load_threads_and_tasks_exact_books(intake: Intake) -> None:
    tel, took = load.run(intake, LOAD_N)
    st = load.check_books(tel, intake, LOAD_N)
    record(
        "load",
        made=LOAD_N,
        delivered=st.evaluations_posted,
        rows=st.rows_posted,
        bodies=st.bodies_posted,
        degraded=dict(st.degraded),
        dropped=dict(st.dropped),
        flushes=st.flushes,
        evaluate_s=round(took["evaluate_s"], 1),
        per_eval_us=round(took["evaluate_s"] / LOAD_N * 1e6, 2),
        shutdown_s=round(took["shutdown_s"], 2),
    )


def test_handoff_too_small_counts_overflow_exactly(
    make_telemetry: Any, intake: Intake, drained: Callable[[Handoff], threading.Event]
) -> None:
    """A 64-slot hand-off that the worker drains only once an hour: 4 threads evaluate
    8,000 times with distinct targeting keys. Each evaluation either reached a bucket
    (and is in exactly one posted row) or is counted under queue_overflow."""
    tel = make_telemetry(queue_size=64, drain_interval_s=3600.0)
    client = client_with(tel)
    tel.start()
    assert drained(tel.handoff).wait(30.0)  # its first drain ran, on an empty hand-off
    per_thread = 2_000

    def run(t: int) -> None:
        for i in range(per_thread):
            client.get_boolean_value("rel-flag", False, EvaluationContext(f"t{t}-{i}", {}))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert tel.flush(5.0)
    tel.shutdown(2.0)
    made = 4 * per_thread
    st = assert_conserved(tel, intake, made)
    keys = [row["targeting_key"] for row in intake.rows()]
    assert len(keys) == len(set(keys))
    assert all(row["evaluation_count"] == 1 for row in intake.rows())
    assert set(st.dropped) == {"queue_overflow"}
    assert st.dropped["queue_overflow"] == made - len(keys)
    # The bound: 64 slots, overshot by at most one item per racing thread.
    assert 64 <= len(keys) <= 64 + 4
    record(
        "handoff_too_small",
        made=made,
        delivered=len(keys),
        dropped=dict(st.dropped),
    )


def test_max_full_buckets_binds_under_threads(make_telemetry: Any, intake: Intake) -> None:
    """The load test's full-bucket check cannot fail there (its memory budget binds
    first, near 2,000 buckets against a cap of 3,000). Here the cap binds: 4 threads
    make 2,400 distinct full buckets of one flag with a cap of 500, a per-flag cap
    and a memory budget far above it. Exactly 500 full rows are posted; the other
    1,900 evaluations are in the flag's one degraded row, counted cardinality_cap."""
    tel = make_telemetry(max_full_buckets=500, max_buckets_per_flag=10_000)
    client = client_with(tel)
    per_thread = 600

    def run(t: int) -> None:
        for i in range(per_thread):
            client.get_boolean_value(FLAG, False, EvaluationContext(f"t{t}-{i}", {"i": i}))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert tel.flush(10.0)  # one flush: one window of buckets
    tel.shutdown(2.0)
    made = 4 * per_thread
    st = assert_conserved(tel, intake, made)
    full = [row for row in intake.rows() if "targeting_key" in row]
    degraded = [row for row in intake.rows() if "targeting_key" not in row]
    assert len(full) == 500
    assert len({row["targeting_key"] for row in full}) == 500
    assert all(row["evaluation_count"] == 1 and "context" in row for row in full)
    assert [row["evaluation_count"] for row in degraded] == [made - 500]
    assert st.degraded == {"cardinality_cap": made - 500} and st.dropped == {}
