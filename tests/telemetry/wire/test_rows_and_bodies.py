"""Rows and bodies: msgspec encoding, optional keys, greedy 5 MiB packing, oversize rule."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

from flageval import _wire as wire
from flageval._config import MAX_BODY_BYTES
from flageval._losses import Ledger
from flageval._wire import Body, envelope_prefix
from tests.schema_util import validate_body

T0 = 1_790_000_000_000
NOW = T0 + 10_000
PREFIX = envelope_prefix("svc", None, None)


@dataclasses.dataclass
class Packed:
    bodies: list[Body]
    degraded: Counter[str]
    dropped: Counter[str]


def pack(full: Any, degraded: Any, **kwargs: Any) -> Packed:
    """``wire.pack`` with the ledger it records into, for the assertions."""
    ledger = Ledger()
    bodies = wire.pack(full, degraded, ledger=ledger, **kwargs)
    return Packed(bodies, ledger.degraded, ledger.dropped)


def full_key(
    flag: str = "f",
    variant: str | None = "on",
    allocation: str | None = None,
    error: str | None = None,
    tk: str | None = "u1",
    ctx: bytes = b"",
) -> tuple[Any, ...]:
    return (flag, variant, allocation, variant is None, error, tk, ctx)


def test_envelope_leaves_out_unset_env_and_version() -> None:
    assert PREFIX == b'{"context":{"service":"svc"},"flagEvaluations":['
    both = envelope_prefix("svc", "prod", "1.2")
    assert both == b'{"context":{"service":"svc","env":"prod","version":"1.2"},"flagEvaluations":['


def test_full_row_with_every_optional_key() -> None:
    key = full_key(allocation="a1", error="boom", ctx=b'{"a":1,"b":"x"}')
    packed = pack(
        {key: [3, T0, T0 + 5]}, {}, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=MAX_BODY_BYTES
    )
    (body,) = packed.bodies
    validate_body(body.data)
    doc = json.loads(body.data)
    assert doc == {
        "context": {"service": "svc"},
        "flagEvaluations": [
            {
                "timestamp": NOW,
                "flag": {"key": "f"},
                "first_evaluation": T0,
                "last_evaluation": T0 + 5,
                "evaluation_count": 3,
                "targeting_key": "u1",
                "variant": {"key": "on"},
                "allocation": {"key": "a1"},
                "error": {"message": "boom"},
                "context": {"evaluation": {"a": 1, "b": "x"}},
            }
        ],
    }
    assert (body.rows, body.evaluations) == (1, 3)


def test_optional_keys_are_left_out_never_null() -> None:
    key = full_key(variant=None, tk=None)
    packed = pack(
        {key: [1, T0, T0]}, {}, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=MAX_BODY_BYTES
    )
    row = json.loads(packed.bodies[0].data)["flagEvaluations"][0]
    assert row == {
        "timestamp": NOW,
        "flag": {"key": "f"},
        "first_evaluation": T0,
        "last_evaluation": T0,
        "evaluation_count": 1,
        "runtime_default_used": True,
    }
    assert b"null" not in packed.bodies[0].data


def test_runtime_default_used_false_is_not_sent() -> None:
    packed = pack(
        {full_key(): [1, T0, T0]},
        {},
        timestamp_ms=NOW,
        prefix=PREFIX,
        max_body_bytes=MAX_BODY_BYTES,
    )
    assert b"runtime_default_used" not in packed.bodies[0].data


def test_degraded_rows_have_no_targeting_key_or_context() -> None:
    degraded = {("f", "on", "a1", False, None): [7, T0, T0 + 1]}
    packed = pack({}, degraded, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=MAX_BODY_BYTES)
    row = json.loads(packed.bodies[0].data)["flagEvaluations"][0]
    assert "targeting_key" not in row and "context" not in row
    assert row["evaluation_count"] == 7
    assert row["allocation"] == {"key": "a1"}


def test_nothing_to_send_makes_no_body() -> None:
    packed = pack({}, {}, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=MAX_BODY_BYTES)
    assert packed.bodies == []


def test_greedy_packing_respects_the_byte_limit_and_keeps_every_row() -> None:
    full = {
        full_key(tk=f"user-{i:05d}", ctx=b'{"pad":"' + b"p" * 100 + b'"}'): [7, T0, T0]
        for i in range(500)  # equal counts: every row has the same length
    }
    one_row = (
        len(
            pack(
                dict([next(iter(full.items()))]),
                {},
                timestamp_ms=NOW,
                prefix=PREFIX,
                max_body_bytes=MAX_BODY_BYTES,
            )
            .bodies[0]
            .data
        )
        - len(PREFIX)
        - 2
    )
    limit = len(PREFIX) + 2 + 10 * one_row + 9  # exactly ten rows and their commas
    packed = pack(full, {}, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=limit)
    assert len(packed.bodies) == 50
    assert all(len(b.data) <= limit for b in packed.bodies)
    assert all(b.rows == 10 for b in packed.bodies)
    seen = []
    for body in packed.bodies:
        validate_body(body.data)
        rows = json.loads(body.data)["flagEvaluations"]
        assert body.evaluations == sum(r["evaluation_count"] for r in rows)
        seen += [r["targeting_key"] for r in rows]
    assert sorted(seen) == sorted(k[5] for k in full)
    assert sum(b.evaluations for b in packed.bodies) == 7 * 500


def test_default_limit_is_five_mebibytes_of_encoded_bytes() -> None:
    # ~6 MiB of rows: must split in two, each body within 5 * 1024 * 1024 bytes.
    pad = b'{"pad":"' + b"\xc3\xa9" * 120 + b'"}'  # multi-byte UTF-8: bytes, not chars
    full = {full_key(tk=f"user-{i:06d}", ctx=pad): [1, T0, T0] for i in range(18_000)}
    packed = pack(full, {}, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=MAX_BODY_BYTES)
    assert MAX_BODY_BYTES == 5 * 1024 * 1024
    assert len(packed.bodies) == 2
    assert all(len(b.data) <= MAX_BODY_BYTES for b in packed.bodies)
    # Greedy: the first body is full to within one row.
    row_len = (len(packed.bodies[0].data) - len(PREFIX) - 2 + 1) // packed.bodies[0].rows
    assert len(packed.bodies[0].data) > MAX_BODY_BYTES - 2 * row_len
    assert sum(b.rows for b in packed.bodies) == 18_000


def test_oversize_row_is_sent_without_targeting_key_and_context() -> None:
    huge = full_key(tk="u" * 5000, ctx=b'{"a":1}')
    normal = full_key(tk="u1")
    degraded = {("f", "on", None, False, None): [2, T0 - 5, T0]}
    packed = pack(
        {huge: [3, T0, T0 + 7], normal: [1, T0, T0]},
        degraded,
        timestamp_ms=NOW,
        prefix=PREFIX,
        max_body_bytes=2048,
    )
    rows = [r for b in packed.bodies for r in json.loads(b.data)["flagEvaluations"]]
    by_tk = {r.get("targeting_key"): r for r in rows}
    assert set(by_tk) == {"u1", None}
    # Merged into the degraded row it now equals: 2 + 3 evaluations, min/max times.
    assert by_tk[None]["evaluation_count"] == 5
    assert (by_tk[None]["first_evaluation"], by_tk[None]["last_evaluation"]) == (T0 - 5, T0 + 7)
    assert packed.degraded == {"payload_limit": 3}
    assert packed.dropped == {}


def test_row_too_big_even_without_targeting_key_is_dropped_and_counted() -> None:
    packed = pack(
        {full_key(flag="f" * 5000): [4, T0, T0]},
        {},
        timestamp_ms=NOW,
        prefix=PREFIX,
        max_body_bytes=2048,
    )
    assert packed.bodies == []
    assert packed.dropped == {"payload_limit": 4}


def test_oversize_row_with_no_degraded_twin_becomes_its_own_degraded_row() -> None:
    # The merge creates a new degraded bucket while other degraded rows wait their turn.
    huge = full_key(variant="big", tk="u" * 5000)
    other = ("f", "on", None, False, None)
    packed = pack(
        {huge: [2, T0, T0 + 1]},
        {other: [5, T0, T0]},
        timestamp_ms=NOW,
        prefix=PREFIX,
        max_body_bytes=2048,
    )
    rows = [r for b in packed.bodies for r in json.loads(b.data)["flagEvaluations"]]
    got = sorted((r["variant"]["key"], r["evaluation_count"], "targeting_key" in r) for r in rows)
    assert got == [("big", 2, False), ("on", 5, False)]
    assert packed.degraded == {"payload_limit": 2}
