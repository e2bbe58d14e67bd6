"""Where a pipeline's worker runs, and calls into it from other threads.

By default on the library's own loop thread (a :class:`~flageval._loop.LoopThread`), so
sync and async applications alike never run aggregation on their own loop; with
``start_async`` as tasks on a loop the caller owns. The worker module (and with it
aiohttp) is imported here, when the first worker starts, never at ``import flageval``.
A started runner whose pipeline is collected without ``shutdown()`` has the worker do
its final flush and its thread end, so nothing leaks (thread, loop, sockets).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from . import _process as process
from ._config import Settings
from ._handoff import Handoff
from ._loop import LoopThread, OnLoopError, call_on, on_loop, park

if TYPE_CHECKING:
    from ._worker import Worker

log = logging.getLogger("flageval")

T = TypeVar("T")

ON_LOOP_ERROR = (
    "flageval: called from the worker's own event loop; "
    "use 'await telemetry.flush_async()' / 'await telemetry.shutdown_async()'"
)


def _new_worker(settings: Settings, handoff: Handoff) -> Worker:
    from ._worker import Worker  # noqa: PLC0415 - here, not at import: it pulls aiohttp

    return Worker(settings, handoff)


class Runner:
    """One started worker and the loop it runs on (its own thread's, or the caller's)."""

    def __init__(
        self,
        worker: Worker,
        thread: LoopThread | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        task: asyncio.Task[None] | None = None,
    ) -> None:
        self.worker, self.thread, self.loop, self.task = worker, thread, loop, task
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @classmethod
    def on_own_thread(cls, settings: Settings, handoff: Handoff) -> Runner | None:
        """Start the worker on a new loop thread. None when it cannot start: logged once
        and the hand-off closed, so that every later evaluation is counted ``closed``
        instead of retrying (and leaking a loop) per evaluation."""
        try:
            worker = _new_worker(settings, handoff)
            thread = LoopThread("flageval-worker")
        except Exception:
            log.exception("could not start the worker; telemetry is off")
            handoff.close()
            return None
        try:
            thread.start(worker.run(), timeout_s=5.0)
        except RuntimeError:
            # "can't start new thread" (a process or container limit).
            log.exception("could not start the worker thread; telemetry is off")
            handoff.close()
            return None
        return cls(worker, thread)

    @classmethod
    def on_running_loop(cls, settings: Settings, handoff: Handoff) -> Runner:
        loop = asyncio.get_running_loop()
        worker = _new_worker(settings, handoff)
        return cls(worker, None, loop, loop.create_task(worker.run(), name="flageval-worker"))

    # -- from any thread ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        if self.thread is not None:
            return self.thread.running
        return self.loop is not None and self.loop.is_running()

    @property
    def thread_alive(self) -> bool:
        return self.thread is not None and self.thread.alive

    def on_loop(self) -> bool:
        """True when called from the worker's own loop (blocking there would deadlock)."""
        if self.thread is not None:
            return self.thread.in_loop_thread()
        return self.loop is not None and on_loop(self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T | None:
        """Run ``coro`` on the worker's loop and wait up to ``timeout_s`` (``call_on``)."""
        try:
            if self.thread is not None:
                return self.thread.call(coro, timeout_s)
            assert self.loop is not None
            return call_on(self.loop, coro, timeout_s)
        except OnLoopError:
            raise RuntimeError(ON_LOOP_ERROR) from None

    async def stop(self, deadline: float) -> bool:
        """On the worker's loop: the worker's shutdown, then the loop thread's end.
        False when it failed: application code its final drain ran raised (even
        GeneratorExit or KeyboardInterrupt), logged here and never raised further."""
        try:
            await self.worker.shutdown(deadline)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("the worker failed during shutdown")
            return False
        finally:
            if self.thread is not None:
                self.thread.stop_soon()
        return True

    def abandon(self) -> bool:
        """start_async()'s loop has ended without shutdown_async(): nothing can post any
        more, so what was held is counted instead of pending forever. False when the
        worker failed in that last drain (application code), logged here."""
        try:
            lost = self.worker.abandon()
        except BaseException:
            log.exception("the worker failed during shutdown")
            return False
        if lost:
            log.warning(
                "the worker's event loop ended before shutdown; "
                "%d evaluations counted as intake_unavailable",
                lost,
            )
        return True

    def end_thread(self, timeout_s: float) -> None:
        if self.thread is not None:
            self.thread.stop(timeout_s)

    # -- the pipeline's end ---------------------------------------------------------------
    def release_when_collected(self, owner: object, handoff: Handoff, timeout_s: float) -> None:
        """When ``owner`` is collected without shutdown, stop this worker (see module)."""
        if self.thread is not None:
            self._finalizer = weakref.finalize(
                owner, _release, self.thread, self.worker, handoff, timeout_s
            )
            self._finalizer.atexit = False  # at exit, flageval._process shuts down

    def keep(self) -> None:
        """Shut down by its owner: nothing to release when it is collected."""
        if self._finalizer is not None:
            self._finalizer.detach()

    def forget(self) -> None:
        """In a forked child: the loop, thread and worker are the parent's; never touch."""
        self.keep()
        if self.thread is not None:
            self.thread.forget()
        park(self.worker, self.task)


def _release(thread: LoopThread, worker: Worker, handoff: Handoff, timeout_s: float) -> None:
    """Runs in the collector (any thread): nobody waits here; exit waits for the thread,
    up to its deadline."""
    handoff.close()
    deadline = time.monotonic() + timeout_s

    async def stop() -> None:
        try:
            await worker.shutdown(deadline)
        except BaseException:
            log.debug("a dropped pipeline's final flush failed", exc_info=True)
        finally:
            thread.stop_soon()

    if thread.submit(stop()) is not None:
        process.linger(thread, deadline + 1.0)
