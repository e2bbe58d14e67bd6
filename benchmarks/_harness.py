"""Shared pieces of the benchmark suite: contexts, clients per variant, paired rounds.

Method (why ratios, why interleaved): the machine is shared and noisy, so an absolute
figure from one benchmark is not comparable with another taken a minute later. Every
claim is therefore a ratio taken inside one run: the variants being compared are timed
in alternating blocks (round r runs every variant once, in an order rotated per round),
each block's per-evaluation time is recorded, the ratio is computed per round, and the
median of the per-round ratios is reported. A disturbance (another engineer's test
run, a GC pass, a flush) hits one block of one round and moves one ratio, not the
median.

Two clocks per block (see :class:`Paired`): wall time around the evaluations (what the
caller waits), and process CPU time around the evaluations plus the wait for the hook's
background thread to finish what they queued (what the evaluations cost in total,
whichever thread paid). A background drain that lands in the next variant's block
would otherwise be charged to that variant.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.hook import Hook
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval

HERE = Path(__file__).resolve().parent
FLAG_KEY = "bench-flag"
#: What a Datadog provider stamps, and consent (so ddtrace does its full-data work,
#: which is what flageval does by default with ``full_data_default=True``).
FLAG_METADATA = {
    "allocation_key": "default-allocation",
    "__dd_observe_full_evaluation_data": True,
}
TARGETING_KEY = "user-00042"


def bench_disabled(config: Any) -> bool:
    """True under ``--benchmark-disable``: every benchmark then runs a small input once."""
    return bool(config.getoption("benchmark_disable", False)) or bool(
        os.environ.get("FLAGEVAL_BENCH_QUICK")
    )


def context_attrs(n: int, seed: int = 0) -> dict[str, Any]:
    """``n`` flat attributes of mixed scalar types, the shape of a typical web context."""
    out: dict[str, Any] = {}
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out[f"attr_{i:03d}"] = f"value-{seed}-{i}"
        elif kind == 1:
            out[f"attr_{i:03d}"] = seed * 1000 + i
        elif kind == 2:
            out[f"attr_{i:03d}"] = seed + i / 8
        else:
            out[f"attr_{i:03d}"] = (seed + i) % 2 == 0
    return out


def nested_attrs(n_leaves: int, seed: int = 0) -> dict[str, Any]:
    """``n_leaves`` leaves spread over nested mappings and lists (16 per group)."""
    out: dict[str, Any] = {}
    groups = max(1, n_leaves // 16)
    for g in range(groups):
        group: dict[str, Any] = {}
        for i in range(12):
            group[f"k{i:02d}"] = f"v-{seed}-{g}-{i}" if i % 2 else seed * 100 + g * 16 + i
        group["tags"] = [f"t{seed}-{g}-{j}" for j in range(4)]
        out[f"group_{g:02d}"] = {"inner": group} if g % 2 else group
    return out


def make_provider() -> InMemoryProvider:
    return InMemoryProvider(
        {
            FLAG_KEY: InMemoryFlag(
                "on", {"on": True, "off": False}, flag_metadata=dict(FLAG_METADATA)
            )
        }
    )


class EmptyHook(Hook):
    """The floor: any hook at all costs the SDK's HookContext and four stage calls."""


def make_client(name: str, hooks: list[Hook]) -> OpenFeatureClient:
    """A client of its own domain with its own InMemoryProvider (so nothing another
    benchmark module does to the default provider or the API's hooks reaches it)."""
    api.set_provider_and_wait(make_provider(), domain=name)
    client = api.get_client(name)
    if hooks:
        client.add_hooks(hooks)
    return client


def make_wrapped_client(name: str, telemetry: Any) -> OpenFeatureClient:
    """A client of its own domain whose provider is ``flageval.instrument``-ed (no hook)."""
    api.set_provider_and_wait(flageval.instrument(make_provider(), telemetry), domain=name)
    return api.get_client(name)


# -- peers ----------------------------------------------------------------------------
@dataclass
class AgentStub:
    """The intake stand-in (benchmarks/_intake.py), in its own process."""

    proc: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)


