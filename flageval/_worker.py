"""The worker: one asyncio task that drains the hand-off and one that flushes.

Both run on one event loop (the library's own thread by default, or the caller's), so
the tiers and the sender are only ever touched from that loop's thread: no locks.

* Drain: every ``drain_interval_s`` take what the hand-off holds, in batches, and
  aggregate. Producers never wake us; at 65,536 slots and 50 ms this absorbs over a
  million evaluations per second, far above what one Python process can evaluate.
* Flush: every ``flush_interval_s``, swap the tiers out, pack rows into bodies, post.
* A failure while aggregating a batch is counted (``worker_error``) and the loop goes
  on: the worker never dies of a bad snapshot. Whatever a value raises while the tiers
  read it (``SystemExit``, ``KeyboardInterrupt`` and ``GeneratorExit`` included) is
  caught per snapshot and counted (tiers.py); see drain_once for the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Mapping

from ._common import RateLimitedLog
from ._config import Settings
from ._handoff import Handoff
from ._losses import INTAKE_UNAVAILABLE, WORKER_ERROR, Ledger
from ._tiers import Tiers
from ._transport import Sender, SenderReport
from ._wire import envelope_prefix, pack

log = logging.getLogger("flageval")

BATCH = 4096


@dataclasses.dataclass(frozen=True)
class WorkerReport:
    """The worker's counters and what its stages hold, read on its loop."""

    drained: int
    held: int
    flushes: int
    errors: int
    dropped: Mapping[str, int]
    degraded: Mapping[str, int]
    sender: SenderReport


