"""Benchmark 5: one flush of a full tier at its cap, 131,072 rows -> <= 5 MiB bodies.

The tier is filled once (module scope) through ``Tiers.add_batch`` with 131,072
distinct (flag, targeting key, 10-attribute context) buckets over 16 flags, with the
budget raised so the bucket cap, not the byte budget, is what binds. Each round times
what the worker does at flush time: ``Tiers.take()`` (swap out, merge) and
``wire.pack`` (build every row, encode, split greedily into bodies).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._harness import context_attrs
from flageval._config import MAX_BODY_BYTES
from flageval._losses import Ledger
from flageval._tiers import Tiers
from flageval._wire import envelope_prefix, pack

FULL_ROWS = 131_072
FLAGS = 16
META = {"allocation_key": "default-allocation"}
TIMESTAMP_MS = 1_770_000_000_000


def _tiers() -> Tiers:
    return Tiers(
        max_full_buckets=FULL_ROWS,
        max_buckets_per_flag=10_000,
        max_degraded_buckets=32_768,
        memory_budget_bytes=1 << 30,  # the bucket cap binds here, not the budget
        full_data_default=True,
    )


@pytest.fixture(scope="module")
def template(quick: bool) -> tuple[dict[Any, list[int]], int]:
    rows = 4_096 if quick else FULL_ROWS
    t = _tiers()
    now = time.time_ns()
    for start in range(0, rows, 4096):
        t.add_batch(
            [
                (
                    f"flag-{i % FLAGS:02d}",
                    "on" if i % 3 else "off",
                    None,
                    None,
                    META,
                    f"user-{i:07d}",
                    context_attrs(10, i),
                    now + i,
                    "STATIC",
                )
                for i in range(start, min(rows, start + 4096))
            ]
        )
    assert len(t.full) == rows
    return t.full, rows


def test_flush_full_tier(
    benchmark: BenchmarkFixture, template: tuple[dict[Any, list[int]], int], quick: bool
) -> None:
    full, rows = template
    prefix = envelope_prefix("flageval-bench", "bench", "1.0")
    tiers = _tiers()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        # Fresh tiers holding the same buckets (pack never mutates full buckets).
        tiers.full, tiers.degraded, tiers.evaluations_held = dict(full), {}, rows
        return (), {}

    def flush() -> Any:
        f, d, _held = tiers.take()
        return pack(
            f,
            d,
            timestamp_ms=TIMESTAMP_MS,
            prefix=prefix,
            max_body_bytes=MAX_BODY_BYTES,
            ledger=Ledger(),
        )

    benchmark.group = "5 flush: take + pack of a full tier"
    bodies = benchmark.pedantic(flush, setup=setup, rounds=1 if quick else 7, iterations=1)
    sizes = [len(b.data) for b in bodies]
    assert max(sizes) <= MAX_BODY_BYTES
    assert sum(b.rows for b in bodies) == rows
    assert sum(b.evaluations for b in bodies) == rows
    first = json.loads(bodies[0].data)
    assert len(first["flagEvaluations"]) == bodies[0].rows
    benchmark.extra_info.update(
        {"rows": rows, "bodies": len(sizes), "largest_body_bytes": max(sizes), "quick": quick}
    )
