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

``accepting`` is the one attribute the hot path reads; the pipeline's lifecycle
(flageval._lifecycle) writes it as its phase changes, so it is never out of step with
the pipeline's state. Every producer (the hook, the provider wrapper, ``_record.record``)
goes through :func:`put`, the one place a snapshot is built and appended.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from time import time_ns
from typing import Any, Protocol

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagMetadata

from ._compiled import CKEYS
from ._losses import Dropped


class Details(Protocol):
    """What a snapshot reads of ``FlagEvaluationDetails`` / ``FlagResolutionDetails``."""

    @property
    def variant(self) -> str | None: ...
    @property
    def error_code(self) -> ErrorCode | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def flag_metadata(self) -> FlagMetadata: ...
    @property
    def reason(self) -> str | None: ...


class Context(Protocol):
    """What a snapshot reads of an ``EvaluationContext``."""

    @property
    def targeting_key(self) -> str | None: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...


#: What a producer hands over, one flat tuple per evaluation (a tuple: ~160 ns to build,
#: against ~400 ns for a slots dataclass), built by :func:`put` only, so every producer
#: hands over the same thing. The types are the SDK's declared ones; the worker still
#: guards against any value at run time.
Snapshot = tuple[
    str,  # flag key
    str | None,  # variant
    ErrorCode | None,  # error code
    str | None,  # error message
    FlagMetadata,  # flag metadata as at evaluation (see put())
    str | None,  # targeting key
    Mapping[str, Any],  # context attributes (the SDK's per-evaluation merged dict)
    int,  # evaluation time, time.time_ns()
    str | None,  # reason (the SDK's Reason, or a provider's own text)
]


#: Snapshots wait in the hand-off for up to a drain interval: tracked, each would be
#: walked by every collection of the young generation meanwhile, promoted, and walked
#: again by the older ones (0.3-0.5 us per evaluation on the evaluating thread,
#: benchmarks/README.md 4c). A snapshot is in no reference cycle (nothing refers to it
#: but the hand-off and the worker's batch), so the collector need not follow it: the
#: compiled helper untracks it (~25 ns); pure Python leaves it tracked.
_untracked: Callable[[Snapshot], Snapshot] | None = None if CKEYS is None else CKEYS.untracked


def put(
    h: Handoff, start: Callable[[], None], flag_key: str, details: Details, context: Context
) -> int:
    """Hand one evaluation over: its snapshot, appended if ``h`` accepts and has room,
    else :meth:`Handoff.offer` (which starts the worker on first use via ``start``, or
    counts why not). Returns the queue's length before the append, -1 for the slow way.

    ``details`` is the SDK's ``FlagEvaluationDetails`` (or a provider's
    ``FlagResolutionDetails``: the same five fields), ``context`` the evaluation's
    ``EvaluationContext``. Nothing is pruned, hashed or read here: that is the worker's.
    The snapshot holds references, plus a copy of the flag's metadata dict (~60 ns for a
    provider's small dict; its values are scalars, so a shallow copy is exact): consent,
    the provider's time stamp and the allocation are then read as the evaluation saw
    them, even when a provider mutates one dict per flag in place. A mapping of another
    type (never seen from the SDK) is kept by reference and read when the worker drains
    it. An empty one is not copied. Nested context values are the caller's and are read
    when drained (see _prune.py).

    The fast path is one attribute read, a length check and ``deque.append``, inline:
    each producer calls this once per evaluation, and it calls nothing else but the
    compiled helper that untracks the snapshot (see ``_untracked``)."""
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
        details.reason,
    )
    if _untracked is not None:
        snap = _untracked(snap)
    q = h.queue
    depth = len(q)
    if h.accepting and depth < h.capacity:
        q.append(snap)
        return depth
    h.offer(snap, start)
    return -1


class Handoff:
    """A bounded, lock-free-on-append, multi-producer single-consumer hand-off."""

    __slots__ = ("_counts", "_lock", "accepting", "capacity", "direct", "queue")

    def __init__(self, capacity: int, *, accepting: bool = False) -> None:
        self.capacity = capacity
        self.queue: deque[Snapshot] = deque()
        #: What the hot path reads: written by the pipeline's lifecycle only (a hand-off
        #: built alone, for a test or a benchmark, says so here).
        self.accepting = accepting
        #: Fed by ``_record.record`` too (evaluations made without the SDK: no provider
        #: of the OpenFeature API answered them).
        self.direct = False
        # Re-entrant: a signal handler calling stats() may interrupt count() on this
        # very thread.
        self._lock = threading.RLock()
        self._counts: Counter[Dropped] = Counter()

    def count(self, reason: Dropped, n: int = 1) -> None:
        """Count snapshots that did not enter the queue, or left it unread (thread-safe,
        exact)."""
        with self._lock:
            self._counts[reason] += n

    def counts(self) -> dict[Dropped, int]:
        """What was counted here, by reason."""
        with self._lock:
            return dict(self._counts)

    def offer(self, snapshot: Snapshot, start: Callable[[], None]) -> None:
        """The slow path: start the worker on first use (``start`` does nothing unless the
        pipeline is idle), then append if accepting and not full, else count why not."""
        if not self.accepting:
            start()
        if not self.accepting:
            self.count(Dropped.CLOSED)
        elif len(self.queue) < self.capacity:
            self.queue.append(snapshot)
        else:
            self.count(Dropped.QUEUE_OVERFLOW)

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

    def discard(self, reason: Dropped) -> int:
        """Take everything queued, unread, and count it under ``reason``; returns how many.

        For what no worker will drain: stragglers that raced past the pipeline's end
        (``closed``: a producer read ``accepting`` just before it changed), the queue of a
        worker that never started (``never_started``) or was halted at a deadline."""
        n = 0
        pop = self.queue.popleft
        while True:
            try:
                pop()
            except IndexError:
                break
            n += 1
        if n:
            self.count(reason, n)
        return n

    def reset_after_fork(self) -> None:
        """In a forked child: start empty. The parent owns (and sends) what was queued."""
        self.queue = deque()
        self._lock = threading.RLock()  # the parent's may have been held at fork time
        self._counts = Counter()
