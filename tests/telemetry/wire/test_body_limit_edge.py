"""The body limit at its edge: a body is prefix + rows joined by commas + the closing
``]}``, and that whole is at most ``max_body_bytes`` (docs/wire-format.md: the 5 MiB
limit is hard). Row lengths are worked out by hand from the row's JSON: the length of
compact JSON does not depend on key order."""

from __future__ import annotations

import json
from typing import Any

from flageval import _wire as wire
from flageval._losses import Ledger
from flageval._wire import envelope_prefix

T0 = 1_790_000_000_000
NOW = T0 + 10_000
PREFIX = envelope_prefix("svc", None, None)
CLOSE = len("]}")


def _key(tk: str) -> tuple[Any, ...]:
    return ("f", "on", None, False, None, tk, b"")


def _row_len(tk: str, count: int = 1) -> int:
    row = {
        "timestamp": NOW,
        "flag": {"key": "f"},
        "first_evaluation": T0,
        "last_evaluation": T0,
        "evaluation_count": count,
        "targeting_key": tk,
        "variant": {"key": "on"},
    }
    return len(json.dumps(row, separators=(",", ":")))


def _pack(full: dict[Any, Any], limit: int) -> tuple[list[wire.Body], Ledger]:
    ledger = Ledger()
    return wire.pack(
        full, {}, timestamp_ms=NOW, prefix=PREFIX, max_body_bytes=limit, ledger=ledger
    ), ledger


def test_two_rows_with_exactly_no_room_for_the_closing_bytes_go_in_two_bodies() -> None:
    full = {_key("u-0001"): [1, T0, T0], _key("u-0002"): [1, T0, T0]}
    r = _row_len("u-0001")
    both = len(PREFIX) + r + 1 + r  # the two rows and their comma, nothing for "]}"
    bodies, ledger = _pack(full, both)
    assert [len(b.data) for b in bodies] == [len(PREFIX) + r + CLOSE] * 2
    assert [b.rows for b in bodies] == [1, 1]
    assert not ledger.dropped and not ledger.degraded
    # One byte short of the closing bytes still splits; room for them joins the rows.
    assert len(_pack(full, both + CLOSE - 1)[0]) == 2
    (body,), _ = _pack(full, both + CLOSE)
    assert len(body.data) == both + CLOSE and body.rows == 2 and body.evaluations == 2


def test_a_row_that_exactly_fills_an_empty_body_is_sent_whole() -> None:
    full = {_key("u-0001"): [3, T0, T0]}
    r = _row_len("u-0001", count=3)
    (body,), ledger = _pack(full, len(PREFIX) + r + CLOSE)
    assert len(body.data) == len(PREFIX) + r + CLOSE
    assert json.loads(body.data)["flagEvaluations"][0]["targeting_key"] == "u-0001"
    assert not ledger.degraded and not ledger.dropped
    # One byte less and the row does not fit: sent without its targeting key.
    (body,), ledger = _pack(full, len(PREFIX) + r + CLOSE - 1)
    assert "targeting_key" not in json.loads(body.data)["flagEvaluations"][0]
    assert ledger.degraded == {"payload_limit": 3}
