"""The worker: one asyncio task that drains the hand-off and one that flushes.

Both run on the worker's own loop thread (flageval._runner), so the tiers and the
sender are only ever touched from that thread: no locks.

* Drain: every ``drain_interval_s`` take what the hand-off holds, in batches, and
  aggregate. Producers never wake us; at 65,536 slots and 50 ms this absorbs over a
  million evaluations per second, far above what one Python process can evaluate.
* Flush: every ``flush_interval_s``, aggregate what was queued when it began (for at
  most a quarter of an interval), swap the tiers out, pack rows into bodies, post. So a
  flush always reaches its post, however fast producers refill the hand-off, and an
  evaluation is posted within two intervals while the worker keeps up. Its posts get
  90% of an interval (at least a request timeout) from when they start: a healthy post
  slowed by busy threads and cut short would be lost as ``delivery_unknown``.
* Aggregating gives the loop a turn every ``TURN_S`` (``POST_TURN_S`` while a post is
  in flight) and stops when a flush is due, so a post, a flush, ``stats()`` and
  shutdown are never kept waiting behind a backlog.
* Keeping up: at each flush the worker compares what arrived with what it aggregated;
  when the hand-off overflowed meanwhile (``queue_overflow``), it says so with both
  rates (rate-limited).
* Shutdown: a final flush of what was queued when accepting ended, aggregating for at
  most half the time left; what it could not reach by then is counted
  ``worker_stalled`` (and said), so the deadline holds under any backlog.
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
from typing import NamedTuple

from ._common import RateLimitedLog
from ._config import Settings
from ._handoff import Handoff
from ._lifecycle import Lifecycle, Phase
from ._losses import Dropped, Ledger
from ._otel import OtelExport
from ._tiers import Tiers
from ._transport import Sender
from ._wire import Body, envelope_prefix, pack

log = logging.getLogger("flageval")

BATCH = 4096
#: Aggregating gives the loop a turn at least this often (a post, the flush task, stats()
#: and shutdown wait for it); a turn waits for the GIL when threads are busy (5 ms switch
#: interval): 2.5% of the worker's time with one such thread, up to 20% with eight.
TURN_S = 0.2
POST_TURN_S = 0.01  # while a post is in flight: each of its steps waits for a turn
MIN_BATCH = 16  # batches shrink down to this to stay well within a turn
_KEEP_UP = "keep_up"  # the warning that the worker cannot keep up (once a minute)


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
        self._batch = MIN_BATCH  # sized to the cost of the last batch (_aggregate)
        self._unsent: list[Body] = []  # bodies left to the final flush (_send)
        self._posting = False  # a flush's post is in flight (_send)
        self._due = math.inf  # when the next flush is due (_flush_loop)
        self._pace = _Pace(time.monotonic(), 0, 0, 0)  # the last keep-up reading

    @property
    def halted(self) -> bool:
        """Halted for good, from any thread, without the loop: its pipeline's shutdown
        has counted what it held. To the sender every deadline has then passed."""
        return self.life.phase is Phase.HALTED

    @property
    def holding(self) -> int:
        """Evaluations aggregated or in bodies not yet settled (on its loop, or stopped)."""
        unsent = sum(body.evaluations for body in self._unsent)
        return self.tiers.evaluations_held + self.sender.pending_evaluations + unsent

    def _now(self) -> float:
        return math.inf if self.halted else time.monotonic()

    # -- draining -----------------------------------------------------------------------
    def drain_once(self, limit: int = BATCH) -> int:
        """Aggregate up to ``limit`` snapshots from the hand-off; returns how many."""
        if self.halted:
            return 0
        batch = self.handoff.drain(limit)
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

    async def _aggregate(self, goal: int, until: float | None, *, final: bool = False) -> None:
        """Aggregate, oldest first, until ``counts.drained`` reaches ``goal``, the
        hand-off is empty, ``until`` (monotonic) passes (``None``: a flush is due), or the
        worker is halted, or stopping (unless ``final``: shutdown's own flush). Gives the
        loop a turn every ``TURN_S`` (``POST_TURN_S`` while posting)."""
        counts = self.counts
        turn = time.monotonic() + self._turn_s()
        while counts.drained < goal and not self.halted:
            if not final and self._stopping is not None and self._stopping.is_set():
                return
            batch = self._batch
            want = min(batch, goal - counts.drained)
            began = time.perf_counter()
            n = self.drain_once(want)
            took, span = time.perf_counter() - began, self._turn_s()
            if took > span / 4:
                self._batch = max(MIN_BATCH, int(n * span / 8 / took))
            elif took < span / 16 and n == batch:
                self._batch = min(BATCH, batch * 2)
            if n < want:
                return  # the hand-off is empty
            now = time.monotonic()
            if now >= (self._due if until is None else until):
                return
            if now >= turn:
                await asyncio.sleep(0)
                turn = time.monotonic() + self._turn_s()

    def _turn_s(self) -> float:
        return POST_TURN_S if self._posting else TURN_S

    async def _drain_loop(self) -> None:
        assert self._stopping is not None
        interval = self.settings.drain_interval_s
        while not self._stopping.is_set() and not self.halted:
            try:
                # At most a queue's worth a pass, ending when a flush is due (waking its
                # task takes the loop a few turns), so the pass ends under any load.
                await self._aggregate(self.counts.drained + self.handoff.capacity, None)
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

    async def _flush(
        self,
        deadline: float,
        *,
        drain_until: float | None = None,
        goal: int | None = None,
        final: bool = False,
        post_for: float | None = None,
    ) -> bool:
        """Aggregate what was queued when it began (``goal``: up to that drained count),
        until ``drain_until`` (default: half the time to ``deadline``), then pack and
        send, until ``deadline`` or, given ``post_for``, that long after sending began.
        True when all of it was aggregated and nothing is left waiting."""
        if goal is None:  # counted when called, not once the lock is ours
            goal = self.counts.drained + len(self.handoff.queue)
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            now = time.monotonic()
            if drain_until is None:
                drain_until = now + max(0.0, deadline - now) / 2
            await self._aggregate(goal, drain_until, final=final)
            caught_up = self.counts.drained >= goal
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
                return not self.sender.outbox and caught_up
            self.counts.flushes += 1
            if post_for is not None:
                deadline = time.monotonic() + post_for
            if final:
                bodies, self._unsent = self._unsent + bodies, []
            sent = await self._send(bodies, deadline, final=final)
            return sent and caught_up

    async def _send(self, bodies: list[Body], deadline: float, *, final: bool) -> bool:
        """Post ``bodies`` one at a time (each call first retries what the sender holds).
        Once stopping, a flush leaves what it has not started to the final flush (under
        shutdown's deadline); after a failure the rest go to the retry buffer. The final
        flush keeps what it cannot start (the intake failed, or less time is left than
        its slowest post took: a post cut short would be ``delivery_unknown``) for
        shutdown to count ``intake_unavailable`` (not ``retry_buffer_full``)."""
        if not bodies:
            return await self.sender.send_all([], deadline)
        handed = 0  # bodies given to the sender: from then on its to account for
        slowest = 0.0  # the longest post so far: the final flush starts none it cannot end
        self._posting = True
        try:
            for body in bodies:
                stopping = self._stopping is not None and self._stopping.is_set()
                if (final and self._now() + slowest >= deadline) or (stopping and not final):
                    break
                handed += 1
                began = time.monotonic()
                ok = await self.sender.send_all([body], deadline)
                slowest = max(slowest, time.monotonic() - began)
                if not ok:
                    if not final and handed < len(bodies):
                        rest, handed = bodies[handed:], len(bodies)
                        await self.sender.send_all(rest, -math.inf)  # to the retry buffer
                    break
        finally:  # also when cancelled (shutdown's deadline): never out of every count
            self._posting = False
            self._unsent.extend(bodies[handed:])
        return handed == len(bodies) and not self._unsent and not self.sender.outbox

    async def _flush_loop(self) -> None:
        assert self._stopping is not None
        interval = self.settings.flush_interval_s
        due = self._due = time.monotonic() + interval
        while not self._stopping.is_set() and not self.halted:
            try:
                await asyncio.wait_for(self._stopping.wait(), max(0.0, due - time.monotonic()))
                return
            except TimeoutError:
                pass
            began = time.monotonic()
            # On a fixed cadence; after a flush longer than the interval (an intake that
            # answers slowly), the next one still waits a tenth of an interval.
            due = self._due = max(due + interval, began + interval / 10)
            try:
                self._check_pace(began)
                # A slow intake may use most of the interval, and never less than one
                # request timeout: a short interval must not cut a healthy post short
                # (a cut post is counted as delivery_unknown, never re-sent).
                budget = max(interval * 0.9, self.settings.request_timeout_s)
                await self._flush(began + budget, drain_until=began + interval / 4, post_for=budget)
            except Exception:
                self.counts.worker_errors += 1
                log.exception("flush failed")

    # -- keeping up -----------------------------------------------------------------------
    def _check_pace(self, now: float) -> None:
        """Say (at most once a minute) that the worker cannot keep up when the hand-off
        overflowed since the last check, or was past half full at both (the evaluating
        threads then yield to it): true over an interval, not a burst it absorbs."""
        last, half = self._pace, self.handoff.capacity // 2
        overflow = self.handoff.counts().get(Dropped.QUEUE_OVERFLOW, 0)
        self._pace = pace = _Pace(now, self.counts.drained, len(self.handoff.queue), overflow)
        if pace.overflow <= last.overflow and min(pace.queued, last.queued) <= half:
            return
        seconds = max(now - last.at, 1e-3)
        aggregated = pace.drained - last.drained
        arrived = aggregated + pace.queued - last.queued + pace.overflow - last.overflow
        self._warn.warning(
            _KEEP_UP,
            "the worker cannot keep up: %d evaluations/s arriving, %d/s aggregated "
            "(the hand-off holds %d of %d, and past half full evaluations yield to the "
            "worker; %d counted as queue_overflow so far)",
            round(arrived / seconds),
            round(aggregated / seconds),
            pace.queued,
            self.handoff.capacity,
            pace.overflow,
        )

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
        # What was queued when accepting ended; whatever comes after raced past it.
        began, first = time.monotonic(), self.counts.drained
        goal = first + len(self.handoff.queue)
        try:
            await self._flush(deadline, goal=goal, final=True)
        except Exception:
            log.exception("final flush failed")
        behind = goal - self.counts.drained
        if behind > 0 and not self.halted:
            # Half the time left went to aggregating, the rest to posting it: what it
            # did not reach is counted, and said, rather than the deadline missed.
            stalled = len(self.handoff.drain(behind))
            self.handoff.count(Dropped.WORKER_STALLED, stalled)
            log.warning(
                "the worker could not aggregate its backlog in the time shutdown had: "
                "%d evaluations aggregated and posted in %.1f s, %d still queued counted "
                "as worker_stalled",
                self.counts.drained - first,
                time.monotonic() - began,
                stalled,
            )
        lost = self.sender.drop_unsent(Dropped.INTAKE_UNAVAILABLE)
        for body in self._unsent:
            self.ledger.drop(Dropped.INTAKE_UNAVAILABLE, body.evaluations)
            lost += body.evaluations
        self._unsent = []
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


class _Pace(NamedTuple):
    """The hand-off and the worker at one moment, to tell arrival from aggregation."""

    at: float
    drained: int
    queued: int
    overflow: int
