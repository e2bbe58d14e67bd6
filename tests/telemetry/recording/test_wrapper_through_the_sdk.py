"""``flageval.instrument()``: a faithful provider that records every evaluation it answers.

Driven through the real OpenFeature SDK (InMemoryProvider, the OFREP provider against
the scriptable server, a provider with sync resolvers only). Expected values come from
the flags, contexts and errors each test sets up, or from what the SDK answered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, FlagNotFoundError, ProviderFatalError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, Reason
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider, Metadata, ProviderStatus
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from openfeature.track import TrackingEventDetails

import flageval
from flageval import Telemetry
from flageval._instrumented import InstrumentedProvider
from flageval.ofrep import OFREPProvider
from tests.intake import Intake
from tests.ofrep.ofrep_server import OFREPTestServer, refetch, wait_until

MakeTelemetry = Callable[..., Telemetry]
CTX = EvaluationContext("user-7", {"plan": "pro", "seats": 3})


def queued(tel: Telemetry) -> list[tuple[Any, ...]]:
    """What reached the hand-off (an unstarted pipeline keeps it), without the time."""
    assert tel.handoff is not None
    return [snap[:7] for snap in tel.handoff.queue]


def flags() -> dict[str, InMemoryFlag[Any]]:
    return {
        "b": InMemoryFlag("on", {"on": True, "off": False}, flag_metadata={"allocationKey": "a1"}),
        "s": InMemoryFlag("blue", {"blue": "#00f"}),
        "i": InMemoryFlag("ten", {"ten": 10}),
        "f": InMemoryFlag("half", {"half": 0.5}),
        "o": InMemoryFlag("obj", {"obj": {"k": [1, 2]}}),
    }


class Recording(AbstractProvider):
    """Records its life cycle calls; emits events on demand; resolves every flag "on"."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []
        self.hook = _CountingHook()

    def get_metadata(self) -> Metadata:
        return Metadata(name="recording")

    def get_provider_hooks(self) -> list[Hook]:
        return [self.hook]

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        self.calls.append(("initialize", evaluation_context))

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        call = ("track", tracking_event_name, evaluation_context, tracking_event_details)
        self.calls.append(call)

    def _on(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> Any:
        return FlagResolutionDetails(value=default_value, variant="on", reason=Reason.STATIC)

    resolve_boolean_details = _on  # type: ignore[assignment]
    resolve_string_details = _on  # type: ignore[assignment]
    resolve_integer_details = _on  # type: ignore[assignment]
    resolve_float_details = _on  # type: ignore[assignment]
    resolve_object_details = _on  # type: ignore[assignment]


class _CountingHook(Hook):
    def __init__(self) -> None:
        self.finally_calls = 0

    def finally_after(self, hook_context: HookContext, details: Any, hints: HookHints) -> None:
        self.finally_calls += 1


class SyncOnly:
    """A provider by the protocol alone (no AbstractProvider): sync resolvers only."""

    def get_metadata(self) -> Metadata:
        return Metadata(name="sync-only")

    def get_provider_hooks(self) -> list[Hook]:
        return []

    def _resolve(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> Any:
        if flag_key == "missing":
            return FlagResolutionDetails(
                value=default_value,
                error_code=ErrorCode.FLAG_NOT_FOUND,
                error_message="no such flag",
            )
        return FlagResolutionDetails(
            value=default_value, variant=f"v-{flag_key}", flag_metadata={"m": 1}
        )

    resolve_boolean_details = _resolve
    resolve_string_details = _resolve
    resolve_integer_details = _resolve
    resolve_float_details = _resolve
    resolve_object_details = _resolve


# -- the provider's face ------------------------------------------------------------------


def test_metadata_provider_hooks_lifecycle_and_track_reach_the_wrapped_provider(
    make_telemetry: MakeTelemetry,
) -> None:
    tel = make_telemetry(autostart=False)
    inner = Recording()
    wrapped = flageval.instrument(inner, telemetry=tel)
    api.set_evaluation_context(EvaluationContext("global-user"))
    api.set_provider_and_wait(wrapped)
    assert inner.calls == [("initialize", EvaluationContext("global-user"))]
    client = api.get_client()
    assert api.get_provider_metadata() == Metadata(name="recording")
    assert client.get_provider_status() is ProviderStatus.READY
    assert wrapped.get_provider_hooks() == [inner.hook]
    assert client.get_boolean_value("x", False, CTX) is False
    assert inner.hook.finally_calls == 1  # the SDK ran the wrapped provider's hook
    details = TrackingEventDetails(value=2.0, attributes={"a": 1})
    client.track("bought", CTX, details)
    assert inner.calls[1][:2] == ("track", "bought") and inner.calls[1][3] is details
    assert inner.calls[1][2].targeting_key == "user-7"
    api.clear_providers()
    wait_until(lambda: ("shutdown",) in inner.calls)
    assert queued(tel) == [("x", "on", None, None, {}, "user-7", {"plan": "pro", "seats": 3})]


def test_events_of_the_wrapped_provider_are_the_wrappers(make_telemetry: MakeTelemetry) -> None:
    inner = Recording()
    wrapped = flageval.instrument(inner, telemetry=make_telemetry(autostart=False))
    api.set_provider_and_wait(wrapped, domain="ev")
    client = api.get_client("ev")
    seen: list[tuple[ProviderEvent, EventDetails]] = []
    for event in (ProviderEvent.PROVIDER_STALE, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED):
        client.add_handler(event, lambda d, e=event: seen.append((e, d)))

    inner.emit_provider_stale(ProviderEventDetails(message="old data"))
    assert client.get_provider_status() is ProviderStatus.STALE
    inner.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=["x"]))
    inner.emit_provider_error(ProviderEventDetails(error_code=ErrorCode.GENERAL))
    assert client.get_provider_status() is ProviderStatus.ERROR
    inner.emit_provider_ready(ProviderEventDetails())
    assert client.get_provider_status() is ProviderStatus.READY
    inner.emit_provider_error(ProviderEventDetails(error_code=ErrorCode.PROVIDER_FATAL))
    assert client.get_provider_status() is ProviderStatus.FATAL
    # The SDK keys status by the registered object: the wrapped one was never registered.
    assert api.get_client("ev").provider is wrapped

    wait_until(lambda: len(seen) == 2)  # handlers run on the SDK's executor
    assert [(e, d.provider_name) for e, d in seen] == [
        (ProviderEvent.PROVIDER_STALE, "recording"),
        (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, "recording"),
    ]
    assert seen[1][1].flags_changed == ["x"]


