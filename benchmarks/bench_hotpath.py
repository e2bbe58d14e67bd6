"""Benchmarks 1 and 2: the evaluation hot path, sync and async, per hook.

Variants (each its own OpenFeature client on the same InMemoryProvider):
``no_hook``; ``empty_hook`` (an empty ``Hook`` subclass: the SDK's fixed price of any
hook, our floor); ``flageval`` (its worker running on its own thread, posting to the
agent stand-in); ``wrapper`` (no hook: the provider wrapped by ``flageval.instrument``,
feeding a pipeline of its own with the same settings); ``otel_span``
(openfeature-hooks-opentelemetry's TracingHook inside a recording span); ``ddtrace``
(ddtrace's FlagEvalEVPHook + FlagEvaluationWriter, its drain and flush threads
running). The flag carries consent metadata, so ddtrace does its full-data work, as
flageval does by default.

``test_*_eval`` give each variant's pytest-benchmark figures (separate runs, so only
roughly comparable). ``test_*_paired`` are the ratios: all variants in alternating
blocks, ratio per round, median over rounds (see _harness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pytest
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from pytest_benchmark.fixture import BenchmarkFixture

import flageval
from benchmarks._harness import (
    FLAG_KEY,
    TARGETING_KEY,
    Ddtrace,
    EmptyHook,
    Otel,
    Paired,
    Variant,
    async_block,
    context_attrs,
    ddtrace_settle,
    flageval_settle,
    make_client,
    make_wrapped_client,
    run_paired,
    sync_block,
)

VARIANTS = ("no_hook", "empty_hook", "flageval", "wrapper", "otel_span", "ddtrace")
ATTRS = (0, 10, 50)
ASYNC_TASKS = 8
ASYNC_EVALS_PER_CALL = 96  # per pytest-benchmark call: 8 tasks x 12 evaluations


@pytest.fixture(scope="module")
def clients(
    telemetry: flageval.Telemetry,
    wrapper_telemetry: flageval.Telemetry,
    otel_peer: Otel,
    ddtrace_peer: Ddtrace,
) -> dict[str, OpenFeatureClient]:
    return {
        "no_hook": make_client("bench-no-hook", []),
        "empty_hook": make_client("bench-empty-hook", [EmptyHook()]),
        "flageval": make_client("bench-flageval", [telemetry.hook]),
        "wrapper": make_wrapped_client("bench-wrapper", wrapper_telemetry),
        "otel_span": make_client("bench-otel", [otel_peer.hook]),
        "ddtrace": make_client("bench-ddtrace", [ddtrace_peer.hook]),
    }


@pytest.fixture
def settled(
    telemetry: flageval.Telemetry, wrapper_telemetry: flageval.Telemetry, ddtrace_peer: Ddtrace
) -> None:
    """Start with both background pipelines idle: the backlog a previous benchmark left
    (flageval's worker, ddtrace's drain thread) is not charged to this one. What this
    benchmark leaves behind is not charged to it either: these single-variant figures
    are the caller's view only; the paired tests below are the claims."""
    flageval_settle(telemetry)()
    flageval_settle(wrapper_telemetry)()
    ddtrace_settle(ddtrace_peer)()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _span_for(variant: str, otel: Otel) -> contextlib.AbstractContextManager[None]:
    return otel.span() if variant == "otel_span" else contextlib.nullcontext()


def _ctx(n_attrs: int) -> EvaluationContext:
    return EvaluationContext(TARGETING_KEY, context_attrs(n_attrs))


def _in_span(block: Callable[[], int], otel: Otel) -> Callable[[], int]:
    def run() -> int:
        with otel.span():
            return block()

    return run


def _variants(
    blocks: dict[str, Callable[[], int]],
    telemetry: flageval.Telemetry,
    wrapper_telemetry: flageval.Telemetry,
    ddtrace: Ddtrace,
    otel: Otel,
) -> dict[str, Variant]:
    out = {v: Variant(blocks[v]) for v in VARIANTS}
    out["otel_span"] = Variant(_in_span(blocks["otel_span"], otel))
    out["flageval"].settle = flageval_settle(telemetry)
    out["wrapper"].settle = flageval_settle(wrapper_telemetry)
    out["ddtrace"].settle = ddtrace_settle(ddtrace)
    for v in out.values():  # warm-up: caches, first allocations, threads awake
        v.block()
        if v.settle:
            v.settle()
    return out


