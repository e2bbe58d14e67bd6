"""Defects a review found in the provider; each test failed before its fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import GeneralError
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider, _refresh
from flageval.ofrep import provider as provider_module

from .conftest import EventLog
from .helpers import answered
from .ofrep_server import OFREPTestServer, wait_until


def test_an_unexpected_fetch_exception_counts_as_a_failed_fetch_and_is_retried(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], monkeypatch: Any
) -> None:
    # A bug inside the fetch (not a network error) must not end the fetch runner: the
    # trigger is retried with the error backoff and the set_context future settles.
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    provider = make_provider(server.url, change_detection="none")
    api.set_provider_and_wait(provider)
    real = _refresh.fetch_bulk
    calls = {"n": 0}

    async def buggy_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug")
        return await real(*args, **kwargs)

    monkeypatch.setattr(_refresh, "fetch_bulk", buggy_once)
    before = provider.stats()
    future = provider.set_context(EvaluationContext("ann"))
    assert future.result(timeout=5.0) is False  # its fetch failed: settled, not hung
    client = api.get_client()
    # The retry (error backoff <= 0.2 s) fetches for "ann".
    wait_until(lambda: client.get_string_value("who", "") == "ann", what="retried fetch")
    after = provider.stats()
    assert after["fetch_internal_error"] == before["fetch_internal_error"] + 1
    assert after["fetches"] == before["fetches"] + 2
    assert answered(provider) >= 2  # the initial fetch and the retry


def test_an_initialize_that_times_out_keeps_going_and_emits_ready(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
    monkeypatch: Any,
) -> None:
    # README: any failed initialize other than 401/403 raises GeneralError, keeps
    # retrying in the background and emits READY on its first success.
    server.set_flag("a", 7)
    # initialize() waits timeout (2 s) + grace: a grace of -1.5 s makes it give up after
    # 0.5 s while the server still holds the fetch (which has 2 s to answer).
    monkeypatch.setattr(provider_module, "_START_GRACE_S", -1.5)
    provider = make_provider(server.url, timeout_ms=2000, change_detection="none")
    server.hold_fetches()
    with pytest.raises(GeneralError, match="did not finish in time"):
        api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_provider_status() == ProviderStatus.ERROR
    server.release_fetches()
    wait_until(lambda: client.get_provider_status() == ProviderStatus.READY, what="READY")
    assert client.get_integer_value("a", 0) == 7
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) == 1, what="READY event")
