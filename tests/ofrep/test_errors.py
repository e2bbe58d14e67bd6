"""Status handling: 429 and its Retry-After forms, 401/403 fatal, other failures."""

from __future__ import annotations

import email.utils
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until


def _retry_after(form: str) -> tuple[str, float | None]:
    """(header, wall-clock time before which nothing may be sent, if absolute)."""
    if form == "seconds":
        return "1", None
    target = math.ceil(time.time()) + 1
    if form == "http-date":
        return email.utils.formatdate(target, usegmt=True), float(target)
    return datetime.fromtimestamp(target, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), float(target)


@pytest.mark.parametrize("form", ["seconds", "http-date", "iso8601"])
def test_429_blocks_every_kind_of_request_until_retry_after(
    form: str, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    server.flags_for_context = lambda ctx: (
        {"who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}}
    )
    provider, client = start_with_stream(server, make_provider, poll_interval_s=0.05)
    header, not_before = _retry_after(form)
    server.script.append(Scripted(429, headers={"Retry-After": header}))
    first = len(server.all_requests())
    server.push(refetch(etag="e1"))
    wait_until(lambda: provider.stats()["fetch_rate_limited"] == 1, what="429 applied")
    rejected = server.all_requests()[first]
    assert rejected.query == {"flagConfigEtag": "e1"}
    if not_before is None:
        not_before = rejected.t + 1.0

    # Every trigger there is, while blocked: an event, a context change, a lost stream
    # (reconnect + polling fallback), a poll tick.
    server.push(refetch(etag="e2"))
    provider.set_context(EvaluationContext("bob"))
    server.drop_streams()
    wait_until(lambda: client.get_string_value("who", "") == "bob", timeout_s=5.0)
    settled(provider, server)

    later = server.all_requests()[first + 1 :]
    assert later, "traffic resumed after the block"
    # Same machine, same clock: nothing may arrive before the Retry-After time.
    assert min(r.t for r in later) >= not_before - 0.02
    assert {r.path for r in later} >= {"/ofrep/v1/evaluate/flags", "/sse/main"}


def test_429_retries_the_rejected_fetch_once_the_wait_is_over(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    _provider, client = start_with_stream(server, make_provider)
    server.script.append(Scripted(429, headers={"Retry-After": "1"}))
    first = len(server.bulk_requests())
    server.set_flag("a", 2)
    server.push(refetch(etag="e1"))
    wait_until(lambda: client.get_integer_value("a", 0) == 2, timeout_s=10.0)
    rejected, retried = server.bulk_requests()[first:]
    assert retried.query == rejected.query == {"flagConfigEtag": "e1"}
    assert retried.t >= rejected.t + 1.0 - 0.02


def test_429_on_a_stream_connect_blocks_bulk_requests_too(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    server.flags_for_context = lambda ctx: (
        {"who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}}
    )
    provider, client = start_with_stream(server, make_provider)
    server.sse_script.append(Scripted(429, headers={"Retry-After": "1"}))
    first = len(server.all_requests())
    server.drop_streams()
    wait_until(lambda: provider.stats()["fetch_rate_limited"] == 1)
    rejected = server.all_requests()[first]
    assert rejected.path == "/sse/main"
    # Nothing else was in flight when the 429 came; now a context change wants a fetch.
    assert len(server.all_requests()) == first + 1
    provider.set_context(EvaluationContext("carl"))
    wait_until(lambda: client.get_string_value("who", "") == "carl", timeout_s=10.0)
    later = server.all_requests()[first + 1 :]
    assert min(r.t for r in later) >= rejected.t + 1.0 - 0.02


def test_a_shorter_retry_after_never_shortens_a_longer_wait(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider)
    server.hold_fetches()
    server.push(refetch(etag="e1"))
    wait_until(lambda: server.in_flight == 1, what="a bulk fetch in flight")
    # Meanwhile the stream is lost and its reconnect is told to wait 2 s...
    server.sse_script.append(Scripted(429, headers={"Retry-After": "2"}))
    server.drop_streams()
    wait_until(lambda: provider.stats()["fetch_rate_limited"] == 1, what="the stream's 429")
    long_wait = server.sse_requests()[-1]
    # ...then the fetch in flight is told to wait 0 s: the longer wait stands.
    server.script.append(Scripted(429, headers={"Retry-After": "0"}))
    server.release_fetches()
    wait_until(lambda: provider.stats()["fetch_rate_limited"] == 2, what="the fetch's 429")
    seen = len(server.all_requests())
    wait_until(lambda: len(server.all_requests()) > seen, timeout_s=10, what="traffic again")
    assert server.all_requests()[seen].t >= long_wait.t + 2.0 - 0.02


def test_401_is_fatal_and_stops_every_request(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", True)
    provider, client = start_with_stream(server, make_provider, poll_interval_s=0.05)
    server.script.append(Scripted(401))
    server.push(refetch())
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1, what="ERROR event")
    assert events.of(ProviderEvent.PROVIDER_ERROR)[0].error_code == ErrorCode.PROVIDER_FATAL
    assert client.get_provider_status() == ProviderStatus.FATAL
    assert client.get_boolean_details("a", False).error_code == ErrorCode.PROVIDER_FATAL
    wait_until(lambda: server.sse_connected == 0, what="stream closed")

    count = len(server.all_requests())
    provider.set_context(EvaluationContext("someone"))
    server.push(refetch())
    time.sleep(0.4)  # eight poll intervals
    assert len(server.all_requests()) == count


def test_403_at_initialize_raises_fatal_and_leaves_no_thread(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.script.append(Scripted(403))
    provider = make_provider(server.url, change_detection="polling", poll_interval_s=0.05)
    with pytest.raises(ProviderFatalError):
        api.set_provider_and_wait(provider)
    assert api.get_client().get_provider_status() == ProviderStatus.FATAL
    assert not [t for t in threading.enumerate() if t.name == "flageval-ofrep"]
    time.sleep(0.2)
    assert len(server.all_requests()) == 1


@pytest.mark.parametrize(
    ("answer", "stat"),
    [
        (Scripted(500, b'{"errorDetails": "boom"}'), "fetch_status_5xx"),
        (Scripted(400, b'{"errorCode": "PARSE_ERROR", "errorDetails": "x"}'), "fetch_status_400"),
        (Scripted(422, b'{"detail": "unprocessable"}'), "fetch_status_other"),
        (Scripted(404, b""), "fetch_status_other"),
        (Scripted(200, b'{"flags": "not a list"}'), "fetch_malformed"),
        (Scripted(200, b"<html>proxy error</html>"), "fetch_malformed"),
    ],
)
def test_failures_keep_the_last_good_evaluation_then_retry(
    answer: Scripted,
    stat: str,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    caplog: pytest.LogCaptureFixture,
    events: EventLog,
) -> None:
    server.set_flag("a", 1)
    provider, client = start_with_stream(server, make_provider, retry_min_s=0.3, retry_max_s=0.3)
    server.set_flag("a", 2)
    server.script.extend([answer, answer])
    caplog.set_level(logging.WARNING, logger="flageval.ofrep")
    server.push(refetch(etag="cfg-2"))
    wait_until(lambda: provider.stats()[stat] == 1)
    assert client.get_integer_value("a", 0) == 1  # last good evaluation still served
    assert client.get_provider_status() == ProviderStatus.READY
    # the retry (after 0.15-0.3 s) fails again, the one after succeeds
    wait_until(lambda: client.get_integer_value("a", 0) == 2, what="recovery")
    assert provider.stats()[stat] == 2
    retried = server.bulk_requests()[-1]
    assert retried.query == {"flagConfigEtag": "cfg-2"}  # the unanswered trigger, kept
    warnings = [r for r in caplog.records if r.name == "flageval.ofrep"]
    assert len(warnings) == 1  # rate-limited: one record for the two failures
    assert events.of(ProviderEvent.PROVIDER_ERROR) == []


def test_failed_initialize_raises_then_recovers_with_ready(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", 1)
    server.script.append(Scripted(500))
    provider = make_provider(server.url)
    with pytest.raises(GeneralError):
        api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_provider_status() == ProviderStatus.ERROR
    wait_until(lambda: client.get_provider_status() == ProviderStatus.READY, what="READY")
    assert client.get_integer_value("a", 0) == 1
    # The SDK sets the status before it runs the handlers (on the provider's thread).
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) >= 1, what="READY event")
    time.sleep(0.1)  # a second READY would arrive right behind the first
    assert len(events.of(ProviderEvent.PROVIDER_READY)) == 1


def test_initialize_fails_on_timeout_and_on_refused_connection(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.hold_fetches()
    slow = make_provider(server.url, timeout_ms=200)
    # The request's own timeout, not initialize()'s wait (timeout + 5 s), ended it.
    with pytest.raises(GeneralError, match=r"no answer within 0\.2 s"):
        slow.initialize(EvaluationContext())
    server.release_fetches()

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = make_provider(f"http://127.0.0.1:{port}")
    with pytest.raises(GeneralError, match=r"ClientConnectorError|ConnectionRefused|OSError"):
        refused.initialize(EvaluationContext())
    assert refused.stats()["fetch_network_error"] == 1
