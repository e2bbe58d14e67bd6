"""Context pruning and the canonical context key.

The rules (the intake's bounds on a context, ``schemas/flagevaluation.schema.json``; made
exact here):

* The targeting key is not an attribute (the SDK keeps it apart); attributes named
  ``targetingKey`` or ``targeting_key`` at the top level are excluded too.
* Nested mappings flatten to ``a.b``, list/tuple items to ``a[0]``; sets and
  frozensets flatten like lists after sorting their items (so a set gives the same row
  in every process, whatever the hash seed).
* Bounds: at most ``MAX_DEPTH`` path segments, ``MAX_LIST_ITEMS`` items per list,
  flattened keys of at most ``MAX_KEY_CHARS`` characters (longer keys are skipped), and
  a container met again on its own path (a cycle) is skipped. The work per context is
  bounded whatever its shape: at most ``MAX_NODES`` values visited and ``MAX_ENTRIES``
  entries read (each mapping key made text, each set item str()'d to sort it), counted
  before anything of a container is read or sorted. A mapping or set with more entries
  than the budget has left is skipped whole, like a long string; the context itself
  with more than ``MAX_ENTRIES`` attributes raises ContextTooLarge (the worker posts
  the evaluation without context, counted). Mappings are visited in sorted key order
  so every bound cuts the same place whatever the insertion order.
* Values: ``str``, ``int``, ``float`` and ``bool`` stay as they are, except:
  strings over 256 characters are skipped (not truncated); integers whose decimal
  text would exceed 256 characters are skipped likewise; floats: NaN becomes
  ``"NaN"`` and infinities ``"Infinity"`` / ``"-Infinity"`` (JSON has no spelling for
  them); ``-0.0`` stays ``-0.0`` (it prints apart from ``0.0``, so it is its own
  bucket, like every other visible difference). ``None`` is dropped (an
  attribute with no value says nothing). ``datetime``/``date``/``time`` become their
  ISO text; anything else becomes ``str()`` of it (``repr()`` if ``str()`` raises,
  ``<unprintable TYPE>`` if both raise). Text that is not valid Unicode (lone
  surrogates) has each bad code point replaced by U+FFFD.
* Keys: OpenFeature attribute keys are strings: a non-string key is dropped (it never
  displaces a real key); a ``str`` subclass is read by its string value. When two keys
  print the same once lone surrogates are replaced, the one whose own text sorts first
  wins; keys alike even in their own text (str subclasses that compare unequal) are all
  dropped, so insertion order never decides.
* Then keys are sorted and the first 256 kept (strings over 256 characters were
  skipped before counting, so they never take a slot).

The canonical key of a pruned context is its JSON encoding with sorted keys: exactly
the bytes that appear in the posted row, so two evaluations share a bucket exactly
when their rows print the same, and ``1``, ``1.0``, ``true`` and ``"1"`` stay apart.
The same bytes are embedded in the payload at flush time without re-encoding.
``_keys.py`` computes these very bytes faster for flat contexts of plain values (and
memoises the rest); this module is the rule.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

import msgspec

MAX_FIELDS = 256
MAX_STRING_CHARS = 256
MAX_KEY_CHARS = 256
MAX_DEPTH = 8
MAX_LIST_ITEMS = 64
MAX_NODES = 4096
MAX_ENTRIES = 4096
# Ints of up to 840 bits print in at most 253 digits; past 851 bits, always > 256.
_SHORT_INT_BITS = 840
_BIG_INT_BITS = 851

_SURROGATE = re.compile("[\ud800-\udfff]")
EXCLUDED_TOP = frozenset({"targetingKey", "targeting_key"})
encode_sorted = msgspec.json.Encoder(order="sorted").encode
#: An empty pruned context: rows for it carry no ``context`` key.
EMPTY = b""
#: Exact value types that pruning passes through unchanged (within the bounds above).
PLAIN = frozenset({str, int, float, bool})
_first = operator.itemgetter(0)
_first_two = operator.itemgetter(0, 1)
_only_str = frozenset({str}).issuperset
_CONTAINERS = (Mapping, list, tuple, set, frozenset)


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate (not valid UTF-8) replaced by U+FFFD."""
    if text.isascii():  # O(1) for a compact str, and ASCII has no surrogates
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _text_of(value: Any) -> str:
    """``str()`` of a value JSON cannot carry, never raising."""
    try:
        text = str(value)
        if type(text) is not str:  # a str subclass could misbehave later
            text = str.__str__(text)
    except Exception:
        try:
            text = repr(value)
            if type(text) is not str:
                raise TypeError
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    return clean_text(text)


