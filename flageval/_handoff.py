"""The bounded hand-off between evaluating threads and the worker.

Why a ``collections.deque`` and not an ``asyncio.Queue``: hooks run on any thread
(sync evaluation: the caller's thread; async evaluation: the loop's thread), and
``asyncio.Queue`` is not thread-safe: a ``put_nowait`` from a foreign thread touches
the loop's internals without the loop knowing, and was seen not to wake the consumer
for seconds. ``deque.append`` and ``deque.popleft`` are single C calls that CPython
documents as thread-safe and atomic, cost ~25 ns, take no lock of ours, and never
block. The consumer is not woken per item: the worker drains on its own cadence
(``drain_interval_s``), so producers never touch the event loop at all.

The bound: a producer appends only while ``len(queue) < capacity``. The check and the
append are two atomic steps, so producers racing on the last free slot can overshoot
the capacity by at most one item per concurrently evaluating thread; the bound stays
a bound, and nothing blocks. When the queue is full the snapshot is counted under
``queue_overflow`` and dropped.

Counters written from many threads (overflow, closed, hook errors) are rare-path
events, so they use a lock: ``x += 1`` is a read-modify-write that loses updates
under thread switches, and the library promises exact counts. The hot path (append)
takes no lock.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable, Mapping
from time import time_ns
from typing import Any, Protocol

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagMetadata

from ._compiled import CKEYS
from ._losses import CLOSED, PRODUCER_DROPS, QUEUE_OVERFLOW


class _Details(Protocol):
    """What a snapshot reads of ``FlagEvaluationDetails`` / ``FlagResolutionDetails``."""

    @property
    def variant(self) -> str | None: ...
    @property
    def error_code(self) -> ErrorCode | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def flag_metadata(self) -> FlagMetadata: ...


class _Context(Protocol):
    """What a snapshot reads of an ``EvaluationContext``."""

    @property
    def targeting_key(self) -> str | None: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...


#: What the hook hands over, one flat tuple per evaluation (a tuple: ~160 ns to build,
#: against ~400 ns for a slots dataclass). Build it with :func:`snapshot` only (the hook
#: does; so must anything else that feeds a hand-off), so every producer hands over the
#: same thing. The types are the SDK's declared ones; the worker still guards against
#: any value at run time.
Snapshot = tuple[
    str,  # flag key
    str | None,  # variant
    ErrorCode | None,  # error code
    str | None,  # error message
    FlagMetadata,  # flag metadata as at evaluation (see snapshot())
    str | None,  # targeting key
    Mapping[str, Any],  # context attributes (the SDK's per-evaluation merged dict)
    int,  # evaluation time, time.time_ns()
]


#: Snapshots wait in the hand-off for up to a drain interval: tracked, each would be
#: walked by every collection of the young generation meanwhile, promoted, and walked
#: again by the older ones (0.3-0.5 us per evaluation on the evaluating thread,
#: benchmarks/README.md 4c). A snapshot is in no reference cycle (nothing refers to it
#: but the hand-off and the worker's batch), so the collector need not follow it: the
#: compiled helper untracks it (~25 ns); pure Python leaves it tracked.
_untracked: Callable[[Snapshot], Snapshot] | None = None if CKEYS is None else CKEYS.untracked


def snapshot(flag_key: str, details: _Details, context: _Context) -> Snapshot:
    """One evaluation's snapshot: references, plus a copy of the flag's metadata.

    ``details`` is the SDK's ``FlagEvaluationDetails`` (or a provider's
    ``FlagResolutionDetails``: the same four fields), ``context`` the evaluation's
    ``EvaluationContext``. Nothing is pruned, hashed or read here: that is the worker's.

    The metadata is copied (~60 ns for a provider's small dict; its values are scalars,
    so a shallow copy is exact): consent, the provider's time stamp and the allocation
    are then read as the evaluation saw them, even when a provider mutates one dict per
    flag in place. A mapping of another type (never seen from the SDK) is kept by
    reference and read when the worker drains it. An empty one is not copied. Nested
    context values are the caller's and are read when drained (see prune.py)."""
    meta = details.flag_metadata
    snap = (
        flag_key,
        details.variant,
        details.error_code,
        details.error_message,
        meta.copy() if type(meta) is dict and meta else meta,
        context.targeting_key,
        context.attributes,
        time_ns(),
    )
    return snap if _untracked is None else _untracked(snap)


class State(enum.Enum):
    """NEW until the worker starts (the first evaluation starts it), OPEN while it
    accepts, CLOSED once shutdown began."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Handoff:
    """A bounded, lock-free-on-append, multi-producer single-consumer hand-off."""

    __slots__ = ("_counts", "_lock", "accepting", "capacity", "queue", "state")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queue: deque[Snapshot] = deque()
        # ``accepting`` is what the hot path reads: one attribute, True only while OPEN.
        self.accepting = False
        self.state = State.NEW
        # Re-entrant: a signal handler calling stats() may interrupt count() on this
        # very thread.
        self._lock = threading.RLock()
        self._counts = dict.fromkeys(PRODUCER_DROPS, 0)

    def count(self, reason: str, n: int = 1) -> None:
        """Count a snapshot that did not enter the queue (thread-safe, exact)."""
        with self._lock:
            self._counts[reason] += n

    def counts(self) -> dict[str, int]:
        """What producers counted, by reason (``losses.PRODUCER_DROPS``)."""
        with self._lock:
            return dict(self._counts)

    def offer(self, snapshot: Snapshot) -> None:
        """The slow path: append if open and not full, else count why not."""
        if not self.accepting:
            self.count(CLOSED)
        elif len(self.queue) < self.capacity:
            self.queue.append(snapshot)
        else:
            self.count(QUEUE_OVERFLOW)

    def drain(self, limit: int) -> list[Snapshot]:
        """Take up to ``limit`` snapshots, oldest first (consumer side only)."""
        q = self.queue
        pop = q.popleft
        n = min(limit, len(q))
        # Producers only ever append, so the n items counted above stay available to a
        # single consumer; should anything else pop concurrently (a late discard), what
        # was taken is still returned rather than lost with an IndexError.
        out: list[Snapshot] = []
        append = out.append
        try:
            for _ in range(n):
                append(pop())
        except IndexError:
            pass
        return out

    def open(self) -> None:
        self.state = State.OPEN
        self.accepting = True

    def close(self) -> None:
        """Refuse new snapshots; those already queued stay for the final drain."""
        self.state = State.CLOSED
        self.accepting = False

    def discard_late(self) -> int:
        """After the final drain: count stragglers that raced past ``close`` as closed.

        A producer may have read ``accepting`` just before ``close`` and appended
        afterwards; such a snapshot is counted under ``closed``, not lost.
        """
        n = 0
        pop = self.queue.popleft
        while True:
            try:
                pop()
            except IndexError:
                break
            n += 1
        if n:
            self.count(CLOSED, n)
        return n

    def reset_after_fork(self) -> None:
        """In a forked child: start empty. The parent owns (and sends) what was queued."""
        self.queue = deque()
        self._lock = threading.RLock()  # the parent's may have been held at fork time
        self._counts = dict.fromkeys(PRODUCER_DROPS, 0)
        self.state = State.NEW
        self.accepting = False
