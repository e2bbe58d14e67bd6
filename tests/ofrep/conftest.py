from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

from flageval.ofrep import OFREPProvider

from .fast_feature_server import FastFeatureServer
from .ofrep_server import OFREPTestServer

# Timings small enough for a fast suite, large enough for a 2-core CI machine.
FAST = {
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.2,
    "retry_min_s": 0.05,
    "retry_max_s": 0.2,
    # refetch events: the default 50 ms window, a ceiling of 10 fetches a second
    "event_fetch_interval_s": 0.1,
}


@pytest.fixture(autouse=True)
def own_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persisted evaluations (ADR-0009) of one test never reach another, nor ~/.cache."""
    monkeypatch.setenv("OFREP_CACHE_DIR", str(tmp_path_factory.mktemp("ofrep-cache")))


@pytest.fixture(autouse=True)
def reset_openfeature() -> Iterator[None]:
    yield
    api.clear_providers()
    api.clear_hooks()
    api.set_evaluation_context(EvaluationContext())


@pytest.fixture
def server() -> Iterator[OFREPTestServer]:
    srv = OFREPTestServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def other_server() -> Iterator[OFREPTestServer]:
    """A second server: a different port is a different origin."""
    srv = OFREPTestServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def fast_feature() -> Iterator[FastFeatureServer]:
    srv = FastFeatureServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def make_provider() -> Iterator[Callable[..., OFREPProvider]]:
    """Build providers with fast test timings; every one is shut down afterwards."""
    made: list[OFREPProvider] = []

    def make(base_url: str, **kwargs: Any) -> OFREPProvider:
        provider = OFREPProvider(base_url=base_url, **{**FAST, **kwargs})
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.shutdown()


class EventLog:
    """Provider events as the SDK delivers them to global handlers."""

    def __init__(self) -> None:
        self.events: list[tuple[ProviderEvent, EventDetails]] = []
        self._lock = threading.Lock()
        for event in ProviderEvent:
            api.add_handler(event, self._handler(event))

    def _handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with self._lock:
                self.events.append((event, details))

        return handle

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        """Events of one kind from OFREP providers (adding a READY handler also fires
        at once for the SDK's default no-op provider; those are left out)."""
        with self._lock:
            return [d for e, d in self.events if e is event and d.provider_name == "flageval-ofrep"]


@pytest.fixture
def events() -> EventLog:
    return EventLog()
