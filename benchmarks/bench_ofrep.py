"""flageval.ofrep: what a cached resolve costs, against a remote evaluation, and how fast
a flag change reaches the application.

Method
- One scriptable OFREP + SSE server (tests/ofrep/ofrep_server.py) on 127.0.0.1, on its
  own thread; the providers are registered under their own OpenFeature domains, so the
  session's default provider and hooks (other benchmarks) are untouched, and no hook is
  attached to these clients: the figures are the provider plus the SDK's own overhead.
- Cached resolve: ``client.get_boolean_value`` (sync) and ``get_boolean_value_async``
  (awaited in batches of ``ASYNC_BATCH`` inside one running loop, so loop start-up is
  not counted; the per-evaluation figure is in ``extra_info``).
- Remote baseline: one ``POST /ofrep/v1/evaluate/flags/{key}`` per evaluation to the
  same server with one reused aiohttp session (keep-alive), as a provider without a
  cache would do.
- Change latency: the time from changing the flag on the server to the new value being
  served by ``get_boolean_value`` on the caller's thread (spinning on it), for
  ``change_detection="sse"`` (the server pushes ``refetchEvaluation`` right after the
  change, as an SSE-capable server would; the provider's 50 ms debounce window is in
  the figure, and rounds are spaced past its 250 ms ceiling on event-triggered fetches,
  so each round is one isolated change) and for polling every 1 s. Each polling round
  starts at a random phase of the poll cycle, so the expected figure is ~0.5 s.
- No assertion on wall-clock figures. Under ``--benchmark-disable`` every benchmark
  runs once (one round of each latency benchmark).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.provider.no_op_provider import NoOpProvider

from flageval.ofrep import OFREPProvider
from flageval.ofrep._config import DEFAULT_EVENT_FETCH_INTERVAL_S
from tests.ofrep.ofrep_server import OFREPTestServer, refetch

FLAG = "bench-flag"
METADATA = {"allocationKey": "default-allocation", "flagSetId": "bench"}
ASYNC_BATCH = 1000
LATENCY_ROUNDS = {"sse": 10, "polling-1s": 6}
POLL_INTERVAL_S = 1.0
SPIN_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def server() -> Iterator[OFREPTestServer]:
    srv = OFREPTestServer().start()
    srv.set_flag(FLAG, True, "on", metadata=METADATA)
    srv.event_streams = [srv.sse_here()]
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sse_provider(server: OFREPTestServer) -> Iterator[OFREPProvider]:
    # No persisted entry (ADR-0009): nothing of the benchmark lands in ~/.cache.
    provider = OFREPProvider(base_url=server.url, cache_mode="disabled")
    api.set_provider_and_wait(provider, domain="bench-ofrep-sse")
    deadline = time.monotonic() + 5
    while server.sse_connected < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    yield provider
    api.set_provider(NoOpProvider(), domain="bench-ofrep-sse")  # (also shuts ours down)
    provider.shutdown()


@pytest.fixture(scope="module")
def sse_client(sse_provider: OFREPProvider) -> OpenFeatureClient:
    return api.get_client("bench-ofrep-sse")


@pytest.fixture(scope="module")
def polling_client(server: OFREPTestServer) -> Iterator[OpenFeatureClient]:
    provider = OFREPProvider(
        base_url=server.url,
        change_detection="polling",
        poll_interval_s=POLL_INTERVAL_S,
        cache_mode="disabled",
    )
    api.set_provider_and_wait(provider, domain="bench-ofrep-poll")
    yield api.get_client("bench-ofrep-poll")
    api.set_provider(NoOpProvider(), domain="bench-ofrep-poll")
    provider.shutdown()


def test_resolve_cached_sync(benchmark: Any, sse_client: OpenFeatureClient) -> None:
    assert sse_client.get_boolean_value(FLAG, False) is True
    benchmark(sse_client.get_boolean_value, FLAG, False)


def test_provider_resolve_direct(benchmark: Any, sse_provider: OFREPProvider) -> None:
    """The provider's own share of a cached resolve, without the SDK around it."""
    assert sse_provider.resolve_boolean_details(FLAG, False).value is True
    benchmark(sse_provider.resolve_boolean_details, FLAG, False)


def test_resolve_cached_async(benchmark: Any, sse_client: OpenFeatureClient) -> None:
    loop = asyncio.new_event_loop()

    async def batch() -> None:
        for _ in range(ASYNC_BATCH):
            await sse_client.get_boolean_value_async(FLAG, False)

    try:
        benchmark.extra_info["evaluations_per_round"] = ASYNC_BATCH
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=20, iterations=1)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            benchmark.extra_info["per_evaluation_us_median"] = (
                stats.stats.median / ASYNC_BATCH * 1e6
            )
    finally:
        loop.close()


def test_single_flag_http_round_trip(benchmark: Any, server: OFREPTestServer) -> None:
    loop = asyncio.new_event_loop()
    url = f"{server.url}/ofrep/v1/evaluate/flags/{FLAG}"
    body = b'{"context": {}}'

    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = loop.run_until_complete(make_session())

    async def evaluate() -> bool:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            doc = await response.json()
        return bool(doc["value"])

    try:
        assert loop.run_until_complete(evaluate()) is True
        benchmark(lambda: loop.run_until_complete(evaluate()))
    finally:
        loop.run_until_complete(session.close())
        loop.close()


def _change_latency_round(server: OFREPTestServer, client: OpenFeatureClient, push: bool) -> float:
    new = not client.get_boolean_value(FLAG, False)
    started = time.perf_counter()
    server.set_flag(FLAG, new, "on" if new else "off", metadata=METADATA)
    if push:
        server.push(refetch(etag=f"cfg-{time.monotonic_ns()}"))
    deadline = started + SPIN_TIMEOUT_S
    while client.get_boolean_value(FLAG, not new) is not new:
        if time.perf_counter() > deadline:
            raise AssertionError("the change was never served")
        time.sleep(0.0002)
    return time.perf_counter() - started


@pytest.mark.parametrize("mode", ["sse", "polling-1s"])
def test_change_to_served_latency(
    benchmark: Any,
    mode: str,
    server: OFREPTestServer,
    sse_client: OpenFeatureClient,
    polling_client: OpenFeatureClient,
) -> None:
    client = sse_client if mode == "sse" else polling_client
    push = mode == "sse"
    latencies: list[float] = []

    def setup() -> None:
        if not push:
            time.sleep(random.uniform(0.0, POLL_INTERVAL_S))  # random phase
        else:
            time.sleep(DEFAULT_EVENT_FETCH_INTERVAL_S)  # one change, not a stream of them

    def one_round() -> None:
        latencies.append(_change_latency_round(server, client, push))

    benchmark.pedantic(one_round, setup=setup, rounds=LATENCY_ROUNDS[mode], iterations=1)
    benchmark.extra_info["latencies_ms"] = [round(x * 1000, 2) for x in latencies]
