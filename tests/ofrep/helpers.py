from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient

from flageval.ofrep import OFREPProvider

from .ofrep_server import OFREPTestServer, Scripted, wait_until

#: A server error answer, for a server that is down.
DOWN = Scripted(500, b'{"errorDetails": "down"}')


def entry_file(directory: Path) -> Path:
    """The one persisted entry in ``directory``."""
    files = [p for p in directory.iterdir() if p.suffix == ".json"]
    assert len(files) == 1, files
    return files[0]


def answered(provider: OFREPProvider | Mapping[str, int]) -> int:
    """Bulk fetches whose answer the provider has applied (any outcome); a provider or
    its counters."""
    s = provider.stats() if isinstance(provider, OFREPProvider) else provider
    return (
        s["fetch_ok"]
        + s["fetch_not_modified"]
        + s["fetch_rate_limited"]
        + s["fetch_unauthorized"]
        + s["fetch_status_400"]
        + s["fetch_status_5xx"]
        + s["fetch_status_other"]
        + s["fetch_malformed"]
        + s["fetch_network_error"]
        + s["fetch_timeout"]
        + s["fetch_internal_error"]
        + s["fetch_discarded_old_context"]
    )


def quiet(provider: OFREPProvider) -> bool:
    """Every fetch the provider has made has been answered and applied (the client's own
    count: a request still on its way to a slow server counts too)."""
    return answered(provider) == provider.stats()["fetches"]


def settled(provider: OFREPProvider, server: OFREPTestServer, quiet_s: float = 0.15) -> int:
    """Wait until every request the server saw has been answered and applied, and
    nothing new arrives for ``quiet_s``; return the bulk request count."""
    deadline = time.monotonic() + 5.0
    while True:
        count = len(server.bulk_requests())
        wait_until(
            lambda n=count: answered(provider) >= n and server.in_flight == 0,
            what="fetches applied",
        )
        time.sleep(quiet_s)
        if len(server.bulk_requests()) == count:
            return count
        assert time.monotonic() < deadline, "traffic never settled"


def start_with_stream(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    streams: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> tuple[OFREPProvider, OpenFeatureClient]:
    """Provider registered, its stream(s) connected and the post-connect re-fetch done."""
    server.event_streams = streams if streams is not None else [server.sse_here()]
    provider = make_provider(server.url, **kwargs)
    api.set_provider_and_wait(provider)
    expected = len(server.event_streams)
    here = sum(
        1
        for s in server.event_streams
        if str(s.get("url", "")).startswith(server.url + "/")
        or ("endpoint" in s and "origin" not in s["endpoint"])
    )

    def in_use() -> None:
        # Resolving while we wait, as an application would, so that a test with a short
        # inactivity delay does not see its streams closed before it starts.
        provider.resolve_boolean_details("probe", False)

    wait_until(
        lambda: in_use() or provider.stats()["sse_connects"] >= expected, what="streams connected"
    )
    # The client sees the 200 before the server has registered the stream for pushes.
    wait_until(lambda: in_use() or server.sse_connected >= here, what="server sees the streams")
    # The connect's own fetch (debounced as events are) has been made and applied.
    wait_until(lambda: in_use() or answered(provider) >= 2, what="the post-connect fetch")
    settled(provider, server)
    return provider, api.get_client()


def assert_backs_off(times: list[float], base_s: float, cap_s: float) -> None:
    """Each gap between consecutive attempts (arrival times at the server) is at least
    the lower end of its backoff step: half of ``base_s`` doubling to ``cap_s``. Load
    only widens gaps, so this cannot fail for being slow."""
    for n, (earlier, later) in enumerate(itertools.pairwise(times)):
        floor = min(cap_s, base_s * 2**n) / 2
        assert later - earlier >= floor - 0.005, (n, later - earlier, floor)
