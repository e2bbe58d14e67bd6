"""The per-context cache: bulk evaluations by canonical context, bounded, least recently
used out (CLOCK: an entry used since eviction last passed it gets a second chance).
Resolving threads read it without a lock; the loop changes it under one.

An `Entry` belongs to one key for its whole life: the canonical request body its
evaluations were fetched with (`context_key`). Its ``entries`` are replaced only by an
answer to a request made with that very body, so whatever a resolve reads from the
entry it looked up by its own key is its own context's answer, whether the entry was
evicted, revalidated or replaced meanwhile.

``epoch`` is bumped by every change-detection fetch: an entry validated in an older one
is stale (served, and revalidated). ``begin`` is the single flight: the first miss of a
key makes the future its fetch resolves, later misses join it.

The admission rule (``context_single_flag="auto"``): a bulk fetch pays when a context is
evaluated again. Of the contexts seen for the first time, the share evaluated a second
time is kept (decayed over the last ~1,000); below a quarter, with 64 seen, a first
sight is answered by the single-flag endpoint and only a second sight fetches in bulk.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from openfeature.evaluation_context import EvaluationContext

from ._context import ContextEncodingError, encode_context
from ._diagnostics import Counter, Stats
from ._resolve import FlagEntry

# Python's objects cost several times their JSON: a dict of frozen FlagEntry objects
# measured ~5x its answer's bytes (benchmarks/bench_ofrep_percontext.py checks this).
BYTES_PER_ANSWER_BYTE = 6
ENTRY_OVERHEAD_BYTES = 600
_DOORKEEPER = 16_384
_MIN_SEEN = 64
_DECAY_AT = 1_024
_RETURN_SHARE = 0.25

_monotonic = time.monotonic
_encoder = msgspec.json.Encoder(order="sorted")


def context_key(context: EvaluationContext, attributes: Sequence[str] | None) -> bytes:
    """The canonical request body for ``context``: all of it, or only its targeting key
    and ``attributes`` (those that identify the answer). ContextEncodingError if it
    cannot be encoded."""
    if attributes is None:
        return encode_context(context)
    kept = {a: context.attributes[a] for a in attributes if a in context.attributes}
    return encode_context(EvaluationContext(context.targeting_key, kept))


class Entry:
    __slots__ = (
        "entries",
        "epoch",
        "etag",
        "hit",
        "in_flight",
        "key",
        "ref",
        "size",
        "used_at",
    )

    def __init__(self, key: bytes, entries: Mapping[str, FlagEntry], etag: str | None) -> None:
        self.key = key
        self.entries = entries
        self.etag = etag
        self.epoch = 0
        self.size = 0
        self.hit = False  # evaluated since its first fetch (the admission rule)
        self.in_flight = False  # a revalidation is scheduled or running
        self.used_at = _monotonic()
        self.ref = True  # used since eviction last passed it over (CLOCK)


class ContextCache:
    def __init__(self, max_entries: int, max_bytes: int, stats: Stats) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._stats = stats
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[bytes, concurrent.futures.Future[Any]] = {}
        self._seen: OrderedDict[int, bool] = OrderedDict()
        self._firsts = 0.0
        self._returns = 0.0
        self.epoch = 0

    # -- resolving threads -------------------------------------------------------------

    def lookup(self, key: bytes) -> Entry | None:
        # No lock: one dict read (the loop alone changes the dict, under the lock) and
        # two attribute writes. Four threads queueing on a lock cost ~300 us at p99.
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.used_at = _monotonic()
        entry.ref = True
        if not entry.hit:
            with self._lock:
                if not entry.hit:
                    entry.hit = True
                    self._returns += 1
        return entry

    def begin(
        self, key: bytes, single_flag_ok: bool
    ) -> tuple[concurrent.futures.Future[Any], bool] | None:
        """For a miss: (the future of this key's fetch, whether the caller starts it);
        None when this first sight is better answered by the single-flag endpoint."""
        with self._lock:
            self._stats[Counter.CONTEXT_MISSES] += 1
            future = self._inflight.get(key)
            if future is not None:
                self._stats[Counter.CONTEXT_JOINED] += 1
                return future, False
            if single_flag_ok and self._first_sight(key) and self._churning():
                return None
            future = concurrent.futures.Future()
            self._inflight[key] = future
            return future, True

    def _first_sight(self, key: bytes) -> bool:
        h = hash(key)
        if h in self._seen:
            if not self._seen[h]:
                self._seen[h] = True
                self._returns += 1
            return False
        self._seen[h] = False
        if len(self._seen) > _DOORKEEPER:
            self._seen.popitem(last=False)
        self._firsts += 1
        if self._firsts >= _DECAY_AT:
            self._firsts /= 2
            self._returns /= 2
        return True

    def _churning(self) -> bool:
        return self._firsts >= _MIN_SEEN and self._returns < _RETURN_SHARE * self._firsts

    def count(self, counter: Counter) -> None:
        with self._lock:
            self._stats[counter] += 1

    # -- the loop ----------------------------------------------------------------------

    def finish(self, key: bytes) -> concurrent.futures.Future[Any] | None:
        with self._lock:
            return self._inflight.pop(key, None)

    def store(
        self,
        key: bytes,
        entries: Mapping[str, FlagEntry],
        etag: str | None,
        size: int,
        epoch: int,
    ) -> bool:
        """Keep this evaluation of ``key``, asked for in ``epoch`` (a new entry, or the
        old one's answer replaced); False when it alone is over the byte budget."""
        size += len(key) + ENTRY_OVERHEAD_BYTES
        with self._lock:
            if size > self._max_bytes:
                self._stats[Counter.CONTEXT_TOO_LARGE] += 1
                return False
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = Entry(key, entries, etag)
            else:  # the same key's newer answer: one assignment, read whole by resolves
                self._bytes -= entry.size
                entry.entries, entry.etag = entries, etag
            entry.epoch, entry.size = epoch, size
            self._bytes += size
            # CLOCK, the usual approximation of least recently used: an entry used since
            # it was last passed over gets a second chance (to the back, its bit cleared).
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                victim_key, victim = self._entries.popitem(last=False)
                if victim.ref:
                    victim.ref = False
                    self._entries[victim_key] = victim
                    continue
                self._bytes -= victim.size
                self._stats[Counter.CONTEXT_EVICTIONS] += 1
            return True

    def revalidated(self, entry: Entry, epoch: int) -> None:
        """A 304 for ``entry``'s own request: fresh as of ``epoch``."""
        entry.epoch = max(entry.epoch, epoch)

    def recent(self, since: float) -> list[Entry]:
        """Entries used at or after ``since``, most recent first."""
        with self._lock:
            out = [entry for entry in self._entries.values() if entry.used_at >= since]
        out.sort(key=lambda entry: entry.used_at, reverse=True)
        return out

    def current(self, entry: Entry) -> bool:
        with self._lock:
            return self._entries.get(entry.key) is entry

    def kept(self) -> list[Entry]:
        """The entries kept, least recently used first (a copy)."""
        with self._lock:
            return list(self._entries.values())

    def sizes(self) -> tuple[int, int]:
        """(entries kept, their estimated bytes)."""
        with self._lock:
            return len(self._entries), self._bytes

    def drain_inflight(self) -> list[concurrent.futures.Future[Any]]:
        with self._lock:
            futures = list(self._inflight.values())
            self._inflight.clear()
            return futures

    def after_fork(self) -> None:
        """A forked child: the parent's fetches will never answer here."""
        self._lock = threading.Lock()
        self._inflight = {}
        for entry in self._entries.values():
            entry.in_flight = False


__all__ = ["ContextCache", "ContextEncodingError", "Entry", "context_key"]
