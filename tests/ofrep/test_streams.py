"""Event streams against the project's own scriptable OFREP + SSE server."""

from __future__ import annotations

import time
from collections.abc import Callable

from openfeature.event import ProviderEvent

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import assert_backs_off, settled, start_with_stream
from .ofrep_server import OFREPTestServer, refetch, sse_event, wait_until


def test_refetch_event_sends_metadata_verbatim_with_if_none_match(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("banner", False, "off")
    server.set_flag("other", 1)
    _provider, client = start_with_stream(server, make_provider)
    etag = server.bulk_requests()[-1].headers.get("If-None-Match")
    assert etag is not None  # the post-connect re-fetch is conditional

    server.set_flag("banner", True, "on")
    sse_etag = '"550e8400+e29b/41d4 a716"'
    server.push(refetch(etag=sse_etag, last_modified=1771622898, id="evt-1"))
    wait_until(lambda: client.get_boolean_value("banner", False) is True, what="new value")

    last = server.bulk_requests()[-1]
    assert last.query == {"flagConfigEtag": sse_etag, "flagConfigLastModified": "1771622898"}
    assert last.headers["If-None-Match"] == etag
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 1)
    assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == ["banner"]

    # A date-string lastModified also goes through untouched; no etag: no etag param.
    n = len(server.bulk_requests())
    server.push(refetch(last_modified="2026-02-20T21:28:18Z"))
    wait_until(lambda: len(server.bulk_requests()) == n + 1)
    assert server.bulk_requests()[-1].query == {"flagConfigLastModified": "2026-02-20T21:28:18Z"}


def test_identical_200_and_304_emit_no_configuration_change(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider)
    not_modified = provider.stats()["fetch_not_modified"]  # the post-connect fetch's
    server.push(refetch(etag="x"))  # -> 304
    wait_until(lambda: provider.stats()["fetch_not_modified"] == not_modified + 1, what="304")
    server.event_streams = [server.sse_here(), server.sse_here("second")]
    server.push(refetch(etag="y"))  # -> 200 with the same flags (new streams only)
    wait_until(lambda: provider.stats()["fetch_ok"] == 2, what="200")
    settled(provider, server)
    time.sleep(0.05)  # a window for what must not happen (handlers run on a pool)
    assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED) == []


def test_burst_of_events_during_a_fetch_collapses_into_one_follow_up(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider)
    before = len(server.bulk_requests())

    server.hold_fetches()
    server.push(refetch(etag="e0"))
    wait_until(lambda: server.in_flight == 1, what="first fetch in flight")
    for i in range(1, 10):
        server.push(refetch(etag=f"e{i}", last_modified=i))
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 10, what="all events read")
    server.release_fetches()

    total = settled(provider, server)
    assert total == before + 2  # the in-flight one, then exactly one follow-up
    requests = server.bulk_requests()
    assert requests[before].query == {"flagConfigEtag": "e0"}
    # the follow-up carries the newest event's metadata
    assert requests[before + 1].query == {"flagConfigEtag": "e9", "flagConfigLastModified": "9"}
    # e1..e9: held and merged by the coalescer (8 merges), then one request
    assert provider.stats()["sse_events_coalesced"] == 8


