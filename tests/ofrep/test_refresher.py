"""The coordinator on a loop of the test's own, its bulk fetch scripted or wrapped.

`Refresher` takes the function that makes one bulk request; these tests pass their own
to reach what no server answer can cause (a bug inside the fetch) and to hold the first
fetch while initialize() gives up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError
from yarl import URL

from flageval.ofrep import OFREPProvider
from flageval.ofrep._bulk import NotModified, Outcome, Rejected, parse_bulk
from flageval.ofrep._config import OFREPConfig
from flageval.ofrep._context import encode_context
from flageval.ofrep._diagnostics import Counter, new_stats, snapshot
from flageval.ofrep._fetch import FetchRequest, fetch_bulk
from flageval.ofrep._refresh import BulkFetch, Refresher
from flageval.ofrep._resolve import STR, resolve
from flageval.ofrep._snapshot import Shared
from flageval.ofrep._status import Status

from .conftest import FAST
from .helpers import answered
from .ofrep_server import OFREPTestServer


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[ProviderEvent, ProviderEventDetails]] = []

    def emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        self.events.append((event, details))

    @property
    def kinds(self) -> list[ProviderEvent]:
        return [e for e, _ in self.events]


class Held:
    """A bulk fetch that waits for ``release`` and then answers ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, *args: Any) -> Outcome:
        self.calls += 1
        await self.release.wait()
        return self.outcome


EMPTY = encode_context(EvaluationContext())


def config(base_url: str, **kwargs: Any) -> OFREPConfig:
    return OFREPProvider(base_url=base_url, **{**FAST, **kwargs}).config


def make(cfg: OFREPConfig, fetch: BulkFetch) -> tuple[Refresher, Shared, dict[str, int], Recorder]:
    shared, stats, recorder = Shared(), new_stats(), Recorder()
    return Refresher(cfg, shared, stats, recorder, fetch=fetch), shared, stats, recorder


def fetched(**flags: Any) -> Outcome:
    body = json.dumps({"flags": [{"key": k, "value": v} for k, v in flags.items()]})
    return parse_bulk(body.encode(), '"e1"', URL("http://127.0.0.1:9"))


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_an_unexpected_fetch_exception_counts_as_a_failed_fetch_and_is_retried(
    server: OFREPTestServer,
) -> None:
    # A bug inside the fetch (not a network error) must not end the fetch runner: the
    # trigger is retried with the error backoff and the set_context future settles.
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    calls = {"n": 0}

    async def buggy_once(*args: Any) -> Outcome:
        calls["n"] += 1
        if calls["n"] == 2:  # the first fetch after start
            raise RuntimeError("bug")
        return await fetch_bulk(*args)

    refresher, shared, stats, _ = make(config(server.url, change_detection="none"), buggy_once)
    await refresher.start(EMPTY)
    before = dict(stats)
    future = refresher.set_context(encode_context(EvaluationContext("ann")))
    assert await asyncio.wait_for(future, 5.0) is False  # its fetch failed: settled, not hung
    # The retry (error backoff <= 0.2 s) fetches for "ann".
    await until(lambda: resolve(shared.entries, "who", "", STR).value == "ann")
    assert stats[Counter.FETCH_INTERNAL_ERROR] == before[Counter.FETCH_INTERNAL_ERROR] + 1
    assert stats[Counter.FETCHES] == before[Counter.FETCHES] + 2
    assert answered(snapshot(stats)) >= 2  # the initial fetch and the retry
    assert refresher.status is Status.READY
    await refresher.close()


async def test_initialize_giving_up_during_the_first_fetch_reports_its_success_by_event() -> None:
    held = Held(fetched(a=1))
    refresher, shared, _, recorder = make(config("http://127.0.0.1:9"), held)
    start = asyncio.create_task(refresher.start(EMPTY))
    await until(lambda: held.calls == 1)
    refresher.initialize_abandoned()  # the SDK shows ERROR from here
    abandoned = refresher.status
    assert abandoned is Status.ERROR
    assert recorder.events == []
    held.release.set()
    await start  # nobody waits for it any more; it still ends cleanly
    assert refresher.status is Status.READY
    assert recorder.kinds == [ProviderEvent.PROVIDER_READY]
    assert shared.entries is not None and "a" in shared.entries
    await refresher.close()


