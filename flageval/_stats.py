"""``Stats``: a pipeline's counters, assembled from what each stage reports of itself.

Three ways to a snapshot: ``assemble`` from the worker's own report (taken on its loop:
exact), ``books`` from plain counters only, for a loop that cannot answer in time (busy
in application code), and ``Frozen`` for a pipeline whose shutdown deadline passed with
the worker still busy, where everything undelivered is counted under one reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing the worker pulls aiohttp
    from ._handoff import Handoff
    from ._worker import Worker, WorkerReport

#: ``books`` rereads the counters until two reads agree, for at most this long.
_STEADY_S = 0.02


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


EMPTY_STATS = Stats(0, 0, 0, 0, 0, {}, {}, 0, 0, 0)


def _nonzero(*sources: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for source in sources:
        for reason, n in source.items():
            if n:
                out[reason] = out.get(reason, 0) + n
    return out


def assemble(producer_drops: Mapping[str, int], queued: int, worker: WorkerReport | None) -> Stats:
    """One ``Stats`` from the hand-off's counts and queue length and the worker's report
    (None before the worker exists)."""
    refused = sum(producer_drops.values())
    if worker is None:
        dropped = _nonzero(producer_drops)
        return Stats(queued + refused, 0, 0, 0, queued, {}, dropped, 0, 0, 0)
    sender = worker.sender
    return Stats(
        evaluations=worker.drained + queued + refused,
        evaluations_posted=sender.evaluations_posted,
        rows_posted=sender.rows_posted,
        bodies_posted=sender.bodies_posted,
        pending=queued + worker.held + sender.pending_evaluations,
        degraded=_nonzero(worker.degraded),
        dropped=_nonzero(producer_drops, worker.dropped),
        post_attempts=sender.attempts,
        flushes=worker.flushes,
        worker_errors=worker.errors,
    )


@dataclasses.dataclass(frozen=True)
class _Read:
    posted: int
    rows: int
    bodies: int
    attempts: int
    flushes: int
    errors: int
    dropped: dict[str, int]
    degraded: dict[str, int]
    counts: dict[str, int]
    drained: int
    queued: int


def _read(handoff: Handoff, worker: Worker) -> _Read:
    sender, ledger = worker.sender, worker.ledger
    # Posted and dropped first, drained after: an evaluation is counted drained before
    # it can be posted or dropped, so what is read can never leave a negative pending.
    # (dict() of a Counter is one C call under the GIL: a whole copy.)
    return _Read(
        sender.evaluations_posted,
        sender.rows_posted,
        sender.bodies_posted,
        sender.attempts,
        worker.flushes,
        worker.errors,
        dict(ledger.dropped),
        dict(ledger.degraded),
        handoff.counts(),
        worker.drained,
        len(handoff.queue),
    )


def books(handoff: Handoff, worker: Worker) -> Stats:
    """Stats from counters alone, never from the structures the worker's loop mutates
    (tiers, sender queues), so it is safe from any thread while that loop is busy;
    ``pending`` is what the counters leave over. Read until two reads agree (an
    evaluation between the queue and the worker's count would otherwise be missed)."""
    end = time.monotonic() + _STEADY_S
    r = _read(handoff, worker)
    while True:
        again = _read(handoff, worker)
        if again == r or time.monotonic() >= end:
            break
        r = again
        time.sleep(0.001)
    dropped = _nonzero(again.counts, again.dropped)
    evaluations = again.drained + again.queued + sum(again.counts.values())
    return Stats(
        evaluations=evaluations,
        evaluations_posted=again.posted,
        rows_posted=again.rows,
        bodies_posted=again.bodies,
        pending=evaluations - again.posted - sum(dropped.values()),
        degraded=_nonzero(again.degraded),
        dropped=dropped,
        post_attempts=again.attempts,
        flushes=again.flushes,
        worker_errors=again.errors,
    )


class Frozen:
    """The books of a pipeline whose worker was halted at a missed shutdown deadline:
    everything not delivered then is counted under ``reason``, once; later, only what
    producers count (evaluations after shutdown: ``closed``) is added."""

    def __init__(self, handoff: Handoff, worker: Worker, reason: str) -> None:
        # The worker is halted (drains nothing more): take what is queued from here.
        taken = 0
        while batch := handoff.drain(4096):
            taken += len(batch)
        at = books(handoff, worker)
        self._counts = handoff.counts()
        self.stats = dataclasses.replace(
            at,
            evaluations=at.evaluations + taken,
            pending=0,
            dropped=_nonzero(at.dropped, {reason: at.pending + taken}),
        )
        self.lost = at.pending + taken

    def now(self, handoff: Handoff) -> Stats:
        counts = handoff.counts()
        later = {r: n - self._counts.get(r, 0) for r, n in counts.items()}
        return dataclasses.replace(
            self.stats,
            evaluations=self.stats.evaluations + sum(later.values()),
            dropped=_nonzero(self.stats.dropped, later),
        )
