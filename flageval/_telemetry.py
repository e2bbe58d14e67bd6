"""``Telemetry``: one pipeline's lifecycle (start, flush, shutdown, stats).

A pipeline owns one hand-off and one worker, and the loop the worker runs on
(flageval._runner): by default the library's own daemon thread, started by the first
evaluation, so sync apps (scripts, Flask, Django) and async apps alike never run
aggregation on their own loop. ``autostart=False`` plus ``await
telemetry.start_async()`` runs it on a loop the caller owns instead.

Shutdown runs under one deadline shared by every stage (stop accepting, drain, final
flush, close the session), and keeps it: a second caller waits for the shutdown in
progress (up to its own deadline); a worker still busy in application code at the
deadline is halted, so it sends nothing afterwards, and what it had not delivered is
counted (``worker_stalled``); no failure inside reaches the caller. flageval._process
runs it at exit and on stop signals, and after ``os.fork()`` has the child start clean:
it drops what the parent had queued or aggregated (the parent sends that) and starts its
own worker on its first evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Unpack

from . import _process as process
from ._config import Settings, SettingsOverrides
from ._handoff import Handoff, State
from ._hook import FlagEvalHook
from ._losses import NEVER_STARTED, WORKER_ERROR, WORKER_STALLED
from ._runner import ON_LOOP_ERROR, Runner
from ._stats import EMPTY_STATS, Frozen, Stats, assemble, books

if TYPE_CHECKING:
    from ._loop import LoopThread
    from ._worker import Worker

log = logging.getLogger("flageval")

#: stats() waits this long for the worker's loop before answering from plain counters.
_STATS_WAIT_S = 0.5


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
        self._runner: Runner | None = None
        self._pid = os.getpid()
        # Set once the shutdown is over; a call while it runs waits on it.
        self._shutdown_done = threading.Event()
        self._shutdown_thread: int | None = None
        self._frozen: Frozen | None = None  # the books closed at a missed deadline
        self._unstarted = 0  # queued for a worker that never started (never_started)
        if not self.settings.enabled:
            # Off means off: no queue, no thread, no task, no socket, no atexit.
            self._handoff: Handoff | None = None
            self.hook = FlagEvalHook(self)
            self._shutdown_done.set()
            return
        self._handoff = Handoff(self.settings.queue_size)
        if not autostart:
            self._handoff.open()  # queue (bounded) until start()/start_async()
        self.hook = FlagEvalHook(self)
        process.track_pipeline(self)

    def __repr__(self) -> str:
        state = "disabled" if self._handoff is None else ("running" if self.running else "idle")
        return f"<Telemetry {state} intake={self.settings.endpoint().display!r}>"

    @property
    def enabled(self) -> bool:
        return self._handoff is not None

    @property
    def running(self) -> bool:
        return self._runner is not None and self._handoff is not None and self._handoff.accepting

    @property
    def handoff(self) -> Handoff | None:
        """Where the hook puts its snapshots; None when the killswitch is set."""
        return self._handoff

    # Read-only views for tests and benchmarks that look inside a pipeline.
    @property
    def _worker(self) -> Worker | None:
        return None if self._runner is None else self._runner.worker

    @property
    def _thread(self) -> LoopThread | None:
        return None if self._runner is None else self._runner.thread

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
            if self._runner is None:
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
        h = self._handoff_or_fail()
        runner = Runner.on_own_thread(self.settings, h)
        if runner is None:
            # Logged, and the hand-off closed: later evaluations count as closed, and
            # this is the pipeline's end (a shutdown has nothing left to wait for).
            self._count_unstarted()
            self._shutdown_done.set()
            return
        self._runner = runner
        h.open()
        runner.release_when_collected(self, h, self.settings.shutdown_timeout_s)
        process.on_worker_start()

    async def start_async(self) -> None:
        """Run the worker as tasks on the running loop (the caller's), not a thread."""
        if self._handoff is None:
            return
        with self._locked():
            if self._runner is not None:
                raise RuntimeError("flageval: worker already started")
            if self._handoff.state is State.CLOSED:
                raise RuntimeError("flageval: this Telemetry was shut down")
            self._runner = Runner.on_running_loop(self.settings, self._handoff)
            self._handoff.open()
        process.on_worker_start()
        await asyncio.sleep(0)  # let the worker's tasks start

    def _on_worker_loop(self) -> bool:
        return self._runner is not None and self._runner.on_loop()

    # -- flush ----------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until what was counted so far is posted or counted as lost.

        Returns True when nothing is left pending (False: the intake could not take it
        all before ``timeout_s``; it waits for the next flush, bounded)."""
        h, runner = self._handoff, self._runner
        if h is not None and h.state is State.CLOSED and not self._on_worker_loop():
            # Shut down, or shutting down: what is left is that shutdown's to settle.
            return self._wait_for_shutdown(timeout_s)
        if runner is None or not runner.running:
            return h is None or not h.queue
        deadline = time.monotonic() + timeout_s
        return bool(runner.call(runner.worker.flush(deadline, own_task=True), timeout_s + 1.0))

    async def flush_async(self, timeout_s: float = 10.0) -> bool:
        """:meth:`flush` for async code: on the worker's loop (``start_async``) it runs
        here; on any other loop it waits for the worker's own, without blocking this one."""
        if self._runner is None:
            return True
        if not self._on_worker_loop():
            # The tiers, the sender and its session belong to the worker's loop: flushing
            # them from this one would race it.
            return await asyncio.to_thread(self.flush, timeout_s)
        return await self._runner.worker.flush(time.monotonic() + timeout_s)

    # -- shutdown -------------------------------------------------------------------------
    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop accepting (later evaluations count as ``closed``), drain, final flush,
        all within ``timeout_s`` (default: the ``shutdown_timeout_s`` setting). A call
        while another runs waits for it, up to its own deadline. Never raises, but for a
        call from the worker's own loop (RuntimeError, before anything is closed)."""
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if self._on_worker_loop():
            # Refused before anything is closed, so that the shutdown_async() the message
            # asks for still finds the pipeline open and does the drain and final flush.
            raise RuntimeError(ON_LOOP_ERROR)
        if self._lock_owner == threading.get_ident():
            # A signal handler interrupted this thread while it starts the worker:
            # deferred to the end of that start (see _locked), not a deadlock.
            self._deferred_timeout_s = timeout_s
            self._deferred_shutdown = True
            return
        try:
            if not self._begin_shutdown():
                self._wait_for_shutdown(deadline - time.monotonic())
                return
            try:
                self._shutdown(deadline, timeout)
            finally:
                self._shutdown_done.set()
        except Exception:
            log.exception("shutdown failed")

    def _wait_for_shutdown(self, timeout_s: float) -> bool:
        """Wait for the shutdown in progress, except on its own thread (a signal handler
        there would wait for itself). True once it is over."""
        if self._shutdown_thread == threading.get_ident():
            return self._shutdown_done.is_set()
        return self._shutdown_done.wait(max(0.0, timeout_s))

    def _shutdown(self, deadline: float, timeout: float) -> None:
        runner = self._runner
        if runner is None:
            self._count_unstarted()
            return
        runner.keep()
        worker = runner.worker
        if runner.running:
            # Keep a small margin of the deadline for closing the loop and the thread.
            inner = deadline - min(0.25, timeout * 0.1)
            ok = runner.call(runner.stop(inner), max(0.0, deadline - time.monotonic()))
            if not worker.stopped:
                self._freeze(WORKER_ERROR if ok is False else WORKER_STALLED)
        elif runner.thread is None and not worker.stopped and not runner.abandon():
            self._freeze(WORKER_ERROR)
        runner.end_thread(deadline - time.monotonic())
        if self._frozen is None and self._drained_for_good():
            self._handoff_or_fail().discard_late()

    def _freeze(self, reason: str) -> None:
        """The worker is not done at the deadline (busy in application code, or failed):
        halt it, so that it sends nothing after shutdown returns, and count what it had
        not delivered under ``reason``, once."""
        assert self._runner is not None
        self._runner.worker.halt()
        self._frozen = Frozen(self._handoff_or_fail(), self._runner.worker, reason)
        if reason == WORKER_STALLED:
            log.warning(
                "shutdown's deadline came while the worker was still busy in "
                "application code (a slow __str__ of a context value?); %d evaluations "
                "not delivered, counted as %s",
                self._frozen.lost,
                reason,
            )

    def _count_unstarted(self) -> None:
        """Shut down before any worker ran (autostart=False, never started): what was
        queued for it is counted as such, not as evaluated after shutdown."""
        h = self._handoff_or_fail()
        while batch := h.drain(4096):
            self._unstarted += len(batch)

    async def shutdown_async(self, timeout_s: float | None = None) -> None:
        """:meth:`shutdown` for async code: on the worker's loop (``start_async``) it
        runs here; on any other loop it waits for the worker's own, without blocking
        this one."""
        runner = self._runner
        if runner is None or not runner.on_loop():
            # Checked before anything is closed: refusing after closing the hand-off
            # would leave a pipeline that no later shutdown drains or flushes.
            await asyncio.to_thread(self.shutdown, timeout_s)
            return
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        if not self._begin_shutdown():
            await asyncio.to_thread(self._wait_for_shutdown, timeout)
            return
        try:
            if not await runner.stop(time.monotonic() + timeout):
                self._freeze(WORKER_ERROR)
        finally:
            self._shutdown_done.set()
        if runner.task is not None:
            runner.task.cancel()
        if self._frozen is None:
            self._handoff_or_fail().discard_late()

    def _begin_shutdown(self) -> bool:
        """Close the hand-off; True for the one call that then does the shutdown."""
        if self._handoff is None:
            return False
        with self._lock:
            if self._handoff.state is State.CLOSED:
                return False
            self._handoff.close()
            self._shutdown_thread = threading.get_ident()
            return True

    def _handoff_or_fail(self) -> Handoff:
        assert self._handoff is not None
        return self._handoff

    def _drained_for_good(self) -> bool:
        """True when nothing will drain the hand-off again, so what is left in it
        raced past ``close`` and counts as ``closed``. While the worker still runs its
        shutdown, what is queued was accepted before ``close`` and is its to send (and
        discarding from another thread would race its drain)."""
        runner = self._runner
        if runner is None or runner.worker.stopped:
            return True
        return not runner.running and not runner.thread_alive

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> Stats:
        """A consistent snapshot of the counters: taken on the worker's loop, or, when
        that loop cannot answer within half a second (busy), from plain counters."""
        h, runner = self._handoff, self._runner
        if h is None:
            return EMPTY_STATS
        if self._frozen is not None:
            h.discard_late()
            return self._frozen.now(h)
        if runner is not None and runner.running and not runner.on_loop():

            async def snap() -> Stats:
                return self._stats_now()

            result = runner.call(snap(), _STATS_WAIT_S)
            if result is not None:
                return result
            if runner.running:
                # Busy: reading its structures from here would race it.
                return books(h, runner.worker)
        return self._stats_now()

    def _stats_now(self) -> Stats:
        h = self._handoff_or_fail()
        if h.state is State.CLOSED and self._drained_for_good():
            h.discard_late()
        report = None if self._runner is None else self._runner.worker.report()
        return assemble({**h.counts(), NEVER_STARTED: self._unstarted}, len(h.queue), report)

    # -- process life (flageval._process) ----------------------------------------------------
    def at_exit(self) -> None:
        if self._pid == os.getpid():
            self.shutdown()

    def at_signal(self, final: bool) -> None:
        """A stop signal, on the main thread: shut down when the process dies next, else
        flush what was counted (the process may end without atexit: uvicorn)."""
        runner = self._runner
        if self._pid != os.getpid() or self._handoff is None:
            return
        if runner is not None and runner.thread is None and runner.on_loop():
            return  # the worker runs on the very loop this signal interrupted
        if final:
            self.shutdown()
        elif runner is not None:
            self.flush(self.settings.shutdown_timeout_s)

    def after_fork_in_child(self) -> None:
        if self._handoff is None:
            return
        if self._runner is not None:
            self._runner.forget()
        self._lock = threading.Lock()
        self._lock_owner = None
        self._deferred_shutdown = False
        self._runner = self._frozen = self._shutdown_thread = None
        self._unstarted = 0
        self._shutdown_done = threading.Event()
        self._pid = os.getpid()
        was_closed = self._handoff.state is State.CLOSED
        self._handoff.reset_after_fork()
        if was_closed:
            self._handoff.close()
            self._shutdown_done.set()  # the child has nothing of its own to deliver
        elif not self._autostart:
            self._handoff.open()
