"""Defects a review found in the provider; each test failed before its fix."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext, get_evaluation_context
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, GeneralError
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider
from flageval.ofrep import provider as provider_module

from .conftest import EventLog
from .helpers import answered, assert_backs_off, settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until


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
    # OFREP: 401/403 are fatal. A stream sent our credentials that answers them is not
    # retried forever.
    server.set_flag("a", True)
    provider = make_provider(
        server.url, poll_interval_s=0.05, headers={"Authorization": "Bearer t"}
    )
    api.set_provider_and_wait(provider)
    # The stream appears after initialize.
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
    wait_until(lambda: len(server.sse_requests()) >= 6, what="six stream requests")
    # Delays after attempts 0..4 are at least 0.025, 0.05, 0.1, 0.2, 0.4 s (the upper
    # half of 0.05 * 2**n): growing, where a reset backoff would stay at 0.025-0.05 s.
    assert_backs_off([r.t for r in server.sse_requests()[:6]], 0.05, 1.6)


def test_set_context_wins_over_a_racing_global_context_switch(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], monkeypatch: Any
) -> None:
    # A resolve on another thread saw a new global context (while the provider still
    # followed it) and submits its switch just after set_context() submitted its own.
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    provider = make_provider(server.url, change_detection="none")
    api.set_provider_and_wait(provider)
    api.set_evaluation_context(EvaluationContext("global"))
    explicit: list[Future[bool]] = []
    real = get_evaluation_context

    def racing() -> EvaluationContext:
        # The resolve has found the provider following the global context; set_context()
        # lands now, before that resolve submits its switch.
        if not explicit:
            explicit.append(provider.set_context(EvaluationContext("mine")))
        return real()

    monkeypatch.setattr(provider_module, "get_evaluation_context", racing)
    provider.resolve_string_details("who", "")  # the racing resolve
    monkeypatch.setattr(provider_module, "get_evaluation_context", real)
    assert len(explicit) == 1
    assert explicit[0].result(timeout=5.0) is True
    settled(provider, server)
    assert server.bulk_requests()[-1].json["context"]["targetingKey"] == "mine"
    assert provider.resolve_string_details("who", "").value == "mine"


def test_an_answer_in_flight_when_a_stream_goes_fatal_reopens_no_stream(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    # FATAL is terminal: a bulk answer that arrives after a stream's 401 is counted but
    # changes nothing (it used to reconnect the streams it lists).
    server.set_flag("a", True)
    provider, client = start_with_stream(
        server, make_provider, headers={"Authorization": "Bearer t"}
    )
    server.hold_fetches()
    server.push(refetch(etag="e1"))
    wait_until(lambda: server.in_flight == 1, what="a fetch in flight")
    server.sse_script.extend([Scripted(401), Scripted(401)])
    server.drop_streams()
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1, what="ERROR event")
    streams_seen = len(server.sse_requests())
    server.set_flag("a", False)  # the late answer is a 200 listing the stream
    server.release_fetches()
    wait_until(lambda: answered(provider) == len(server.bulk_requests()), what="answer applied")
    time.sleep(0.3)  # several reconnect delays (<= 0.2 s)
    assert len(server.sse_requests()) == streams_seen
    assert len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1
    assert client.get_provider_status() == ProviderStatus.FATAL
    assert provider.stats()["fetch_ok"] == 2  # the start's and the one that came late


def test_a_provider_in_error_after_initialize_does_not_go_stale(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    # ERROR already says the values are not current; STALE would read as an improvement
    # (and its READY came on top of the recovery's READY: two in a row).
    server.set_flag("a", 1)
    server.script.extend([Scripted(500)] * 5)  # within the ceiling's burst of retries
    provider = make_provider(
        server.url, change_detection="polling", poll_interval_s=0.03, stale_after_s=0.05
    )
    with pytest.raises(GeneralError):
        api.set_provider_and_wait(provider)
    client = api.get_client()
    wait_until(lambda: client.get_provider_status() == ProviderStatus.READY, what="READY")
    assert provider.stats()["fetch_status_5xx"] == 5  # failing for well over 0.05 s
    time.sleep(0.2)
    assert events.of(ProviderEvent.PROVIDER_STALE) == []
    assert len(events.of(ProviderEvent.PROVIDER_READY)) == 1