def test_304_keeps_the_streams_and_a_200_without_streams_closes_them(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, client = start_with_stream(server, make_provider)
    connects = len(server.sse_requests())

    for i in range(3):
        server.push(refetch(etag=f"same-{i}"))
        wait_until(lambda i=i: provider.stats()["sse_refetch_events"] == i + 1)
        settled(provider, server)
    assert provider.stats()["fetch_not_modified"] == 4  # post-connect + 3 events: all 304
    assert server.sse_connected == 1
    assert len(server.sse_requests()) == connects  # kept, not reconnected

    server.event_streams = None
    server.set_flag("a", 2)
    server.push(refetch())
    wait_until(lambda: client.get_integer_value("a", 0) == 2)
    wait_until(lambda: server.sse_connected == 0, what="stream closed after 200 without it")
    time.sleep(0.2)
    assert len(server.sse_requests()) == connects


def test_stream_set_follows_the_latest_200(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, client = start_with_stream(
        server, make_provider, [server.sse_here("A"), server.sse_here("B")]
    )
    assert sorted(r.path for r in server.sse_requests()) == ["/sse/A", "/sse/B"]

    server.event_streams = [server.sse_here("A"), server.sse_here("C")]
    server.set_flag("a", 2)
    server.push(refetch())  # reaches A and B; coalesced
    wait_until(lambda: client.get_integer_value("a", 0) == 2)
    wait_until(lambda: [r.path for r in server.sse_requests()].count("/sse/C") == 1)
    wait_until(lambda: server.sse_connected == 2, what="A kept, B closed, C open")
    settled(provider, server)
    paths = [r.path for r in server.sse_requests()]
    assert paths.count("/sse/A") == 1  # same entry: never reconnected
    assert paths.count("/sse/B") == 1


def test_endpoint_without_origin_joins_the_base_origin_only(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    server.event_streams = [
        {"type": "sse", "endpoint": {"requestUri": "/sse/ep?channel=c1&t=x%2By"}}
    ]
    provider = make_provider(server.url + "/prefix")
    from openfeature import api

    api.set_provider_and_wait(provider)
    wait_until(lambda: len(server.sse_requests()) == 1)
    stream = server.sse_requests()[0]
    assert stream.path == "/sse/ep"  # not /prefix/sse/ep
    assert stream.query == {"channel": "c1", "t": "x+y"}
    assert server.bulk_requests()[0].path == "/prefix/ofrep/v1/evaluate/flags"


def test_endpoint_with_origin_and_foreign_origin_gets_no_credentials(
    server: OFREPTestServer,
    other_server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.set_flag("a", 1)
    streams = [
        server.sse_here("mine", query="token=abc"),
        {"type": "sse", "endpoint": {"origin": other_server.url, "requestUri": "/sse/theirs"}},
        {"type": "sse", "url": other_server.url + "/sse/url-form?token=xyz"},
    ]
    headers = {"Authorization": "Bearer s3cret", "X-API-Key": "k-123"}
    provider, _ = start_with_stream(server, make_provider, streams, headers=headers)
    mine = server.sse_requests()[0]
    assert mine.headers.get("Authorization") == "Bearer s3cret"
    assert mine.headers.get("X-API-Key") == "k-123"
    assert mine.headers.get("Accept") == "text/event-stream"
    theirs = other_server.sse_requests()
    assert sorted(r.path for r in theirs) == ["/sse/theirs", "/sse/url-form"]
    for request in theirs:
        assert "Authorization" not in request.headers
        assert "X-API-Key" not in request.headers
    assert server.bulk_requests()[0].headers.get("Authorization") == "Bearer s3cret"

    # An event on a foreign-origin stream still triggers a re-fetch.
    n = len(server.bulk_requests())
    wait_until(lambda: other_server.sse_connected == 2)
    other_server.push(refetch(etag="from-other"))  # both foreign streams get it
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 2)
    total = settled(provider, server)
    assert 1 <= total - n <= 2  # coalesced, or back to back when the first had finished
    assert all(r.query == {"flagConfigEtag": "from-other"} for r in server.bulk_requests()[n:])


def test_dropped_stream_reconnects_with_last_event_id_and_refetches_at_once(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", 1)
    provider, client = start_with_stream(server, make_provider)
    server.push(sse_event({"type": "noop"}, id="evt-41"))
    wait_until(lambda: provider.stats()["sse_ignored_events"] == 1)
    before = settled(provider, server)

    server.set_flag("a", 2)  # changed while the stream is down: the re-fetch must see it
    server.drop_streams()
    wait_until(lambda: len(server.sse_requests()) == 2, what="reconnect")
    assert server.sse_requests()[1].headers.get("Last-Event-ID") == "evt-41"
    assert "Last-Event-ID" not in server.sse_requests()[0].headers
    wait_until(lambda: client.get_integer_value("a", 0) == 2, what="re-fetch after reconnect")
    after = settled(provider, server)
    assert after == before + 1
    refetched = server.bulk_requests()[-1]
    assert refetched.query == {}
    assert "If-None-Match" in refetched.headers
    assert provider.stats()["sse_disconnects"] == 1
    assert provider.stats()["sse_connects"] == 2


def test_heartbeats_keep_the_stream_alive_and_trigger_nothing(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider, sse_read_timeout_s=1.0)
    before = len(server.bulk_requests())
    for _ in range(15):  # 1.5 s of heartbeats, each far inside the 1 s read timeout
        server.push(b": keep-alive\n\n")
        time.sleep(0.1)
    assert len(server.bulk_requests()) == before
    assert len(server.sse_requests()) == 1
    assert provider.stats()["sse_events"] == 0

    # Silence beyond the read timeout: the connection is declared dead and replaced.
    wait_until(lambda: len(server.sse_requests()) == 2, timeout_s=10.0, what="read timeout")
    wait_until(lambda: len(server.bulk_requests()) == before + 1, what="re-fetch after reconnect")


def test_malformed_and_unknown_events_are_ignored_and_counted(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider)
    before = len(server.bulk_requests())
    server.push(b"data: {not json\n\n")
    server.push(b"data: [1, 2]\n\n")
    server.push(b'data: {"etag": "no type"}\n\n')
    server.push(b"data:\n\n")
    server.push(sse_event({"type": "somethingNew", "x": 1}))
    server.push(b"event: custom\ndata: plain text\n\n")
    server.push(refetch(etag="good", event="message"))
    wait_until(lambda: provider.stats()["sse_events"] == 7)
    assert settled(provider, server) == before + 1
    stats = provider.stats()
    assert stats["sse_malformed_events"] == 5
    assert stats["sse_ignored_events"] == 1
    assert stats["sse_refetch_events"] == 1
    assert server.sse_connected == 1 and len(server.sse_requests()) == 1


def test_stream_that_cannot_connect_backs_off(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    from .ofrep_server import Scripted

    server.set_flag("a", 1)
    for _ in range(50):
        server.sse_script.append(Scripted(503))
    server.event_streams = [server.sse_here()]
    provider = make_provider(server.url, reconnect_min_s=0.05, reconnect_max_s=0.4)
    from openfeature import api

    api.set_provider_and_wait(provider)
    wait_until(lambda: len(server.sse_requests()) >= 6, what="six attempts")
    # 0.05 doubling to 0.4, jittered over the upper half: each wait at least half its step.
    assert_backs_off([r.t for r in server.sse_requests()[:6]], 0.05, 0.4)
    wait_until(lambda: provider.stats()["sse_connect_failures"] >= 6, what="each counted")
