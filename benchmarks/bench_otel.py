"""Benchmark 10: the OpenTelemetry export (``Telemetry(otel_metrics=True)``).

``test_otel_paired``: per evaluation, in alternating blocks of one run (see _harness.py),
sync, a 10-attribute context, each variant its own OpenFeature client on the same
``InMemoryProvider``: ``no_hook``; ``empty_hook`` (the floor); ``otel_only`` (the
provider wrapped by ``flageval.instrument``, its pipeline exporting to OpenTelemetry
only: ``datadog=False``); ``otel_and_datadog`` (the same, both exports, posting to the
agent stand-in); ``datadog`` (the wrapper without the export: what the snapshot change
costs shows against it); ``tracing_hook`` (openfeature-hooks-opentelemetry's
TracingHook inside a recording span). The process's global MeterProvider is a real SDK
``MeterProvider`` with a ``PeriodicExportingMetricReader`` (10 s) beside an in-memory
reader (tests/telemetry/otel/meter.py). CPU includes the worker's, up to its settling.

``test_otel_exact_from_threads``: 8 threads evaluating for 10 s (0.2 s under
--benchmark-disable) through ``flageval.instrument`` with the export on, a mix of
variants, reasons and errors; every thread counts what the SDK answered it; the
counter's sums must equal those counts per flag, variant, reason and error type.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from pytest_benchmark.fixture import BenchmarkFixture

import flageval
from benchmarks._harness import (
    FLAG_METADATA,
    TARGETING_KEY,
    AgentStub,
    EmptyHook,
    Otel,
    Variant,
    context_attrs,
    flageval_settle,
    make_client,
    make_wrapped_client,
    run_paired,
    sync_block,
)
from tests.telemetry.otel.meter import install, prefix, sums

VARIANTS = ("no_hook", "empty_hook", "otel_only", "otel_and_datadog", "datadog", "tracing_hook")


def otel_settle(tel: flageval.Telemetry, timeout_s: float = 5.0) -> Callable[[], None]:
    """Wait until the worker has counted everything queued so far into the counter
    (private counters, on purpose: see ``flageval_settle``)."""

    def settle() -> None:
        deadline = time.monotonic() + timeout_s
        worker, queue = tel._worker, tel.handoff
        assert worker is not None and worker.otel is not None and queue is not None
        otel = worker.otel
        while time.monotonic() < deadline:
            done = otel.counts.otel_recorded + sum(otel.unrecorded.values())
            if not queue.queue and done == worker.counts.drained:
                return
            time.sleep(0.002)

    return settle


@pytest.fixture(scope="module")
def pipelines(agent: AgentStub) -> Iterator[dict[str, flageval.Telemetry]]:
    install()
    made = {
        "otel_only": flageval.Telemetry(
            otel_metrics=True, datadog=False, agent_url=agent.url, service="bench-otel"
        ),
        "otel_and_datadog": flageval.Telemetry(
            otel_metrics=True, agent_url=agent.url, service="bench-otel-dd"
        ),
        "datadog": flageval.Telemetry(agent_url=agent.url, service="bench-otel-ref"),
    }
    for tel in made.values():
        tel.start()
    yield made
    for tel in made.values():
        tel.shutdown(10.0)


def _settle(name: str, tel: flageval.Telemetry) -> Callable[[], None]:
    if name == "datadog":
        return flageval_settle(tel)
    otel, rows = otel_settle(tel), flageval_settle(tel)

    def both() -> None:
        otel()
        if name == "otel_and_datadog":
            rows()

    return both


def test_otel_paired(
    benchmark: BenchmarkFixture,
    pipelines: dict[str, flageval.Telemetry],
    otel_peer: Otel,
    quick: bool,
) -> None:
    benchmark.group = "ratios"
    n, rounds = (200, 2) if quick else (4000, 21)
    ctx = EvaluationContext(TARGETING_KEY, context_attrs(10))
    clients: dict[str, OpenFeatureClient] = {
        "no_hook": make_client("bench-otel-none", []),
        "empty_hook": make_client("bench-otel-empty", [EmptyHook()]),
        "tracing_hook": make_client("bench-otel-tracing", [otel_peer.hook]),
    }
    for name, tel in pipelines.items():
        clients[name] = make_wrapped_client(f"bench-otel-{name}", tel)
    variants = {v: Variant(sync_block(clients[v], ctx, n)) for v in VARIANTS}
    block = variants["tracing_hook"].block

    def in_span() -> int:
        with otel_peer.span():
            return block()

    variants["tracing_hook"] = Variant(in_span)
    for name, tel in pipelines.items():
        variants[name].settle = _settle(name, tel)
    for v in variants.values():  # warm-up
        v.block()
        if v.settle:
            v.settle()
    paired = benchmark.pedantic(run_paired, args=(variants, rounds), rounds=1, iterations=1)
    info = paired.summary()
    for clock in ("wall", "cpu"):
        info[f"ratio_to_empty_hook_{clock}"] = {
            v: round(paired.ratio(v, "empty_hook", clock), 4) for v in VARIANTS if v != "empty_hook"
        }
    info["quick"] = quick
    benchmark.extra_info.update(info)
    for name, tel in pipelines.items():
        st = tel.stats()
        assert st.dropped.get("queue_overflow", 0) == 0, (name, st)
        if name != "datadog":
            # Counts, not times: an export that lost evaluations would look cheaper.
            assert st.otel_unrecorded == {}, (name, st)


# -- exactness --------------------------------------------------------------------------
THREADS = 8


def _by_user(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    bucket = hash(ctx.targeting_key) % 3
    if bucket == 2:
        return FlagResolutionDetails(False, reason="DEFAULT")
    return FlagResolutionDetails(bool(bucket), variant=f"v{bucket}", reason="TARGETING_MATCH")


def test_otel_exact_from_threads(benchmark: BenchmarkFixture, quick: bool) -> None:
    reader, _ = install()
    p = prefix("bench-exact")
    tel = flageval.Telemetry(otel_metrics=True, datadog=False, service="bench-otel-exact")
    flags = {
        f"{p}static": InMemoryFlag("on", {"on": True, "off": False}, flag_metadata=FLAG_METADATA),
        f"{p}split": InMemoryFlag("v0", {"v0": False, "v1": True}, context_evaluator=_by_user),
    }
    api.set_provider_and_wait(
        flageval.instrument(InMemoryProvider(flags), tel), domain="bench-otel-exact"
    )
    client = api.get_client("bench-otel-exact")
    seconds = 0.2 if quick else 10.0
    seen: list[Counter[tuple[str, str | None, str, str | None]]] = []

    def work(i: int, start: threading.Barrier) -> None:
        mine: Counter[tuple[str, str | None, str, str | None]] = Counter()
        get_bool, get_str = client.get_boolean_details, client.get_string_details
        ctxs = [EvaluationContext(f"user-{i}-{k}", context_attrs(10, k)) for k in range(64)]
        start.wait(30)
        end, j = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            for _ in range(64):
                j += 1
                kind = j % 8
                if kind < 4:
                    d: Any = get_bool(f"{p}split", False, ctxs[j % 64])
                elif kind < 6:
                    d = get_bool(f"{p}static", False, ctxs[j % 64])
                elif kind == 6:
                    d = get_bool(f"{p}absent", False)
                else:
                    d = get_str(f"{p}static", "x")  # type mismatch
                code = None if d.error_code is None else d.error_code.value.lower()
                mine[(d.flag_key, d.variant, str(d.reason).lower(), code)] += 1
        seen.append(mine)

    def run() -> float:
        start = threading.Barrier(THREADS + 1)
        pool = [threading.Thread(target=work, args=(i, start)) for i in range(THREADS)]
        for t in pool:
            t.start()
        start.wait(30)
        t0 = time.perf_counter()
        for t in pool:
            t.join(seconds + 60)
        elapsed = time.perf_counter() - t0
        assert tel.flush(30.0)
        return elapsed

    try:
        elapsed = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        tel.shutdown(10.0)
    expected: Counter[tuple[str, str | None, str, str | None]] = Counter()
    for mine in seen:
        expected.update(mine)
    got: Counter[tuple[str, str | None, str, str | None]] = Counter()
    for attrs, value in sums(reader, p).items():
        a = dict(attrs)
        key = a["feature_flag.key"]
        got[
            (
                key,
                a.get("feature_flag.result.variant"),
                a["feature_flag.result.reason"],
                a.get("error.type"),
            )
        ] += value
    st = tel.stats()
    assert len(seen) == THREADS
    assert st.dropped == {} and st.otel_unrecorded == {}
    assert got == expected
    assert st.evaluations == st.otel_recorded == sum(expected.values())
    benchmark.extra_info.update(
        threads=THREADS,
        seconds=seconds,
        evaluations=st.evaluations,
        evaluations_per_s=round(st.evaluations / elapsed),
        attribute_sets=len(got),
        sums_equal=got == expected,
        quick=quick,
    )
