"""Defects a review found in the provider; each test failed before its fix."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, GeneralError
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider, _refresh
from flageval.ofrep import provider as provider_module

from .conftest import EventLog
from .helpers import answered, settled
from .ofrep_server import OFREPTestServer, Scripted, wait_until


def test_an_unexpected_fetch_exception_counts_as_a_failed_fetch_and_is_retried(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], monkeypatch: Any
) -> None:
    # A bug inside the fetch (not a network error) must not end the fetch runner: the
    # trigger is retried with the error backoff and the set_context future settles.
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    provider = make_provider(server.url, change_detection="none")
    api.set_provider_and_wait(provider)
    real = _refresh.fetch_bulk
    calls = {"n": 0}

    async def buggy_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug")
        return await real(*args, **kwargs)

    monkeypatch.setattr(_refresh, "fetch_bulk", buggy_once)
    before = provider.stats()
    future = provider.set_context(EvaluationContext("ann"))
    assert future.result(timeout=5.0) is False  # its fetch failed: settled, not hung
    client = api.get_client()
    # The retry (error backoff <= 0.2 s) fetches for "ann".
    wait_until(lambda: client.get_string_value("who", "") == "ann", what="retried fetch")
    after = provider.stats()
    assert after["fetch_internal_error"] == before["fetch_internal_error"] + 1
    assert after["fetches"] == before["fetches"] + 2
    assert answered(provider) >= 2  # the initial fetch and the retry


def test_an_initialize_that_times_out_keeps_going_and_emits_ready(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
    monkeypatch: Any,
) -> None:
    # README: any failed initialize other than 401/403 raises GeneralError, keeps
    # retrying in the background and emits READY on its first success.
    server.set_flag("a", 7)
    # initialize() waits timeout (2 s) + grace: a grace of -1.5 s makes it give up after
    # 0.5 s while the server still holds the fetch (which has 2 s to answer).
    monkeypatch.setattr(provider_module, "_START_GRACE_S", -1.5)
    provider = make_provider(server.url, timeout_ms=2000, change_detection="none")
    server.hold_fetches()
    with pytest.raises(GeneralError, match="did not finish in time"):
        api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_provider_status() == ProviderStatus.ERROR
    server.release_fetches()
    wait_until(lambda: client.get_provider_status() == ProviderStatus.READY, what="READY")
    assert client.get_integer_value("a", 0) == 7
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) == 1, what="READY event")


def test_a_stream_answering_401_is_fatal_and_stops_every_request(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    # OFREP: 401/403 are fatal. A stream that answers them is not retried forever.
    server.set_flag("a", True)
    provider = make_provider(server.url, poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    # The stream appears after initialize: an ERROR emitted while the SDK is still in
    # set_provider_and_wait would be overwritten by its READY status.
    server.event_streams = [server.sse_here()]
    server.sse_script.append(Scripted(401))
    provider.set_context(EvaluationContext("first"))
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1, what="ERROR event")
    assert events.of(ProviderEvent.PROVIDER_ERROR)[0].error_code == ErrorCode.PROVIDER_FATAL
    client = api.get_client()
    wait_until(lambda: client.get_provider_status() == ProviderStatus.FATAL, what="FATAL")
    count = len(server.all_requests())
    assert len(server.sse_requests()) == 1
    provider.set_context(EvaluationContext("second"))
    time.sleep(0.5)  # ten poll intervals, several reconnect delays (<= 0.2 s)
    assert len(server.all_requests()) == count


def test_a_stream_that_closes_after_a_keep_alive_still_backs_off(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    # A proxy that sends one keep-alive and closes: bytes arrived, but the connection
    # was no good. The backoff keeps growing (0.05 s doubling to 1.6 s here) instead of
    # restarting at the minimum, which reconnected (and re-fetched) every <= 0.05 s.
    server.set_flag("a", True)
    server.event_streams = [server.sse_here()]
    for _ in range(60):
        server.sse_script.append(
            Scripted(200, b": keep-alive\n\n", {"Content-Type": "text/event-stream"})
        )
    provider = make_provider(server.url, reconnect_min_s=0.05, reconnect_max_s=1.6)
    api.set_provider_and_wait(provider)
    wait_until(lambda: len(server.sse_requests()) >= 1, what="first stream request")
    first = server.sse_requests()[0].t
    time.sleep(1.6)
    window = [r for r in server.sse_requests() if r.t - first < 1.5]
    # Delays after attempts 0..4 are at least 0.025, 0.05, 0.1, 0.2, 0.4 s (the upper
    # half of 0.05 * 2**n): their sums reach 1.575 s at the sixth, so at most the first
    # connection and five reconnects fall in 1.5 s.
    assert len(window) <= 6, len(window)
    assert len(window) >= 2  # it does reconnect


def test_set_context_wins_over_a_racing_global_context_switch(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    # A resolve on another thread saw a new global context (while the provider still
    # followed it) and submits its switch just after set_context() submitted its own.
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    provider = make_provider(server.url, change_detection="none")
    api.set_provider_and_wait(provider)
    api.set_evaluation_context(EvaluationContext("global"))
    explicit = provider.set_context(EvaluationContext("mine"))
    provider._global_context_changed(api.get_evaluation_context())  # the racing resolve
    assert explicit.result(timeout=5.0) is True
    settled(provider, server)
    assert server.bulk_requests()[-1].json["context"]["targetingKey"] == "mine"
    assert provider.resolve_string_details("who", "").value == "mine"