def leaf(value: Any) -> Any:
    """The JSON-safe form of a scalar, or None to skip it."""
    t = type(value)
    if t is str:
        return clean_text(value) if len(value) <= MAX_STRING_CHARS else None
    if t is bool:
        return value
    if t is int:
        # Like a long string, an int too long to print in 256 digits is skipped
        # (and never converted: str() of a huge int is slow, or raises).
        if value.bit_length() <= _SHORT_INT_BITS:
            return value
        if value.bit_length() > _BIG_INT_BITS:
            return None
        return value if len(str(abs(value))) + (value < 0) <= MAX_STRING_CHARS else None
    if t is float:
        if math.isfinite(value):
            return value
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    if value is None:
        return None
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        text = value.isoformat()
    elif isinstance(value, bool):
        return bool(value)
    elif isinstance(value, str):
        text = str.__str__(value)
    elif isinstance(value, int):
        return leaf(int.__index__(value))
    elif isinstance(value, float):
        return leaf(float(value))
    else:
        text = _text_of(value)
    text = clean_text(text)
    return text if len(text) <= MAX_STRING_CHARS else None


class ContextTooLarge(ValueError):
    """The context itself has more entries than pruning may read (``MAX_ENTRIES``)."""


class _Walk:
    """One context's pruning: what is left of both budgets, the output, the open path."""

    __slots__ = ("entries", "hi", "nodes", "on_path", "out")

    def __init__(self, root: object) -> None:
        self.nodes = MAX_NODES
        self.entries = MAX_ENTRIES
        self.out: dict[str, Any] = {}
        self.on_path = {id(root)}
        #: The greatest key in ``out`` (for the early exit of _walk_items).
        self.hi = ""


def flatten(attributes: Mapping[Any, Any]) -> dict[str, Any]:
    """Flatten and prune a context's attributes (see the module docstring).

    Raises ContextTooLarge when the context has more than ``MAX_ENTRIES`` entries."""
    w = _Walk(attributes)
    items = _mapping_items(attributes, w, top=True)
    if items is None:
        raise ContextTooLarge(f"more than {MAX_ENTRIES} attributes")
    _walk_items(items, "", 1, w)
    out = w.out
    if len(out) > MAX_FIELDS:
        keep = sorted(out)[:MAX_FIELDS]
        return {k: out[k] for k in keep}
    return out


def _mapping_items(
    mapping: Mapping[Any, Any], w: _Walk, top: bool = False
) -> list[tuple[str, Any]] | None:
    """(key text, value) pairs in key order; None when the mapping has more entries than
    the budget has left (counted before anything is read or sorted)."""
    left = w.entries
    if type(mapping) is dict:
        if len(mapping) > left:
            return None
        # One C call for a dict: a caller mutating it on another thread cannot change
        # it under us mid-iteration.
        raw = list(mapping.items())
    else:
        # Another Mapping's len() need not tell the truth: read one past what is left.
        raw = list(itertools.islice(mapping.items(), left + 1))
        if len(raw) > left:
            return None
    w.entries = left - len(raw)
    if _only_str(map(type, map(_first, raw))) and all(map(str.isascii, map(_first, raw))):
        raw.sort(key=_first)  # distinct plain ASCII keys: each is its own text
        items = raw
    else:
        items = _text_items(raw)
    if top and not EXCLUDED_TOP.isdisjoint(map(_first, items)):
        items = [item for item in items if item[0] not in EXCLUDED_TOP]
    return items


