"""Canonical context keys, fast: the same bytes as ``_prune.canonical``, sooner.

Most contexts are flat: exact ``str`` keys and exact ``str``/``int``/``float``/``bool``
values. For those, pruning is a filter and a cut (no walk, no text conversion): skip a
key over 256 characters, an excluded key, a string over 256 characters and an int
that prints in more than 256; NaN and infinities become their text; sort the keys and
keep the first 256. The flat path does exactly that, and when nothing is to be done
(the common case) the sorted encoding of the context *is* its canonical key.

Two implementations of the flat path, one result:

* ``_ckeys`` (compiled, optional; ``flageval/_ckeys.c``): one C pass checks the types
  and the bounds, and within one drained batch a context whose key and value objects
  are the very ones of a context already keyed (the SDK copies the caller's values by
  reference, so the evaluations of one request share them) costs that pass and a
  comparison of pointers, not an encoding.
* this module's Python: the types checked by C-level ``map`` calls, the context
  encoded once, and the bounds read off the encoding (a string or number past its
  bound leaves a run of over 256 bytes without a quote, when nothing is escaped).

``FLAGEVAL_PURE_PYTHON=1`` in the environment at import selects the Python one; so
does a missing or unloadable compiled module (``_compiled``). Every other context (nested values,
other types, non-string keys, lone surrogates) goes to the full pruner, memoised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ._compiled import CKEYS
from ._prune import (
    EMPTY,
    EXCLUDED_TOP,
    MAX_ENTRIES,
    MAX_FIELDS,
    MAX_KEY_CHARS,
    MAX_STRING_CHARS,
    PLAIN,
    ContextTooLarge,
    canonical,
    encode_sorted,
    leaf,
)

#: What the canonical-key memo may hold, in bytes (see ContextKeys).
MEMO_MAX_BYTES = 4 * 1024 * 1024
#: Per memo entry beyond its two byte strings: two bytes headers and a dict slot.
_MEMO_ENTRY_OVERHEAD = 200
# The compiled path's encoders (into its own buffer): sorted, and keys as they come
# (for keys that come sorted already: the same bytes without the sort).
_encode_into = msgspec.json.Encoder(order="sorted").encode_into
_encode_in_order_into = msgspec.json.Encoder().encode_into

# issuperset over a lazy map: no intermediate set built (~70 ns less than set() <=).
_all_plain = PLAIN.issuperset
_only_str = frozenset({str}).issuperset
# A compiled literal search: ~135 ns on a 175-byte key, against ~300 ns for ``in``.
_find_null = re.compile(b"null").search
#: Every byte but the quote becomes 1: a run of 257 ones is a token of 257 bytes.
_QUOTES = bytes(0 if b == ord('"') else 1 for b in range(256))
_LONG_RUN = b"\x01" * (MAX_STRING_CHARS + 1)
#: Bytes an attribute takes in a typical encoding, at most (past it, long strings).
_DENSE_BYTES = 64
# An exact-size copy: joining with an empty bytes makes a new object of the right size
# (~1,100 instructions, against ~3,000 for bytes(memoryview(b))).
_exact = b"".join
_encode_in_order = msgspec.json.Encoder().encode


def flat_key(attrs: dict[str, Any], raw: bytes) -> bytes:
    """The canonical key of a flat context (exact ``str`` keys, values of exact plain
    types) whose sorted encoding is ``raw``, with no ``null`` in it (no NaN or
    infinity; and no lone surrogate anywhere, or it would not encode).

    When nothing is to be skipped, ``raw`` is the key, cut to the first 256 keys if
    there are more. Nothing is skipped when no key is excluded, nothing is escaped (no
    backslash in ``raw``, so no quote inside a string) and there is no run of 257 bytes
    without a quote: every key's and string's bytes (at least its characters), and
    every int's digits with the ``:`` before and the ``,`` or ``}`` after, are such a
    run, so keys and strings are at most 256 characters and ints at most 254 digits.
    Otherwise (or unsure: a string of 256 characters in more bytes), the exact filter
    decides."""
    if (
        "targetingKey" in attrs
        or "targeting_key" in attrs
        or b"\\" in raw
        or (len(raw) > MAX_STRING_CHARS and _LONG_RUN in raw.translate(_QUOTES))
    ):
        return flat_pruned(attrs)
    if len(attrs) <= MAX_FIELDS:
        return raw
    keep = sorted(attrs)[:MAX_FIELDS]
    return _encode_in_order(dict(zip(keep, map(attrs.__getitem__, keep), strict=True)))


def flat_pruned(attrs: dict[str, Any]) -> bytes:
    """The canonical key of a flat context: exact ``str`` keys without lone surrogates,
    values of exact plain types (the caller checked both)."""
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if len(name) <= MAX_KEY_CHARS and name not in EXCLUDED_TOP:
            kept = leaf(value)
            if kept is not None:
                out[name] = kept
    if len(out) > MAX_FIELDS:
        out = {name: out[name] for name in sorted(out)[:MAX_FIELDS]}
    return encode_sorted(out) if out else EMPTY


#: The compiled flat path's type, or None (pure Python).
CORE: Any = None if CKEYS is None else CKEYS.FlatKeys
_SELECTED: Any = object()  # ContextKeys' default: CORE as it is when one is made


class ContextKeys:
    """Canonical keys (one per worker; not shared): the flat path, then the full pruner
    memoised by the context's sorted encoding (which determines its pruned form exactly
    when every value is of an exact plain type: types are distinguishable in JSON, and
    NaN/infinity, which are not, never take the memo). The memo keeps flat results
    too, each its own encoding when nothing was pruned: a repeated flat context then
    costs a type check, an encoding and a lookup.

    ``key(attributes)`` is the call; ``end_batch()`` after each drained batch lets the
    compiled path drop the batch's objects. ``fast_hits`` / ``slow_runs`` count keys
    computed each way (memo hits in neither).
    """

    __slots__ = (
        "_core",
        "_fast_hits",
        "_memo",
        "_memo_bytes",
        "_memo_max",
        "_memo_max_bytes",
        "key",
        "slow_runs",
    )

    def __init__(
        self,
        memo_max: int = 4096,
        memo_max_bytes: int = MEMO_MAX_BYTES,
        *,
        core: Any = _SELECTED,
    ) -> None:
        self._memo: dict[bytes, bytes] = {}
        self._memo_max = memo_max
        # Bounded in bytes as well as entries: 4,096 entries of wide contexts (256
        # long strings: ~100 KB of key and result each) would otherwise hold
        # hundreds of MB outside the tiers' memory budget.
        self._memo_max_bytes = memo_max_bytes
        self._memo_bytes = 0
        self._fast_hits = 0
        self.slow_runs = 0
        if core is _SELECTED:
            core = CORE
        #: The compiled flat path (None: this module's Python).
        self._core = None if core is None else core(_encode_into, _encode_in_order_into, self._key)
        #: The canonical key of a context's attributes (raises ContextTooLarge past
        #: MAX_ENTRIES, and whatever a value's own methods raise).
        self.key: Callable[[Mapping[Any, Any]], bytes] = (
            self._key if self._core is None else self._core.key
        )

    @property
    def fast_hits(self) -> int:
        return self._fast_hits + (0 if self._core is None else self._core.hits)

    def end_batch(self) -> None:
        if self._core is not None:
            self._core.clear()

    def _remember(self, raw: bytes, result: bytes) -> bytes:
        """Keep ``raw`` -> ``result`` (``raw`` holds no ``null``); returns ``result`` at
        its exact size (msgspec's buffers carry up to 50% spare capacity, and a bucket
        keeps its key for a flush interval, charged by its length), the same object for
        every later hit."""
        same = result is raw
        result = _exact((result, EMPTY))
        # The key is kept as msgspec made it when it differs from the result: counted
        # with its spare capacity.
        size = (0 if same else len(raw) * 3 // 2) + len(result) + _MEMO_ENTRY_OVERHEAD
        if size > self._memo_max_bytes // 64:
            return result  # one entry never takes more than 1/64 of the memo
        memo = self._memo
        if len(memo) >= self._memo_max or self._memo_bytes + size > self._memo_max_bytes:
            memo.clear()
            self._memo_bytes = 0
        memo[result if same else raw] = result
        self._memo_bytes += size
        return result

    def _key(self, attributes: Mapping[Any, Any]) -> bytes:
        if not attributes:
            return EMPTY
        if len(attributes) > MAX_ENTRIES:  # before anything encodes it whole
            raise ContextTooLarge(f"more than {MAX_ENTRIES} attributes")
        raw: bytes | None = None
        if type(attributes) is dict and _all_plain(map(type, attributes.values())):
            try:
                # Keys must be str (subclasses too) for a sorted encoding; a lone
                # surrogate raises.
                raw = encode_sorted(attributes)
            except (TypeError, UnicodeEncodeError, OverflowError, ValueError):
                raw = None
            if raw is not None:
                # Dense in bytes: long strings, most likely skipped. Such an encoding
                # is neither looked up nor kept (its hash alone is a pass over it).
                dense = len(raw) > _DENSE_BYTES * len(attributes) + MAX_STRING_CHARS
                hit = None if dense else self._memo.get(raw)
                if hit is not None:
                    return hit
                # NaN and infinity both encode as null: such a raw is never memoised.
                null = _find_null(raw) is not None
                if _only_str(map(type, attributes)):
                    self._fast_hits += 1
                    if dense or null:  # the exact filter, not memoised
                        return _exact((flat_pruned(attributes), EMPTY))
                    if (
                        len(raw) <= MAX_STRING_CHARS
                        and b"\\" not in raw
                        and "targetingKey" not in attributes
                        and "targeting_key" not in attributes
                    ):
                        # Short, nothing escaped or excluded: flat_key's own answer,
                        # inline (the usual first sight of a small context).
                        return self._remember(raw, raw)
                    return self._remember(raw, flat_key(attributes, raw))
                if null:
                    raw = None
        self.slow_runs += 1
        result = canonical(attributes)
        if raw is not None:
            return self._remember(raw, result)
        return _exact((result, EMPTY))
