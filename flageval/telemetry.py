"""The pipeline's lifecycle: start, flush, shutdown, stats, atexit, fork, the default.

A :class:`Telemetry` owns one hand-off, one worker and the thread or loop it runs on.
By default the worker runs on the library's own daemon thread with its own event loop,
started by the first evaluation, so sync apps (scripts, Flask, Django) and async apps
alike never run aggregation on their own loop. ``autostart=False`` plus
``await telemetry.start_async()`` runs it on a loop the caller owns instead.

Shutdown runs under one deadline shared by every stage (stop accepting, drain, final
flush, close the session). It is registered with ``atexit`` (a plain script, or
SIGTERM handled as SystemExit, loses nothing). After ``os.fork()`` the child starts
clean: it drops what the parent had queued or aggregated (the parent sends that) and
starts its own worker on its first evaluation.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from .config import Settings
from .handoff import CLOSED, CLOSED_STATE, HOOK_ERROR, NEW, QUEUE_OVERFLOW, Handoff
from .hook import FlagEvalHook
from .worker import Worker

log = logging.getLogger("flageval")

#: Objects a forked child must not touch (the parent's loop, session, thread) are
#: parked here instead of being garbage-collected in the child, where their
#: finalisers would act on state that belongs to the parent.
_FORK_GRAVEYARD: list[Any] = []


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters of one pipeline. Conservation: ``evaluations == posted + sum(dropped)
    + pending`` holds exactly whenever the worker is idle (after flush or shutdown)."""

    evaluations: int
    evaluations_posted: int
    rows_posted: int
    bodies_posted: int
    pending: int
    degraded: Mapping[str, int]
    dropped: Mapping[str, int]
    post_attempts: int
    flushes: int
    worker_errors: int

    @property
    def conserved(self) -> bool:
        return self.evaluations == (
            self.evaluations_posted + sum(self.dropped.values()) + self.pending
        )


