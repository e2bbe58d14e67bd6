"""The worker: one asyncio task that drains the hand-off and one that flushes.

Both run on the worker's own loop thread (flageval._runner), so the tiers and the
sender are only ever touched from that thread: no locks.

* Drain: every ``drain_interval_s`` take what the hand-off holds, in batches, and
  aggregate. Producers never wake us; at 65,536 slots and 50 ms this absorbs over a
  million evaluations per second, far above what one Python process can evaluate.
* Flush: every ``flush_interval_s``, swap the tiers out, pack rows into bodies, post.
* A failure while aggregating a batch is counted (``worker_error``) and the loop goes
  on: the worker never dies of a bad snapshot. Whatever a value raises while the tiers
  read it (``SystemExit``, ``KeyboardInterrupt`` and ``GeneratorExit`` included) is
  caught per snapshot and counted (_tiers.py).
* Halted (the pipeline's lifecycle is HALTED: its shutdown's deadline passed first),
  it drains nothing more and starts no request, whatever task its loop resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time

from ._common import RateLimitedLog
from ._config import Settings
from ._handoff import Handoff
from ._lifecycle import Lifecycle, Phase
from ._losses import Dropped, Ledger
from ._otel import OtelExport
from ._tiers import Tiers
from ._transport import Sender
from ._wire import envelope_prefix, pack

log = logging.getLogger("flageval")

BATCH = 4096


@dataclasses.dataclass(slots=True)
class WorkerCounts:
    """The worker's counters; those named as ``Stats`` fields are its (flageval._stats)."""

    drained: int = 0  # taken off the hand-off (part of Stats.evaluations)
    flushes: int = 0
    worker_errors: int = 0


class Worker:
    def __init__(self, settings: Settings, handoff: Handoff, life: Lifecycle | None = None) -> None:
        self.settings = settings
        self.handoff = handoff
        #: The pipeline's lifecycle (a worker built alone, by a benchmark, runs for good).
        self.life = Lifecycle(handoff, Phase.RUNNING) if life is None else life
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
        #: The OpenTelemetry export, fed the same batches as the tiers (None: off).
        self.otel = OtelExport(handoff) if settings.otel_metrics else None
        self.counts = WorkerCounts()
        self._warn = RateLimitedLog(log)
        self._flush_lock: asyncio.Lock | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def halted(self) -> bool:
        """Halted for good, from any thread, without the loop: its pipeline's shutdown
        has counted what it held. To the sender every deadline has then passed."""
        return self.life.phase is Phase.HALTED

    @property
    def holding(self) -> int:
        """Evaluations aggregated or in bodies not yet settled (on its loop, or stopped)."""
        return self.tiers.evaluations_held + self.sender.pending_evaluations

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
        self.counts.drained += len(batch)
        try:
            if self.settings.datadog:  # else nothing reads the tiers: OpenTelemetry only
                self.tiers.add_batch(batch)
        except Exception:
            # add_batch guards each snapshot, so this is a bug of ours: count the whole
            # batch (add_batch applies nothing before raising in that case) and go on.
            self.counts.worker_errors += 1
            self.ledger.drop(Dropped.WORKER_ERROR, len(batch))
            log.exception("worker failed on a batch of %d evaluations", len(batch))
        # A KeyboardInterrupt or SystemExit a value raised was counted with its batch:
        # on this thread, where no signal is delivered, it can only be the value's.
        self.tiers.interrupt = None
        if self.otel is not None:
            self.otel.add_batch(batch)  # never raises, whatever OpenTelemetry does
        return len(batch)

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
                self.counts.worker_errors += 1
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
                self.counts.worker_errors += 1
                self.ledger.drop(Dropped.WORKER_ERROR, held)
                log.exception("could not pack %d evaluations", held)
                return not self.sender.outbox
            self.counts.flushes += 1
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
                self.counts.worker_errors += 1
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
        if self.settings.datadog:  # OpenTelemetry only: never a request to the agent
            self.sender.start()  # asks the agent for its route, off every evaluating thread
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)

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
        lost = self.sender.drop_unsent(Dropped.INTAKE_UNAVAILABLE)
        if lost:
            self._warn.warning(
                Dropped.INTAKE_UNAVAILABLE,
                "shutdown could not deliver %d evaluations to %s",
                lost,
                self.sender.endpoint.display,
            )
        await self.sender.close()
        # What is still queued raced past the end of accepting (STOPPING): `closed`.
        self.handoff.discard(Dropped.CLOSED)
