"""``Stats``: a pipeline's counters, built in one place from what each stage counts.

Each stage owns its counters: the hand-off what producers could not hand over (and what
a pipeline's end discarded from it), the worker's :class:`~flageval._losses.Ledger`
every loss and degradation after it, ``SenderCounts`` and ``WorkerCounts`` the rest. A
:class:`Reading` is all of them at one moment, and :meth:`Reading.stats` is the one
place a ``Stats`` is built: a stage counter named as a ``Stats`` field is that field.

Three ways to a reading: :func:`exact` on the worker's loop (or once it stopped), where
``pending`` is what the stages hold; :func:`books` from counters alone, safe from any
thread while that loop is busy, where ``pending`` is what they leave over; and
:func:`freeze` for a worker halted at a missed shutdown deadline, where everything it had
not delivered is counted under one reason, once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._losses import Degraded, Dropped, Reason, Unrecorded

if TYPE_CHECKING:  # types only: importing the worker pulls aiohttp
    from _typeshed import DataclassInstance

    from ._handoff import Handoff
    from ._worker import Worker

R = TypeVar("R", bound=Reason)

#: ``books`` rereads the counters until two reads agree, for at most this long.
_STEADY_S = 0.02
#: The exports' names in ``Stats.exports``.
DATADOG, OTEL = "datadog", "opentelemetry"


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters of one pipeline. Conservation: ``evaluations == posted + sum(dropped)
    + pending`` holds exactly whenever the worker is idle (after flush or shutdown);
    with OpenTelemetry as the only export, ``otel_recorded + sum(otel_unrecorded)``
    stands for ``posted``."""

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
    otel_recorded: int = 0
    otel_unrecorded: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Where the worker sends the counts ("datadog", "opentelemetry"); empty until it
    #: starts (and with the killswitch).
    exports: tuple[str, ...] = ()

    @property
    def conserved(self) -> bool:
        exported = self.evaluations_posted
        if self.exports == (OTEL,):
            exported = self.otel_recorded + sum(self.otel_unrecorded.values())
        return self.evaluations == exported + sum(self.dropped.values()) + self.pending


#: The Stats fields that are a stage's counter of the same name, added up.
_COUNTED = tuple(
    f.name
    for f in dataclasses.fields(Stats)
    if f.type == "int" and f.name not in ("evaluations", "pending")
)


def _nonzero(*sources: Mapping[R, int]) -> dict[str, int]:
    """Sum by reason, keyed by the reason's plain string, zeros left out."""
    out: dict[str, int] = {}
    for source in sources:
        for reason, n in source.items():
            if n:
                key = str(reason)
                out[key] = out.get(key, 0) + n
    return out


def counts_of(*stages: DataclassInstance) -> dict[str, int]:
    """The counters of stages' counter dataclasses (of ints), by name."""
    out: dict[str, int] = {}
    for stage in stages:
        for f in dataclasses.fields(stage):
            out[f.name] = out.get(f.name, 0) + getattr(stage, f.name)
    return out


@dataclasses.dataclass(frozen=True)
class Reading:
    """Every counter of a pipeline at one moment (nothing at all: a switched-off one)."""

    refused: Mapping[Dropped, int] = dataclasses.field(default_factory=dict)  # the hand-off's
    queued: int = 0
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)  # stage counters
    dropped: Mapping[Dropped, int] = dataclasses.field(default_factory=dict)  # the ledger's
    degraded: Mapping[Degraded, int] = dataclasses.field(default_factory=dict)
    unrecorded: Mapping[Unrecorded, int] = dataclasses.field(default_factory=dict)
    exports: tuple[str, ...] = ()

    @property
    def unsettled(self) -> int:
        """What the worker took off the hand-off and has neither exported nor counted."""
        c = self.counts
        exported = c.get("evaluations_posted", 0)
        if self.exports == (OTEL,):
            exported = c.get("otel_recorded", 0) + sum(self.unrecorded.values())
        return c.get("drained", 0) - exported - sum(self.dropped.values())

    def stats(self, pending: int | None = None) -> Stats:
        """The one place a ``Stats`` is built. ``pending``: what the stages hold, else
        what the counters leave over."""
        counted: dict[str, Any] = {name: self.counts.get(name, 0) for name in _COUNTED}
        if pending is None:
            pending = self.queued + self.unsettled
        return Stats(
            evaluations=self.counts.get("drained", 0) + self.queued + sum(self.refused.values()),
            pending=pending,
            degraded=_nonzero(self.degraded),
            dropped=_nonzero(self.refused, self.dropped),
            otel_unrecorded=_nonzero(self.unrecorded),
            exports=self.exports,
            **counted,
        )


def read(handoff: Handoff, worker: Worker | None) -> Reading:
    """One reading of every stage's counters (None: no worker ever started)."""
    if worker is None:
        return Reading(refused=handoff.counts(), queued=len(handoff.queue))
    # Exported and dropped first, drained after: an evaluation is counted drained before
    # it can be exported or dropped, so what is read can never leave a negative pending.
    # (dict() of a Counter is one C call under the GIL: a whole copy.)
    otel = worker.otel
    sender = counts_of(worker.sender.counts, *([] if otel is None else [otel.counts]))
    unrecorded = {} if otel is None else dict(otel.unrecorded)
    ledger = worker.ledger
    dropped, degraded = dict(ledger.dropped), dict(ledger.degraded)
    refused = handoff.counts()
    counts = {**sender, **counts_of(worker.counts)}
    exports = (DATADOG,) * worker.settings.datadog + (OTEL,) * (otel is not None)
    return Reading(refused, len(handoff.queue), counts, dropped, degraded, unrecorded, exports)


def exact(handoff: Handoff, worker: Worker | None) -> Stats:
    """Stats with ``pending`` from what the stages hold: on the worker's loop, or once
    no loop runs it (the tiers and the sender's bodies are its loop's)."""
    r = read(handoff, worker)
    return r.stats(r.queued + (0 if worker is None else worker.holding))


def _steady(handoff: Handoff, worker: Worker) -> Reading:
    """Read until two reads agree (an evaluation between the queue and the worker's
    count would otherwise be missed), for at most ``_STEADY_S``."""
    end = time.monotonic() + _STEADY_S
    r = read(handoff, worker)
    while True:
        again = read(handoff, worker)
        if again == r or time.monotonic() >= end:
            return again
        r = again
        time.sleep(0.001)


def books(handoff: Handoff, worker: Worker) -> Stats:
    """Stats from counters alone, never from the structures the worker's loop mutates
    (tiers, sender queues), so it is safe from any thread while that loop is busy;
    ``pending`` is what the counters leave over."""
    return _steady(handoff, worker).stats()


def freeze(handoff: Handoff, worker: Worker, reason: Dropped) -> tuple[Reading, int]:
    """Close the books of a halted worker: what is queued and what it had not settled
    are counted under ``reason``, once. Returns the closed reading (later, only what the
    hand-off counts is added: see ``frozen_stats``) and how many were counted."""
    taken = handoff.discard(reason)  # halted: the worker drains nothing more
    at = _steady(handoff, worker)
    held = max(0, at.unsettled)
    dropped = dict(at.dropped)
    dropped[reason] = dropped.get(reason, 0) + held
    return dataclasses.replace(at, dropped=dropped), taken + held


def frozen_stats(frozen: Reading, handoff: Handoff) -> Stats:
    """The stats of closed books: as frozen, plus what the hand-off counted since."""
    return dataclasses.replace(frozen, refused=handoff.counts(), queued=len(handoff.queue)).stats()
