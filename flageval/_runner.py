"""Where a pipeline's worker runs: the library's own loop thread, and calls into it.

The worker always runs on a :class:`~flageval._loop.LoopThread` of its own, so sync and
async applications alike never run aggregation on their loop, and a busy or blocked
application loop never holds a flush. The worker module (and with it aiohttp) is
imported here, when the first worker starts, never at ``import flageval``. A started
runner whose pipeline is collected without ``shutdown()`` has the worker do its final
flush and its thread end, so nothing leaks (thread, loop, sockets).
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
from ._lifecycle import Lifecycle, Phase
from ._loop import LoopThread, OnLoopError, park

if TYPE_CHECKING:
    from ._worker import Worker

log = logging.getLogger("flageval")

T = TypeVar("T")

ON_LOOP_ERROR = (
    "flageval: a blocking flush() or shutdown() was called from the worker's own "
    "thread, which it would wait for; use 'await telemetry.flush_async()' / "
    "'await telemetry.shutdown_async()' from async code"
)


class Runner:
    """One started worker and the loop thread it runs on."""

    def __init__(self, worker: Worker, thread: LoopThread) -> None:
        self.worker, self.thread = worker, thread
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @classmethod
    def start(cls, settings: Settings, handoff: Handoff, life: Lifecycle) -> Runner | None:
        """Start the worker on a new loop thread. None when it cannot start (logged
        once); the caller then moves the pipeline to FAILED."""
        try:
            from ._worker import Worker  # noqa: PLC0415 - here, not at import: it pulls aiohttp

            worker = Worker(settings, handoff, life)
            thread = LoopThread("flageval-worker")
        except Exception:
            log.exception("could not start the worker; telemetry is off")
            return None
        try:
            thread.start(worker.run(), timeout_s=5.0)
        except RuntimeError:
            # "can't start new thread" (a process or container limit).
            log.exception("could not start the worker thread; telemetry is off")
            return None
        return cls(worker, thread)

    # -- from any thread ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.thread.running

    def on_loop(self) -> bool:
        """True when called from the worker's own thread (blocking there would deadlock):
        application code the worker runs, such as a value's ``__str__``."""
        return self.thread.in_loop_thread()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T | None:
        """Run ``coro`` on the worker's loop and wait up to ``timeout_s``: None when it
        did not finish (``flageval._loop.call_on``)."""
        try:
            return self.thread.call(coro, timeout_s)
        except OnLoopError:
            raise RuntimeError(ON_LOOP_ERROR) from None

    async def stop(self, deadline: float) -> bool:
        """On the worker's loop: the worker's shutdown (which moves the pipeline to
        STOPPED), then the loop thread's end. False when it failed (see _stop)."""
        return await _stop(self.worker, self.thread, deadline, quiet=False)

    def end_thread(self, timeout_s: float) -> None:
        self.thread.stop(timeout_s)

    # -- the pipeline's end ---------------------------------------------------------------
    def release_when_collected(self, owner: object, life: Lifecycle, timeout_s: float) -> None:
        """When ``owner`` is collected without shutdown, stop this worker (see module)."""
        self._finalizer = weakref.finalize(
            owner, _release, self.thread, self.worker, life, timeout_s
        )
        self._finalizer.atexit = False  # at exit, flageval._process shuts down

    def keep(self) -> None:
        """Shut down by its owner: nothing to release when it is collected."""
        if self._finalizer is not None:
            self._finalizer.detach()

    def forget(self) -> None:
        """In a forked child: the loop, thread and worker are the parent's; never touch."""
        self.keep()
        self.thread.forget()
        park(self.worker)


async def _stop(worker: Worker, thread: LoopThread, deadline: float, *, quiet: bool) -> bool:
    """The worker's shutdown; once it is done the pipeline is STOPPED (unless its shutdown
    halted it first). False when it failed: application code its final drain ran raised
    (even GeneratorExit or KeyboardInterrupt), logged here and never raised further."""
    try:
        await worker.shutdown(deadline)
    except asyncio.CancelledError:
        raise
    except BaseException:
        if quiet:
            log.debug("a dropped pipeline's final flush failed", exc_info=True)
        else:
            log.exception("the worker failed during shutdown")
        return False
    else:
        worker.life.move(Phase.STOPPED)
        return True
    finally:
        thread.stop_soon()


def _release(thread: LoopThread, worker: Worker, life: Lifecycle, timeout_s: float) -> None:
    """Runs in the collector (any thread): nobody waits here; exit waits for the thread,
    up to its deadline."""
    if not life.move(Phase.STOPPING):
        return
    deadline = time.monotonic() + timeout_s
    if thread.submit(_stop(worker, thread, deadline, quiet=True)) is not None:
        process.linger(thread, deadline + 1.0)
