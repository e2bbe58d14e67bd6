"""Aggregation: snapshots -> buckets in a full tier, a degraded tier, or a drop counter.

A bucket is the visible row. Full-tier key: (flag, variant, allocation,
runtime_default_used, error, targeting_key, canonical context bytes). Degraded key:
the same without targeting key and context. A bucket is ``[count, first_ms, last_ms]``.

A new full bucket is refused (the evaluation goes to the degraded tier, counted by
reason) when the full tier holds ``max_full_buckets``, when its flag holds
``max_buckets_per_flag`` (``cardinality_cap``), or when the bytes held would pass
``memory_budget_bytes`` (``memory_budget``). A new degraded bucket past
``max_degraded_buckets`` is not created: the evaluation is dropped and counted under
``degraded_cap``. A snapshot whose flag key, variant or error cannot be made text is
dropped (``unreadable_value``). Nothing else loses an evaluation here.

What the budget charges: per full bucket a fixed overhead, its context bytes and its
targeting key (``sys.getsizeof``: the real size, whatever the string's width); and each
distinct flag key, variant, allocation and error text once per flush interval, when a
bucket of either tier first keeps it (buckets share one interned copy, never a slice
each). The degraded tier is bounded by its bucket count and 1,024-character texts.

Privacy (fields.py has the metadata rules): consent is what the flag's metadata, as
copied at evaluation (hook.py), states, else ``full_data_default``. An error whose
details carry no metadata at all (the SDK built them: a client-side TYPE_MISMATCH, a
provider that raised, PROVIDER_NOT_READY) says nothing of the flag's consent, so it is
sent the protected way: hashed targeting key, no context, the error code. The error
message itself is only sent when the metadata consents.

Values from the application run here (``__str__``, ``__eq__``, a Mapping's methods):
whatever they raise, ``BaseException`` included, is caught per snapshot and counted,
so the batch stays on the books and the worker lives on. No await happens inside, so
a ``CancelledError`` caught here is a value's, never the worker task's own.

This class runs on the worker's event loop only: it is never shared across threads.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from openfeature.exception import ErrorCode

from ._common import RateLimitedLog
from ._fields import (
    MAX_FIELD_CHARS,
    READ_KEYS,
    error_text,
    hash_targeting_key,
    read_meta,
    text,
)
from ._handoff import Snapshot
from ._keys import MEMO_MAX_BYTES, ContextKeys
from ._losses import Degraded, Dropped, Ledger
from ._prune import EMPTY, ContextTooLarge

log = logging.getLogger("flageval")

#: Bytes a full bucket costs beyond the strings counted one by one (context key,
#: targeting key, texts): the key tuple, the bucket list and its ints, the dict slot
#: with the dict's spare capacity, allocator overhead. Measured on CPython 3.11
#: (benchmarks/_memory_probe.py, see benchmarks/README.md): ~240 live bytes by
#: tracemalloc, 332-349 by RSS with 36k-131k buckets; 400 keeps a margin.
BUCKET_OVERHEAD_BYTES = 400
#: Per interned text beyond the string itself: its slot in the intern table.
TEXT_OVERHEAD_BYTES = 100
#: Targeting keys longer than this are not kept in the hash cache (4,096 entries).
_MAX_CACHED_KEY_CHARS = 256
_NOTHING: Any = object()


def _plain(flag: Any, variant: Any, code: Any, message: Any) -> bool:
    """True when what a snapshot's fields come to cannot change while they live:
    strings, None and OpenFeature's error codes (no str() of an application object)."""
    return (
        type(flag) is str
        and (variant is None or type(variant) is str)
        and (code is None or type(code) is ErrorCode)
        and (message is None or type(message) is str)
    )


FullKey = tuple[str, str | None, str | None, bool, str | None, str | None, bytes]
DegradedKey = tuple[str, str | None, str | None, bool, str | None]


