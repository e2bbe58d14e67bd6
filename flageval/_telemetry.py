"""``Telemetry``: one pipeline, a thin front over its lifecycle (flageval._lifecycle).

A pipeline owns one hand-off, one :class:`~flageval._lifecycle.Lifecycle` and, once
started, one worker on the library's own daemon thread (flageval._runner), started by
the first evaluation: sync apps (scripts, Flask, Django) and async apps alike never run
aggregation on their own loop. ``autostart=False`` queues evaluations (bounded) until
``start()``.

Shutdown runs under one deadline shared by every stage (stop accepting, drain, final
flush, close the session), and keeps it: a second caller waits for the shutdown in
progress (up to its own deadline); a worker not done at the deadline is halted, so it
sends nothing afterwards, and what it had not delivered is counted (``worker_stalled``);
no failure inside reaches the caller. flageval._process runs it at exit and on stop
signals, and after ``os.fork()`` has the child start clean (``Lifecycle.after_fork``).
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
from ._handoff import Handoff
from ._hook import FlagEvalHook, hook_for
from ._lifecycle import Lifecycle, Phase
from ._losses import Dropped
from ._runner import ON_LOOP_ERROR, Runner
from ._stats import Reading, Stats, books, exact, freeze, frozen_stats

if TYPE_CHECKING:
    from ._loop import LoopThread
    from ._worker import Worker

log = logging.getLogger("flageval")

#: stats() waits this long for the worker's loop before answering from plain counters.
_STATS_WAIT_S = 0.5
#: A shutdown keeps this much of its deadline (at most 10%) for closing the session and
#: the thread: with eight threads evaluating, each step of it waits up to ~40 ms for the
#: GIL.
_MARGIN_S = 0.5


class Telemetry:
    """One evaluation-telemetry pipeline: hand-off, worker, writer.

    Every setting of :class:`flageval.Settings` is a keyword argument; one left out
    comes from its environment variable, else its default. ``.hook`` is the OpenFeature
    hook that feeds this pipeline.
    """

    def __init__(self, *, autostart: bool = True, **settings: Unpack[SettingsOverrides]) -> None:
        self.settings = Settings.from_env(**settings)
        self._runner: Runner | None = None
        self._pid = os.getpid()
        self._frozen: Reading | None = None  # the books closed when the worker was halted
        self._deferred: list[float | None] = []  # a shutdown's timeout, deferred (_locked)
        if not self.settings.enabled:
            # Off means off: no queue, no thread, no task, no socket, no atexit.
            self._handoff: Handoff | None = None
            self._life = Lifecycle(None, Phase.DISABLED)
            self.hook: FlagEvalHook = hook_for(None, self.ensure_started)
            return
        self._handoff = Handoff(self.settings.queue_size)
        self._life = Lifecycle(self._handoff, Phase.IDLE if autostart else Phase.QUEUEING)
        self.hook = hook_for(self._handoff, self.ensure_started)
        process.track_pipeline(self)

    def __repr__(self) -> str:
        if not self.settings.datadog:  # no intake is ever asked anything
            return f"<Telemetry {self._phase.value} OpenTelemetry only>"
        return f"<Telemetry {self._phase.value} intake={self.settings.endpoint().display!r}>"

    @property
    def enabled(self) -> bool:
        return self._life.phase is not Phase.DISABLED

    @property
    def running(self) -> bool:
        return self._life.phase is Phase.RUNNING

    @property
    def handoff(self) -> Handoff | None:
        """Where producers put their snapshots; None when the killswitch is set."""
        return self._handoff

    # Read-only views for tests and benchmarks that look inside a pipeline.
    @property
    def _phase(self) -> Phase:
        return self._life.phase

    @property
    def _worker(self) -> Worker | None:
        return None if self._runner is None else self._runner.worker

    @property
    def _thread(self) -> LoopThread | None:
        return None if self._runner is None else self._runner.thread

    # -- starting -----------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start the worker if the pipeline is IDLE (a producer's first use; any thread)."""
        if self._life.phase is Phase.IDLE:
            self._start()

    def start(self) -> None:
        """Start the worker on the library's own thread now (else: first evaluation).
        Raises RuntimeError once the pipeline has ended (shut down, or failed to start)."""
        phase = self._life.phase
        if phase is Phase.DISABLED:
            return
        if phase.final or phase is Phase.STOPPING:
            raise RuntimeError(f"flageval: this Telemetry is {phase.value}; it cannot start")
        self._start()

    def _start(self) -> None:
        life, handoff = self._life, self._handoff
        assert handoff is not None
        with self._locked():
            if life.phase not in (Phase.IDLE, Phase.QUEUEING):
                return  # started meanwhile, or ended
            runner = Runner.start(self.settings, handoff, life)
            if runner is None:
                # Logged: later evaluations count as closed instead of retrying (and
                # leaking a loop) per evaluation; what was queued never had a worker.
                life.move(Phase.FAILED)
                handoff.discard(Dropped.NEVER_STARTED)
                return
            self._runner = runner
            life.move(Phase.RUNNING)
            runner.release_when_collected(self, life, self.settings.shutdown_timeout_s)
        process.on_worker_start()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The lifecycle's lock, remembering the thread that holds it: a signal handler
        on that thread calling shutdown() (SIGTERM during the first evaluation) would
        otherwise run it in the middle of a start or a move, so it runs here instead, as
        soon as the interrupted work lets the lock go."""
        life = self._life
        try:
            with life.lock:
                outer = life.owner is None
                life.owner = threading.get_ident()
                try:
                    yield
                finally:
                    if outer:
                        life.owner = None
        finally:
            if self._deferred and life.owner is None:
                self.shutdown(self._deferred.pop())
                process.release_held_signal()

    # -- flush ----------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until what was counted so far is posted or counted as lost.

        Returns True when nothing is left pending (False: the intake could not take it
        all before ``timeout_s``; it waits for the next flush, bounded)."""
        phase, runner = self._life.phase, self._runner
        if runner is not None and runner.on_loop():
            raise RuntimeError(ON_LOOP_ERROR)
        if phase is Phase.DISABLED:
            return True
        if phase in (Phase.IDLE, Phase.QUEUEING) or (
            phase is Phase.RUNNING and (runner is None or not runner.running)
        ):
            return self._handoff is None or not self._handoff.queue
        if phase is not Phase.RUNNING or runner is None:
            # Shut down, or shutting down: what is left is that shutdown's to settle.
            return self._life.wait_final(timeout_s)
        deadline = time.monotonic() + timeout_s
        return bool(runner.call(runner.worker.flush(deadline, own_task=True), timeout_s + 1.0))

    async def flush_async(self, timeout_s: float = 10.0) -> bool:
        """:meth:`flush` for async code: waits for the worker's own thread without
        blocking the running loop."""
        if self._runner is None and self._life.phase is not Phase.STOPPING:
            return self.flush(timeout_s)  # nothing to wait for
        return await asyncio.to_thread(self.flush, timeout_s)

    # -- shutdown -------------------------------------------------------------------------
    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop accepting (later evaluations count as ``closed``), drain, final flush,
        all within ``timeout_s`` (default: the ``shutdown_timeout_s`` setting). A call
        while another runs waits for it, up to its own deadline. Never raises, but for a
        call from the worker's own thread (RuntimeError, before anything is closed)."""
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        runner = self._runner
        if runner is not None and runner.on_loop():
            raise RuntimeError(ON_LOOP_ERROR)
        if self._life.owner == threading.get_ident():
            # A signal handler interrupted this thread while it holds the lifecycle's
            # lock: deferred to the end of that work (see _locked), not a deadlock.
            self._deferred[:] = [timeout_s]
            return
        try:
            with self._locked():
                began = self._life.move(Phase.STOPPING)
            if not began:
                self._life.wait_final(deadline - time.monotonic())
                return
            try:
                self._stop(deadline, timeout)
            finally:
                if self._life.phase is Phase.STOPPING:  # only a bug of ours leaves it so
                    self._halt(Dropped.WORKER_ERROR, "shutdown failed")
        except Exception:
            log.exception("shutdown failed")

    def _stop(self, deadline: float, timeout: float) -> None:
        """The shutdown that took the move to STOPPING: end in STOPPED or HALTED."""
        handoff, runner = self._handoff, self._runner
        assert handoff is not None
        if runner is None:
            # No worker ever ran (autostart=False, never started): its queue says so.
            handoff.discard(Dropped.NEVER_STARTED)
            self._life.move(Phase.STOPPED)
            return
        runner.keep()
        if not runner.running:
            self._halt(Dropped.WORKER_ERROR, "the worker's loop had stopped before shutdown")
        elif timeout <= 0:  # nothing to wait for: the worker is not asked
            self._halt(Dropped.WORKER_STALLED, "shutdown was given no time (timeout 0)")
        else:
            inner = deadline - min(_MARGIN_S, timeout * 0.1)
            ok = runner.call(runner.stop(inner), max(0.0, deadline - time.monotonic()))
            if ok is False:
                self._halt(Dropped.WORKER_ERROR, "the worker failed during shutdown (above)")
            elif self._life.phase is Phase.STOPPING:  # else done: the worker moved it
                why = f"the worker was still at work when shutdown's deadline ({timeout:g} s) came"
                self._halt(Dropped.WORKER_STALLED, why)
        runner.end_thread(deadline - time.monotonic())
        if self._life.phase is Phase.STOPPED:
            handoff.discard(Dropped.CLOSED)  # stragglers that raced past the end

    def _halt(self, reason: Dropped, why: str) -> None:
        """The worker is not done (it is busy, or failed): halt it, so that it sends
        nothing after shutdown returns, and count what it had not delivered under
        ``reason``, once. Nothing happens if it finished after all (STOPPED)."""
        with self._locked():
            if not self._life.move(Phase.HALTED):
                return
        handoff, runner = self._handoff, self._runner
        assert handoff is not None
        if runner is None:
            lost = handoff.discard(reason)
        else:
            self._frozen, lost = freeze(handoff, runner.worker, reason)
        if lost:
            log.warning("%s; %d evaluations not delivered, counted as %s", why, lost, reason)
        else:  # it had delivered or counted everything, and was closing
            log.info("%s; nothing was left undelivered", why)

    async def shutdown_async(self, timeout_s: float | None = None) -> None:
        """:meth:`shutdown` for async code: waits for the worker's own thread without
        blocking the running loop."""
        await asyncio.to_thread(self.shutdown, timeout_s)

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> Stats:
        """A consistent snapshot of the counters: taken on the worker's loop, or, when
        that loop cannot answer within half a second (busy), from plain counters."""
        handoff, runner, frozen = self._handoff, self._runner, self._frozen
        if handoff is None:
            return Reading().stats()
        if frozen is not None:
            handoff.discard(Dropped.CLOSED)
            return frozen_stats(frozen, handoff)
        if runner is not None and runner.running and not runner.on_loop():

            async def on_loop() -> Stats:
                return self._exact()

            result = runner.call(on_loop(), _STATS_WAIT_S)
            if result is not None:
                return result
            if runner.running:
                # Busy: reading its structures from here would race it.
                return books(handoff, runner.worker)
        return self._exact()

    def _exact(self) -> Stats:
        handoff = self._handoff
        assert handoff is not None
        if self._life.phase in (Phase.STOPPED, Phase.FAILED):
            handoff.discard(Dropped.CLOSED)  # nothing drains it again (HALTED: _halt's)
        return exact(handoff, self._worker)

    # -- process life (flageval._process) ----------------------------------------------------
    def at_exit(self) -> None:
        """The process is ending: shut down (see flageval._process.ending)."""
        if self._pid == os.getpid():
            self.shutdown()

    def at_signal(self, final: bool) -> bool:
        """A stop signal, on the main thread: shut down when the process dies next, else
        flush what was counted (the process may end without atexit: uvicorn). True when
        the shutdown was deferred to the end of a start this thread is in (_locked)."""
        if self._pid != os.getpid() or not self.enabled:
            return False
        if final:
            self.shutdown()
            return bool(self._deferred)
        if self._runner is not None:
            self.flush(self.settings.shutdown_timeout_s)
        return False

    def after_fork_in_child(self) -> None:
        """In a forked child: the parent's worker, queue and counts stay the parent's."""
        if self._runner is not None:
            self._runner.forget()
        self._runner = self._frozen = None
        self._deferred = []
        self._pid = os.getpid()
        self._life.after_fork()
