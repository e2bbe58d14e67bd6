"""Shared fixtures: one agent stand-in and one pipeline per peer, per session.

Everything expensive is built once per session (the clients, the pipelines, the
peers' writers), so a benchmark measures evaluations, not set-up. Under
``--benchmark-disable`` (how CI runs this directory) every benchmark runs once on a
small input: the point there is that the code paths still work, not the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import flageval
from benchmarks._harness import (
    AgentStub,
    Ddtrace,
    Otel,
    bench_disabled,
    start_agent_stub,
    start_ddtrace,
    start_otel,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With timing on, a benchmark may run for minutes (the soak, ten-second thread
    runs, calibrated loops): the suite's 60 s per test (pyproject) is the quick run's."""
    if bench_disabled(config):
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.timeout(1800))


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    """True under --benchmark-disable (or FLAGEVAL_BENCH_QUICK=1): small inputs."""
    return bench_disabled(request.config)


@pytest.fixture(scope="session")
def agent() -> Iterator[AgentStub]:
    stub = start_agent_stub()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def telemetry(agent: AgentStub) -> Iterator[flageval.Telemetry]:
    """The flageval pipeline with default settings, its worker running, posting to the stub."""
    tel = flageval.Telemetry(agent_url=agent.url, service="flageval-bench")
    tel.start()
    yield tel
    tel.shutdown(10.0)


@pytest.fixture(scope="session")
def wrapper_telemetry(agent: AgentStub) -> Iterator[flageval.Telemetry]:
    """The pipeline behind the wrapper variant: its own, as an application that uses the
    wrapper alone has (a pipeline fed by both a hook and a wrapper has its hooks claim
    each evaluation, a cost a hook-only application does not pay)."""
    tel = flageval.Telemetry(agent_url=agent.url, service="flageval-bench-wrapper")
    tel.start()
    yield tel
    tel.shutdown(10.0)


@pytest.fixture(scope="session")
def ddtrace_peer(agent: AgentStub) -> Iterator[Ddtrace]:
    peer = start_ddtrace(agent.url)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def otel_peer() -> Otel:
    return start_otel()
