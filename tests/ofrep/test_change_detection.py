"""Polling, polling as the fallback for streams, inactivity, STALE."""

from __future__ import annotations

import time
from collections.abc import Callable

from openfeature import api
from openfeature.event import ProviderEvent
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import quiet, settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until


def test_polling_mode_sees_a_change_on_the_next_poll(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", "v1")
    server.event_streams = [server.sse_here()]  # ignored: polling mode opens no stream
    provider = make_provider(server.url, change_detection="polling", poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    wait_until(lambda: provider.stats()["fetch_not_modified"] >= 3, what="a few 304 polls")
    server.set_flag("a", "v2")
    wait_until(lambda: client.get_string_value("a", "") == "v2")
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 1)
    assert server.sse_requests() == []
    polls = server.bulk_requests()[1:]
    assert all(r.headers.get("If-None-Match") for r in polls)
    assert all(r.query == {} for r in polls)


def test_change_detection_none_only_fetches_at_start_and_on_context_change(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    from openfeature.evaluation_context import EvaluationContext

    server.set_flag("a", 1)
    server.event_streams = [server.sse_here()]
    provider = make_provider(server.url, change_detection="none", poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    assert provider.set_context(EvaluationContext("u")).result(5) is True
    time.sleep(0.3)  # a window for what must not happen: six poll intervals, a stream
    assert [r.json for r in server.all_requests()] == [
        {"context": {}},
        {"context": {"targetingKey": "u"}},
    ]


def test_polling_stands_in_while_the_stream_cannot_be_held(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", 1)
    server.event_streams = [server.sse_here()]
    for _ in range(6):
        server.sse_script.append(Scripted(503))
    provider = make_provider(
        server.url,
        poll_interval_s=0.05,
        reconnect_min_s=0.1,
        reconnect_max_s=0.1,
        stale_after_s=0.1,  # shorter than the outage: polling keeps it from going STALE
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
    wait_until(lambda: provider.stats()["polls"] >= 3, what="polling while the stream fails")
    server.set_flag("a", 2)
    wait_until(lambda: client.get_integer_value("a", 0) == 2, what="change seen by polling")

    wait_until(lambda: server.sse_connected == 1, timeout_s=5.0, what="stream finally held")
    settled(provider, server)
    assert events.of(ProviderEvent.PROVIDER_STALE) == []
    polls = provider.stats()["polls"]
    time.sleep(0.3)  # six intervals: polling has stopped
    assert provider.stats()["polls"] == polls


def test_no_stream_offered_and_polling_configured_polls(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider = make_provider(server.url, poll_interval_s=0.05)  # sse mode, no eventStreams
    api.set_provider_and_wait(provider)
    server.set_flag("a", 2)
    wait_until(lambda: api.get_client().get_integer_value("a", 0) == 2)
    assert provider.stats()["polls"] >= 1


def test_inactivity_closes_streams_and_the_next_resolve_refetches_unconditionally(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, client = start_with_stream(
        server, make_provider, inactivity_delay_s=0.3, poll_interval_s=0.05
    )

    def idle() -> bool:
        stats = provider.stats()
        return stats["inactivity_closes"] > stats["inactivity_resumes"]

    # (setup itself may have outlasted 0.3 s: count from wherever we are)
    wait_until(idle, what="idle")
    wait_until(lambda: server.sse_connected == 0, what="stream closed")
    # A fetch made just before idling may still be on its way: answered first.
    wait_until(lambda: quiet(provider), what="no fetch in flight")
    resumes = provider.stats()["inactivity_resumes"]
    quiet_from = len(server.all_requests())
    server.set_flag("a", 2)  # changes while idle are not pushed
    time.sleep(0.3)  # idle: neither polling nor reconnecting
    assert len(server.all_requests()) == quiet_from

    assert client.get_integer_value("a", 0) == 1  # answered from the cache at once...
    wait_until(lambda: client.get_integer_value("a", 0) == 2, what="...and refreshed")
    first = next(r for r in server.all_requests()[quiet_from:] if r.path.endswith("/flags"))
    assert "If-None-Match" not in first.headers
    assert first.query == {}
    wait_until(lambda: server.sse_connected == 1, what="stream reopened")
    assert provider.stats()["inactivity_resumes"] == resumes + 1


def test_server_inactivity_delay_applies_without_an_override(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    started = time.monotonic()
    provider, _ = start_with_stream(server, make_provider, [server.sse_here(inactivityDelaySec=1)])
    wait_until(lambda: provider.stats()["inactivity_closes"] == 1, timeout_s=10.0)
    assert time.monotonic() - started >= 0.95


def test_regular_use_keeps_the_streams_open(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, client = start_with_stream(server, make_provider, inactivity_delay_s=1.0)
    # (setup may have outlasted 1 s: resolving now reopens the stream if so)
    wait_until(lambda: client.get_integer_value("a", 0) == 1 and server.sse_connected == 1)
    closes = provider.stats()["inactivity_closes"]
    # 1.5 s of use, one resolve every 0.05 s: a pause of 1 s would be needed to idle.
    for _ in range(30):
        client.get_integer_value("a", 0)
        time.sleep(0.05)
    assert provider.stats()["inactivity_closes"] == closes
    assert server.sse_connected == 1


def test_stale_when_the_stream_stays_down_then_ready_when_back(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", 1)
    # No polling (poll_interval_s=0): a lost stream is lost change detection.
    _provider, client = start_with_stream(
        server,
        make_provider,
        poll_interval_s=0,
        stale_after_s=0.3,
        reconnect_min_s=0.05,
        reconnect_max_s=0.05,
    )
    for _ in range(1000):
        server.sse_script.append(Scripted(503))
    server.drop_streams()
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_STALE)) == 1, what="STALE")
    assert client.get_provider_status() == ProviderStatus.STALE
    assert client.get_integer_value("a", 0) == 1  # still served from the cache

    server.sse_script.clear()
    wait_until(lambda: client.get_provider_status() == ProviderStatus.READY, what="READY")
    assert len(events.of(ProviderEvent.PROVIDER_STALE)) == 1


def test_a_short_outage_is_not_stale(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider, stale_after_s=0.5)
    server.drop_streams()
    wait_until(lambda: provider.stats()["sse_connects"] == 2)
    server.push(refetch())
    time.sleep(0.6)
    assert events.of(ProviderEvent.PROVIDER_STALE) == []
