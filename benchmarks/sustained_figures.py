"""The delivery figures under sustained load, scenario by scenario (not a pytest module).

One application thread evaluates flat out, each evaluation with a context of its own (a
new targeting key and ``--width`` flat attributes, ``context_attrs``), against the
intake stand-in in another process (``_intake.py --record``), which logs each POST:

* ``hook``: through ``FlagEvalHook``, ``flush_interval_s=1``, 8 s of load; then
  ``shutdown(5)``;
* ``instrument``: through ``flageval.instrument``, ``flush_interval_s=1``, 12 s of load
  and 3 s after it; then ``shutdown(5)``;
* ``storm``: through the hook, ``flush_interval_s=1``, 10 s of load, then ``shutdown(5)``
  while the thread still evaluates;
* ``behind``: as ``hook``, each context also carrying a value whose text takes the
  worker 0.3 ms to make, so the worker aggregates several times slower than the thread
  evaluates (a worker that cannot keep up, whatever makes it so).

For each it prints: evaluations made during the load, how many the intake received while
the load lasted (and the flushes they came from), the deepest hand-off (sampled every
10 ms), the books after shutdown (posted, dropped by reason), how long shutdown took,
and what flageval logged at WARNING. Run with the tree to measure first on the path::

    python benchmarks/sustained_figures.py [--width 60] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

import flageval
from benchmarks._harness import (
    FLAG_KEY,
    context_attrs,
    make_client,
    make_provider,
    start_agent_stub,
)

#: name -> (way in, seconds of load, seconds after it, shutdown while loading)
SCENARIOS = {
    "hook": ("hook", 8.0, 0.0, False),
    "instrument": ("instrument", 12.0, 3.0, False),
    "storm": ("hook", 10.0, 0.0, True),
    "behind": ("hook", 8.0, 0.0, False),
}
#: What printing one ``_Costly`` value costs the worker (``behind``).
COST_S = 0.0003


class _Costly:
    def __init__(self, n: int) -> None:
        self.n = n

    def __str__(self) -> str:
        end = time.perf_counter() + COST_S
        while time.perf_counter() < end:
            pass
        return f"costly-{self.n}"


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage()[:300])


def run(name: str, width: int) -> dict[str, Any]:
    way_in, seconds, after, storm = SCENARIOS[name]
    record = Path(tempfile.mkdtemp()) / "posts.jsonl"
    stub = start_agent_stub(record)
    said = _Said()
    logging.getLogger("flageval").addHandler(said)
    tel = flageval.Telemetry(agent_url=stub.url, service=f"figures-{name}", flush_interval_s=1)
    if way_in == "hook":
        client = make_client(f"figures-{name}", [tel.hook])
    else:
        api.set_provider_and_wait(flageval.instrument(make_provider(), tel), domain=name)
        client = api.get_client(name)
    stop = threading.Event()
    made = [0]

    def work() -> None:
        get = client.get_boolean_value
        i = 0
        while not stop.is_set():
            attrs = context_attrs(width, i)
            if name == "behind":
                attrs["costly"] = _Costly(i)
            get(FLAG_KEY, False, EvaluationContext(f"user-{i}", attrs))
            i += 1
            made[0] = i

    thread = threading.Thread(target=work, daemon=True)
    began = time.time()
    thread.start()
    handoff = tel.handoff
    deepest = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if handoff is not None:
            deepest = max(deepest, len(handoff.queue))
        time.sleep(0.01)
    made_during = made[0]
    if not storm:
        stop.set()
        thread.join()
        time.sleep(after)
    loaded_until = time.time()
    t0 = time.monotonic()
    tel.shutdown(5.0)
    shutdown_s = time.monotonic() - t0
    stop.set()
    thread.join()
    stub.stop()
    logging.getLogger("flageval").removeHandler(said)
    posts = [json.loads(line) for line in record.read_text().splitlines()]
    during = [p for p in posts if p["at_ms"] <= loaded_until * 1000]
    st = tel.stats()
    return {
        "scenario": name,
        "width": width,
        "load_s": seconds,
        "made_during_load": made_during,
        "made_total": made[0],
        "at_intake_during_load": sum(p["evaluations"] for p in during),
        "posts_during_load": len(during),
        "flushes_posted_during_load": len({t for p in during for t in p["flushes"]}),
        "longest_wait_to_post_s": max(
            ((p["at_ms"] - p["oldest_ms"]) / 1000 for p in during), default=None
        ),
        "deepest_queue": deepest,
        "shutdown_s": round(shutdown_s, 2),
        "posted": st.evaluations_posted,
        "at_intake_total": sum(p["evaluations"] for p in posts),
        "dropped": dict(st.dropped),
        "conserved": st.conserved,
        "pending": st.pending,
        "said": said.lines[:4],
        "since_start_s": round(time.time() - began, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=60)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []])
    args = parser.parse_args()
    print(f"flageval from {flageval.__file__}", flush=True)
    for name in args.scenarios or SCENARIOS:
        print(json.dumps(run(name, args.width)), flush=True)


if __name__ == "__main__":
    main()
