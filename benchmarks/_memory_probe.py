"""Benchmark 6's measuring process: fill the tiers with adversarial contexts, report RSS.

Run in a fresh interpreter (bench_memory.py does that) so the resident set is not
shaped by earlier benchmarks. Prints one JSON object on stdout.

Scenarios (every context unique, so every evaluation asks for a new full bucket):

* ``long``: 200 attributes of 250 characters each (~52 KB of canonical bytes per
  context): the bytes dominate, the budget refuses new buckets after ~1,200.
* ``small``: 10 short attributes (~190 bytes): the per-bucket overhead dominates; this
  is where an estimate of that overhead that is too low would show.
* ``wide``: 40 flat attributes of 100 characters (~4.6 KB): too long for the fast
  path, so every one goes through the pruner and its memo (bounded in bytes).
* ``nested``: 256 leaves in nested mappings and lists (the pruner's slow path).
* ``long-keys``: the ``small`` contexts under 64 flags whose key, variant and allocation
  are 2,000, 1,100 and 1,200 characters long, and every fourth evaluation an error
  with a 1,500-character message (consent stated, so the message is kept): texts
  over the 1,024-character cut that every bucket would otherwise hold a copy of.

Snapshots are generated in small batches (16) so the input the "application" holds at
any moment is a few MB, not counted against the tiers. Peak RSS comes from
``ru_maxrss``; the baseline is taken after imports and a warm-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openfeature.exception import ErrorCode

from flageval._config import Settings
from flageval._tiers import BUCKET_OVERHEAD_BYTES, Tiers

FLAGS = [f"flag-{i:02d}" for i in range(64)]
META = {"allocation_key": "default-allocation"}
SCENARIOS = ("long", "small", "wide", "nested", "long-keys")
# long-keys: each flag's texts, built once (as a provider holds them).
LONG_FLAGS = [f"{i:02d}-" + "f" * 1998 for i in range(64)]
LONG_VARIANT = "v" * 1100
LONG_META = [
    {"allocation_key": f"{i:02d}-" + "a" * 1198, "__dd_observe_full_evaluation_data": True}
    for i in range(64)
]
LONG_ERROR = "e" * 1500


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _context(scenario: str, i: int) -> dict[str, Any]:
    if scenario == "long":
        tag = f"{i:010d}"
        return {f"a{j:03d}": (tag + chr(65 + j % 26) * 240) for j in range(200)}
    if scenario == "wide":
        return {f"w{j:02d}": f"{i:08d}{j:02d}" + "x" * 90 for j in range(40)}
    if scenario in ("small", "long-keys"):
        return {
            "user": f"u{i}",
            "n": i,
            "ratio": i / 7,
            "beta": i % 2 == 0,
            "plan": "pro",
            "region": "eu-west-1",
            "app": "checkout",
            "build": 1234,
            "score": 0.5,
            "mobile": False,
        }
    # nested: 16 groups of 12 scalars and a 4-item list
    return {
        f"g{g:02d}": {
            "inner": {f"k{k:02d}": f"{i}-{g}-{k}" for k in range(12)},
            "tags": [f"t{i}-{g}-{t}" for t in range(4)],
        }
        for g in range(16)
    }


def _snapshot(scenario: str, i: int, now: int) -> tuple[Any, ...]:
    ctx = _context(scenario, i)
    if scenario != "long-keys":
        return (FLAGS[i % len(FLAGS)], "on", None, None, META, f"user-{i}", ctx, now, "STATIC")
    f = i % len(LONG_FLAGS)
    # A copy of the flag's metadata per evaluation, as the hook takes it.
    meta = dict(LONG_META[f])
    if i % 4 == 3:
        return (
            LONG_FLAGS[f],
            None,
            ErrorCode.GENERAL,
            LONG_ERROR,
            meta,
            f"user-{i}",
            ctx,
            now,
            "ERROR",
        )
    return (LONG_FLAGS[f], LONG_VARIANT, None, None, meta, f"user-{i}", ctx, now, "STATIC")


def run(scenario: str, evaluations: int, budget: int) -> dict[str, Any]:
    s = Settings.from_env(memory_budget_bytes=budget, agent_url="http://127.0.0.1:9")
    tiers = Tiers(
        max_full_buckets=s.max_full_buckets,
        max_buckets_per_flag=s.max_buckets_per_flag,
        max_degraded_buckets=s.max_degraded_buckets,
        memory_budget_bytes=s.memory_budget_bytes,
        full_data_default=s.full_data_default,
    )
    # Warm-up on a throwaway instance: first-use allocations (interned strings, code
    # caches) are not the tiers' memory.
    warm = Tiers(
        max_full_buckets=8,
        max_buckets_per_flag=8,
        max_degraded_buckets=8,
        memory_budget_bytes=budget,
        full_data_default=True,
    )
    now = time.time_ns()
    warm_batch = [_snapshot(scenario, -k - 1, now) for k in range(8)]
    warm.add_batch(warm_batch)
    del warm, warm_batch
    gc.collect()
    base = _rss_bytes()
    start_peak = _peak_rss_bytes()
    t0 = time.process_time()
    batch_size = 16
    for start in range(0, evaluations, batch_size):
        batch = [
            _snapshot(scenario, i, now) for i in range(start, min(evaluations, start + batch_size))
        ]
        tiers.add_batch(batch)
    cpu_s = time.process_time() - t0
    del batch
    gc.collect()
    end_rss = _rss_bytes()
    peak = _peak_rss_bytes()
    # ru_maxrss is the process's lifetime peak: if it was set before the baseline
    # (imports), growth is measured against the larger of the two.
    peak_growth = max(0, peak - max(base, start_peak)) if peak > start_peak else end_rss - base
    strings = sum(len(k[6]) + (len(k[5]) + 49 if k[5] else 0) for k in tiers.full)
    growth = max(peak_growth, end_rss - base)
    return {
        "scenario": scenario,
        "evaluations": evaluations,
        "budget_bytes": budget,
        "bucket_overhead_bytes": BUCKET_OVERHEAD_BYTES,
        "full_buckets": len(tiers.full),
        "degraded_buckets": len(tiers.degraded),
        "degraded_by_reason": dict(tiers.ledger.degraded),
        "dropped": dict(tiers.ledger.dropped),
        "bytes_held_estimate": tiers.bytes_held,
        "memo_entries": len(tiers.keys._memo),
        "rss_base_bytes": base,
        "rss_growth_end_bytes": end_rss - base,
        "rss_peak_growth_bytes": growth,
        "peak_growth_over_budget": round(growth / budget, 4),
        # What RSS says one full bucket costs beyond the strings the budget counts
        # (compare BUCKET_OVERHEAD_BYTES; includes allocator and dict spare capacity).
        "rss_overhead_per_bucket": round((end_rss - base - strings) / max(1, len(tiers.full))),
        "cpu_s": round(cpu_s, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--evaluations", type=int, required=True)
    p.add_argument("--budget", type=int, default=64 * 1024 * 1024)
    a = p.parse_args()
    print(json.dumps(run(a.scenario, a.evaluations, a.budget)))


if __name__ == "__main__":
    main()
