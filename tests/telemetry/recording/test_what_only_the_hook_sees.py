"""What only the hook can see, what the wrapper records instead, and both ways at once.

Each case runs the same evaluation twice through the real SDK: once on a client with
the hook (pipeline H), once through a wrapped twin provider (pipeline W), both pipelines
unstarted so their hand-offs hold exactly what was recorded. Expected snapshots are
written from the case (the flag, the context, the SDK's documented answer).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagType
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import ProviderStatus
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval
from flageval import Telemetry
from flageval._instrumented import ShortCircuitHook
from tests.ofrep.ofrep_server import wait_until

MakeTelemetry = Callable[..., Telemetry]
ATTRS = {"plan": "pro"}
CTX = EvaluationContext("user-7", ATTRS)
ON = ("f", "on", None, None, {"allocationKey": "a1"}, "user-7", ATTRS)


def queued(tel: Telemetry) -> list[tuple[Any, ...]]:
    assert tel.handoff is not None
    return [snap[:7] for snap in tel.handoff.queue]


class Provider(InMemoryProvider):
    """One flag ``f``; initialize blocks until ``release`` is set (the NOT_READY window)."""

    def __init__(self, block: bool = False) -> None:
        super().__init__(
            {"f": InMemoryFlag("on", {"on": True}, flag_metadata={"allocationKey": "a1"})}
        )
        self.release = threading.Event()
        if not block:
            self.release.set()

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        self.release.wait(10.0)


def twins(
    make: MakeTelemetry, hooks: list[Hook] | None = None, block: bool = False
) -> tuple[Telemetry, OpenFeatureClient, Provider, Telemetry, OpenFeatureClient, Provider]:
    """(H pipeline, its client with the hook, its provider, W pipeline, its client, the
    wrapped provider); ``hooks`` are added to both clients before the flageval hook."""
    tel_h, tel_w = make(autostart=False), make(autostart=False)
    p_h, p_w = Provider(block), Provider(block)
    setter = api.set_provider if block else api.set_provider_and_wait
    setter(p_h, domain="h")
    setter(flageval.instrument(p_w, tel_w), domain="w")
    client_h, client_w = api.get_client("h"), api.get_client("w")
    client_h.add_hooks([*(hooks or []), tel_h.hook])
    client_w.add_hooks(list(hooks or []))
    return tel_h, client_h, p_h, tel_w, client_w, p_w


class RaisingBefore(Hook):
    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        raise ValueError("before failed")


class RaisingAfter(Hook):
    def after(self, hook_context: HookContext, details: Any, hints: HookHints) -> None:
        raise ValueError("after failed")


class AddingBefore(Hook):
    def before(self, hook_context: HookContext, hints: HookHints) -> EvaluationContext:
        return EvaluationContext("from-hook", {"added": 1})


# -- the SDK's short-circuits: recorded by the wrapper too -------------------------------------


def test_provider_not_ready_is_recorded_as_the_hook_records_it(
    make_telemetry: MakeTelemetry,
) -> None:
    tel_h, client_h, p_h, tel_w, client_w, p_w = twins(make_telemetry, block=True)
    try:
        for client in (client_h, client_w):
            assert client.get_provider_status() is ProviderStatus.NOT_READY
            details = client.get_boolean_details("f", False, CTX)
            assert details.error_code == ErrorCode.PROVIDER_NOT_READY
        expected = [("f", None, ErrorCode.PROVIDER_NOT_READY, None, {}, "user-7", ATTRS)]
        assert queued(tel_h) == queued(tel_w) == expected
        # The extra hook is listed only while the SDK will not call the provider.
        assert any(isinstance(h, ShortCircuitHook) for h in client_w.provider.get_provider_hooks())
    finally:
        p_h.release.set()
        p_w.release.set()
    wait_until(lambda: client_w.get_provider_status() is ProviderStatus.READY)
    wait_until(lambda: client_h.get_provider_status() is ProviderStatus.READY)
    assert client_w.provider.get_provider_hooks() == []
    for client in (client_h, client_w):
        assert client.get_boolean_value("f", False, CTX) is True
    assert queued(tel_h) == queued(tel_w) == [*expected, ON]  # one snapshot each, no more


async def test_provider_fatal_is_recorded_sync_and_async(make_telemetry: MakeTelemetry) -> None:
    tel_h, client_h, p_h, tel_w, client_w, p_w = twins(make_telemetry)
    fatal = ProviderEventDetails(error_code=ErrorCode.PROVIDER_FATAL)
    p_h.emit_provider_error(fatal)
    p_w.emit_provider_error(fatal)  # emitted by the wrapped provider, heard as the wrapper's
    for client in (client_h, client_w):
        assert client.get_provider_status() is ProviderStatus.FATAL
        assert client.get_boolean_details("f", False, CTX).error_code == ErrorCode.PROVIDER_FATAL
        details = await client.get_boolean_details_async("f", False, CTX)
        assert details.error_code == ErrorCode.PROVIDER_FATAL
    expected = [("f", None, ErrorCode.PROVIDER_FATAL, None, {}, "user-7", ATTRS)] * 2
    assert queued(tel_h) == queued(tel_w) == expected


def test_short_circuit_hook_stands_aside_once_the_provider_was_reached(
    make_telemetry: MakeTelemetry,
) -> None:
    # The status may change between the wrapper's read and the SDK's: then the before
    # stage runs, the provider is called (and records), and this hook must not.
    tel = make_telemetry(autostart=False)
    hook = ShortCircuitHook(tel)
    ctx = HookContext("f", FlagType.BOOLEAN, False, CTX)
    hook.before(ctx, {})
    hook.finally_after(ctx, api.get_client().get_boolean_details("f", False), {})
    assert queued(tel) == []


# -- what only the hook sees; what the wrapper records instead ----------------------------------


def test_another_hooks_before_raising_is_seen_by_the_hook_only(
    make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    tel_h, client_h, _, tel_w, client_w, _ = twins(make_telemetry, hooks=[RaisingBefore()])
    with caplog.at_level(logging.CRITICAL, logger="openfeature"):
        for client in (client_h, client_w):
            details = client.get_boolean_details("f", False, CTX)
            assert (details.error_code, details.error_message) == (
                ErrorCode.GENERAL,
                "before failed",
            )
    assert queued(tel_h) == [("f", None, ErrorCode.GENERAL, "before failed", {}, "user-7", ATTRS)]
    assert queued(tel_w) == []  # the provider was never called: the wrapper saw nothing
    assert tel_w.stats().evaluations == 0


def test_an_after_hook_turning_success_into_error(
    make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    tel_h, client_h, _, tel_w, client_w, _ = twins(make_telemetry, hooks=[RaisingAfter()])
    with caplog.at_level(logging.CRITICAL, logger="openfeature"):
        for client in (client_h, client_w):
            assert client.get_boolean_details("f", False, CTX).error_code == ErrorCode.GENERAL
    assert queued(tel_h) == [("f", None, ErrorCode.GENERAL, "after failed", {}, "user-7", ATTRS)]
    assert queued(tel_w) == [ON]  # the provider's answer: a success


def test_context_added_by_before_hooks(make_telemetry: MakeTelemetry) -> None:
    tel_h, client_h, _, tel_w, client_w, _ = twins(make_telemetry, hooks=[AddingBefore()])
    for client in (client_h, client_w):
        assert client.get_boolean_value("f", False, CTX) is True
    # The hook reads the context as merged before the before hooks ran; the provider
    # (and so the wrapper) gets it with their additions.
    assert queued(tel_h) == [ON]
    assert queued(tel_w) == [(*ON[:5], "from-hook", {"plan": "pro", "added": 1})]


# -- both ways in at once: counted once, the hook wins --------------------------------------------


def both(make: MakeTelemetry, hooks: list[Hook] | None = None) -> tuple[Telemetry, Any]:
    tel = make(autostart=False)
    provider = Provider()
    api.set_provider_and_wait(flageval.instrument(provider, tel), domain="both")
    client = api.get_client("both")
    client.add_hooks([*(hooks or []), tel.hook])
    return tel, client


async def test_hook_and_wrapper_on_one_pipeline_count_once(
    make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    tel, client = both(make_telemetry)
    with caplog.at_level(logging.INFO, logger="flageval"):
        assert client.get_boolean_value("f", False, CTX) is True
        assert await client.get_boolean_value_async("f", False, CTX) is True
        assert client.get_boolean_details("missing", False, CTX).error_code
    assert queued(tel) == [
        ON,
        ON,
        (
            "missing",
            None,
            ErrorCode.FLAG_NOT_FOUND,
            "Flag 'missing' not found",
            {},
            "user-7",
            ATTRS,
        ),
    ]
    said = [r for r in caplog.records if "stands aside" in r.getMessage()]
    assert len(said) == 1  # said once, not per evaluation


def test_with_both_the_hooks_view_wins(
    make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    tel, client = both(make_telemetry, hooks=[RaisingAfter()])
    with caplog.at_level(logging.CRITICAL, logger="openfeature"):
        client.get_boolean_value("f", False, CTX)
    assert queued(tel) == [("f", None, ErrorCode.GENERAL, "after failed", {}, "user-7", ATTRS)]
    tel2, client2 = both(make_telemetry, hooks=[RaisingBefore()])
    with caplog.at_level(logging.CRITICAL, logger="openfeature"):
        client2.get_boolean_value("f", False, CTX)
    assert queued(tel2) == [("f", None, ErrorCode.GENERAL, "before failed", {}, "user-7", ATTRS)]


def test_with_both_a_short_circuit_counts_once(make_telemetry: MakeTelemetry) -> None:
    tel, client = both(make_telemetry)
    client.provider.provider.emit_provider_error(
        ProviderEventDetails(error_code=ErrorCode.PROVIDER_FATAL)
    )
    for _ in range(3):
        assert client.get_boolean_details("f", False, CTX).error_code == ErrorCode.PROVIDER_FATAL
    assert queued(tel) == [("f", None, ErrorCode.PROVIDER_FATAL, None, {}, "user-7", ATTRS)] * 3


def test_hook_and_wrapper_on_two_pipelines_each_count_once(make_telemetry: MakeTelemetry) -> None:
    tel_w, tel_h = make_telemetry(autostart=False), make_telemetry(autostart=False)
    api.set_provider_and_wait(flageval.instrument(Provider(), tel_w))
    client = api.get_client()
    client.add_hooks([tel_h.hook])
    client.get_boolean_value("f", False, CTX)
    assert queued(tel_w) == queued(tel_h) == [ON]


def test_both_at_once_from_many_threads_counts_each_evaluation_once(
    make_telemetry: MakeTelemetry,
) -> None:
    tel, client = both(make_telemetry)
    threads, per_thread = 8, 400
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait(30)
        for _ in range(per_thread):
            client.get_boolean_value("f", False, CTX)

    async def tasks() -> None:
        async def one() -> None:
            for _ in range(per_thread):
                await client.get_boolean_value_async("f", False, CTX)

        await asyncio.gather(*(one() for _ in range(4)))

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    asyncio.run(tasks())
    for t in pool:
        t.join(30)
    assert queued(tel) == [ON] * (threads * per_thread + 4 * per_thread)
