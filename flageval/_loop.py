"""An asyncio event loop on a daemon thread, driven from any other thread.

Both halves of the package stand on it: the telemetry worker and the OFREP provider
run their I/O here, so neither a sync application nor an async one's loop ever
waits on our sockets. Other threads use ``submit`` (a future), ``call`` (wait with a
deadline) and ``call_soon`` (fire and forget); ``stop`` ends the loop within a deadline,
cancelling whatever the owner left running; ``forget`` is for a forked child, where the
loop and thread belong to the parent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("flageval")

#: A forked child must not finalise what belongs to the parent (its loop's selector, its
#: thread, its sockets): such objects are parked here for the life of the child.
_FORK_GRAVEYARD: list[object] = []

#: How long a stopping loop gives the tasks its owner left behind to end once cancelled.
_TEARDOWN_S = 1.0
#: ``call`` waits in slices this long, so a loop stopped under it is noticed at once.
_POLL_S = 0.05


def park(*objects: object) -> None:
    """In a forked child: keep ``objects`` (the parent's) alive and untouched for good."""
    _FORK_GRAVEYARD.append(objects)


class OnLoopError(RuntimeError):
    """A blocking call was made from the loop it would wait for (it would wait forever)."""


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called from a coroutine or callback running on ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_on(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout_s: float
) -> T | None:
    """Run ``coro`` on ``loop`` (running on another thread) and wait up to ``timeout_s``
    for its result. None when it did not finish: timed out (it is then cancelled), or
    the loop stopped first. Raises OnLoopError when called from ``loop`` itself."""
    if on_loop(loop):
        coro.close()
        raise OnLoopError("a blocking call from the event loop it would wait for")
    try:
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # closed since the caller looked
        coro.close()
        return None
    end = time.monotonic() + timeout_s
    while True:
        try:
            return fut.result(max(0.0, min(_POLL_S, end - time.monotonic())))
        except concurrent.futures.CancelledError:
            return None
        except concurrent.futures.TimeoutError:
            if fut.done() or (loop.is_running() and time.monotonic() < end):
                continue
            if not loop.is_closed():
                fut.cancel()
            if not loop.is_running():
                # Never to run: closed here, not left to the collector's warning.
                with contextlib.suppress(Exception):
                    coro.close()
            return None


class LoopThread:
    """One event loop on one daemon thread; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._running = threading.Event()
        self._main: Coroutine[Any, Any, None] | None = None
        #: The task running the coroutine given to ``start``, once the loop runs.
        self.main_task: asyncio.Task[None] | None = None

    def start(self, main: Coroutine[Any, Any, None] | None = None, timeout_s: float = 10.0) -> bool:
        """Start the thread; ``main`` becomes the loop's first task. True when the loop
        runs within ``timeout_s`` (False: it is starting late, and will run). Raises
        RuntimeError when no thread can be started (a process or container limit); the
        loop is then closed."""
        self._main = main
        try:
            self._thread.start()
        except RuntimeError:
            if main is not None:
                main.close()
            self._loop.close()
            raise
        return self._running.wait(timeout_s)

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            if self._main is not None:
                self.main_task = loop.create_task(self._main, name=self.name)
            loop.call_soon(self._running.set)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                # Ended, so no "Task was destroyed but it is pending" and no leaked socket.
                loop.run_until_complete(asyncio.wait(pending, timeout=_TEARDOWN_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:  # pragma: no cover - best effort at teardown
            log.debug("error while closing the %s loop", self.name, exc_info=True)
        finally:
            loop.close()

    # -- from any thread --------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop.is_running()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | None:
        """Schedule ``coro`` on the loop; None (and ``coro`` closed) once the loop is closed."""
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:
            coro.close()
            return None

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T | None:
        """:func:`call_on` this loop."""
        return call_on(self._loop, coro, timeout_s)

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        # A closed loop means its owner is shutting down: nothing left to do.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def stop(self, timeout_s: float) -> bool:
        """Stop the loop and wait for the thread; True if it ended within the time."""
        self.call_soon(self._loop.stop)
        if not self.in_loop_thread() and self._thread.ident is not None:
            self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end by itself; True if it did within the time."""
        if not self.in_loop_thread() and self._thread.ident is not None:
            self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    def stop_soon(self) -> None:
        """Stop the loop once the callback running now returns (from the loop itself)."""
        self._loop.call_soon(self._loop.stop)

    def forget(self) -> None:
        """In a forked child: the loop and thread are the parent's; never touch them."""
        park(self._loop, self._thread, self.main_task)
