"""Retry-After parsing (flageval/_common.py), each accepted form checked by hand."""

from __future__ import annotations

import pytest

from flageval._common import parse_retry_after

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("9" * 5000, 300.0),  # past the cap; int() would refuse it
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # HTTP date, 30 s ahead
        ("2023-11-14T22:14:20Z", 60.0),  # ISO 8601 with a zone
        ("2023-11-14T22:14:20", 60.0),  # ISO 8601 without: read as UTC
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # in the past
        ("Tue, 14 Nov 2024 22:00:00 GMT", 300.0),  # far ahead: capped
    ],
)
def test_accepted_forms(value: str, expected: float) -> None:
    assert parse_retry_after(value, 300.0, now=NOW) == expected


@pytest.mark.parametrize("value", [None, "", "soon", "²", "-5", "1.5"])
def test_unreadable_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, 300.0, now=NOW) is None
