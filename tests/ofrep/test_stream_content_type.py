"""Review: a 200 that is not an event stream is a failed connection (W3C: fail it)."""

from __future__ import annotations

from collections.abc import Callable

from openfeature import api

from flageval.ofrep import OFREPProvider

from .helpers import assert_backs_off
from .ofrep_server import OFREPTestServer, Scripted, wait_until


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
    wait_until(lambda: provider.stats()["sse_connect_failures"] >= 6, what="six attempts")
    # Not "connected": no re-fetch per attempt, and the backoff grows (0.05 doubling to
    # 0.4) where a reset backoff would retry every 0.025-0.05 s.
    assert provider.stats()["sse_connects"] == 0
    assert_backs_off([r.t for r in server.sse_requests()[:6]], 0.05, 0.4)
    assert len(server.bulk_requests()) == 1  # only initialize's fetch