def start_agent_stub(record: Path | None = None) -> AgentStub:
    """The stub in its own process; ``record``: where it logs each POST (_intake.py)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_intake.py"), *(["--record", str(record)] if record else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().strip())
    return AgentStub(proc, f"http://127.0.0.1:{port}")


@dataclass
class Ddtrace:
    hook: Hook
    writer: Any

    def dropped(self) -> int:
        w = self.writer
        return int(w._dropped_pre_queue + w._dropped_queue)

    def stop(self) -> None:
        self.writer.stop()
        self.writer.join(5)


def start_ddtrace(agent_url: str) -> Ddtrace:
    """ddtrace's FlagEvalEVPHook + FlagEvaluationWriter, posting to ``agent_url``.

    The environment is set the way ddtrace reads it, but ddtrace's pytest plugin imports its
    settings before any conftest runs, so the agent URL is also handed to the writer
    through its own ``route_selector`` parameter (remote_config source = the
    ``/evp_proxy/v2`` path, no agentless discovery).
    """
    os.environ.setdefault("DD_TRACE_AGENT_URL", agent_url)
    os.environ.setdefault("DD_FEATURE_FLAGS_CONFIGURATION_SOURCE", "remote_config")
    from ddtrace.internal.openfeature._evp_transport import FeatureFlagEVPRouteSelector
    from ddtrace.internal.openfeature._flag_eval_evp_hook import FlagEvalEVPHook
    from ddtrace.internal.openfeature._flagevaluation_writer import FlagEvaluationWriter

    selector = FeatureFlagEVPRouteSelector(
        configuration_source="remote_config",
        agent_url=agent_url,
        api_key=None,
        site="datadoghq.com",
    )
    writer = FlagEvaluationWriter(interval=10.0, route_selector=selector)
    writer.start()
    return Ddtrace(FlagEvalEVPHook(writer), writer)


@dataclass
class Otel:
    hook: Hook
    tracer: Any
    provider: Any

    @contextmanager
    def span(self) -> Iterator[None]:
        with self.tracer.start_as_current_span("request"):
            yield


def start_otel() -> Otel:
    """TracingHook inside a recording span (SDK TracerProvider, no exporter)."""
    from openfeature.contrib.hook.opentelemetry import TracingHook
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()  # records spans; with no processor they go nowhere
    return Otel(TracingHook(), provider.get_tracer("flageval-bench"), provider)


# -- paired rounds ----------------------------------------------------------------------
@dataclass
class Paired:
    """Per-evaluation times (ns) per variant, one entry per round, two clocks.

    ``wall``: the caller's view (perf_counter around the evaluations only).
    ``cpu``: the process's CPU time (every thread: the caller, and the hook's own
    background threads) around the evaluations *and* the settling after them, so the
    background work an evaluation causes is charged to the variant that caused it and
    not to whichever variant happens to run next.
    """

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def _clock(self, clock: str) -> dict[str, list[float]]:
        return self.wall if clock == "wall" else self.cpu

    def median(self, name: str, clock: str = "wall") -> float:
        return statistics.median(self._clock(clock)[name])

    def ratio(self, num: str, den: str, clock: str = "wall") -> float:
        """Median over rounds of the per-round ratio num/den."""
        t = self._clock(clock)
        pairs = zip(t[num], t[den], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def added_ratio(self, num: str, den: str, base: str, clock: str = "wall") -> float:
        """Median over rounds of (num - base) / (den - base): added cost against added cost."""
        t = self._clock(clock)
        per_round = [
            (a - c) / (b - c) for a, b, c in zip(t[num], t[den], t[base], strict=True) if b > c
        ]
        return statistics.median(per_round) if per_round else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": len(next(iter(self.wall.values()))),
            "median_wall_ns": {k: round(self.median(k), 1) for k in self.wall},
            "median_cpu_ns": {k: round(self.median(k, "cpu"), 1) for k in self.cpu},
            "min_wall_ns": {k: round(min(v), 1) for k, v in self.wall.items()},
        }


@dataclass
class Variant:
    """One thing to time: ``block()`` runs evaluations and returns how many;
    ``settle()`` (untimed on the wall clock, counted on the CPU clock) waits until the
    background work those evaluations caused is done."""

    block: Callable[[], int]
    settle: Callable[[], None] | None = None


def run_paired(variants: dict[str, Variant], rounds: int) -> Paired:
    """Run every variant once per round, rotating the order; see :class:`Paired`."""
    names = list(variants)
    out = Paired({n: [] for n in names}, {n: [] for n in names})
    wall, cpu = time.perf_counter_ns, time.process_time_ns
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            v = variants[name]
            c0 = cpu()
            t0 = wall()
            ops = v.block()
            t1 = wall()
            if v.settle is not None:
                v.settle()
            c1 = cpu()
            out.wall[name].append((t1 - t0) / ops)
            out.cpu[name].append((c1 - c0) / ops)
    return out


def flageval_settle(tel: Any, timeout_s: float = 5.0) -> Callable[[], None]:
    """Wait until the pipeline's worker has aggregated everything queued so far.

    Reads the worker's counters (private, on purpose: a benchmark may look inside):
    ``tiers.received`` counts snapshots aggregated, ``drained`` those taken off the
    queue; idle means both equal and nothing is queued.
    """

    def settle() -> None:
        deadline = time.monotonic() + timeout_s
        worker, queue = tel._worker, tel.handoff.queue
        while time.monotonic() < deadline:
            if not queue and worker.tiers.received == worker.counts.drained:
                time.sleep(0.0005)  # a drain may sit between popleft and its count
                if not queue and worker.tiers.received == worker.counts.drained:
                    return
            time.sleep(0.002)

    return settle


def ddtrace_settle(peer: Ddtrace, timeout_s: float = 5.0) -> Callable[[], None]:
    """Wait until ddtrace's drain thread has emptied its queue (it aggregates per item)."""

    def settle() -> None:
        deadline = time.monotonic() + timeout_s
        q = peer.writer._queue
        while time.monotonic() < deadline and q.qsize():
            time.sleep(0.002)
        time.sleep(0.001)  # the last item taken may still be in _aggregate

    return settle


def sync_block(client: OpenFeatureClient, ctx: EvaluationContext, n: int) -> Callable[[], int]:
    get = client.get_boolean_value

    def block() -> int:
        for _ in range(n):
            get(FLAG_KEY, False, ctx)
        return n

    return block


def async_block(
    loop: asyncio.AbstractEventLoop,
    client: OpenFeatureClient,
    ctx: EvaluationContext,
    n: int,
    tasks: int = 8,
) -> Callable[[], int]:
    """``n`` evaluations split over ``tasks`` concurrent tasks on ``loop``."""
    get = client.get_boolean_value_async
    per_task = n // tasks

    async def one() -> None:
        for _ in range(per_task):
            await get(FLAG_KEY, False, ctx)

    async def all_tasks() -> None:
        await asyncio.gather(*(one() for _ in range(tasks)))

    def block() -> int:
        loop.run_until_complete(all_tasks())
        return per_task * tasks

    return block


def fmt_ns(ns: float) -> str:
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"
