"""Issue 11 §1: refetch events that coalesce (ADR-0008 provider rule 7), by count.

Targets from the issue, at the default window and ceiling: 30 same-etag events over
100 ms -> at most 2 fetches; 30 different etags -> at most 3 and the last value served;
one change on two streams -> 1 fetch; a 500-answering server gets no more requests than
the backoff allows; a flood gets a bounded number of fetches per second.
"""

from __future__ import annotations

import subprocess
import sys
import threading
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
    server.script.extend([Scripted(500, b'{"errorDetails": "down"}')] * 50)
    started = time.time()
    burst(server, 30, lambda i: f"cfg-{i}")
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 30, what="all events read")
    wait_until(lambda: provider.stats()["fetch_status_5xx"] >= 1, what="the first failure")
    time.sleep(max(0.0, started + 0.5 - time.time()))
    early = [r for r in server.bulk_requests()[before:] if r.t < started + 0.5]
    # Before the burst's first failure there was no backoff, after it the retry waits at
    # least 0.5 s: one request in the first half second, whatever the events.
    assert len(early) == 1
    assert provider.stats()["sse_events_coalesced"] >= 28
    server.script.clear()
    wait_until(lambda: len(server.bulk_requests()) >= before + 2, timeout_s=5, what="retried")
    retried = server.bulk_requests()[before + 1]
    assert retried.t - early[0].t >= 0.5 - 0.02
    assert retried.query == {"flagConfigEtag": "cfg-29"}  # the newest event, kept


def _loop_thread_cpu() -> Callable[[], float]:
    thread = next(t for t in threading.enumerate() if t.name == "flageval-ofrep")
    assert thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


def test_a_flood_of_events_costs_bounded_fetches_and_loop_cpu(
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
        cpu = _loop_thread_cpu()
        wait_until(lambda: provider.stats()["sse_connects"] == 1, what="flood connected")
        before, cpu_before, started = len(server.bulk_requests()), cpu(), time.monotonic()
        wait_until(lambda: provider.stats()["sse_disconnects"] == 1, what="flood cut off")
        time.sleep(seconds)  # the rest of the flood, unread
        elapsed = time.monotonic() - started
        loop_cpu = cpu() - cpu_before
        fetches = settled(provider, server, quiet_s=0.4) - before
    finally:
        flood.kill()
        flood.wait(5)
    stats = provider.stats()
    # At most one event-triggered fetch per interval, plus the one the connect asked for.
    assert fetches <= elapsed / DEFAULT_EVENT_FETCH_INTERVAL_S + 2, (fetches, elapsed)
    # The connection was dropped at the per-stream budget (and, with reconnect_min_s 5,
    # not reopened during the flood): events read are bounded, so is the loop's work.
    assert stats["sse_flood_closes"] == 1
    assert stats["sse_events"] <= DEFAULT_MAX_EVENTS_PER_S + 5_000  # + one chunk
    assert loop_cpu < 0.5 * elapsed, (loop_cpu, elapsed)


def test_events_during_the_error_backoff_join_the_retry(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    # retry_min_s 2: the retry comes 1-2 s after the failure (upper half).
    provider, _ = start_with_stream(
        server, make_provider, retry_min_s=2.0, retry_max_s=4.0, **DEFAULTS
    )
    before = len(server.bulk_requests())
    server.script.append(Scripted(500))
    server.push(refetch(etag="a"))
    wait_until(lambda: provider.stats()["fetch_status_5xx"] == 1, what="the failure")
    failed_at = time.time()
    # Spaced past the ceiling: each would be a fetch of its own without the backoff.
    for i in range(3):
        server.set_flag("f", 10 + i)
        server.push(refetch(etag=f"b{i}"))
        time.sleep(DEFAULT_EVENT_FETCH_INTERVAL_S + 0.05)
    assert time.time() - failed_at < 1.0  # all three within the backoff
    wait_until(lambda: provider.resolve_integer_details("f", 0).value == 12, what="retried")
    after = server.bulk_requests()[before:]
    assert len(after) == 2  # the failed fetch and its retry, which took all three events
    assert after[1].t - failed_at >= 1.0 - 0.02
    assert after[1].query == {"flagConfigEtag": "b2"}
    assert provider.stats()["fetch_coalesced"] == 3