def test_a_failing_initialize_is_the_wrappers_failure(make_telemetry: MakeTelemetry) -> None:
    class Fatal(Recording):
        def initialize(self, evaluation_context: EvaluationContext) -> None:
            raise ProviderFatalError("cannot start")

    with pytest.raises(ProviderFatalError):
        api.set_provider_and_wait(flageval.instrument(Fatal(), make_telemetry(autostart=False)))
    assert api.get_client().get_provider_status() is ProviderStatus.FATAL


def test_the_wrapped_providers_own_api_is_reachable(make_telemetry: MakeTelemetry) -> None:
    class WithExtras(Recording):
        flavour = "plain"

        def ping(self) -> str:
            return "pong"

    inner = WithExtras()
    wrapped = flageval.instrument(inner, make_telemetry(autostart=False))
    assert wrapped.provider is inner
    assert wrapped.ping() == "pong" and wrapped.flavour == "plain"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        wrapped._secret  # type: ignore[attr-defined]  # noqa: B018 - private: never forwarded
    with pytest.raises(AttributeError):
        wrapped.nothing_like_this  # type: ignore[attr-defined]  # noqa: B018


def test_not_a_provider_is_refused(make_telemetry: MakeTelemetry) -> None:
    class BooleansOnly:
        def get_metadata(self) -> Metadata:
            return Metadata(name="half")

        def resolve_boolean_details(
            self, flag_key: str, default_value: bool, evaluation_context: Any = None
        ) -> Any:
            return FlagResolutionDetails(value=default_value)

    tel = make_telemetry(autostart=False)
    with pytest.raises(TypeError, match="missing: resolve_string_details, resolve_integer"):
        flageval.instrument(BooleansOnly(), tel)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="missing: resolve_boolean_details"):
        flageval.instrument(None, tel)  # type: ignore[arg-type]


