"""Review: nothing a server sends may stop change detection or the fetch task for good."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import GeneralError

from flageval._common import parse_retry_after
from flageval.ofrep import OFREPProvider
from flageval.ofrep._fetch import MAX_RETRY_AFTER_S
from flageval.ofrep._sse import SSEParser

from .helpers import settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until


def test_deeply_nested_event_data_does_not_kill_the_stream(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", True, "on")
    provider, _ = start_with_stream(server, make_provider)
    # 2,000 levels of nesting (4 kB): msgspec raises RecursionError, not DecodeError.
    server.push(("data: " + "[" * 2000 + "]" * 2000 + "\n\n").encode())
    wait_until(lambda: provider.stats()["sse_events"] >= 1, what="event read")
    before = settled(provider, server)
    server.set_flag("f", False, "off")
    server.push(refetch(etag="v2"))
    # The stream is still read: the refetch event arrives and the new value is served.
    wait_until(
        lambda: provider.resolve_boolean_details("f", True).value is False,
        what="refetch after the hostile event",
    )
    assert len(server.bulk_requests()) == before + 1
    assert provider.stats()["sse_malformed_events"] == 1


def test_huge_retry_field_does_not_kill_the_stream(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", True, "on")
    provider, _ = start_with_stream(server, make_provider)
    before = settled(provider, server)
    stats = provider.stats()
    # 5,000 ASCII digits: int() refuses strings over 4,300 digits with ValueError.
    server.push(b"retry: " + b"9" * 5000 + b"\n\n")
    server.set_flag("f", False, "off")
    server.push(refetch(etag="v2"))
    wait_until(
        lambda: provider.resolve_boolean_details("f", True).value is False,
        what="refetch after the huge retry field",
    )
    # The same stream read the refetch event after the field: not dropped, not
    # reconnected, and the event was the refetch (one bulk request more).
    after = provider.stats()
    assert after["sse_connects"] == stats["sse_connects"]
    assert after["sse_disconnects"] == stats["sse_disconnects"] == 0
    assert after["sse_refetch_events"] == stats["sse_refetch_events"] + 1
    assert len(server.bulk_requests()) == before + 1


def test_deeply_nested_bulk_body_is_a_failed_fetch_and_is_retried(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", True, "on")
    provider = make_provider(server.url, change_detection="none")
    server.script.append(Scripted(200, b"[" * 2000 + b"]" * 2000))
    with pytest.raises(GeneralError):
        provider.initialize(EvaluationContext())
    # Retried in the background (retry_min_s 0.05): the next answer is the good one.
    wait_until(lambda: provider.resolve_boolean_details("f", False).value is True, what="retry")
    assert provider.stats()["fetch_malformed"] == 1


def test_retry_after_with_many_digits_is_capped_not_an_error() -> None:
    assert parse_retry_after("9" * 5000, MAX_RETRY_AFTER_S) == 3600.0
    assert parse_retry_after("0" * 5000 + "7", MAX_RETRY_AFTER_S) == 7.0


def test_sse_retry_field_with_many_digits_is_read_as_a_long_delay() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: " + b"9" * 5000 + b"\n") == []
    assert parser.retry_ms == 10**15
    parser.feed(b"retry: " + b"0" * 5000 + b"1500\n")
    assert parser.retry_ms == 1500


def test_a_server_listing_many_streams_cannot_starve_bulk_fetches(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    from openfeature import api

    from flageval.ofrep._bulk import MAX_EVENT_STREAMS

    server.set_flag("a", 1)
    # 120 distinct streams: followed, they would hold all 100 of the session's
    # connections, and no bulk fetch could get one again.
    server.event_streams = [server.sse_here(query=f"n={i}") for i in range(120)]
    provider = make_provider(server.url, timeout_ms=2000)
    api.set_provider_and_wait(provider)
    wait_until(lambda: server.sse_connected == MAX_EVENT_STREAMS, what="streams")
    stats = provider.stats()
    assert stats["stream_entries_invalid"] == 120 - MAX_EVENT_STREAMS
    server.set_flag("a", 2)
    server.push(refetch(etag="v2"))
    wait_until(lambda: provider.resolve_integer_details("a", 0).value == 2, what="refetch")
    assert provider.stats()["fetch_timeout"] == 0
    assert server.sse_connected == MAX_EVENT_STREAMS