def merge_bucket(
    tier: dict[DegradedKey, list[int]], key: DegradedKey, count: int, first: int, last: int
) -> None:
    """Add a whole bucket's counts into ``tier[key]``: counts add, times min/max."""
    bucket = tier.get(key)
    if bucket is None:
        tier[key] = [count, first, last]
    else:
        bucket[0] += count
        bucket[1] = min(bucket[1], first)
        bucket[2] = max(bucket[2], last)


class Tiers:
    """The full and degraded tiers with their caps; one instance per worker."""

    def __init__(
        self,
        *,
        max_full_buckets: int,
        max_buckets_per_flag: int,
        max_degraded_buckets: int,
        memory_budget_bytes: int,
        full_data_default: bool,
        ledger: Ledger | None = None,
    ) -> None:
        self.ledger = Ledger() if ledger is None else ledger
        self.max_full = max_full_buckets
        self.max_per_flag = max_buckets_per_flag
        self.max_degraded = max_degraded_buckets
        self.budget = memory_budget_bytes
        self.full_data_default = full_data_default
        self.full: dict[FullKey, list[int]] = {}
        self.degraded: dict[DegradedKey, list[int]] = {}
        self.per_flag: dict[str, int] = {}
        #: One copy of each distinct text the buckets keep, for the flush interval.
        self._texts: dict[str, str] = {}
        self.bytes_held = 0
        self.evaluations_held = 0
        self.received = 0
        self.context_errors = 0
        #: A KeyboardInterrupt or SystemExit a value raised (the worker decides whether
        #: it was the application's own signal; see Worker.drain_once).
        self.interrupt: BaseException | None = None
        # The key memo sits outside the budget; with a small budget it stays small too.
        self.keys = ContextKeys(memo_max_bytes=min(MEMO_MAX_BYTES, memory_budget_bytes // 16))
        self._hashed: dict[str, str] = {}
        self._warn = RateLimitedLog(log)

    # -- intake of snapshots -------------------------------------------------------
    def add_batch(self, batch: list[Snapshot]) -> None:
        """Aggregate drained snapshots. Never raises for a bad snapshot."""
        try:
            self._add(batch)
        finally:
            self.received += len(batch)  # once done with them, whatever happened
            self.keys.end_batch()

    def _add(self, batch: list[Snapshot]) -> None:
        full_get = self.full.get
        ctx_key = self.keys.key
        held = 0
        # What the previous snapshot's flag, variant, error and metadata came to.
        # Evaluations of one flag come in runs: the same flag, variant and error objects
        # and equal copies of the flag's metadata, compared (~100 ns) rather than read
        # again (~0.6 us). Only plain values are remembered (a str() is read each time),
        # and metadata only when, besides comparing equal, the values read_meta reads
        # (at most two) are the very objects read (1 == True, but only True consents).
        p_flag: Any = _NOTHING
        p_variant: Any = _NOTHING
        p_code: Any = _NOTHING
        p_message: Any = _NOTHING
        p_meta: Any = _NOTHING
        r1 = r2 = READ_KEYS[0]
        v1: Any = _NOTHING
        v2: Any = _NOTHING
        flag = ""
        variant: str | None = None
        allocation: str | None = None
        error: str | None = None
        stamp: int | None = None
        consent = True
        for snap in batch:
            try:
                raw_flag, raw_variant, code, message, meta, tk, attrs, t_ns, _ = snap
                t_ms = t_ns // 1_000_000
                if (
                    raw_flag is not p_flag
                    or raw_variant is not p_variant
                    or code is not p_code
                    or message is not p_message
                    or (
                        meta is not p_meta
                        and (
                            meta != p_meta
                            or meta.get(r1, _NOTHING) is not v1
                            or meta.get(r2, _NOTHING) is not v2
                        )
                    )
                ):
                    p_flag = _NOTHING  # until read whole
                    flag, variant, allocation, error, consent, stamp = self._fields(
                        raw_flag, raw_variant, code, message, meta
                    )
                    read = [(k, meta[k]) for k in READ_KEYS if k in meta] if meta else []
                    if _plain(raw_flag, raw_variant, code, message) and len(read) <= 2:
                        (r1, v1), (r2, v2) = (read * 2 + [(READ_KEYS[0], _NOTHING)] * 2)[:2]
                        p_flag, p_variant, p_code, p_message = raw_flag, raw_variant, code, message
                        p_meta = meta
                if stamp is not None:
                    t_ms = stamp
            except BaseException as exc:  # a value's, never ours (see the module docstring)
                p_flag = _NOTHING
                self._unreadable(exc)
                continue
            if tk is not None and (type(tk) is not str or not tk.isascii()):
                try:
                    tk = text(tk, None)  # never cut: it is charged to the budget
                except BaseException as exc:  # the key's own __str__
                    self._note(exc)
                    self._warn.warning(
                        Degraded.TARGETING_KEY_ERROR,
                        "a targeting key could not be made text (%s); the "
                        "evaluation is posted without targeting key and context (%s)",
                        type(exc).__name__,
                        Degraded.TARGETING_KEY_ERROR,
                    )
                    held += self._degrade(
                        (flag, variant, allocation, variant is None, error),
                        t_ms,
                        Degraded.TARGETING_KEY_ERROR,
                    )
                    continue
            if not consent:
                ctx = EMPTY
                if tk:  # an empty key names nobody: sent as it is
                    tk = self._hash(tk)
            elif not attrs:
                ctx = EMPTY
            else:
                try:
                    ctx = ctx_key(attrs)
                except ContextTooLarge:
                    held += self._degrade(
                        (flag, variant, allocation, variant is None, error),
                        t_ms,
                        Degraded.CONTEXT_BUDGET,
                    )
                    continue
                except BaseException as exc:  # a value's __eq__, a Mapping's items()...
                    # Unreadable even past the pruner's guards: kept, degraded, counted.
                    self._note(exc)
                    self.context_errors += 1
                    held += self._degrade(
                        (flag, variant, allocation, variant is None, error),
                        t_ms,
                        Degraded.CONTEXT_ERROR,
                    )
                    continue
            key = (flag, variant, allocation, variant is None, error, tk, ctx)
            bucket = full_get(key)
            if bucket is not None:
                bucket[0] += 1
                if t_ms < bucket[1]:
                    bucket[1] = t_ms
                elif t_ms > bucket[2]:
                    bucket[2] = t_ms
                held += 1
            else:
                held += self._new_full(key, t_ms)
        self.evaluations_held += held

    def _fields(
        self, flag: Any, variant: Any, code: Any, message: Any, meta: Any
    ) -> tuple[str, str | None, str | None, str | None, bool, int | None]:
        """(flag, variant, allocation, error, consent, stamp) of a snapshot's fields;
        raises whatever a value's own methods raise."""
        if meta:
            allocation, stated, stamp = read_meta(meta)
            consent = self.full_data_default if stated is None else stated
        else:
            allocation = stated = stamp = None
            # Details the SDK built without the flag's metadata: protected.
            consent = self.full_data_default if code is None else False
        # Inline checks, not a call: a plain short ASCII string (the usual case) is kept.
        if type(flag) is not str or not flag.isascii() or len(flag) > MAX_FIELD_CHARS:
            flag = text(flag) or ""  # a None key prints as an empty one
        if variant is not None and (
            type(variant) is not str or not variant.isascii() or len(variant) > MAX_FIELD_CHARS
        ):
            variant = text(variant)
        error = None
        if code is not None or message is not None:
            error = error_text(code, message, stated is True)
        return flag, variant or None, allocation, error, consent, stamp  # "" names no variant

    def _note(self, exc: BaseException) -> None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and self.interrupt is None:
            self.interrupt = exc

    def _unreadable(self, exc: BaseException) -> None:
        self._note(exc)
        self.ledger.drop(Dropped.UNREADABLE)
        self._warn.warning(
            Dropped.UNREADABLE,
            "an evaluation's flag key, variant, error or metadata could not be "
            "read (%s); it is counted as %s",
            type(exc).__name__,
            Dropped.UNREADABLE,
        )

    def _hash(self, tk: str) -> str:
        hashed = self._hashed.get(tk)
        if hashed is None:
            hashed = hash_targeting_key(tk)
            # Bounded in bytes too: a long key is hashed again rather than kept.
            if len(tk) <= _MAX_CACHED_KEY_CHARS:
                if len(self._hashed) >= 4096:
                    self._hashed.clear()
                self._hashed[tk] = hashed
        return hashed

    def _new_texts_cost(self, key: DegradedKey) -> int:
        texts = self._texts
        cost = 0
        for t in (key[0], key[1], key[2], key[4]):
            if t is not None and t not in texts:
                cost += sys.getsizeof(t) + TEXT_OVERHEAD_BYTES
        return cost

    def _interned(self, key: DegradedKey) -> DegradedKey:
        """``key`` with each text replaced by the tiers' one copy of it (charged once)."""
        texts = self._texts
        out: list[Any] = list(key)
        for i in (0, 1, 2, 4):
            t = out[i]
            if t is not None:
                kept = texts.get(t)
                if kept is None:
                    texts[t] = kept = t
                    self.bytes_held += sys.getsizeof(t) + TEXT_OVERHEAD_BYTES
                out[i] = kept
        return (out[0], out[1], out[2], out[3], out[4])

    def _new_full(self, key: FullKey, t_ms: int) -> int:
        """Open a full bucket, or degrade; returns 1 if the evaluation landed, else 0."""
        flag = key[0]
        n_flag = self.per_flag.get(flag, 0)
        dkey: DegradedKey = key[:5]
        if len(self.full) >= self.max_full or n_flag >= self.max_per_flag:
            return self._degrade(dkey, t_ms, Degraded.CARDINALITY_CAP)
        tk, ctx = key[5], key[6]
        cost = BUCKET_OVERHEAD_BYTES + len(ctx) + (0 if tk is None else sys.getsizeof(tk))
        if self.bytes_held + cost + self._new_texts_cost(dkey) > self.budget:
            return self._degrade(dkey, t_ms, Degraded.MEMORY_BUDGET)
        self.bytes_held += cost  # and _interned charges the texts it keeps first
        self.full[(*self._interned(dkey), tk, ctx)] = [1, t_ms, t_ms]
        self.per_flag[flag] = n_flag + 1
        return 1

    def _degrade(self, key: DegradedKey, t_ms: int, reason: Degraded) -> int:
        """Count one evaluation into degraded bucket ``key``; 1 if it landed, else 0."""
        bucket = self.degraded.get(key)
        if bucket is None:
            if len(self.degraded) >= self.max_degraded:
                self.ledger.drop(Dropped.DEGRADED_CAP)
                return 0
            self.degraded[self._interned(key)] = [1, t_ms, t_ms]
        else:
            bucket[0] += 1
            if t_ms < bucket[1]:
                bucket[1] = t_ms
            elif t_ms > bucket[2]:
                bucket[2] = t_ms
        self.ledger.degrade(reason)
        return 1

    # -- hand-over to the writer ---------------------------------------------------
    def take(
        self,
    ) -> tuple[dict[FullKey, list[int]], dict[DegradedKey, list[int]], int]:
        """Swap out both tiers; returns (full, degraded, evaluations in them).

        Full buckets with no targeting key and no context print exactly like a
        degraded row of the same key, so they are merged into the degraded tier here:
        no body ever holds two rows that differ only in counts and times.
        """
        full, degraded = self.full, self.degraded
        for key in [k for k in full if k[5] is None and k[6] == EMPTY]:
            # A merge never needs a degraded slot past the cap: it reuses its own.
            merge_bucket(degraded, key[:5], *full.pop(key))
        held = self.evaluations_held
        self.full, self.degraded = {}, {}
        self.per_flag = {}
        self._texts = {}
        self.bytes_held = 0
        self.evaluations_held = 0
        return full, degraded, held
