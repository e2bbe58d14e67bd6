"""Errors the protocol classifies differently.

A stream's 401/403 is fatal only when the stream was sent our credentials; a stream's
own token failure re-fetches the bulk evaluation (fresh stream URLs) with backoff. A 400
from the bulk endpoint is a configuration error: PROVIDER_FATAL at initialization.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ProviderFatalError
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import assert_backs_off, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until


def test_a_token_failure_on_another_origin_refetches_for_fresh_stream_urls(
    server: OFREPTestServer,
    other_server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
) -> None:
    server.set_flag("f", 1)
    # The stream lives on another origin: it is never sent our Authorization header.
    old = other_server.sse_here(query="token=expired")
    provider, client = start_with_stream(
        server, make_provider, [old], headers={"Authorization": "Bearer ours"}
    )
    assert "Authorization" not in other_server.sse_requests()[0].headers
    before = len(server.bulk_requests())
    # The channel token expires: the stream answers 401 from now on; the bulk answer
    # hands out a new stream URL.
    other_server.sse_script.extend([Scripted(401)] * 50)
    server.event_streams = [other_server.sse_here(query="token=fresh")]
    other_server.drop_streams()
    wait_until(lambda: provider.stats()["sse_token_rejected"] >= 1, what="token refused")
    wait_until(
        lambda: any(r.query == {"token": "fresh"} for r in other_server.sse_requests()),
        what="the fresh stream URL used",
    )
    other_server.sse_script.clear()
    wait_until(lambda: other_server.sse_connected == 1, what="fresh stream connected")
    refetches = server.bulk_requests()[before:]
    assert refetches and "If-None-Match" not in refetches[0].headers  # a 200 with URLs
    assert client.get_provider_status() == ProviderStatus.READY
    assert events.of(ProviderEvent.PROVIDER_ERROR) == []
    # And change detection works on the new stream.
    server.set_flag("f", 2)
    other_server.push(refetch(etag="v2"))
    wait_until(lambda: client.get_integer_value("f", 0) == 2, what="change seen")


def test_repeated_token_failures_refetch_no_faster_than_the_reconnect_backoff(
    server: OFREPTestServer,
    other_server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.set_flag("f", 1)
    other_server.sse_script.extend([Scripted(403)] * 100)
    server.event_streams = [other_server.sse_here(query="token=dead")]
    # reconnect backoff: upper half of 0.1 doubling to 0.8 -> >= 0.05, 0.1, 0.2, 0.4, 0.4
    provider = make_provider(server.url, reconnect_min_s=0.1, reconnect_max_s=0.8)
    api.set_provider_and_wait(provider)
    wait_until(lambda: provider.stats()["sse_token_rejected"] >= 5, what="five rejections")
    # The stream's attempts back off (waits of at least 0.05, 0.1, 0.2, 0.4 s)...
    assert_backs_off([r.t for r in other_server.sse_requests()[:5]], 0.1, 0.8)
    stats = provider.stats()
    # ...and each rejection asks for at most one bulk re-fetch.
    assert len(server.bulk_requests()) <= 1 + stats["sse_token_rejected"]
    assert stats["fetch_unauthorized"] == 0
    assert api.get_client().get_provider_status() in (ProviderStatus.READY, ProviderStatus.STALE)


def test_a_stream_on_our_origin_without_configured_headers_is_not_fatal_either(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider, client = start_with_stream(server, make_provider)
    server.sse_script.append(Scripted(401))
    server.drop_streams()
    wait_until(lambda: provider.stats()["sse_token_rejected"] == 1, what="token refused")
    wait_until(lambda: server.sse_connected == 1, what="reconnected")
    assert client.get_provider_status() == ProviderStatus.READY


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"errorCode": "INVALID_CONTEXT", "errorDetails": "no tenant"}', "INVALID_CONTEXT"),
        (b"<html>bad request</html>", "HTTP 400"),
    ],
)
def test_a_400_at_initialize_is_fatal_and_makes_no_further_request(
    body: bytes,
    message: str,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.script.append(Scripted(400, body, {"Content-Type": "application/json"}))
    provider = make_provider(server.url, change_detection="polling", poll_interval_s=0.05)
    with pytest.raises(ProviderFatalError, match=message):
        api.set_provider_and_wait(provider)
    assert api.get_client().get_provider_status() == ProviderStatus.FATAL
    time.sleep(0.3)  # six poll intervals, several retry delays
    assert len(server.all_requests()) == 1
    assert provider.stats()["fetch_status_400"] == 1


def test_a_400_once_live_values_are_served_keeps_them_and_retries(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    # Not fatal here: it answers one request (a context, a server bug), and the values
    # already served stay better than none.
    server.set_flag("f", 1)
    provider = make_provider(server.url, change_detection="none")
    provider.initialize(EvaluationContext())
    server.script.append(Scripted(400, b'{"errorCode": "PARSE_ERROR"}'))
    assert provider.set_context(EvaluationContext("bob")).result(5) is False
    assert provider.resolve_integer_details("f", 0).value == 1
    wait_until(lambda: provider.stats()["fetch_ok"] == 2, what="the retry's 200")
    assert provider.stats()["fetch_status_400"] == 1