def test_wrapping_twice_into_one_pipeline_counts_once(make_telemetry: MakeTelemetry) -> None:
    tel, other = make_telemetry(autostart=False), make_telemetry(autostart=False)
    once = flageval.instrument(InMemoryProvider(flags()), tel)
    assert flageval.instrument(once, tel) is once
    into_other = flageval.instrument(once, other)
    assert isinstance(into_other, InstrumentedProvider) and into_other.provider is once


def test_default_pipeline_is_the_hooks(monkeypatch: pytest.MonkeyPatch, intake: Intake) -> None:
    monkeypatch.setenv("DD_TRACE_AGENT_URL", intake.url)
    monkeypatch.setenv("DD_FLAGGING_EVALUATION_COUNTS_ENABLED", "true")
    wrapped = flageval.instrument(InMemoryProvider(flags()))
    assert wrapped.handoff is flageval.default_telemetry().handoff
    assert wrapped.handoff is flageval.FlagEvalHook()._handoff


# -- what is recorded -------------------------------------------------------------------------


def test_every_type_sync_and_async_records_what_the_sdk_answered(
    make_telemetry: MakeTelemetry,
) -> None:
    tel = make_telemetry(autostart=False)
    api.set_provider_and_wait(flageval.instrument(InMemoryProvider(flags()), tel))
    client = api.get_client()
    calls = [
        (client.get_boolean_details, "b", False),
        (client.get_string_details, "s", ""),
        (client.get_integer_details, "i", 0),
        (client.get_float_details, "f", 0.0),
        (client.get_object_details, "o", {}),
        (client.get_boolean_details, "nope", False),  # FLAG_NOT_FOUND
        (client.get_integer_details, "s", 0),  # a str for an int: TYPE_MISMATCH
        (client.get_float_details, "i", 0.0),  # an int for a float: TYPE_MISMATCH
        (client.get_object_details, "b", {}),
    ]
    answered = [get(key, default, CTX) for get, key, default in calls]

    async def run_async() -> list[Any]:
        out = []
        for get, key, default in calls:
            out.append(await getattr(client, get.__name__ + "_async")(key, default, CTX))
        return out

    answered += asyncio.run(run_async())
    attrs = {"plan": "pro", "seats": 3}
    # What a hook's finally_after would have read off the SDK's answer, field by field.
    expected = [
        (d.flag_key, d.variant, d.error_code, d.error_message, d.flag_metadata, "user-7", attrs)
        for d in answered
    ]
    assert queued(tel) == expected
    codes = [d.error_code for d in answered[:9]]
    assert codes == [None] * 5 + [ErrorCode.FLAG_NOT_FOUND] + [ErrorCode.TYPE_MISMATCH] * 3
    assert answered[6].error_message == "Expected type <class 'int'> but got <class 'str'>"


def test_sync_only_provider_serves_and_records_async_evaluations(
    make_telemetry: MakeTelemetry,
) -> None:
    tel = make_telemetry(autostart=False)
    api.set_provider_and_wait(flageval.instrument(SyncOnly(), tel))  # type: ignore[arg-type]
    client = api.get_client()

    async def run() -> tuple[str, Any]:
        return (
            await client.get_string_value_async("color", "red", CTX),
            await client.get_boolean_details_async("missing", True, CTX),
        )

    value, missing = asyncio.run(run())
    assert value == "red" and missing.error_code == ErrorCode.FLAG_NOT_FOUND
    assert client.get_integer_value("n", 4, CTX) == 4
    attrs = {"plan": "pro", "seats": 3}
    assert queued(tel) == [
        ("color", "v-color", None, None, {"m": 1}, "user-7", attrs),
        ("missing", None, ErrorCode.FLAG_NOT_FOUND, "no such flag", {}, "user-7", attrs),
        ("n", "v-n", None, None, {"m": 1}, "user-7", attrs),
    ]


