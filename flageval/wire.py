"""Wire format: buckets -> msgspec rows -> JSON bodies of at most ``max_body_bytes``.

Rows are msgspec Structs with ``omit_defaults``: an optional key is left out, never
sent as null, and ``runtime_default_used`` is only sent when true. The pruned context
is embedded as the exact canonical bytes the bucket was keyed by (``msgspec.Raw``), so
it is encoded once, in the worker, never again at flush.

Packing is greedy: rows are appended to the current body until the next one would not
fit, then a new body starts. A row too big for an empty body is retried without
``targeting_key`` and ``context`` (merged into the degraded row it then equals,
counted as degraded for ``payload_limit``); if even that does not fit, its
``evaluation_count`` is dropped and counted under ``payload_limit``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import msgspec

from .tiers import PAYLOAD_LIMIT, DegradedKey, FullKey


class Key(msgspec.Struct, frozen=True):
    key: str


class ErrorInfo(msgspec.Struct, frozen=True):
    message: str


class Context(msgspec.Struct):
    evaluation: msgspec.Raw


class Row(msgspec.Struct, omit_defaults=True):
    timestamp: int
    flag: Key
    first_evaluation: int
    last_evaluation: int
    evaluation_count: int
    runtime_default_used: bool = False
    targeting_key: str | None = None
    variant: Key | None = None
    allocation: Key | None = None
    error: ErrorInfo | None = None
    context: Context | None = None


class Envelope(msgspec.Struct, omit_defaults=True):
    service: str
    env: str | None = None
    version: str | None = None


@dataclasses.dataclass
class Body:
    """One POST: its bytes and what it carries, for exact accounting."""

    data: bytes
    rows: int
    evaluations: int
    attempts: int = 0
    #: Set when a request with this body was cut off after it may have been sent.
    maybe_sent: bool = False


@dataclasses.dataclass
class Packed:
    bodies: list[Body]
    degraded: Counter[str]
    dropped: Counter[str]


_encode = msgspec.json.Encoder().encode


def envelope_prefix(service: str, env: str | None, version: str | None) -> bytes:
    head = _encode(Envelope(service=service, env=env, version=version))
    return b'{"context":' + head + b',"flagEvaluations":['


_SUFFIX = b"]}"


class _Interned:
    """Reuse one Key/ErrorInfo per distinct string within a flush."""

    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}
        self.errors: dict[str, ErrorInfo] = {}

    def key(self, text: str | None) -> Key | None:
        if text is None:
            return None
        k = self.keys.get(text)
        if k is None:
            k = self.keys[text] = Key(text)
        return k

    def error(self, text: str | None) -> ErrorInfo | None:
        if text is None:
            return None
        e = self.errors.get(text)
        if e is None:
            e = self.errors[text] = ErrorInfo(text)
        return e


def pack(
    full: dict[FullKey, list[int]],
    degraded: dict[DegradedKey, list[int]],
    *,
    timestamp_ms: int,
    prefix: bytes,
    max_body_bytes: int,
) -> Packed:
    """Encode every bucket as a row and split the rows into bodies."""
    interned = _Interned()
    key_of, error_of = interned.key, interned.error
    room = max_body_bytes - len(prefix) - len(_SUFFIX)
    bodies: list[Body] = []
    parts: list[bytes] = []
    size = 0
    rows = 0
    evals = 0
    degraded_counts: Counter[str] = Counter()
    dropped: Counter[str] = Counter()

    def close_body() -> None:
        nonlocal parts, size, rows, evals
        if parts:
            bodies.append(Body(prefix + b",".join(parts) + _SUFFIX, rows, evals))
        parts, size, rows, evals = [], 0, 0, 0

    def place(row: bytes, count: int) -> None:
        nonlocal size, rows, evals
        extra = len(row) + (1 if parts else 0)
        if size + extra > room:
            close_body()
            extra = len(row)
        parts.append(row)
        size += extra
        rows += 1
        evals += count

    for (flag, variant, allocation, rdu, error, tk, ctx), (count, first, last) in full.items():
        row = _encode(
            Row(
                timestamp=timestamp_ms,
                flag=key_of(flag),  # type: ignore[arg-type]
                first_evaluation=first,
                last_evaluation=last,
                evaluation_count=count,
                runtime_default_used=rdu,
                targeting_key=tk,
                variant=key_of(variant),
                allocation=key_of(allocation),
                error=error_of(error),
                context=Context(msgspec.Raw(ctx)) if ctx else None,
            )
        )
        if len(row) > room:
            # Too big for any body: keep what fits, the row without its targeting key
            # and context, in the degraded tier it now belongs to.
            dkey = (flag, variant, allocation, rdu, error)
            bucket = degraded.get(dkey)
            if bucket is None:
                degraded[dkey] = [count, first, last]
            else:
                bucket[0] += count
                bucket[1] = min(bucket[1], first)
                bucket[2] = max(bucket[2], last)
            degraded_counts[PAYLOAD_LIMIT] += count
            continue
        place(row, count)

    for (flag, variant, allocation, rdu, error), (count, first, last) in degraded.items():
        row = _encode(
            Row(
                timestamp=timestamp_ms,
                flag=key_of(flag),  # type: ignore[arg-type]
                first_evaluation=first,
                last_evaluation=last,
                evaluation_count=count,
                runtime_default_used=rdu,
                variant=key_of(variant),
                allocation=key_of(allocation),
                error=error_of(error),
            )
        )
        if len(row) > room:
            dropped[PAYLOAD_LIMIT] += count
            continue
        place(row, count)
    close_body()
    return Packed(bodies, degraded_counts, dropped)
