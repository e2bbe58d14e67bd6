"""Parity: one stream of evaluations through the hook and through the wrapper gives the
same snapshots, the same rows and the same counters, for every case both can see.

Hypothesis draws the stream: flags (static, runtime default, error results, raising with
an OpenFeature error or any exception, context-dependent variants and metadata, missing),
the requested type (so TYPE_MISMATCH comes up), contexts (targeting key or none, scalars
of every JSON-ish type including 0.0/-0.0/NaN, nested values, None), sync or async.
Both sides use twin InMemoryProviders and pipelines with the same small hand-off (so
overflow comes up too); rows are built by the real tiers (small caps: degrading comes
up) and the real wire format, and compared without their times.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, TargetingKeyMissingError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval
from flageval import Telemetry
from flageval._losses import Ledger
from flageval._tiers import Tiers
from flageval._wire import envelope_prefix, pack

QUEUE = 16
STAMP = 1_760_000_000_123


def _dynamic(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    plan = ctx.attributes.get("plan")
    variant = "pro" if plan == "pro" else "free"
    return FlagResolutionDetails(
        value=variant == "pro",
        variant=variant,
        reason=Reason.TARGETING_MATCH,
        flag_metadata={"allocationKey": f"by-plan-{variant}", "dd.eval.timestamp_ms": STAMP},
    )


def _no_variant(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(value="code-default", reason=Reason.DEFAULT)


def _error_result(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=0, error_code=ErrorCode.PARSE_ERROR, error_message="bad rule", reason=Reason.ERROR
    )


def _raise_openfeature(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> Any:
    raise TargetingKeyMissingError("no key")


def _raise_any(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> Any:
    raise ValueError("backend exploded")


def _flags() -> dict[str, InMemoryFlag[Any]]:
    no_consent = {"__dd_observe_full_evaluation_data": False, "allocation_key": "hidden"}
    return {
        "bool": InMemoryFlag(
            "on", {"on": True, "off": False}, flag_metadata={"allocationKey": "a"}
        ),
        "str": InMemoryFlag("x", {"x": "ex"}, flag_metadata=no_consent),
        "int": InMemoryFlag("three", {"three": 3}, flag_metadata={"dd.eval.timestamp_ms": STAMP}),
        "float": InMemoryFlag("half", {"half": 0.5}),
        "obj": InMemoryFlag("o", {"o": {"k": [1, 2]}}),
        "dynamic": InMemoryFlag("free", {"free": False, "pro": True}, context_evaluator=_dynamic),
        "no-variant": InMemoryFlag("x", {"x": "x"}, context_evaluator=_no_variant),
        "error-result": InMemoryFlag("x", {"x": 0}, context_evaluator=_error_result),
        "raise-openfeature": InMemoryFlag("x", {"x": 0}, context_evaluator=_raise_openfeature),
        "raise-any": InMemoryFlag("x", {"x": 0}, context_evaluator=_raise_any),
    }


DEFAULTS = {"boolean": False, "string": "d", "integer": 0, "float": 0.0, "object": {}}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1, 1.0, True, "1"]),
    st.text(max_size=12),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=3),
)
contexts = st.builds(
    EvaluationContext,
    st.one_of(st.none(), st.sampled_from(["user-1", "user-2", ""]), st.text(max_size=8)),
    st.dictionaries(
        st.sampled_from(["plan", "country", "n", "targetingKey", "x"]) | st.text(max_size=6),
        values,
        max_size=5,
    ),
)
evaluations = st.lists(
    st.tuples(
        st.sampled_from([*_flags(), "missing"]),
        st.sampled_from(sorted(DEFAULTS)),
        contexts,
        st.booleans(),  # async?
    ),
    min_size=1,
    max_size=24,
)


def _rows(snapshots: list[Any]) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    ledger = Ledger()
    tiers = Tiers(
        max_full_buckets=6,
        max_buckets_per_flag=3,
        max_degraded_buckets=5,
        memory_budget_bytes=1 << 20,
        full_data_default=True,
        ledger=ledger,
    )
    tiers.add_batch(snapshots)
    full, degraded, _ = tiers.take()
    bodies = pack(
        full,
        degraded,
        timestamp_ms=0,
        prefix=envelope_prefix("parity", None, None),
        max_body_bytes=1 << 20,
        ledger=ledger,
    )
    rows = [row for body in bodies for row in json.loads(body.data)["flagEvaluations"]]
    for row in rows:  # the hook and the wrapper take the time a few microseconds apart
        if row["first_evaluation"] != STAMP:
            row.pop("first_evaluation")
            row.pop("last_evaluation")
    rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
    return rows, dict(ledger.dropped), dict(ledger.degraded)


@pytest.fixture
def pipelines() -> Iterator[tuple[Telemetry, Telemetry]]:
    make = {"agent_url": "http://127.0.0.1:9", "autostart": False, "enabled": True}
    tel_h = Telemetry(queue_size=QUEUE, **make)  # type: ignore[arg-type]
    tel_w = Telemetry(queue_size=QUEUE, **make)  # type: ignore[arg-type]
    quiet = logging.getLogger("openfeature")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the SDK logs a traceback per raising provider
    yield tel_h, tel_w
    quiet.setLevel(level)
    tel_h.shutdown(1.0)
    tel_w.shutdown(1.0)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=evaluations)
def test_one_stream_through_the_hook_and_the_wrapper(
    pipelines: tuple[Telemetry, Telemetry], stream: list[tuple[str, str, EvaluationContext, bool]]
) -> None:
    tel_h, tel_w = pipelines
    assert tel_h.handoff is not None and tel_w.handoff is not None
    counts_before = (tel_h.handoff.counts(), tel_w.handoff.counts())
    api.clear_providers()
    api.set_provider_and_wait(InMemoryProvider(_flags()), domain="h")
    api.set_provider_and_wait(flageval.instrument(InMemoryProvider(_flags()), tel_w), domain="w")
    client_h, client_w = api.get_client("h"), api.get_client("w")
    client_h.add_hooks([tel_h.hook])
    loop = asyncio.new_event_loop()
    try:
        for key, kind, ctx, is_async in stream:
            answers = []
            for client in (client_h, client_w):
                get = getattr(client, f"get_{kind}_details" + ("_async" if is_async else ""))
                result = get(key, DEFAULTS[kind], ctx)
                answers.append(loop.run_until_complete(result) if is_async else result)
            assert answers[0].error_code == answers[1].error_code
    finally:
        loop.close()
    snaps_h, snaps_w = list(tel_h.handoff.queue), list(tel_w.handoff.queue)
    tel_h.handoff.queue.clear()
    tel_w.handoff.queue.clear()
    assert [s[:7] for s in snaps_h] == [s[:7] for s in snaps_w]
    assert len(snaps_h) == min(len(stream), QUEUE)
    assert _rows(snaps_h) == _rows(snaps_w)
    counts_after = (tel_h.handoff.counts(), tel_w.handoff.counts())
    deltas = [
        {k: after.get(k, 0) - before.get(k, 0) for k in {*after, *before}}
        for before, after in zip(counts_before, counts_after, strict=True)
    ]
    assert deltas[0] == deltas[1]
    assert deltas[0].get("queue_overflow", 0) == max(0, len(stream) - QUEUE)
