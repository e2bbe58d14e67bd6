"""The bounded hand-off: exact counts from many threads, bounded, never blocking; put()
appends or takes the slow way, which starts the worker on first use."""

from __future__ import annotations

import threading

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails

from flageval._handoff import Handoff, put
from flageval._losses import Dropped

CLOSED, QUEUE_OVERFLOW = Dropped.CLOSED, Dropped.QUEUE_OVERFLOW


def _nothing() -> None:
    pass


def _produce(h: Handoff, threads: int, per_thread: int) -> None:
    start = threading.Barrier(threads)

    def run(tid: int) -> None:
        start.wait(30)
        for i in range(per_thread):
            h.offer((tid, i), _nothing)  # type: ignore[arg-type]

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
        assert not t.is_alive()


def test_put_appends_while_accepting_with_room_and_says_how_deep_the_queue_was() -> None:
    h = Handoff(2, accepting=True)
    ctx = EvaluationContext("u", {"k": 1})
    depths = [put(h, _nothing, "f", FlagResolutionDetails(True, variant="on"), ctx) for _ in "abc"]
    assert depths == [0, 1, -1]  # the third found the queue full: the slow way
    assert len(h.queue) == 2 and h.counts() == {QUEUE_OVERFLOW: 1}
    assert [s[:2] for s in h.queue] == [("f", "on"), ("f", "on")]


def test_put_starts_the_worker_on_first_use_then_appends() -> None:
    h = Handoff(10)
    starts: list[int] = []

    def start() -> None:  # what a pipeline's ensure_started does when IDLE
        starts.append(1)
        h.accepting = True

    ctx = EvaluationContext("u", {})
    assert put(h, start, "f", FlagResolutionDetails(True), ctx) == -1  # started, then queued
    assert put(h, start, "f", FlagResolutionDetails(True), ctx) == 1  # the fast path
    assert starts == [1] and len(h.queue) == 2 and h.counts() == {}


def test_put_counts_closed_when_starting_does_not_open_it() -> None:
    h = Handoff(10)
    starts: list[int] = []
    put(h, lambda: starts.append(1), "f", FlagResolutionDetails(True), EvaluationContext())
    assert starts == [1] and not h.queue and h.counts() == {CLOSED: 1}


def test_every_offer_is_queued_or_counted_from_many_threads() -> None:
    h = Handoff(5_000, accepting=True)
    _produce(h, threads=8, per_thread=2_000)
    queued = len(h.queue)
    overflow = h.counts()[QUEUE_OVERFLOW]
    assert queued + overflow == 16_000
    # Overshoot past capacity is bounded by the number of racing producers.
    assert 5_000 <= queued <= 5_000 + 8
    # Each thread's items keep their order in the queue.
    per_thread: dict[int, list[int]] = {}
    for tid, i in h.queue:
        per_thread.setdefault(tid, []).append(i)
    assert all(v == sorted(v) for v in per_thread.values())


def test_concurrent_drain_loses_and_duplicates_nothing() -> None:
    h = Handoff(1_000_000, accepting=True)
    taken: list[tuple[int, int]] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or h.queue:
            taken.extend(h.drain(512))  # type: ignore[arg-type]

    consumer = threading.Thread(target=consume)
    consumer.start()
    _produce(h, threads=6, per_thread=5_000)
    done.set()
    consumer.join(30)
    assert len(taken) == 30_000
    assert len(set(taken)) == 30_000


def test_a_hand_off_not_accepting_counts_instead_of_queueing() -> None:
    h = Handoff(10, accepting=True)
    h.offer(("a",), _nothing)  # type: ignore[arg-type]
    h.accepting = False  # what its pipeline's end does
    h.offer(("b",), _nothing)  # type: ignore[arg-type]
    assert list(h.queue) == [("a",)]
    assert h.counts() == {CLOSED: 1}


def test_discard_takes_everything_and_counts_it_under_its_reason() -> None:
    h = Handoff(10)
    # A producer that read `accepting` before it changed appends afterwards:
    h.queue.extend([("late",), ("later",)])
    assert h.discard(CLOSED) == 2
    h.queue.append(("never drained",))
    assert h.discard(Dropped.NEVER_STARTED) == 1
    assert h.discard(CLOSED) == 0
    assert h.counts() == {CLOSED: 2, Dropped.NEVER_STARTED: 1}
    assert not h.queue


def test_reset_after_fork_starts_empty() -> None:
    h = Handoff(10, accepting=True)
    h.offer(("parent",), _nothing)  # type: ignore[arg-type]
    h.count(QUEUE_OVERFLOW, 3)
    h.reset_after_fork()
    assert not h.queue
    assert h.counts() == {}


def test_drain_keeps_what_it_took_when_something_else_pops_concurrently() -> None:
    from collections import deque

    stolen: list[object] = []

    class RacyDeque(deque):  # type: ignore[type-arg]
        calls = 0

        def popleft(self) -> object:
            RacyDeque.calls += 1
            if RacyDeque.calls == 3:  # another popper (a late discard) takes one first
                stolen.append(super().popleft())
            return super().popleft()

    h = Handoff(100, accepting=True)
    h.queue = RacyDeque((i,) for i in range(5))
    taken = h.drain(10)
    # 5 items: 4 returned, 1 stolen, none lost (the fifth pop found the queue empty).
    assert taken == [(0,), (1,), (3,), (4,)]
    assert stolen == [(2,)]


def test_counting_is_reentrant_for_signal_handlers() -> None:
    h = Handoff(1)
    with h._lock:  # a signal handler interrupting count() on this same thread
        h.count(CLOSED)
    assert h.counts() == {CLOSED: 1}