def _on_main_thread_loop() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Worker:
    def __init__(self, settings: Settings, handoff: Handoff) -> None:
        self.settings = settings
        self.handoff = handoff
        self.ledger = Ledger()
        self.tiers = Tiers(
            max_full_buckets=settings.max_full_buckets,
            max_buckets_per_flag=settings.max_buckets_per_flag,
            max_degraded_buckets=settings.max_degraded_buckets,
            memory_budget_bytes=settings.memory_budget_bytes,
            full_data_default=settings.full_data_default,
            ledger=self.ledger,
        )
        self.sender = Sender(
            settings.endpoint(),
            request_timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
            retry_backoff_s=settings.retry_backoff_s,
            retry_buffer_bytes=settings.retry_buffer_bytes,
            verify_tls=settings.verify_tls,
            ledger=self.ledger,
            clock=self._now,
        )
        self.prefix = envelope_prefix(settings.service, settings.env, settings.version)
        self.drained = 0
        self.flushes = 0
        self.errors = 0
        #: True once shutdown has done its final drain: from then on nothing drains the
        #: hand-off, and what is still in it raced past ``close`` (counted ``closed``).
        self.stopped = False
        #: Set from any thread by :meth:`halt`.
        self.halted = False
        self._warn = RateLimitedLog(log)
        self._flush_lock: asyncio.Lock | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def halt(self) -> None:
        """Stop for good, from any thread, without the loop: a shutdown's deadline came
        while the loop was busy in application code, and its owner has counted what is
        left. From then on nothing is drained and no request starts (to the sender every
        deadline has passed), whatever task the loop resumes."""
        self.halted = True

    def _now(self) -> float:
        return math.inf if self.halted else time.monotonic()

    # -- draining -----------------------------------------------------------------------
    def drain_once(self) -> int:
        """Aggregate up to one batch from the hand-off; returns how many were taken."""
        if self.halted:
            return 0
        batch = self.handoff.drain(BATCH)
        if not batch:
            return 0
        self.drained += len(batch)
        try:
            self.tiers.add_batch(batch)
        except Exception:
            # add_batch guards each snapshot, so this is a bug of ours: count the whole
            # batch (add_batch applies nothing before raising in that case) and go on.
            self.errors += 1
            self.ledger.drop(WORKER_ERROR, len(batch))
            log.exception("worker failed on a batch of %d evaluations", len(batch))
        interrupt = self.tiers.interrupt
        if interrupt is not None:
            self.tiers.interrupt = None
            if _on_main_thread_loop():
                # A caller's loop on the main thread, where the interpreter delivers
                # signals: this may be the application's own Ctrl-C or a handler's
                # sys.exit(), which must not be swallowed. The batch is counted first.
                # Anywhere else (the library's own thread, by default; a shutdown
                # draining after the loop ended) it was counted like any other value's.
                raise interrupt
        return len(batch)

    def report(self) -> WorkerReport:
        """Counters of every stage (call on the worker's loop, or once it stopped)."""
        sender = self.sender.report()
        return WorkerReport(
            drained=self.drained,
            held=self.tiers.evaluations_held,
            flushes=self.flushes,
            errors=self.errors,
            dropped=dict(self.ledger.dropped),
            degraded=dict(self.ledger.degraded),
            sender=sender,
        )

    def drain_all(self) -> None:
        while self.drain_once() == BATCH:
            pass

    async def _drain_loop(self) -> None:
        assert self._stopping is not None
        interval = self.settings.drain_interval_s
        while not self._stopping.is_set() and not self.halted:
            try:
                # Drain what is there without yielding to the loop in between: each
                # yield is a select() that releases the GIL, and under load evaluating
                # threads keep it for many switch intervals, so a worker that holds the
                # GIL must use it. Bounded by the queue's capacity, so producers faster
                # than us cannot keep the flush task waiting.
                budget = self.handoff.capacity
                while budget > 0:
                    n = self.drain_once()
                    budget -= n
                    if n < BATCH:
                        break
            except Exception:  # pragma: no cover - drain_once guards itself
                self.errors += 1
                log.exception("drain loop error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    # -- flushing -----------------------------------------------------------------------
    async def flush(self, deadline: float, *, own_task: bool = False) -> bool:
        """Drain, pack and send everything counted so far. True if nothing is left.

        ``own_task``: the task running this call exists only for it (a caller's
        ``Telemetry.flush()``), so shutdown waits for it, and cancels it at its deadline,
        as it does its own tasks: its lock must not keep the final flush waiting."""
        task = asyncio.current_task() if own_task else None
        if task is None:
            return await self._flush(deadline)
        self._tasks.add(task)
        try:
            return await self._flush(deadline)
        finally:
            self._tasks.discard(task)

    async def _flush(self, deadline: float) -> bool:
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            self.drain_all()
            full, degraded, held = self.tiers.take()
            try:
                bodies = pack(
                    full,
                    degraded,
                    timestamp_ms=time.time_ns() // 1_000_000,
                    prefix=self.prefix,
                    max_body_bytes=self.settings.max_body_bytes,
                    ledger=self.ledger,
                )
            except Exception:
                # The tiers were already swapped out: without this count their
                # evaluations would be in no counter at all.
                self.errors += 1
                self.ledger.drop(WORKER_ERROR, held)
                log.exception("could not pack %d evaluations", held)
                return not self.sender.outbox
            self.flushes += 1
            return await self.sender.send_all(bodies, deadline)

    async def _flush_loop(self) -> None:
        assert self._stopping is not None
        interval = self.settings.flush_interval_s
        while not self._stopping.is_set() and not self.halted:
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                # A slow intake may use most of the interval, and never less than one
                # request timeout: a short interval must not cut a healthy post short
                # (a cut post is counted as delivery_unknown, never re-sent).
                budget = max(interval * 0.9, self.settings.request_timeout_s)
                await self.flush(time.monotonic() + budget)
            except Exception:
                self.errors += 1
                log.exception("flush failed")

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop`; the tasks are held strongly (not just by the loop)."""
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        tasks = [
            asyncio.create_task(self._drain_loop(), name="flageval-drain"),
            asyncio.create_task(self._flush_loop(), name="flageval-flush"),
        ]
        self._tasks.update(tasks)
        self.sender.start()  # asks the agent for its route, off every evaluating thread
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)

    def abandon(self) -> int:
        """Count everything held as ``intake_unavailable`` without a loop to post it on
        (the caller's loop of ``start_async`` ended without ``shutdown_async``). Only safe
        when no loop runs this worker any more. Returns the evaluations counted."""
        self.drain_all()
        _, _, held = self.tiers.take()
        self.ledger.drop(INTAKE_UNAVAILABLE, held)
        lost = held + self.sender.abandon(INTAKE_UNAVAILABLE)
        self.handoff.discard_late()
        self.stopped = True
        return lost

    async def shutdown(self, deadline: float) -> None:
        """Stop, drain, final flush before ``deadline``; count what could not go."""
        if self._stopping is not None:
            self._stopping.set()
        # A flush in progress may be backing off from a failing intake: cut that
        # short, let a request in flight finish (or time out), then flush once more.
        self.sender.interrupt()
        for task in list(self._tasks):
            if task is asyncio.current_task():
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.exception("worker task failed")
        self.sender.interrupt(False)
        try:
            await self.flush(deadline)
        except Exception:
            log.exception("final flush failed")
        lost = self.sender.drop_unsent(INTAKE_UNAVAILABLE)
        if lost:
            self._warn.warning(
                INTAKE_UNAVAILABLE,
                "shutdown could not deliver %d evaluations to %s",
                lost,
                self.sender.endpoint.display,
            )
        await self.sender.close()
        self.handoff.discard_late()
        self.stopped = True
