"""Refetch events coalesce (ADR-0008 provider rule 7), by count, at the default window
and ceiling: 30 same-etag events over 100 ms -> at most 2 fetches; 30 different etags ->
at most 3 and the last value served; one change on two streams -> 1 fetch; a
500-answering server gets no more requests than the backoff allows; a flood is cut
off at the per-stream budget and its fetches keep the event interval.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from openfeature import api

from flageval.ofrep import OFREPProvider
from flageval.ofrep._config import DEFAULT_EVENT_DEBOUNCE_S, DEFAULT_EVENT_FETCH_INTERVAL_S
from flageval.ofrep._sse import DEFAULT_MAX_EVENTS_PER_S

from .helpers import settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until

DEFAULTS = {
    "event_debounce_s": DEFAULT_EVENT_DEBOUNCE_S,
    "event_fetch_interval_s": DEFAULT_EVENT_FETCH_INTERVAL_S,
}
ROOT = Path(__file__).resolve().parents[2]


def burst(server: OFREPTestServer, n: int, etag: Callable[[int], str], span_s: float = 0.1) -> None:
    for i in range(n):
        server.push(refetch(etag=etag(i)))
        time.sleep(span_s / n)


def test_30_events_with_one_etag_over_100_ms_cost_at_most_2_fetches(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider, _ = start_with_stream(server, make_provider, **DEFAULTS)
    before = len(server.bulk_requests())
    server.set_flag("f", 2)
    burst(server, 30, lambda i: "cfg-2")
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 30, what="all events read")
    fetches = settled(provider, server, quiet_s=0.4) - before
    assert 1 <= fetches <= 2
    assert provider.resolve_integer_details("f", 0).value == 2
    assert provider.stats()["sse_events_coalesced"] >= 28


def test_30_events_with_new_etags_over_100_ms_cost_at_most_3_fetches_and_serve_the_last(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 0)
    provider, _ = start_with_stream(server, make_provider, **DEFAULTS)
    before = len(server.bulk_requests())
    for i in range(1, 31):
        server.set_flag("f", i)
        server.push(refetch(etag=f"cfg-{i}"))
        time.sleep(0.1 / 30)
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 30, what="all events read")
    fetches = settled(provider, server, quiet_s=0.4) - before
    assert 1 <= fetches <= 3
    assert provider.resolve_integer_details("f", 0).value == 30
    assert provider.stats()["config_changes"] <= 3
    # The last fetch carries the newest event's etag.
    assert server.bulk_requests()[-1].query == {"flagConfigEtag": "cfg-30"}


def test_one_change_announced_on_two_streams_is_one_fetch(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    streams = [server.sse_here("A"), server.sse_here("B")]
    provider, _ = start_with_stream(server, make_provider, streams, **DEFAULTS)
    before = len(server.bulk_requests())
    server.set_flag("f", 2)
    server.push(refetch(etag="one-change"))  # reaches A and B
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 2, what="both events read")
    assert settled(provider, server, quiet_s=0.4) - before == 1
    assert provider.resolve_integer_details("f", 0).value == 2
    # The same change announced again later (a server repeating itself) adds nothing.
    server.push(refetch(etag="one-change"))
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 4, what="repeats read")
    assert settled(provider, server, quiet_s=0.4) - before == 1


def test_30_events_against_a_failing_server_obey_the_backoff(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    # retry_min_s 1: the retry after a failure comes 0.5-1 s later (upper half).
    provider, _ = start_with_stream(
        server, make_provider, retry_min_s=1.0, retry_max_s=4.0, **DEFAULTS
    )
    before = len(server.bulk_requests())
    merged = provider.stats()["fetch_coalesced"]
    server.script.extend([Scripted(500, b'{"errorDetails": "down"}')] * 50)
    burst(server, 30, lambda i: f"cfg-{i}")
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 30, what="all events read")
    wait_until(lambda: provider.stats()["fetch_status_5xx"] >= 1, what="the first failure")
    server.script.clear()
    wait_until(lambda: len(server.bulk_requests()) >= before + 2, timeout_s=10, what="retried")
    first, retried = server.bulk_requests()[before : before + 2]
    # One request, then nothing until the retry, at least 0.5 s later (whatever was
    # queued behind the failing fetch or came meanwhile joined the retry).
    assert retried.t - first.t >= 0.5 - 0.005
    assert retried.query == {"flagConfigEtag": "cfg-29"}  # the newest event, kept
    # Every event but the first joined another: held by the coalescer, or (a burst
    # stretched past its window on a loaded machine) merged into the retry.
    stats = provider.stats()
    assert stats["sse_events_coalesced"] + stats["fetch_coalesced"] - merged >= 29


def test_a_flood_of_events_is_cut_off_at_the_budget_and_its_fetches_keep_the_interval(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    seconds = 2.0
    flood = subprocess.Popen(
        [sys.executable, "-m", "tests.ofrep.sse_flood", "--rate", "60000", "--seconds", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None
        port = int(flood.stdout.readline())
        server.set_flag("f", 1)
        # Another origin: sent no credentials; reconnects rare enough not to count.
        server.event_streams = [{"type": "sse", "url": f"http://127.0.0.1:{port}/flood"}]
        provider = make_provider(server.url, reconnect_min_s=5.0, reconnect_max_s=10.0, **DEFAULTS)
        api.set_provider_and_wait(provider)
        wait_until(lambda: provider.stats()["sse_connects"] == 1, what="flood connected")
        before = len(server.bulk_requests())
        wait_until(lambda: provider.stats()["sse_disconnects"] == 1, what="flood cut off")
        time.sleep(seconds)  # a window for what must not happen: the flood, unread
        settled(provider, server, quiet_s=0.4)
    finally:
        flood.kill()
        flood.wait(5)
    stats = provider.stats()
    # Events merged into fetches no faster than the event interval allows, nor the
    # ceiling (the arrival times of the fetches that were made).
    times = [r.t for r in server.bulk_requests()[before:]]
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= DEFAULT_EVENT_FETCH_INTERVAL_S - 0.005
    # The connection was dropped at the per-stream budget (and, with reconnect_min_s 5,
    # not reopened during the flood): the events read, and so the loop's work, are
    # bounded by that budget, however long the flood goes on.
    assert stats["sse_flood_closes"] == 1
    assert stats["sse_events"] <= DEFAULT_MAX_EVENTS_PER_S + 5_000  # + one chunk


def test_events_during_the_error_backoff_join_the_retry(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    # retry_min_s 3: the retry comes 1.5-3 s after the failure (upper half).
    provider, _ = start_with_stream(
        server, make_provider, retry_min_s=3.0, retry_max_s=4.0, **DEFAULTS
    )
    before = len(server.bulk_requests())
    server.script.append(Scripted(500))
    server.push(refetch(etag="a"))
    wait_until(lambda: provider.stats()["fetch_status_5xx"] == 1, what="the failure")
    coalesced = provider.stats()["fetch_coalesced"]
    # Spaced past the event interval: each would be a fetch of its own without the
    # backoff. Each is seen joining the retry before the next is sent.
    for i in range(3):
        server.set_flag("f", 10 + i)
        server.push(refetch(etag=f"b{i}"))
        wait_until(lambda i=i: provider.stats()["fetch_coalesced"] == coalesced + i + 1)
    assert len(server.bulk_requests()) == before + 1  # none of them made a request
    wait_until(lambda: provider.resolve_integer_details("f", 0).value == 12, what="retried")
    failed, retried = server.bulk_requests()[before:]  # the retry took all three events
    assert retried.t - failed.t >= 1.5 - 0.005
    assert retried.query == {"flagConfigEtag": "b2"}
