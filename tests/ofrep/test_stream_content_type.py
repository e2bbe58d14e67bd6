"""Review: a 200 that is not an event stream is a failed connection (W3C: fail it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from openfeature import api

from flageval.ofrep import OFREPProvider

from .ofrep_server import OFREPTestServer, Scripted


def test_a_200_html_page_is_not_taken_for_a_stream(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    # A wrong stream URL behind a catch-all route: 200 with a page, then end of body.
    server.set_flag("a", 1)
    page = b"<html><body>app</body></html>\n"
    for _ in range(60):
        server.sse_script.append(Scripted(200, page, {"Content-Type": "text/html"}))
    server.event_streams = [server.sse_here()]
    provider = make_provider(server.url, reconnect_min_s=0.05, reconnect_max_s=0.4)
    api.set_provider_and_wait(provider)
    time.sleep(1.0)
    attempts = len(server.sse_requests())
    stats = provider.stats()
    # Not "connected": no re-fetch per attempt, and the backoff grows (0.05 doubling
    # to 0.4: at most ~10 tries in 1 s, where a reset backoff makes ~20-40).
    assert stats["sse_connects"] == 0
    assert stats["sse_connect_failures"] == attempts
    assert 2 <= attempts <= 10
    assert len(server.bulk_requests()) == 1  # only initialize's fetch