def test_abstract_provider_with_sync_resolvers_only_serves_async_evaluations(
    make_telemetry: MakeTelemetry,
) -> None:
    tel = make_telemetry(autostart=False)
    api.set_provider_and_wait(flageval.instrument(Recording(), tel))  # async: the defaults
    client = api.get_client()

    async def run() -> list[Any]:
        return [await client.get_float_details_async("r", 1.5, CTX) for _ in range(2)]

    answered = asyncio.run(run())
    assert [(d.value, d.variant) for d in answered] == [(1.5, "on")] * 2
    assert queued(tel) == [("r", "on", None, None, {}, "user-7", CTX.attributes)] * 2


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (Boom("backend down"), ErrorCode.GENERAL, "backend down"),
        (FlagNotFoundError("gone"), ErrorCode.FLAG_NOT_FOUND, "gone"),
    ],
)
def test_a_provider_that_raises_is_recorded_and_the_error_passes_unchanged(
    make_telemetry: MakeTelemetry,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    code: ErrorCode,
    message: str,
) -> None:
    class Raising(SyncOnly):
        def _resolve(
            self,
            flag_key: str,
            default_value: Any,
            evaluation_context: EvaluationContext | None = None,
        ) -> Any:
            raise error

        resolve_boolean_details = _resolve
        resolve_string_details = _resolve
        resolve_integer_details = _resolve
        resolve_float_details = _resolve
        resolve_object_details = _resolve

    tel = make_telemetry(autostart=False)
    wrapped = flageval.instrument(Raising(), tel)  # type: ignore[arg-type]
    with pytest.raises(type(error)) as raised:
        wrapped.resolve_boolean_details("direct", False, CTX)
    assert raised.value is error
    api.set_provider_and_wait(wrapped)
    with caplog.at_level("CRITICAL", logger="openfeature"):  # the SDK logs a traceback
        details = api.get_client().get_boolean_details("via-sdk", True, CTX)
    assert (details.error_code, details.error_message, details.value) == (code, message, True)
    attrs = {"plan": "pro", "seats": 3}
    assert queued(tel) == [
        ("direct", None, code, message, {}, "user-7", attrs),
        ("via-sdk", None, code, message, {}, "user-7", attrs),
    ]


def test_killswitch_delegates_and_records_nothing(make_telemetry: MakeTelemetry) -> None:
    off = make_telemetry(enabled=False)
    inner = InMemoryProvider(flags())
    wrapped = flageval.instrument(inner, off)
    # Nothing of ours between the SDK and the provider: its own bound methods.
    assert wrapped.resolve_boolean_details == inner.resolve_boolean_details
    assert wrapped.get_provider_hooks == inner.get_provider_hooks
    api.set_provider_and_wait(wrapped)
    assert api.get_client().get_boolean_value("b", False, CTX) is True
    assert off.handoff is None and off.stats().evaluations == 0


