"""The fetch queue: one fetch at a time, triggers merged, the error backoff, the 429 gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from flageval.ofrep import _queue as queue_module
from flageval.ofrep._diagnostics import Counter, new_stats
from flageval.ofrep._fetch import FetchRequest
from flageval.ofrep._queue import FetchQueue, RateGate

POLL = FetchRequest(conditional=True)
FULL = FetchRequest(conditional=False)


def event(etag: str) -> FetchRequest:
    return FetchRequest(conditional=True, flag_config_etag=etag)


class Runs:
    """A ``run`` that records each request with its start time; ``hold`` blocks it."""

    def __init__(self) -> None:
        self.seen: list[tuple[FetchRequest, float]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, request: FetchRequest) -> None:
        self.seen.append((request, time.monotonic()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1

    @property
    def requests(self) -> list[FetchRequest]:
        return [r for r, _ in self.seen]


async def until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


def make(
    runs: Runs, retry_min_s: float = 0.04, retry_max_s: float = 0.1
) -> tuple[FetchQueue, dict[str, int], RateGate]:
    stats = new_stats()
    gate = RateGate()
    return FetchQueue(runs, gate, stats, retry_min_s, retry_max_s), stats, gate


async def test_triggers_during_a_fetch_merge_into_one_follow_up_with_the_newest_metadata() -> None:
    runs = Runs()
    queue, stats, _ = make(runs)
    runs.hold.clear()
    queue.request(POLL)
    await until(lambda: runs.in_flight == 1)
    queue.request(event("e1"))  # pending
    queue.request(POLL)  # merges: keeps e1
    queue.request(event("e2"))  # merges: the newest metadata
    runs.hold.set()
    await until(lambda: len(runs.seen) == 2 and runs.in_flight == 0)
    await asyncio.sleep(0.02)
    assert runs.requests == [POLL, event("e2")]
    assert stats[Counter.FETCH_COALESCED] == 2
    assert runs.most_in_flight == 1


async def test_an_unconditional_trigger_wins_the_merge_whatever_comes_after() -> None:
    runs = Runs()
    queue, stats, _ = make(runs)
    runs.hold.clear()
    queue.request(POLL)
    await until(lambda: runs.in_flight == 1)
    for request in (event("e1"), FULL, event("e2"), POLL):
        queue.request(request)
    runs.hold.set()
    await until(lambda: len(runs.seen) == 2 and runs.in_flight == 0)
    assert runs.requests == [POLL, FULL]
    assert stats[Counter.FETCH_COALESCED] == 3


async def test_a_failed_fetch_is_retried_after_a_doubling_backoff_that_success_resets() -> None:
    runs = Runs()
    queue, _, _ = make(runs, retry_min_s=0.04, retry_max_s=0.1)
    assert queue.failing is False
    # Upper half of 0.04 * 2**n, capped at 0.1: [0.02, 0.04], [0.04, 0.08], [0.05, 0.1].
    delays = [queue.failed(POLL) for _ in range(3)]
    assert queue.failing is True
    assert 0.02 <= delays[0] <= 0.04
    assert 0.04 <= delays[1] <= 0.08
    assert 0.05 <= delays[2] <= 0.1
    # Each failure replaced the previous retry: one retry runs, after the last delay.
    started = time.monotonic()
    await until(lambda: len(runs.seen) == 1)
    await asyncio.sleep(0.15)
    assert runs.requests == [POLL]
    assert runs.seen[0][1] - started >= delays[2] - 0.01

    queue.succeeded()
    assert queue.failing is False
    assert 0.02 <= queue.failed(event("e1")) <= 0.04  # the streak starts again


async def test_success_cancels_a_scheduled_retry() -> None:
    runs = Runs()
    queue, _, _ = make(runs, retry_min_s=0.04, retry_max_s=0.04)
    queue.failed(event("e1"))
    queue.succeeded()
    await asyncio.sleep(0.1)
    assert runs.seen == []


async def test_rate_limited_closes_the_gate_and_runs_the_trigger_once_it_opens() -> None:
    runs = Runs()
    queue, _, gate = make(runs)
    blocked_at = time.monotonic()
    assert queue.rate_limited(event("e1"), 0.1) == 0.1
    assert queue.failing is True
    queue.request(POLL)  # waits on the same gate, merged into the same fetch
    await until(lambda: len(runs.seen) == 1)
    assert runs.requests == [event("e1")]
    assert runs.seen[0][1] - blocked_at >= 0.1 - 0.005
    # Without a usable Retry-After the gate closes for the next backoff step (the second:
    # each 429 takes one, so Retry-After: 0 cannot make a storm).
    wait = queue.rate_limited(POLL, None)
    assert 0.04 <= wait <= 0.08
    await until(lambda: len(runs.seen) == 2)
    await gate.wait()


async def test_stop_drops_what_is_pending_and_refuses_later_triggers() -> None:
    runs = Runs()
    queue, _, _ = make(runs)
    runs.hold.clear()
    queue.request(POLL)
    await until(lambda: runs.in_flight == 1)
    queue.request(event("e1"))
    queue.failed(FULL)  # a retry is scheduled too
    runner = queue.stop()
    assert runner is not None and not runner.done()  # the fetch in flight is not cancelled
    queue.request(FULL)
    runs.hold.set()
    await asyncio.wait_for(runner, 1.0)
    await asyncio.sleep(0.1)  # past the retry's delay
    assert runs.requests == [POLL]


# -- the ceiling and the gate ---------------------------------------------------------------


async def test_fetches_go_in_a_burst_of_four_then_at_the_ceilings_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "CEILING_PER_S", 5.0)  # one every 0.2 s: a short test
    runs = Runs()
    queue, stats, _ = make(runs)
    started = time.monotonic()
    for n in range(6):  # one after the other, as a server's answers trigger them
        queue.request(event(f"e{n}"))
        await until(lambda n=n: len(runs.seen) == n + 1 and runs.in_flight == 0)
    starts = [t - started for _, t in runs.seen]
    assert stats[Counter.FETCH_CEILING_DELAYED] == 2  # the fifth and the sixth
    # A full bucket of 4 at the start, one more token every 0.2 s: the fifth fetch
    # cannot start before 0.2 s, the sixth before 0.4 s (later only, under load).
    assert starts[4] >= 0.2 - 0.01
    assert starts[5] >= 0.4 - 0.01


async def test_an_urgent_trigger_passes_a_fetch_held_by_the_ceiling_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "CEILING_PER_S", 0.01)  # a token every 100 s
    runs = Runs()
    queue, stats, _ = make(runs)
    for n in range(4):
        queue.request(event(f"e{n}"))
        await until(lambda n=n: len(runs.seen) == n + 1 and runs.in_flight == 0)
    queue.request(POLL)  # no token left: held
    await until(lambda: stats[Counter.FETCH_CEILING_DELAYED] == 1)
    queue.request(FULL, urgent=True)  # a context change: goes now, merged with the poll
    await until(lambda: len(runs.seen) == 5, timeout_s=10.0)
    assert runs.requests[-1] == FULL
    queue.stop()


async def test_a_shorter_block_never_shortens_a_longer_one() -> None:
    gate = RateGate()
    gate.block(30.0)
    gate.block(0.01)  # a later, shorter Retry-After
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gate.wait(), 0.5)


async def test_pausing_drops_what_waits_for_the_ceiling_or_a_retry_but_not_a_context_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "CEILING_PER_S", 5.0)  # a token every 0.2 s
    runs = Runs()
    queue, stats, _ = make(runs, retry_min_s=0.1, retry_max_s=0.1)
    for n in range(4):
        queue.request(event(f"e{n}"))
        await until(lambda n=n: len(runs.seen) == n + 1 and runs.in_flight == 0)
    coalesced = stats[Counter.FETCH_COALESCED]
    queue.request(POLL)  # waits for a token
    queue.pause()  # idle: the resume fetches everything
    queue.failed(event("x"))  # a retry is scheduled (a failure answered while idle)
    queue.pause()
    assert stats[Counter.FETCH_COALESCED] == coalesced + 2
    await asyncio.sleep(0.5)  # a window for what must not happen: tokens and the retry due
    assert len(runs.seen) == 4
    queue.request(FULL, urgent=True)  # a context change still goes
    queue.pause()
    await until(lambda: len(runs.seen) == 5)
    assert runs.requests[-1] == FULL
