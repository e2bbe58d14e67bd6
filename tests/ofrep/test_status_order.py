"""The status the application reads is the provider's latest: an event from a fetch
answered while initialize() is still returning (or raising) is never overtaken by the
status the SDK sets for initialize's own outcome.

A busy machine produces this order now and then; the providers here produce it every
time: their initialize() returns (or raises) only once the background fetch's outcome
has been applied on the provider's loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import GeneralError
from openfeature.provider import ProviderStatus

from flageval import Telemetry, instrument
from flageval.ofrep import OFREPProvider
from flageval.ofrep import provider as provider_module

from .conftest import FAST, EventLog
from .ofrep_server import OFREPTestServer, Scripted, wait_until

ANN = EvaluationContext("ann")


def status_applied(caplog: pytest.LogCaptureFixture, status: str) -> Callable[[], bool]:
    """True once the provider's loop has moved to ``status`` (and emitted its event)."""
    return lambda: any(r.getMessage().endswith(f"-> {status}") for r in caplog.records)


class ReturnsLate(OFREPProvider):
    """initialize() returns once ``ready()`` is true."""

    def __init__(self, ready: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ready = ready

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        try:
            super().initialize(evaluation_context)
        finally:
            wait_until(self._ready, what="the background outcome applied")


@pytest.mark.parametrize("wrapped", [False, True], ids=["registered", "instrumented"])
def test_a_rejection_applied_before_initialize_returns_is_the_status_read(
    wrapped: bool,
    tmp_path: Path,
    server: OFREPTestServer,
    events: EventLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval.ofrep")
    server.set_flag("f", 1)
    first = OFREPProvider(server.url, cache_dir=tmp_path, change_detection="none", context=ANN)
    first.initialize(ANN)
    wait_until(lambda: first.stats()["cache_writes"] == 1, what="entry written")
    first.shutdown()

    server.script.append(Scripted(401))  # the refresh behind the persisted entry
    provider = ReturnsLate(
        status_applied(caplog, "REJECTED"),
        base_url=server.url,
        cache_dir=tmp_path,
        change_detection="none",
        context=ANN,
        **FAST,
    )
    # Wrapped, the SDK keeps the wrapper's status: that is the one to come after.
    registered = instrument(provider, Telemetry(enabled=False)) if wrapped else provider
    try:
        api.set_provider_and_wait(registered)  # READY from the entry: no exception
        client = api.get_client()
        wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1, what="ERROR")
        assert client.get_provider_status() == ProviderStatus.ERROR
        assert client.get_integer_value("f", 0) == 1  # the entry, kept for the session
    finally:
        provider.shutdown()


def test_a_success_applied_before_a_timed_out_initialize_raises_is_the_status_read(
    server: OFREPTestServer,
    events: EventLog,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval.ofrep")
    server.set_flag("f", 7)
    # initialize() gives up after 0.5 s while the server still holds the first fetch.
    monkeypatch.setattr(provider_module, "_START_GRACE_S", -1.5)
    server.hold_fetches()

    def answered() -> bool:
        server.release_fetches()  # initialize() has given up: the fetch may now succeed
        return status_applied(caplog, "READY")()

    provider = ReturnsLate(
        answered, base_url=server.url, timeout_ms=2000, change_detection="none", **FAST
    )
    try:
        with pytest.raises(GeneralError, match="did not finish in time"):
            api.set_provider_and_wait(provider)
        client = api.get_client()
        wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) == 1, what="READY")
        assert client.get_provider_status() == ProviderStatus.READY
        assert client.get_integer_value("f", 0) == 7
    finally:
        provider.shutdown()