def test_records_reach_the_intake_from_many_threads_exactly(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    tel = make_telemetry()
    api.set_provider_and_wait(flageval.instrument(InMemoryProvider(flags()), tel))
    client = api.get_client()
    threads, per_thread = 8, 500
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait(30)
        for i in range(per_thread):
            client.get_boolean_value("b", False, EvaluationContext(f"u{n}", {"i": i % 2}))

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert tel.flush(10.0)
    rows = intake.rows()
    assert sum(r["evaluation_count"] for r in rows) == threads * per_thread
    assert len(rows) == threads * 2  # per targeting key and context
    assert {r["allocation"]["key"] for r in rows} == {"a1"}
    stats = tel.stats()
    assert stats.evaluations == stats.evaluations_posted == threads * per_thread
    assert stats.conserved and not stats.dropped


# -- the OFREP provider, wrapped ---------------------------------------------------------------


def test_ofrep_provider_wrapped_serves_records_and_forwards_its_events(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    server = OFREPTestServer().start()
    inner = OFREPProvider(
        base_url=server.url, reconnect_min_s=0.05, reconnect_max_s=0.2, retry_min_s=0.05
    )
    try:
        server.set_flag("checkout", True, "on", metadata={"allocationKey": "rollout-20"})
        server.event_streams = [server.sse_here()]
        tel = make_telemetry()
        wrapped = flageval.instrument(inner, tel)
        api.set_evaluation_context(EvaluationContext("user-1", {"plan": "pro"}))
        api.set_provider_and_wait(wrapped)
        client = api.get_client()
        changed = threading.Event()
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, lambda d: changed.set())
        for _ in range(3):
            assert client.get_boolean_value("checkout", False) is True
        assert wrapped.stats()["fetch_ok"] >= 1  # the OFREP provider's own API

        wait_until(lambda: server.sse_connected == 1)
        server.set_flag("checkout", False, "off", metadata={"allocationKey": "control"})
        server.push(refetch())
        assert changed.wait(30.0)  # emitted by the OFREP provider, heard as the wrapper's
        assert client.get_boolean_value("checkout", True) is False

        async def run() -> bool:
            return await client.get_boolean_value_async("checkout", True)

        assert asyncio.run(run()) is False
        assert tel.flush(10.0)
        counts = {
            (r["variant"]["key"], r["allocation"]["key"]): r["evaluation_count"]
            for r in intake.rows()
        }
        assert counts == {("on", "rollout-20"): 3, ("off", "control"): 2}
        assert {r["targeting_key"] for r in intake.rows()} == {"user-1"}
    finally:
        api.clear_providers()
        inner.shutdown()
        server.stop()


def test_flag_type_table_is_the_sdks() -> None:
    from openfeature.client import _typecheck_flag_value

    from flageval._record import TYPES, mismatch_message

    samples = [True, "s", 3, 2.5, {"k": 1}, [1], None]
    for flag_type in FlagType:
        for value in samples:
            err = _typecheck_flag_value(value, flag_type)
            mine = (
                None
                if isinstance(value, TYPES[flag_type])
                else mismatch_message(TYPES[flag_type], value)
            )
            assert (err.error_message if err else None) == mine, (flag_type, value)


def test_the_wrapped_provider_is_called_as_the_sdk_calls_it(
    make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    # By keyword: a provider whose parameters are named otherwise fails the same way
    # wrapped or not (a positional call would have hidden that).
    class OtherNames(Recording):
        def resolve_boolean_details(self, key: str, default: bool, ctx: Any = None) -> Any:  # type: ignore[override]
            return FlagResolutionDetails(value=default, variant="on")

    tel = make_telemetry(autostart=False)
    api.set_provider_and_wait(OtherNames(), domain="plain")
    api.set_provider_and_wait(flageval.instrument(OtherNames(), tel), domain="wrapped")
    with caplog.at_level("CRITICAL", logger="openfeature"):
        plain = api.get_client("plain").get_boolean_details("x", True, CTX)
        wrapped = api.get_client("wrapped").get_boolean_details("x", True, CTX)
    assert plain.error_code == wrapped.error_code == ErrorCode.GENERAL
    assert wrapped.error_message == plain.error_message
    assert queued(tel) == [
        ("x", None, ErrorCode.GENERAL, plain.error_message, {}, "user-7", CTX.attributes)
    ]


def test_past_half_full_each_recording_gives_the_gil_up_once(
    make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A starved worker (8 threads through the wrapper outpace its GIL share) would let
    # the queue overflow; past half full each producer yields the GIL once, never waits.
    import flageval._record as record_module

    yields: list[float] = []
    monkeypatch.setattr(record_module.time, "sleep", yields.append)
    tel = make_telemetry(autostart=False, queue_size=8)  # no worker: the queue only fills
    api.set_provider_and_wait(flageval.instrument(InMemoryProvider(flags()), tel))
    client = api.get_client()
    for _ in range(10):
        assert client.get_boolean_value("b", False, CTX) is True
    assert len(queued(tel)) == 8
    assert yields == [0, 0, 0]  # the appends made at depths 5, 6 and 7 (half is 4)
    assert tel.stats().dropped == {"queue_overflow": 2}
