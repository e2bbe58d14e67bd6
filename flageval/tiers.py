"""Aggregation: snapshots -> buckets in a full tier, a degraded tier, or a drop counter.

A bucket is the visible row. Full-tier key: (flag, variant, allocation,
runtime_default_used, error, targeting_key, canonical context bytes). Degraded key:
the same without targeting key and context. A bucket is ``[count, first_ms, last_ms]``.

A new full bucket is refused (the evaluation goes to the degraded tier, counted by
reason) when the full tier holds ``max_full_buckets``, when its flag holds
``max_buckets_per_flag`` (``cardinality_cap``), or when the bytes the full tier would
hold pass ``memory_budget_bytes`` (``memory_budget``). A new degraded bucket past
``max_degraded_buckets`` is not created: the evaluation is dropped and counted under
``degraded_cap``. Nothing else loses an evaluation here.

This class runs on the worker's event loop only: it is never shared across threads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .handoff import Snapshot
from .losses import (
    CARDINALITY_CAP,
    CONTEXT_ERROR,
    DEGRADED_CAP,
    MEMORY_BUDGET,
    WORKER_ERROR,
    Ledger,
)
from .prune import EMPTY, MEMO_MAX_BYTES, ContextKeys, clean_text

# Metadata spellings used by providers (INTAKE.md).
_ALLOCATION_KEYS = ("allocationKey", "allocation_key", "dd.allocation.key")
_TIMESTAMP_KEYS = ("dd.eval.timestamp_ms", "__dd_eval_timestamp_ms")
_CONSENT_KEYS = ("observe_full_evaluation_data", "__dd_observe_full_evaluation_data")
#: Provider stamps before this (2025-10-01) are not epoch ms: the hook's clock is used.
MIN_EPOCH_MS = 1_759_276_800_000
_MAX_EPOCH_MS = 32_503_680_000_000  # year 3000: past it a stamp is not epoch ms either

#: Bytes a full bucket costs beyond the strings counted one by one (context key,
#: targeting key, error text): the key tuple, the bucket list and its ints, the dict
#: slot with the dict's spare capacity, allocator overhead. Measured on CPython 3.11
#: (benchmarks/_memory_probe.py, see benchmarks/README.md): ~240 live bytes by
#: tracemalloc, 332-349 by RSS with 36k-131k buckets; 400 keeps a margin.
BUCKET_OVERHEAD_BYTES = 400
#: Targeting keys longer than this are not kept in the hash cache (4,096 entries).
_MAX_CACHED_KEY_CHARS = 256

#: Flag key, variant, allocation and error text are cut to this many characters.
MAX_FIELD_CHARS = 1024

FullKey = tuple[str, str | None, str | None, bool, str | None, str | None, bytes]
DegradedKey = tuple[str, str | None, str | None, bool, str | None]


def hash_targeting_key(targeting_key: str) -> str:
    """What is sent without consent: ``sha256_`` + hex digest of the UTF-8 key."""
    data = targeting_key.encode("utf-8", "surrogatepass")
    return "sha256_" + hashlib.sha256(data).hexdigest()


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


def _text(value: Any, max_chars: int | None = MAX_FIELD_CHARS) -> str | None:
    """A row field's text: str() of a non-string, lone surrogates replaced by U+FFFD
    (bodies are UTF-8 JSON: one such code point would fail the whole flush), cut to
    ``MAX_FIELD_CHARS`` (the degraded tier has no byte budget: its keys must be small)."""
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return text if text.isascii() else clean_text(text)


def _read_meta(meta: Mapping[str, Any]) -> tuple[str | None, bool | None, int | None]:
    """(allocation, consent or None if not stated, timestamp ms or None if none usable)."""
    allocation = None
    for name in _ALLOCATION_KEYS:
        value = meta.get(name)
        if value is not None:
            allocation = _text(value)
            break
    consent = None
    for name in _CONSENT_KEYS:
        if name in meta:
            # Only the boolean true is consent; "true", 1 or anything else is not.
            consent = meta[name] is True
            break
    t_ms = None
    for name in _TIMESTAMP_KEYS:
        stamp = meta.get(name)
        if stamp is not None:
            if type(stamp) in (int, float) and MIN_EPOCH_MS <= stamp <= _MAX_EPOCH_MS:
                t_ms = int(stamp)
            break
    return allocation, consent, t_ms


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
        self.bytes_held = 0
        self.evaluations_held = 0
        self.received = 0
        self.context_errors = 0
        # The key memo sits outside the budget; with a small budget it stays small too.
        self.keys = ContextKeys(memo_max_bytes=min(MEMO_MAX_BYTES, memory_budget_bytes // 16))
        self._hashed: dict[str, str] = {}

    # -- intake of snapshots -------------------------------------------------------
    def add_batch(self, batch: list[Snapshot]) -> None:
        """Aggregate drained snapshots. Never raises for a bad snapshot."""
        try:
            self._add(batch)
        finally:
            self.received += len(batch)  # once done with them, whatever happened

    def _add(self, batch: list[Snapshot]) -> None:
        full_get = self.full.get
        ctx_key = self.keys.key
        default_consent = self.full_data_default
        held = 0
        # Evaluations of one flag share its metadata mapping (the provider hands out
        # the same object), so each mapping is read once per batch, not once per
        # snapshot (~0.6 us each). Keyed by identity, which is sound while the batch
        # holds every mapping alive; the values are the same either way, since the
        # worker reads a mapping when it drains it, not when it was evaluated.
        meta_seen: dict[int, tuple[str | None, bool | None, int | None]] = {}
        last_meta: Any = None
        fields: tuple[str | None, bool | None, int | None] = (None, None, None)
        for snap in batch:
            try:
                flag, variant, code, message, meta, tk, attrs, t_ns = snap
                allocation = None
                consent = default_consent
                t_ms = t_ns // 1_000_000
                if meta:
                    if meta is not last_meta:
                        cached = meta_seen.get(id(meta))
                        if cached is None:
                            cached = meta_seen[id(meta)] = _read_meta(meta)
                        fields = cached
                        last_meta = meta
                    allocation, meta_consent, stamp = fields
                    if meta_consent is not None:
                        consent = meta_consent
                    if stamp is not None:
                        t_ms = stamp
                if type(flag) is not str or not flag.isascii() or len(flag) > MAX_FIELD_CHARS:
                    flag = _text(flag) or ""  # a None key prints as an empty one
                if variant is not None and (
                    type(variant) is not str
                    or not variant.isascii()
                    or len(variant) > MAX_FIELD_CHARS
                ):
                    variant = _text(variant)
                error = None
                if code is not None or message is not None:
                    error = self._error_text(code, message, consent)
                if consent:
                    if tk is not None and (type(tk) is not str or not tk.isascii()):
                        tk = _text(tk, None)  # never cut: it is charged to the budget
                    try:
                        ctx = ctx_key(attrs) if attrs else EMPTY
                    except Exception:
                        # A context that cannot be read even after the pruner's guards
                        # (e.g. a Mapping whose items() raises): counted, kept degraded.
                        self.context_errors += 1
                        dkey = (flag, variant, allocation, variant is None, error)
                        held += self._degrade(dkey, t_ms, CONTEXT_ERROR)
                        continue
                else:
                    ctx = EMPTY
                    if tk is not None:
                        tk = self._hash(tk if type(tk) is str else _text(tk, None) or "")
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
            except Exception:
                # A value that cannot even be made text (a flag, variant, targeting key
                # or metadata value whose __str__ raises). Buckets are only touched
                # last, so nothing of this snapshot was applied: count it once and go
                # on with the rest of the batch.
                self.ledger.drop(WORKER_ERROR)
        self.evaluations_held += held

    @staticmethod
    def _error_text(code: Any, message: Any, consent: bool) -> str:
        name = getattr(code, "value", code)
        if consent and message:
            return _text(message) or ""
        if name:
            return _text(name) or "GENERAL"
        # A message with no code: without consent the message may carry user data.
        return "GENERAL"

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

    def _new_full(self, key: FullKey, t_ms: int) -> int:
        """Open a full bucket, or degrade; returns 1 if the evaluation landed, else 0."""
        flag = key[0]
        n_flag = self.per_flag.get(flag, 0)
        dkey: DegradedKey = key[:5]
        if len(self.full) >= self.max_full or n_flag >= self.max_per_flag:
            return self._degrade(dkey, t_ms, CARDINALITY_CAP)
        tk = key[5]
        cost = BUCKET_OVERHEAD_BYTES + len(key[6]) + (len(tk) + 49 if tk else 0)
        error = key[4]
        if error is not None:
            cost += len(error) + 49
        if self.bytes_held + cost > self.budget:
            return self._degrade(dkey, t_ms, MEMORY_BUDGET)
        ctx = key[6]
        if ctx:
            # msgspec returns its output buffer with up to 50% spare capacity; a key
            # kept for the whole flush interval is copied to an exact-size object, so
            # what the budget counts (len) is what the bucket holds.
            key = (*key[:6], bytes(memoryview(ctx)))
        self.full[key] = [1, t_ms, t_ms]
        self.per_flag[flag] = n_flag + 1
        self.bytes_held += cost
        return 1

    def _degrade(self, key: DegradedKey, t_ms: int, reason: str) -> int:
        """Count one evaluation into degraded bucket ``key``; 1 if it landed, else 0."""
        bucket = self.degraded.get(key)
        if bucket is None:
            if len(self.degraded) >= self.max_degraded:
                self.ledger.drop(DEGRADED_CAP)
                return 0
            self.degraded[key] = [1, t_ms, t_ms]
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
        self.bytes_held = 0
        self.evaluations_held = 0
        return full, degraded, held