def _paired_info(paired: Paired, quick: bool) -> dict[str, object]:
    info = paired.summary()
    for clock in ("wall", "cpu"):
        info[f"ratio_to_empty_hook_{clock}"] = {
            v: round(paired.ratio(v, "empty_hook", clock), 4) for v in VARIANTS if v != "empty_hook"
        }
        info[f"ratio_to_no_hook_{clock}"] = {
            v: round(paired.ratio(v, "no_hook", clock), 4) for v in VARIANTS if v != "no_hook"
        }
        # flageval's added cost over the floor, against ddtrace's added cost over it.
        info[f"added_cost_flageval_over_ddtrace_{clock}"] = round(
            paired.added_ratio("flageval", "ddtrace", "empty_hook", clock), 4
        )
    info["quick"] = quick
    return info


def _check_nothing_lost(
    telemetry: flageval.Telemetry, wrapper_telemetry: flageval.Telemetry, ddtrace: Ddtrace
) -> None:
    # Counts, not times: a hook that dropped evaluations would look cheaper than it is.
    assert telemetry.stats().dropped.get("queue_overflow", 0) == 0
    assert wrapper_telemetry.stats().dropped.get("queue_overflow", 0) == 0
    assert ddtrace.dropped() == 0


# -- 1. sync ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_attrs", ATTRS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sync_eval(
    benchmark: BenchmarkFixture,
    clients: dict[str, OpenFeatureClient],
    otel_peer: Otel,
    settled: None,
    variant: str,
    n_attrs: int,
) -> None:
    benchmark.group = f"1 sync hot path, {n_attrs} attributes"
    ctx = _ctx(n_attrs)
    get = clients[variant].get_boolean_value
    with _span_for(variant, otel_peer):
        assert benchmark(get, FLAG_KEY, False, ctx) is True


@pytest.mark.parametrize("n_attrs", ATTRS)
def test_sync_paired(
    benchmark: BenchmarkFixture,
    clients: dict[str, OpenFeatureClient],
    otel_peer: Otel,
    telemetry: flageval.Telemetry,
    wrapper_telemetry: flageval.Telemetry,
    ddtrace_peer: Ddtrace,
    quick: bool,
    n_attrs: int,
) -> None:
    benchmark.group = "ratios"
    n, rounds = (200, 2) if quick else (4000, 21)
    ctx = _ctx(n_attrs)
    blocks = {v: sync_block(clients[v], ctx, n) for v in VARIANTS}
    variants = _variants(blocks, telemetry, wrapper_telemetry, ddtrace_peer, otel_peer)
    paired = benchmark.pedantic(run_paired, args=(variants, rounds), rounds=1, iterations=1)
    benchmark.extra_info.update(_paired_info(paired, quick))
    benchmark.extra_info["kind"] = f"sync, {n_attrs} attributes"
    _check_nothing_lost(telemetry, wrapper_telemetry, ddtrace_peer)


# -- 2. async --------------------------------------------------------------------------
@pytest.mark.parametrize("n_attrs", ATTRS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_async_eval(
    benchmark: BenchmarkFixture,
    clients: dict[str, OpenFeatureClient],
    otel_peer: Otel,
    loop: asyncio.AbstractEventLoop,
    settled: None,
    variant: str,
    n_attrs: int,
) -> None:
    benchmark.group = f"2 async hot path, {n_attrs} attributes (per call: 96 evaluations)"
    benchmark.extra_info["evaluations_per_call"] = ASYNC_EVALS_PER_CALL
    block = async_block(loop, clients[variant], _ctx(n_attrs), ASYNC_EVALS_PER_CALL)
    with _span_for(variant, otel_peer):
        assert benchmark(block) == ASYNC_EVALS_PER_CALL


@pytest.mark.parametrize("n_attrs", ATTRS)
def test_async_paired(
    benchmark: BenchmarkFixture,
    clients: dict[str, OpenFeatureClient],
    otel_peer: Otel,
    telemetry: flageval.Telemetry,
    wrapper_telemetry: flageval.Telemetry,
    ddtrace_peer: Ddtrace,
    loop: asyncio.AbstractEventLoop,
    quick: bool,
    n_attrs: int,
) -> None:
    benchmark.group = "ratios"
    n, rounds = (200, 2) if quick else (4000, 21)
    ctx = _ctx(n_attrs)
    blocks = {v: async_block(loop, clients[v], ctx, n, ASYNC_TASKS) for v in VARIANTS}
    variants = _variants(blocks, telemetry, wrapper_telemetry, ddtrace_peer, otel_peer)
    paired = benchmark.pedantic(run_paired, args=(variants, rounds), rounds=1, iterations=1)
    benchmark.extra_info.update(_paired_info(paired, quick))
    benchmark.extra_info["kind"] = f"async, {n_attrs} attributes"
    _check_nothing_lost(telemetry, wrapper_telemetry, ddtrace_peer)
