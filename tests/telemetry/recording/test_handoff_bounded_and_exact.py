"""The bounded hand-off: exact counts from many threads, bounded, never blocking."""

from __future__ import annotations

import threading

from flageval._handoff import Handoff, State
from flageval._losses import CLOSED, QUEUE_OVERFLOW


def _produce(h: Handoff, threads: int, per_thread: int) -> None:
    start = threading.Barrier(threads)

    def run(tid: int) -> None:
        start.wait(30)
        for i in range(per_thread):
            h.offer((tid, i))

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
        assert not t.is_alive()


def test_starts_closed_to_the_fast_path_until_opened() -> None:
    h = Handoff(10)
    assert (h.state, h.accepting) == (State.NEW, False)
    h.open()
    assert (h.state, h.accepting) == (State.OPEN, True)


def test_every_offer_is_queued_or_counted_from_many_threads() -> None:
    h = Handoff(5_000)
    h.open()
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
    h = Handoff(1_000_000)
    h.open()
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


def test_closed_hand_off_counts_instead_of_queueing() -> None:
    h = Handoff(10)
    h.open()
    h.offer(("a",))
    h.close()
    h.offer(("b",))
    assert list(h.queue) == [("a",)]
    assert h.counts()[CLOSED] == 1


def test_late_arrivals_after_close_are_counted_as_closed() -> None:
    h = Handoff(10)
    h.open()
    h.close()
    # A producer that read `accepting` before close() appends afterwards:
    h.queue.append(("late",))
    assert h.discard_late() == 1
    assert h.counts()[CLOSED] == 1
    assert not h.queue


def test_reset_after_fork_starts_empty_and_new() -> None:
    h = Handoff(10)
    h.open()
    h.offer(("parent",))
    h.count(QUEUE_OVERFLOW, 3)
    h.reset_after_fork()
    assert not h.queue
    assert h.counts() == {QUEUE_OVERFLOW: 0, CLOSED: 0, "hook_error": 0}
    assert (h.state, h.accepting) == (State.NEW, False)


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

    h = Handoff(100)
    h.open()
    h.queue = RacyDeque((i,) for i in range(5))
    taken = h.drain(10)
    # 5 items: 4 returned, 1 stolen, none lost (the fifth pop found the queue empty).
    assert taken == [(0,), (1,), (3,), (4,)]
    assert stolen == [(2,)]


def test_counting_is_reentrant_for_signal_handlers() -> None:
    h = Handoff(1)
    with h._lock:  # a signal handler interrupting count() on this same thread
        h.count(CLOSED)
    assert h.counts()[CLOSED] == 1
