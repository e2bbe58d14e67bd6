"""No request storm, whatever the stream URLs do: a stream whose URL differs only in
its query is the same stream with a new token, and from any mix of triggers but a
context change the bulk fetches stay within a burst of 4, then about one a second.

Rates are checked on the server's arrival times of the requests that did happen (more
load only spreads them further), never by counting over a sleep."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from flageval.ofrep import OFREPProvider

from .helpers import settled
from .ofrep_server import OFREPTestServer, refetch, wait_until

# Documented: a burst of 4 fetches, then about one a second (docs/ofrep.md).
BURST = 4
PER_S = 1.0


def assert_within_ceiling(times: list[float]) -> None:
    """No stretch of the arrival ``times`` holds more fetches than the burst, one a second
    over its length, and one more (the fetch at start, which no ceiling delays)."""
    times = sorted(times)
    for i, j in itertools.combinations(range(len(times)), 2):
        span = times[j] - times[i]
        assert j - i + 1 <= BURST + 1 + span * PER_S, (
            f"{j - i + 1} fetches within {span:.3f} s (all: {len(times)} "
            f"within {times[-1] - times[0]:.3f} s)"
        )


def test_a_stream_token_that_changes_on_every_answer_is_replaced_without_a_fetch(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    tokens = itertools.count()
    # Never a 304 (the token is in the body), a fresh token in every 200.
    server.streams_per_answer = lambda: [server.sse_here(query=f"token=t{next(tokens)}")]
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    wait_until(lambda: server.sse_connected == 1, what="stream held")
    wait_until(lambda: len(server.bulk_requests()) >= 2, what="the post-connect fetch")
    time.sleep(1.0)  # a window for what must not happen: more fetches or connects
    bulk, sse = len(server.bulk_requests()), len(server.sse_requests())
    assert (bulk, sse) == (2, 1), f"{bulk} fetches and {sse} stream connects in ~1 s"

    # The newest token is the one the next connection uses; its fetch is one fetch.
    newest = next(tokens) - 1
    server.drop_streams()
    wait_until(lambda: len(server.sse_requests()) == 2, what="reconnect")
    assert server.sse_requests()[1].query == {"token": f"t{newest}"}
    wait_until(lambda: len(server.bulk_requests()) == 3, what="the reconnect's fetch")
    assert provider.stats()["sse_connects"] == 2


def test_stream_urls_with_a_new_path_on_every_answer_fetch_about_once_a_second(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.set_flag("f", 1)
    paths = itertools.count()
    # A new stream each time (the token in the path): connect -> fetch -> new stream...
    server.streams_per_answer = lambda: [server.sse_here(f"s{next(paths)}")]
    caplog.set_level(logging.INFO, logger="flageval.ofrep")
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    wait_until(lambda: len(server.bulk_requests()) >= 8, timeout_s=20, what="eight fetches")
    assert_within_ceiling([r.t for r in server.bulk_requests()[:8]])
    # Each fetch brings one new stream: connects follow the fetches, no faster.
    assert len(server.sse_requests()) <= len(server.bulk_requests()) + 1
    wait_until(lambda: provider.stats()["fetch_ceiling_delayed"] >= 2, what="counted")
    said = [r for r in caplog.records if "about one a second" in r.getMessage()]
    assert len(said) == 1  # said once, however often the ceiling holds a fetch back


@pytest.fixture
def pusher(server: OFREPTestServer) -> Iterator[Callable[[], None]]:
    """Starts a thread pushing a refetch event with a new etag to every open stream
    every 5 ms, until the test ends."""
    stop = threading.Event()
    thread = threading.Thread(target=lambda: None)

    def push_forever() -> None:
        for n in itertools.count():
            if stop.wait(0.005):
                return
            server.push(refetch(etag=f"e{n}"))

    def start() -> None:
        nonlocal thread
        thread = threading.Thread(target=push_forever, daemon=True)
        thread.start()

    yield start
    stop.set()
    if thread.is_alive():
        thread.join(5)


def test_any_mix_of_triggers_but_a_context_change_stays_under_the_ceiling(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    pusher: Callable[[], None],
) -> None:
    server.set_flag("f", 1)
    paths = itertools.count()
    # Eight streams, each with a new path on every answer, events with new etags on all
    # of them every 5 ms, and a poll every 50 ms.
    server.streams_per_answer = lambda: [
        server.sse_here(f"s{next(paths)}", query=f"channel={i}") for i in range(8)
    ]
    provider = make_provider(server.url, poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    pusher()
    wait_until(lambda: len(server.bulk_requests()) >= 8, timeout_s=20, what="eight fetches")
    assert_within_ceiling([r.t for r in server.bulk_requests()[:8]])
    # Each fetch replaces at most the 8 streams it lists.
    assert len(server.sse_requests()) <= 8 * len(server.bulk_requests()) + 8


def test_a_context_change_is_not_held_back_by_the_ceiling(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    provider = make_provider(server.url, change_detection="none")
    api.set_provider_and_wait(provider)
    # Ten switches back to back: far past the burst; each is fetched for at once.
    for n in range(10):
        assert provider.set_context(EvaluationContext(f"u{n}")).result(10) is True
        assert provider.resolve_string_details("who", "").value == f"u{n}"
    assert provider.stats()["fetch_ceiling_delayed"] == 0
    assert settled(provider, server) == 11