class Telemetry:
    """One evaluation-telemetry pipeline: hand-off, worker, writer.

    Every setting of :class:`flageval.config.Settings` is a keyword argument; one left
    out comes from its environment variable, else its default. ``.hook`` is the
    OpenFeature hook that feeds this pipeline.
    """

    def __init__(self, *, autostart: bool = True, **settings: Any) -> None:
        self.settings = Settings.from_env(**settings)
        self._autostart = autostart
        self._lock = threading.Lock()
        # Who holds _lock to start the worker, and a shutdown() that arrived meanwhile
        # on that same thread (a signal handler): see _locked() and shutdown().
        self._lock_owner: int | None = None
        self._deferred_shutdown: tuple[float | None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._run_future: concurrent.futures.Future[None] | asyncio.Task[None] | None = None
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
        _track(self)

    def __repr__(self) -> str:
        state = "disabled" if self._handoff is None else ("running" if self.running else "idle")
        return f"<Telemetry {state} intake={self.settings.endpoint().display!r}>"

    @property
    def enabled(self) -> bool:
        return self._handoff is not None

    @property
    def running(self) -> bool:
        return self._worker is not None and self._handoff is not None and self._handoff.accepting

    # -- starting -----------------------------------------------------------------------
    def _ensure_started(self) -> None:
        """Called by the hook on first use (any thread): start the own-thread worker."""
        if self._handoff is None:
            return
        with self._locked():
            if self._handoff.state != NEW or not self._autostart:
                return
            self._start_thread_locked()

    def start(self) -> None:
        """Start the worker on the library's own thread now (else: first evaluation)."""
        if self._handoff is None:
            return
        with self._locked():
            if self._handoff.state == CLOSED_STATE:
                raise RuntimeError("flageval: this Telemetry was shut down")
            if self._worker is None:
                self._start_thread_locked()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """``_lock`` for starting the worker, remembering the thread that holds it. A
        signal handler on that thread that calls shutdown() (SIGTERM during the first
        evaluation) cannot wait for the lock: it would wait for ever. Its shutdown runs
        here instead, as soon as the interrupted start lets the lock go."""
        try:
            with self._lock:
                self._lock_owner = threading.get_ident()
                try:
                    yield
                finally:
                    self._lock_owner = None
        finally:
            deferred, self._deferred_shutdown = self._deferred_shutdown, None
            if deferred is not None:
                self.shutdown(deferred[0])

    def _start_thread_locked(self) -> None:
        assert self._handoff is not None
        try:
            worker = Worker(self.settings, self._handoff)
            loop = asyncio.new_event_loop()
        except Exception:
            # Never retried per evaluation: the pipeline closes, and every later
            # evaluation is counted under ``closed``.
            log.exception("flageval: could not start the worker; telemetry is off")
            self._handoff.close()
            return
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._run_future = loop.create_task(worker.run(), name="flageval-worker")
                loop.call_soon(ready.set)
                # Runs until shutdown stops it: the shutdown coroutine itself runs on
                # this loop, after the worker's tasks have ended.
                loop.run_forever()
                rest = asyncio.all_tasks(loop)
                for task in rest:
                    task.cancel()
                if rest:
                    loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except BaseException:  # pragma: no cover - the worker guards itself
                log.exception("flageval: worker thread stopped")
            finally:
                loop.close()

        thread = threading.Thread(target=main, name="flageval-worker", daemon=True)
        try:
            thread.start()
        except Exception:
            # "can't start new thread" (a process or container limit): closed once, as
            # above; kept as NEW, every evaluation would retry and leak a loop (3 fds).
            log.exception("flageval: could not start the worker thread; telemetry is off")
            loop.close()
            self._handoff.close()
            return
        self._loop, self._worker, self._thread = loop, worker, thread
        ready.wait(5.0)
        self._handoff.open()

    async def start_async(self) -> None:
        """Run the worker as tasks on the running loop (the caller's), not a thread."""
        if self._handoff is None:
            return
        with self._locked():
            if self._worker is not None:
                raise RuntimeError("flageval: worker already started")
            if self._handoff.state == CLOSED_STATE:
                raise RuntimeError("flageval: this Telemetry was shut down")
            loop = asyncio.get_running_loop()
            self._worker = Worker(self.settings, self._handoff)
            self._loop = loop
            self._run_future = loop.create_task(self._worker.run(), name="flageval-worker")
            self._handoff.open()
        await asyncio.sleep(0)  # let the worker's tasks start

    # -- running a coroutine on the worker's loop ----------------------------------------
    def _call(self, coro: Any, timeout_s: float) -> Any:
        """Run ``coro`` on the worker's loop and wait up to ``timeout_s`` for its result;
        None if it did not finish: timed out, or the loop was stopped meanwhile by a
        shutdown on another thread (which never runs, or cancels, what came late)."""
        loop = self._loop
        assert loop is not None
        if _on_loop_thread(loop):
            coro.close()
            raise RuntimeError(_ON_LOOP_ERROR)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # closed since the caller looked: the shutdown has ended
            coro.close()
            return None
        end = time.monotonic() + timeout_s
        while True:
            try:
                # In slices, so that a loop stopped under us is noticed at once rather
                # than after the whole timeout.
                return fut.result(max(0.0, min(0.05, end - time.monotonic())))
            except concurrent.futures.CancelledError:
                return None  # cancelled by the loop's teardown after a shutdown
            except concurrent.futures.TimeoutError:
                if fut.done() or (loop.is_running() and time.monotonic() < end):
                    continue
                if not loop.is_closed():
                    fut.cancel()
                if not loop.is_running():
                    # The loop stopped before it ran (or finished) the coroutine, and
                    # never will: close it here rather than leave it to the collector
                    # ("coroutine was never awaited").
                    with contextlib.suppress(Exception):
                        coro.close()
                return None

    # -- flush ----------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until what was counted so far is posted or counted as lost.

        Returns True when nothing is left pending (False: the intake could not take it
        all before ``timeout_s``; it waits for the next flush, bounded)."""
        if self._worker is None or self._loop is None or not self._loop.is_running():
            return self._handoff is None or not self._handoff.queue
        deadline = time.monotonic() + timeout_s
        return bool(self._call(self._worker.flush(deadline, own_task=True), timeout_s + 1.0))

    async def aflush(self, timeout_s: float = 10.0) -> bool:
        """:meth:`flush` for async code: on the worker's loop (``start_async``) it runs
        here; on any other loop it waits for the worker's own, without blocking this one."""
        if self._worker is None:
            return True
        if self._loop is not asyncio.get_running_loop():
            # The tiers, the sender and its session belong to the worker's loop (the
            # library's thread): flushing them from this loop would race that thread.
            return await asyncio.to_thread(self.flush, timeout_s)
        return await self._worker.flush(time.monotonic() + timeout_s)

    # -- shutdown -------------------------------------------------------------------------
    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop accepting (later evaluations count as ``closed``), drain, final flush,
        all within ``timeout_s`` (default: the ``shutdown_timeout_s`` setting)."""
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if self._loop is not None and _on_loop_thread(self._loop):
            # Refused before anything is closed, so that the ashutdown() the message
            # asks for still finds the pipeline open and does the drain and final flush.
            raise RuntimeError(_ON_LOOP_ERROR)
        if self._lock_owner == threading.get_ident():
            # A signal handler interrupted this thread while it starts the worker:
            # deferred to the end of that start (see _locked), not a deadlock.
            self._deferred_shutdown = (timeout_s,)
            return
        if not self._begin_shutdown():
            return
        worker, loop = self._worker, self._loop
        if worker is None or loop is None:
            self._finish_unstarted()
            return
        if loop.is_running():
            # Keep a small margin of the deadline for closing the loop and the thread.
            inner = deadline - min(0.25, timeout * 0.1)
            own_thread = self._thread is not None

            async def stop() -> None:
                try:
                    await worker.shutdown(inner)
                finally:
                    if own_thread:
                        asyncio.get_running_loop().call_soon(loop.stop)

            self._call(stop(), max(0.0, deadline - time.monotonic()))
        elif self._thread is None and not worker.stopped:
            # start_async()'s loop has ended without ashutdown(): nothing can post any
            # more; count what was held instead of leaving it pending forever.
            lost = worker.abandon()
            if lost:
                log.warning(
                    "flageval: the worker's event loop ended before shutdown; "
                    "%d evaluations counted as intake_unavailable",
                    lost,
                )
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        assert self._handoff is not None
        if self._drained_for_good():
            self._handoff.discard_late()

    async def ashutdown(self, timeout_s: float | None = None) -> None:
        """:meth:`shutdown` for async code: on the worker's loop (``start_async``) it
        runs here; on any other loop it waits for the worker's own, without blocking
        this one."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            # Checked before anything is closed: refusing after closing the hand-off
            # left a pipeline that no later shutdown would drain or flush.
            await asyncio.to_thread(self.shutdown, timeout_s)
            return
        timeout = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if not self._begin_shutdown():
            return
        if self._worker is None:
            self._finish_unstarted()
            return
        await self._worker.shutdown(deadline)
        if isinstance(self._run_future, asyncio.Task):
            self._run_future.cancel()
        assert self._handoff is not None
        self._handoff.discard_late()

    def _begin_shutdown(self) -> bool:
        if self._handoff is None:
            return False
        with self._lock:
            if self._handoff.state == CLOSED_STATE:
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
        loop, thread = self._loop, self._thread
        return not (loop is not None and loop.is_running()) and not (
            thread is not None and thread.is_alive()
        )

    def _finish_unstarted(self) -> None:
        # Never started (autostart=False and no start): what was queued cannot go.
        assert self._handoff is not None
        self._handoff.discard_late()

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> Stats:
        """A consistent snapshot of the counters (taken on the worker's loop)."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _on_loop_thread(loop):

            async def snap() -> Stats:
                return self._stats_now()

            result = self._call(snap(), 5.0)
            if result is not None:
                self._last_stats = result
                return result  # type: ignore[no-any-return]
            if loop.is_running() and self._last_stats is not None:
                # The loop is busy (seconds of work): reading its structures from here
                # would race it. The last consistent snapshot is the honest answer.
                return self._last_stats
        return self._stats_now()

    def _stats_now(self) -> Stats:
        h = self._handoff
        if h is None:
            return Stats(0, 0, 0, 0, 0, {}, {}, 0, 0, 0)
        if h.state == CLOSED_STATE and self._drained_for_good():
            h.discard_late()
        counts = h.counts()
        queued = len(h.queue)
        dropped: dict[str, int] = {}
        for reason in (QUEUE_OVERFLOW, CLOSED, HOOK_ERROR):
            if counts[reason]:
                dropped[reason] = counts[reason]
        w = self._worker
        if w is None:
            seen = queued + sum(dropped.values())
            return Stats(seen, 0, 0, 0, queued, {}, dropped, 0, 0, 0)
        for source in (w.tiers.dropped, w.dropped, w.sender.dropped):
            for reason, n in source.items():
                if n:
                    dropped[reason] = dropped.get(reason, 0) + n
        degraded: dict[str, int] = {}
        for source in (w.tiers.degraded_by_reason, w.degraded):
            for reason, n in source.items():
                if n:
                    degraded[reason] = degraded.get(reason, 0) + n
        pending = queued + w.tiers.evaluations_held + w.sender.pending_evaluations
        seen = w.drained + queued + counts[QUEUE_OVERFLOW] + counts[CLOSED] + counts[HOOK_ERROR]
        s = w.sender
        return Stats(
            evaluations=seen,
            evaluations_posted=s.evaluations_posted,
            rows_posted=s.rows_posted,
            bodies_posted=s.bodies_posted,
            pending=pending,
            degraded=degraded,
            dropped=dropped,
            post_attempts=s.attempts,
            flushes=w.flushes,
            worker_errors=w.errors,
        )

    # -- fork -------------------------------------------------------------------------------
    def _reset_after_fork(self) -> None:
        if self._handoff is None:
            return
        _FORK_GRAVEYARD.append((self._loop, self._worker, self._thread, self._run_future))
        self._lock = threading.Lock()
        self._lock_owner = None
        self._deferred_shutdown = None
        self._loop = self._worker = self._thread = self._run_future = None
        self._pid = os.getpid()
        was_closed = self._handoff.state == CLOSED_STATE
        self._handoff.reset_after_fork()
        if was_closed:
            self._handoff.close()
        elif not self._autostart:
            self._handoff.open()


_ON_LOOP_ERROR = (
    "flageval: called from the worker's own event loop; "
    "use 'await telemetry.aflush()' / 'await telemetry.ashutdown()'"
)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# One atexit and one at-fork hook for the process, over the pipelines still alive:
# registering them per pipeline kept every pipeline ever built in both lists (neither
# can be unregistered one by one), growing without bound in code that builds many.
_live: weakref.WeakValueDictionary[int, Telemetry] = weakref.WeakValueDictionary()
_next_id = itertools.count()
_hooks_lock = threading.Lock()
_hooks_registered = False


def _track(tel: Telemetry) -> None:
    global _hooks_registered
    with _hooks_lock:
        _live[next(_next_id)] = tel
        if not _hooks_registered:
            _hooks_registered = True
            atexit.register(_atexit_shutdown)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork)


def _atexit_shutdown() -> None:
    # Newest first, the order in which per-pipeline atexit hooks used to run.
    for key in sorted(_live.keys(), reverse=True):
        tel = _live.get(key)
        if tel is not None and tel._pid == os.getpid():
            try:
                tel.shutdown()
            except Exception:
                log.exception("flageval: shutdown at exit failed")


def _after_fork() -> None:
    global _hooks_lock, _default_lock
    # The parent's locks may have been held at fork time by threads the child lacks.
    _hooks_lock = threading.Lock()
    _default_lock = threading.Lock()
    for tel in list(_live.values()):
        tel._reset_after_fork()


# -- the process-wide default -------------------------------------------------------------
_default: Telemetry | None = None
_default_lock = threading.Lock()


def default_telemetry() -> Telemetry:
    """The process-wide pipeline behind ``FlagEvalHook()``, built from env on first use."""
    global _default
    tel = _default
    if tel is None:
        with _default_lock:
            if _default is None:
                _default = Telemetry()
            tel = _default
    return tel


def shutdown(timeout_s: float | None = None) -> None:
    """Shut down the default pipeline (if one was built)."""
    if _default is not None:
        _default.shutdown(timeout_s)


def stats() -> Stats:
    """Counters of the default pipeline (building it from env if needed)."""
    return default_telemetry().stats()


def flush(timeout_s: float = 10.0) -> bool:
    """Flush the default pipeline (if one was built)."""
    return True if _default is None else _default.flush(timeout_s)
