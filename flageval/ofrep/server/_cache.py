"""Evaluated bulk answers, kept per (flag set, fingerprint, canonical context).

Bounded twice: at most ``capacity`` entries and about ``max_bytes`` (the body, the
context and a fixed charge per flag for the kept resolution details); the least
recently used entry goes first. A configuration change drops the entries of the flag
sets it changed (their keys carry the old fingerprint and could never be hit again).
Only the server's event loop touches it: no lock.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from openfeature.evaluation_context import EvaluationContext

from ._evaluate import Result

#: What an entry is charged per flag besides its body: the details object and its tuple.
_PER_RESULT_BYTES = 200
_PER_ENTRY_BYTES = 400

Key = tuple[str | None, str, bytes]  # (flag set, its fingerprint, canonical context)


@dataclasses.dataclass(frozen=True, slots=True)
class Cached:
    body: bytes
    etag: str
    results: tuple[Result, ...]  # what telemetry records each time the body is served
    context: EvaluationContext

    def size(self, key: Key) -> int:
        return (
            _PER_ENTRY_BYTES
            + len(self.body)
            + 2 * len(key[2])  # the key's bytes, and the context built from them
            + _PER_RESULT_BYTES * len(self.results)
        )


class BodyCache:
    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, Cached] = OrderedDict()
        self._bytes = 0
        self.counts = {"hits": 0, "misses": 0, "evicted": 0, "too_large": 0}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Key) -> Cached | None:
        found = self._entries.get(key)
        if found is None:
            self.counts["misses"] += 1
            return None
        self._entries.move_to_end(key)
        self.counts["hits"] += 1
        return found

    def put(self, key: Key, entry: Cached) -> None:
        size = entry.size(key)
        if self.capacity == 0 or size > self.max_bytes:
            self.counts["too_large"] += self.capacity > 0
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size(key)
        self._entries[key] = entry
        self._bytes += size
        while len(self._entries) > self.capacity or self._bytes > self.max_bytes:
            gone_key, gone = self._entries.popitem(last=False)
            self._bytes -= gone.size(gone_key)
            self.counts["evicted"] += 1

    def drop_sets(self, set_ids: Any) -> None:
        """Forget the entries of these flag sets (their configuration changed)."""
        stale = [k for k in self._entries if k[0] in set_ids]
        for key in stale:
            self._bytes -= self._entries.pop(key).size(key)
