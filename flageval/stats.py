"""``Stats``: a pipeline's counters, assembled from what each stage reports of itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .worker import WorkerReport


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
