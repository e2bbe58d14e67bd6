"""The loop-thread primitive both halves stand on (flageval/_loop.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from flageval._loop import LoopThread, OnLoopError, call_on


def test_start_is_bounded_and_a_late_loop_can_still_be_stopped() -> None:
    """A loop thread that does not get to run its loop until the test lets it: start()
    gives up at its timeout (it returns while the thread is still held), and a stop
    told before the loop ran ends the thread once it does run."""
    release = threading.Event()

    class Stuck(LoopThread):
        def _run(self) -> None:
            release.wait(60.0)
            super()._run()

    thread = Stuck("test-stuck")
    assert thread.start(timeout_s=0.2) is False  # returned although still held
    assert not release.is_set()
    thread.stop(0)  # told to stop before it ran: the thread ends instead of running forever
    release.set()
    deadline = time.monotonic() + 30.0
    while thread.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not thread.alive


def test_main_coroutine_runs_and_call_returns_its_result() -> None:
    ran = threading.Event()

    async def main() -> None:
        ran.set()
        await asyncio.sleep(3600)  # cancelled by stop()

    thread = LoopThread("test-main")
    assert thread.start(main()) is True
    assert ran.wait(30.0)

    async def answer() -> int:
        return 42

    assert thread.call(answer(), 30.0) == 42
    assert thread.stop(30.0) is True
    assert thread.main_task is not None and thread.main_task.cancelled()


def test_call_times_out_and_cancels_what_it_waited_for() -> None:
    thread = LoopThread("test-timeout")
    thread.start()
    cancelled = threading.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    began = time.monotonic()
    assert thread.call(slow(), 0.2) is None
    # It waited its 0.2 s; the coroutine alone would take an hour, and a loaded
    # machine does not turn 0.2 s into 20.
    assert 0.15 < time.monotonic() - began < 20.0
    assert cancelled.wait(30.0)
    thread.stop(30.0)


def test_call_notices_a_loop_stopped_under_it_at_once() -> None:
    thread = LoopThread("test-stopped")
    thread.start()

    async def stop_then_wait() -> int:
        thread.stop_soon()
        await asyncio.sleep(3600)
        return 1

    began = time.monotonic()
    assert thread.call(stop_then_wait(), 300.0) is None
    # Not its 300 s timeout: a loaded machine does not make "at once" 20 s.
    assert time.monotonic() - began < 20.0


def test_a_blocking_call_from_the_loop_itself_is_refused() -> None:
    thread = LoopThread("test-onloop")
    thread.start()

    async def inner() -> str:
        async def nothing() -> None:
            return None

        try:
            thread.call(nothing(), 1.0)
        except OnLoopError:
            return "refused"
        return "waited"

    assert thread.call(inner(), 30.0) == "refused"
    thread.stop(30.0)


def test_submit_after_the_loop_closed_returns_none_and_closes_the_coroutine() -> None:
    thread = LoopThread("test-closed")
    thread.start()
    assert thread.stop(30.0)

    async def never() -> None:
        return None

    coro = never()
    assert thread.submit(coro) is None
    with pytest.raises(RuntimeError):  # closed: it cannot be started any more
        coro.send(None)


def test_call_on_refuses_the_running_loop() -> None:
    async def main() -> None:
        async def nothing() -> None:
            return None

        with pytest.raises(OnLoopError):
            call_on(asyncio.get_running_loop(), nothing(), 1.0)

    asyncio.run(main())