async def test_initialize_giving_up_during_the_first_fetch_reports_a_fatal_answer() -> None:
    held = Held(Rejected(401, None, "HTTP 401"))
    refresher, _, stats, recorder = make(config("http://127.0.0.1:9"), held)
    start = asyncio.create_task(refresher.start(EMPTY))
    await until(lambda: held.calls == 1)
    refresher.initialize_abandoned()
    held.release.set()
    with pytest.raises(ProviderFatalError, match="HTTP 401"):
        await start
    assert refresher.status is Status.FATAL
    assert recorder.kinds == [ProviderEvent.PROVIDER_ERROR]
    assert recorder.events[0][1].error_code == ErrorCode.PROVIDER_FATAL
    assert stats[Counter.FETCH_UNAUTHORIZED] == 1
    await refresher.close()


@pytest.mark.parametrize(
    ("outcome", "reported"),
    [
        (fetched(a=1), ProviderEvent.PROVIDER_READY),
        (Rejected(403, None, "HTTP 403"), ProviderEvent.PROVIDER_ERROR),
    ],
)
async def test_initialize_giving_up_after_the_first_fetch_reports_the_status_it_reached(
    outcome: Outcome, reported: ProviderEvent
) -> None:
    held = Held(outcome)
    held.release.set()
    refresher, _, _, recorder = make(config("http://127.0.0.1:9"), held)
    with contextlib.suppress(ProviderFatalError):
        await refresher.start(EMPTY)
    assert recorder.events == []  # silent: initialize() reports it by returning or raising
    refresher.initialize_abandoned()  # ...but it raised GeneralError before seeing it
    assert recorder.kinds == [reported]
    await refresher.close()


async def test_a_failed_start_raises_and_retries_in_error_until_the_first_success() -> None:
    calls: list[FetchRequest] = []

    async def fail_first(
        session: aiohttp.ClientSession, cfg: OFREPConfig, body: bytes, etag: Any, req: FetchRequest
    ) -> Outcome:
        calls.append(req)
        if len(calls) == 1:
            raise OSError("boom")  # escaping the fetch: counted as fetch_internal_error
        return fetched(a=1) if len(calls) == 2 else NotModified()

    refresher, _, stats, recorder = make(
        config("http://127.0.0.1:9", change_detection="none"), fail_first
    )
    with pytest.raises(GeneralError, match="initial bulk evaluation failed: unexpected OSError"):
        await refresher.start(EMPTY)
    failed = refresher.status
    assert failed is Status.ERROR and recorder.events == []
    await until(lambda: refresher.status is Status.READY)
    assert recorder.kinds == [ProviderEvent.PROVIDER_READY]
    assert calls == [FetchRequest(conditional=False)] * 2  # the retry repeats the trigger
    assert stats[Counter.FETCH_INTERNAL_ERROR] == 1 and stats[Counter.FETCH_OK] == 1
    await refresher.close()
    assert refresher.status is Status.CLOSED
    assert refresher.set_context(encode_context(EvaluationContext("late"))).result() is False


async def test_a_fatal_answer_to_a_set_context_racing_the_first_fetch_fails_initialize() -> None:
    first = Held(fetched(a=1))
    calls: list[bytes] = []

    async def fetch(session: Any, cfg: Any, body: bytes, etag: Any, req: Any) -> Outcome:
        calls.append(body)
        return await first() if len(calls) == 1 else Rejected(401, None, "HTTP 401")

    refresher, _, _, recorder = make(config("http://127.0.0.1:9"), fetch)
    start = asyncio.create_task(refresher.start(EMPTY))
    await until(lambda: len(calls) == 1)
    refresher.set_context(encode_context(EvaluationContext("bob")))  # its fetch answers 401 at once
    await until(lambda: len(calls) == 2)
    first.release.set()  # then the first fetch's 200 arrives
    with pytest.raises(ProviderFatalError, match="HTTP 401"):
        await start
    assert refresher.status is Status.FATAL
    assert recorder.events == []  # initialize() reports it by raising
    await refresher.close()
