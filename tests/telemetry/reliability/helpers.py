"""Shared helpers of the reliability suite: a client wired to a pipeline, latency
sampling, a peak sampler for the retry buffer, and the exact accounting checks."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Stats, Telemetry
from tests.intake import Intake, Received

FLAG = "rel-flag"
#: Figures reported at the end of the run (see conftest.pytest_terminal_summary).
FIGURES: dict[str, dict[str, Any]] = {}


def flags(**extra: InMemoryFlag) -> dict[str, InMemoryFlag]:
    return {FLAG: InMemoryFlag("on", {"on": True, "off": False}), **extra}


def client_with(tel: Telemetry, provider_flags: dict[str, InMemoryFlag] | None = None) -> Any:
    """A client of the real SDK, InMemoryProvider, with the pipeline's hook."""
    api.set_provider_and_wait(InMemoryProvider(provider_flags or flags()))
    client: OpenFeatureClient = api.get_client()
    client.add_hooks([tel.hook])
    return client


def free_port() -> int:
    """A port nothing listens on right now (bound later by a test intake)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def evaluate_timed(
    client: Any,
    *,
    min_s: float,
    max_n: int,
    tk_space: int,
    tag: str,
    until: Callable[[], bool] | None = None,
    timeout_s: float = 30.0,
) -> tuple[list[int], int]:
    """Evaluate until ``min_s`` passed (at most ``max_n`` times) and, when given, until
    ``until()`` holds (then past ``max_n`` too, for at most ``timeout_s``); per-call ns
    and count."""
    out: list[int] = []
    perf = time.perf_counter_ns
    start = time.monotonic()
    end = start + min_s
    get = client.get_boolean_value
    i = 0
    while True:
        ctx = EvaluationContext(f"{tag}-{i % tk_space}", {"plan": "pro", "n": i % 3})
        t0 = perf()
        get(FLAG, False, ctx)
        out.append(perf() - t0)
        i += 1
        if i % 256 and i < max_n:
            continue
        now = time.monotonic()
        if until is not None and not until():
            assert now - start < timeout_s, f"not met within {timeout_s} s"
            continue
        if now >= end or i >= max_n:
            break
    return out, i


def median_us(samples: Iterable[int]) -> float:
    return statistics.median(samples) / 1000.0


class PeakSampler:
    """Samples a value on another thread every few ms and keeps the maximum."""

    def __init__(self, read: Callable[[], int], every_s: float = 0.002) -> None:
        self.read = read
        self.every_s = every_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            self.peak = max(self.peak, value)
            self.samples += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def body_counts(records: Iterable[Received]) -> int:
    """Evaluations carried by whole bodies (parsed from the bytes the intake read)."""
    return sum(
        row["evaluation_count"] for r in records for row in json.loads(r.body)["flagEvaluations"]
    )


def assert_conserved(tel: Telemetry, intake: Intake, made: int) -> Stats:
    """Exact books after shutdown: made == accepted by the intake + drops by reason."""
    st = tel.stats()
    accepted = intake.evaluations()
    assert st.pending == 0, st
    assert st.evaluations == made, (st, made)
    assert st.evaluations_posted == accepted, (st, accepted)
    assert made == accepted + sum(st.dropped.values()), (made, accepted, st.dropped)
    assert st.conserved
    return st


def assert_rows_unique(intake: Intake) -> None:
    """No row identity appears twice among accepted bodies, and no accepted body twice."""
    bodies = [r.body for r in intake.accepted()]
    assert len(bodies) == len(set(bodies)), "a body was accepted twice"
    seen: Counter[str] = Counter()
    for r in intake.accepted():
        for row in r.json()["flagEvaluations"]:
            ident = {k: v for k, v in row.items() if k != "evaluation_count"}
            seen[json.dumps(ident, sort_keys=True)] += 1
    dups = [k for k, n in seen.items() if n > 1]
    assert not dups, dups[:3]


def record(name: str, **figures: Any) -> None:
    FIGURES[name] = figures
