"""Runs of one flag's evaluations (flageval/_tiers.py): what a snapshot's flag, variant,
error and metadata come to is read once per run of equal ones, and never reused where
it could differ: a changed metadata copy, an application object's str(), a snapshot
that could not be read."""

from __future__ import annotations

from typing import Any

from openfeature.exception import ErrorCode

from flageval._tiers import Tiers, hash_targeting_key
from tests.telemetry.aggregation.test_tier_buckets import T0, snap, tiers

CONSENT = {"__dd_observe_full_evaluation_data": True, "allocation_key": "a1"}
REFUSAL = {"__dd_observe_full_evaluation_data": False, "allocation_key": "a1"}


def rows(t: Tiers) -> list[tuple[Any, ...]]:
    return sorted((k[0], k[1], k[2], k[4], k[5], k[6], v[0]) for k, v in t.full.items())


def test_equal_metadata_copies_in_a_run_share_one_reading() -> None:
    t = tiers(full_data_default=False)
    t.add_batch([snap(meta=dict(CONSENT), attrs={"a": 1}) for _ in range(3)])
    assert rows(t) == [("f", "on", "a1", None, "u1", b'{"a":1}', 3)]


def test_metadata_that_changes_within_a_run_is_read_again() -> None:
    t = tiers(full_data_default=True)
    t.add_batch(
        [
            snap(meta=dict(CONSENT), attrs={"a": 1}),
            snap(meta=dict(REFUSAL), attrs={"a": 1}),  # same flag and variant objects
            snap(meta=dict(CONSENT, allocation_key="a2"), attrs={"a": 1}),
        ]
    )
    assert rows(t) == [
        ("f", "on", "a1", None, hash_targeting_key("u1"), b"", 1),  # refused: protected
        ("f", "on", "a1", None, "u1", b'{"a":1}', 1),
        ("f", "on", "a2", None, "u1", b'{"a":1}', 1),
    ]


class Renamed:
    """A flag key whose text changes every time it is read (an application object)."""

    def __init__(self) -> None:
        self.reads = 0

    def __str__(self) -> str:
        self.reads += 1
        return f"flag-{self.reads}"


def test_an_application_objects_text_is_read_for_every_snapshot() -> None:
    t = tiers()
    flag = Renamed()
    t.add_batch([snap(flag=flag) for _ in range(3)])  # type: ignore[arg-type]
    assert flag.reads == 3
    assert [r[0] for r in rows(t)] == ["flag-1", "flag-2", "flag-3"]


class BadEq(dict[str, Any]):
    """Metadata whose comparison raises (an application's mapping)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    __hash__ = None  # type: ignore[assignment]


def test_a_snapshot_that_cannot_be_read_breaks_the_run() -> None:
    t = tiers()
    t.add_batch(
        [
            snap(meta=dict(CONSENT)),
            snap(meta=BadEq(CONSENT)),  # compared with the run's copy: raises, dropped
            snap(meta=dict(CONSENT)),  # read again, counted
        ]
    )
    assert t.ledger.dropped == {"unreadable_value": 1}
    assert rows(t) == [("f", "on", "a1", None, "u1", b"", 2)]
    assert t.evaluations_held == 2 and t.received == 3


def test_error_codes_and_messages_in_a_run_give_one_error_text() -> None:
    t = tiers()
    t.add_batch(
        [snap(variant=None, code=ErrorCode.FLAG_NOT_FOUND, message="no such flag")] * 2
        + [snap(variant=None, code=ErrorCode.GENERAL, message="no such flag")]
    )
    hashed = hash_targeting_key("u1")  # no metadata: sent the protected way
    assert rows(t) == [
        ("f", None, None, "FLAG_NOT_FOUND", hashed, b"", 2),
        ("f", None, None, "GENERAL", hashed, b"", 1),
    ]


def test_a_provider_stamp_is_read_with_its_metadata() -> None:
    t = tiers()
    stamped = [snap(meta={"dd.eval.timestamp_ms": T0 + i}, t_ms=T0 + 500) for i in (3, 1, 2)]
    t.add_batch(stamped)
    assert list(t.full.values()) == [[3, T0 + 1, T0 + 3]]


def test_metadata_equal_in_value_but_not_in_type_is_read_again() -> None:
    """1 == True, but only the boolean True is consent: a run never lends a previous
    copy's reading to metadata that compares equal to it."""
    t = tiers(full_data_default=False)
    key = "__dd_observe_full_evaluation_data"
    t.add_batch([snap(meta={key: True}, attrs={"a": 1}), snap(meta={key: 1}, attrs={"a": 1})])
    assert rows(t) == [
        ("f", "on", None, None, hash_targeting_key("u1"), b"", 1),  # 1: not consent
        ("f", "on", None, None, "u1", b'{"a":1}', 1),
    ]


class Claims(str):
    """An allocation value equal to every string, whose own text is its own."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


def test_metadata_values_that_claim_equality_are_read_again() -> None:
    t = tiers()
    t.add_batch([snap(meta={"allocation_key": "a1"}), snap(meta={"allocation_key": Claims("a2")})])
    assert sorted(r[2] for r in rows(t)) == ["a1", "a2"]
