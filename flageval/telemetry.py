"""``Telemetry``: one pipeline's lifecycle (start, flush, shutdown, stats).

A pipeline owns one hand-off and one worker, and the loop the worker runs on. By
default that is the library's own daemon thread (a :class:`~flageval._loop.LoopThread`),
started by the first evaluation, so sync apps (scripts, Flask, Django) and async apps
alike never run aggregation on their own loop. ``autostart=False`` plus
``await telemetry.start_async()`` runs it on a loop the caller owns instead.

Shutdown runs under one deadline shared by every stage (stop accepting, drain, final
flush, close the session). flageval.process runs it at exit, and after ``os.fork()``
has the child start clean: it drops what the parent had queued or aggregated (the
parent sends that) and starts its own worker on its first evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar, Unpack

from . import process
from ._loop import LoopThread, OnLoopError, call_on, on_loop, park
from .config import Settings, SettingsOverrides
from .handoff import Handoff, State
from .hook import FlagEvalHook
from .stats import EMPTY_STATS, Stats, assemble
from .worker import Worker

log = logging.getLogger("flageval")

T = TypeVar("T")

_ON_LOOP_ERROR = (
    "flageval: called from the worker's own event loop; "
    "use 'await telemetry.flush_async()' / 'await telemetry.shutdown_async()'"
)
#: stats() waits this long for the worker's loop before answering from its last snapshot.
_STATS_WAIT_S = 5.0


class Telemetry:
    """One evaluation-telemetry pipeline: hand-off, worker, writer.

    Every setting of :class:`flageval.Settings` is a keyword argument; one left out
    comes from its environment variable, else its default. ``.hook`` is the OpenFeature
    hook that feeds this pipeline.
    """

    def __init__(self, *, autostart: bool = True, **settings: Unpack[SettingsOverrides]) -> None:
        self.settings = Settings.from_env(**settings)
        self._autostart = autostart
        self._lock = threading.Lock()
        # The thread holding _lock to start the worker, and a shutdown() that a signal
        # handler on that same thread asked for meanwhile (see _locked).
        self._lock_owner: int | None = None
        self._deferred_shutdown = False
        self._deferred_timeout_s: float | None = None
        self._thread: LoopThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None  # the worker on a caller's loop
        self._pid = os.getpid()
        self._last_stats: Stats | None = None
        if not self.settings.enabled:
            # Off means off: no queue, no thread, no task, no socket, no atexit.
            self._handoff: Handoff | None = None
            self.hook = FlagEvalHook(self)
            return
        self._handoff = Handoff(self.settings.queue_size)
        if not autostart:
            self._handoff.open()  # queue (bounded) until start()/start_async()
        self.hook = FlagEvalHook(self)
        process.track(self)

    def __repr__(self) -> str:
        state = "disabled" if self._handoff is None else ("running" if self.running else "idle")
        return f"<Telemetry {state} intake={self.settings.endpoint().display!r}>"

    @property
    def enabled(self) -> bool:
        return self._handoff is not None

    @property
    def running(self) -> bool:
        return self._worker is not None and self._handoff is not None and self._handoff.accepting

    @property
    def handoff(self) -> Handoff | None:
        """Where the hook puts its snapshots; None when the killswitch is set."""
        return self._handoff

    # -- starting -----------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start the own-thread worker if it is not yet (the hook's first use; any thread)."""
        if self._handoff is None:
            return
        with self._locked():
            if self._handoff.state is State.NEW and self._autostart:
                self._start_thread_locked()

    def start(self) -> None:
        """Start the worker on the library's own thread now (else: first evaluation)."""
        if self._handoff is None:
            return
        with self._locked():
            if self._handoff.state is State.CLOSED:
                raise RuntimeError("flageval: this Telemetry was shut down")
            if self._worker is None:
                self._start_thread_locked()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """``_lock`` for starting the worker, remembering the thread that holds it: a
        signal handler on that thread calling shutdown() (SIGTERM during the first
        evaluation) would wait for the lock forever, so its shutdown runs here instead,
        as soon as the interrupted start lets the lock go."""
        try:
            with self._lock:
                self._lock_owner = threading.get_ident()
                try:
                    yield
                finally:
                    self._lock_owner = None
        finally:
            if self._deferred_shutdown:
                self._deferred_shutdown = False
                self.shutdown(self._deferred_timeout_s)

    def _start_thread_locked(self) -> None:
        assert self._handoff is not None
        try:
            worker = Worker(self.settings, self._handoff)
            thread = LoopThread("flageval-worker")
        except Exception:
            # Never retried per evaluation: the pipeline closes, and every later
            # evaluation is counted under ``closed``.
            log.exception("could not start the worker; telemetry is off")
            self._handoff.close()
            return
        try:
            thread.start(worker.run(), timeout_s=5.0)
        except RuntimeError:
            # "can't start new thread" (a process or container limit): closed once, as
            # above; left NEW, every evaluation would try again and leak a loop.
            log.exception("could not start the worker thread; telemetry is off")
            self._handoff.close()
            return
        self._thread, self._worker = thread, worker
        self._handoff.open()

    async def start_async(self) -> None:
        """Run the worker as tasks on the running loop (the caller's), not a thread."""
        if self._handoff is None:
            return
        with self._locked():
            if self._worker is not None:
                raise RuntimeError("flageval: worker already started")
            if self._handoff.state is State.CLOSED:
                raise RuntimeError("flageval: this Telemetry was shut down")
            loop = asyncio.get_running_loop()
            self._worker = Worker(self.settings, self._handoff)
            self._loop = loop
            self._task = loop.create_task(self._worker.run(), name="flageval-worker")
            self._handoff.open()
        await asyncio.sleep(0)  # let the worker's tasks start

    # -- the worker's loop -----------------------------------------------------------------
    def _loop_running(self) -> bool:
        if self._thread is not None:
            return self._thread.running
        return self._loop is not None and self._loop.is_running()

    def _on_worker_loop(self) -> bool:
        if self._thread is not None:
            return self._thread.in_loop_thread()
        return self._loop is not None and on_loop(self._loop)

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T | None:
        """Run ``coro`` on the worker's loop from another thread (see ``call_on``)."""
        try:
            if self._thread is not None:
                return self._thread.call(coro, timeout_s)
            assert self._loop is not None
            return call_on(self._loop, coro, timeout_s)
        except OnLoopError:
            raise RuntimeError(_ON_LOOP_ERROR) from None

    # -- flush ----------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until what was counted so far is posted or counted as lost.

        Returns True when nothing is left pending (False: the intake could not take it
        all before ``timeout_s``; it waits for the next flush, bounded)."""
        worker = self._worker
        if worker is None or not self._loop_running():
            return self._handoff is None or not self._handoff.queue
        deadline = time.monotonic() + timeout_s
        return bool(self._call(worker.flush(deadline, own_task=True), timeout_s + 1.0))

    async def flush_async(self, timeout_s: float = 10.0) -> bool:
        """:meth:`flush` for async code: on the worker's loop (``start_async``) it runs
        here; on any other loop it waits for the worker's own, without blocking this one."""
        worker = self._worker
        if worker is None:
            return True
        if not self._on_worker_loop():
            # The tiers, the sender and its session belong to the worker's loop: flushing
            # them from this one would race it.
            return await asyncio.to_thread(self.flush, timeout_s)
        return await worker.flush(time.monotonic() + timeout_s)

    # -- shutdown -------------------------------------------------------------------------
    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop accepting (later evaluations count as ``closed``), drain, final flush,
        all within ``timeout_s`` (default: the ``shutdown_timeout_s`` setting)."""
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if self._on_worker_loop():
            # Refused before anything is closed, so that the shutdown_async() the message
            # asks for still finds the pipeline open and does the drain and final flush.
            raise RuntimeError(_ON_LOOP_ERROR)
        if self._lock_owner == threading.get_ident():
            # A signal handler interrupted this thread while it starts the worker:
            # deferred to the end of that start (see _locked), not a deadlock.
            self._deferred_timeout_s = timeout_s
            self._deferred_shutdown = True
            return
        if not self._begin_shutdown():
            return
        worker, thread = self._worker, self._thread
        if worker is None:
            self._discard_queued()
            return
        if self._loop_running():
            # Keep a small margin of the deadline for closing the loop and the thread.
            inner = deadline - min(0.25, timeout * 0.1)

            async def stop() -> None:
                try:
                    await worker.shutdown(inner)
                finally:
                    if thread is not None:
                        thread.stop_soon()

            self._call(stop(), max(0.0, deadline - time.monotonic()))
        elif thread is None and not worker.stopped:
            # start_async()'s loop has ended without shutdown_async(): nothing can post
            # any more; count what was held instead of leaving it pending forever.
            lost = worker.abandon()
            if lost:
                log.warning(
                    "the worker's event loop ended before shutdown; "
                    "%d evaluations counted as intake_unavailable",
                    lost,
                )
        if thread is not None:
            thread.stop(deadline - time.monotonic())
        if self._drained_for_good():
            self._discard_queued()

    async def shutdown_async(self, timeout_s: float | None = None) -> None:
        """:meth:`shutdown` for async code: on the worker's loop (``start_async``) it
        runs here; on any other loop it waits for the worker's own, without blocking
        this one."""
        if self._worker is not None and not self._on_worker_loop():
            # Checked before anything is closed: refusing after closing the hand-off
            # would leave a pipeline that no later shutdown drains or flushes.
            await asyncio.to_thread(self.shutdown, timeout_s)
            return
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if not self._begin_shutdown():
            return
        if self._worker is None:
            self._discard_queued()
            return
        await self._worker.shutdown(deadline)
        if self._task is not None:
            self._task.cancel()
        self._discard_queued()

    def _begin_shutdown(self) -> bool:
        if self._handoff is None:
            return False
        with self._lock:
            if self._handoff.state is State.CLOSED:
                return False
            self._handoff.close()
            return True

    def _drained_for_good(self) -> bool:
        """True when nothing will drain the hand-off again, so what is left in it
        raced past ``close`` and counts as ``closed``. While the worker still runs its
        shutdown, what is queued was accepted before ``close`` and is its to send (and
        discarding from another thread would race its drain)."""
        worker = self._worker
        if worker is None or worker.stopped:
            return True
        thread = self._thread
        return not self._loop_running() and not (thread is not None and thread.alive)

    def _discard_queued(self) -> None:
        assert self._handoff is not None
        self._handoff.discard_late()

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> Stats:
        """A consistent snapshot of the counters (taken on the worker's loop)."""
        if self._loop_running() and not self._on_worker_loop():

            async def snap() -> Stats:
                return self._stats_now()

            result = self._call(snap(), _STATS_WAIT_S)
            if result is not None:
                self._last_stats = result
                return result
            if self._loop_running() and self._last_stats is not None:
                # The loop is busy (seconds of work): reading its structures from here
                # would race it. The last consistent snapshot is the honest answer.
                return self._last_stats
        return self._stats_now()

    def _stats_now(self) -> Stats:
        h = self._handoff
        if h is None:
            return EMPTY_STATS
        if h.state is State.CLOSED and self._drained_for_good():
            h.discard_late()
        worker = self._worker
        return assemble(h.counts(), len(h.queue), None if worker is None else worker.report())

    # -- process life (flageval.process) ----------------------------------------------------
    def at_exit(self) -> None:
        if self._pid == os.getpid():
            self.shutdown()

    def after_fork_in_child(self) -> None:
        if self._handoff is None:
            return
        if self._thread is not None:
            self._thread.forget()
        park(self._worker, self._task)
        self._lock = threading.Lock()
        self._lock_owner = None
        self._deferred_shutdown = False
        self._loop = self._thread = self._worker = self._task = None
        self._pid = os.getpid()
        was_closed = self._handoff.state is State.CLOSED
        self._handoff.reset_after_fork()
        if was_closed:
            self._handoff.close()
        elif not self._autostart:
            self._handoff.open()