def _text_items(raw: list[tuple[Any, Any]]) -> list[tuple[str, Any]]:
    """The general case of _mapping_items: non-string keys dropped, a str subclass read
    by its string value, lone surrogates replaced; of keys that print alike the one
    whose own text sorts first wins, and keys alike even in their own text (str
    subclasses that compare unequal) are all dropped, so insertion order never decides."""
    decorated: list[tuple[str, str, Any]] = []
    for key, value in raw:
        if type(key) is str:
            text = key
        elif isinstance(key, str):
            text = str.__str__(key)
        else:
            continue  # OpenFeature attribute keys are strings: never made one
        decorated.append((clean_text(text), text, value))
    decorated.sort(key=_first_two)
    items: list[tuple[str, Any]] = []
    n = len(decorated)
    i = 0
    while i < n:
        clean, text, value = decorated[i]
        j = i + 1
        while j < n and decorated[j][0] == clean:
            j += 1
        if j == i + 1 or decorated[i + 1][1] != text:
            items.append((clean, value))
        i = j
    return items


def _walk_items(items: list[tuple[str, Any]], prefix: str, depth: int, w: _Walk) -> None:
    out = w.out
    for name, value in items:
        path = f"{prefix}.{name}" if prefix else name
        if len(out) >= MAX_FIELDS and w.hi < path:
            # Every key this mapping has left sorts after 256 already kept, so none can
            # make the cut: a wide flat context costs 257 visits, not one per key.
            return
        _walk(path, value, depth, w)
        if w.nodes <= 0:
            return


def _walk(path: str, value: Any, depth: int, w: _Walk) -> None:
    if w.nodes <= 0:
        return
    w.nodes -= 1
    if len(path) > MAX_KEY_CHARS:
        return
    # Most nodes are plain scalars: straight to the leaf rule, without the abstract
    # Mapping/sequence checks (each ~0.3 us on a non-container).
    if type(value) not in PLAIN and isinstance(value, _CONTAINERS):
        # Too deep, or a cycle: decided before anything of the container is read.
        if depth < MAX_DEPTH and id(value) not in w.on_path:
            w.on_path.add(id(value))
            try:
                _walk_container(path, value, depth + 1, w)
            finally:
                w.on_path.discard(id(value))
        return
    kept = leaf(value)
    if kept is not None:
        w.out[path] = kept
        if path > w.hi:  # noqa: PLR1730 - a comparison costs less than max() per leaf
            w.hi = path


def _walk_container(path: str, value: Any, depth: int, w: _Walk) -> None:
    if isinstance(value, Mapping):
        items = _mapping_items(value, w)
        if items is not None:  # None: more entries than the budget has left, skipped
            _walk_items(items, path, depth, w)
        return
    seq = list(value[:MAX_LIST_ITEMS]) if isinstance(value, (list, tuple)) else _set_items(value, w)
    for i, item in enumerate(seq or ()):
        _walk(f"{path}[{i}]", item, depth, w)
        if w.nodes <= 0:
            return


def _set_items(value: Any, w: _Walk) -> list[Any] | None:
    """A set's first 64 items in a fixed order (the same row in every process, whatever
    the hash seed); None when it has more items than the budget has left (each costs a
    str() to sort: counted before any is made)."""
    left = w.entries
    if type(value) in (set, frozenset):
        if len(value) > left:
            return None
        items = list(value)
    else:
        items = list(itertools.islice(value, left + 1))
        if len(items) > left:
            return None
    w.entries = left - len(items)
    return sorted(items, key=_set_order)[:MAX_LIST_ITEMS]


def _set_order(item: Any) -> tuple[str, str]:
    return (type(item).__name__, _text_of(item))


def canonical(attributes: Mapping[Any, Any]) -> bytes:
    """The canonical key (= JSON bytes, sorted keys) of a pruned context; EMPTY if none."""
    pruned = flatten(attributes)
    if not pruned:
        return EMPTY
    return encode_sorted(pruned)
