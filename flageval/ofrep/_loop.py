"""The provider's own event loop on its own daemon thread.

All network I/O runs here, so a synchronous application needs no event loop of its
own, and an asyncio application's loop never waits on the provider's sockets. Other
threads talk to it only through ``submit`` (a coroutine, with a concurrent future to
wait on) and ``call_soon`` (fire and forget).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._diagnostics import logger

T = TypeVar("T")


class LoopThread:
    # A new thread runs its first callback within milliseconds; one that has not after
    # this long (a starved or broken interpreter) must not block initialize() forever.
    START_TIMEOUT_S = 10.0

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self) -> None:
        """Start the thread and wait (bounded) for its loop to run; RuntimeError if it
        did not within ``START_TIMEOUT_S`` (the loop is then told to stop at once)."""
        self._thread.start()
        if not self._started.wait(self.START_TIMEOUT_S):
            self.call_soon(self._loop.stop)
            raise RuntimeError(f"the {self._name} loop thread did not start in time")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                # Whatever the owner did not close in time is cancelled here, so no
                # "Task was destroyed but it is pending" noise and no leaked socket.
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            except Exception:  # pragma: no cover - best effort at teardown
                logger.debug("error while closing the provider loop", exc_info=True)
            finally:
                self._loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        # A closed loop means the provider is shutting down: nothing left to refresh.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def stop(self, timeout_s: float) -> bool:
        """Stop the loop and wait for the thread; True if it ended within the time."""
        self.call_soon(self._loop.stop)
        if not self.in_loop_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()
