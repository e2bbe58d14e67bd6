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
from collections.abc import Iterator
from itertools import chain

import msgspec

from ._losses import Degraded, Dropped, Ledger
from ._prune import EMPTY
from ._tiers import DegradedKey, FullKey, merge_bucket


class Key(msgspec.Struct, frozen=True, gc=False):
    key: str


class ErrorInfo(msgspec.Struct, frozen=True, gc=False):
    message: str


class Context(msgspec.Struct, gc=False):
    evaluation: msgspec.Raw


class Row(msgspec.Struct, omit_defaults=True, gc=False):
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
    #: Set when a request with this body was cut off after it may have been sent.
    maybe_sent: bool = False


_encode = msgspec.json.Encoder().encode


def envelope_prefix(service: str, env: str | None, version: str | None) -> bytes:
    head = _encode(Envelope(service=service, env=env, version=version))
    return b'{"context":' + head + b',"flagEvaluations":['


_SUFFIX = b"]}"


def _rows(
    full: dict[FullKey, list[int]],
    degraded: dict[DegradedKey, list[int]],
    timestamp_ms: int,
    room: int,
    ledger: Ledger,
) -> Iterator[tuple[bytes, int]]:
    """Every bucket's encoded row with its evaluation count: full tier, then degraded.

    A row too big for any body is handled here (see the module docstring), so every
    row yielded fits an empty body.
    """
    encode = _encode
    # One Key / ErrorInfo per distinct string for the whole flush; None stands for
    # itself (an optional key left out).
    keys: dict[str | None, Key | None] = {None: None}
    errors: dict[str | None, ErrorInfo | None] = {None: None}
    keys_get, errors_get = keys.get, errors.get

    # Degraded buckets are rows with no targeting key and no context, so both tiers go
    # through one loop (after Tiers.take() no full bucket has that shape). The degraded
    # tier is iterated only once the full one is done, so it includes the oversize full
    # rows merged into it below; no merge happens while it is being iterated (its rows
    # have nothing left to take out).
    def shaped() -> Iterator[tuple[FullKey, list[int]]]:
        # A generator function, not an expression: an expression would take the dict's
        # iterator at once, before the merges of the full phase change its size.
        for key, bucket in degraded.items():
            yield (*key, None, EMPTY), bucket

    for (flag, variant, allocation, rdu, error, tk, ctx), (count, first, last) in chain(
        full.items(), shaped()
    ):
        fk = keys_get(flag)
        if fk is None and flag is not None:
            fk = keys[flag] = Key(flag)
        vk = keys_get(variant)
        if vk is None and variant is not None:
            vk = keys[variant] = Key(variant)
        ak = keys_get(allocation)
        if ak is None and allocation is not None:
            ak = keys[allocation] = Key(allocation)
        ek = errors_get(error)
        if ek is None and error is not None:
            ek = errors[error] = ErrorInfo(error)
        # Positional: Row's field order (about half the cost of keywords).
        row = encode(
            Row(
                timestamp_ms,
                fk,
                first,
                last,
                count,
                rdu,
                tk,
                vk,
                ak,
                ek,
                Context(msgspec.Raw(ctx)) if ctx else None,
            )
        )
        if len(row) > room:
            if tk is None and not ctx:
                # Nothing left to take out: the evaluations are lost, and counted.
                ledger.drop(Dropped.PAYLOAD_LIMIT, count)
            else:
                # Keep what fits, the row without its targeting key and context, in
                # the degraded tier it now belongs to (its turn comes later).
                merge_bucket(degraded, (flag, variant, allocation, rdu, error), count, first, last)
                ledger.degrade(Degraded.PAYLOAD_LIMIT, count)
            continue
        yield row, count


def pack(
    full: dict[FullKey, list[int]],
    degraded: dict[DegradedKey, list[int]],
    *,
    timestamp_ms: int,
    prefix: bytes,
    max_body_bytes: int,
    ledger: Ledger,
) -> list[Body]:
    """Encode every bucket as a row and split the rows into bodies; what the oversize
    rule degrades or drops is recorded in ``ledger``."""
    room = max_body_bytes - len(prefix) - len(_SUFFIX)
    bodies: list[Body] = []
    # Greedy: a row joins the current body if it fits with its comma, else the body
    # is closed and the row starts the next one (every row fits an empty body).
    parts: list[bytes] = []
    size = 0  # bytes of the current body's rows and commas
    evals = 0
    for row, count in _rows(full, degraded, timestamp_ms, room, ledger):
        if not parts:
            parts.append(row)
            size = len(row)
            evals = count
            continue
        grown = size + 1 + len(row)
        if grown > room:
            bodies.append(Body(prefix + b",".join(parts) + _SUFFIX, len(parts), evals))
            parts = [row]
            size = len(row)
            evals = count
        else:
            parts.append(row)
            size = grown
            evals += count
    if parts:
        bodies.append(Body(prefix + b",".join(parts) + _SUFFIX, len(parts), evals))
    return bodies
