"""Retry waits are bounded: the backoff's ceiling and jitter, each Retry-After form
(seconds, HTTP date, ISO date, with and without a zone), the transport's Retry-After
cap (README: 300 s) and a retry wait that would leave no time for the answer (not
taken). Expected values by hand."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from flageval._common import backoff_s, parse_retry_after
from tests.intake import Behaviour, Intake

MakeTelemetry = Callable[..., Telemetry]
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def seeded() -> Iterator[None]:
    # backoff_s draws from the module-level generator: a fixed seed makes the draws the
    # same every run, and the state is given back after.
    state = random.getstate()
    random.seed(13)
    yield
    random.setstate(state)


def _draws(attempt: int, base: float, cap: float, spread: float | None = None) -> list[float]:
    if spread is None:  # the default: full jitter
        return [backoff_s(attempt, base, cap) for _ in range(400)]
    return [backoff_s(attempt, base, cap, spread) for _ in range(400)]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    # base 0.1 doubling per attempt: 0.1, 0.2, 0.4, 0.8, then the 1.0 cap.
    [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0), (-3, 0.1)],
)
def test_backoff_full_jitter_spans_zero_to_the_doubling_ceiling(
    attempt: int, ceiling: float
) -> None:
    draws = _draws(attempt, 0.1, 1.0)
    assert all(0.0 <= d <= ceiling for d in draws)
    # Uniform over [0, ceiling]: 400 draws reach both ends' tenths.
    assert max(draws) > 0.9 * ceiling
    assert min(draws) < 0.1 * ceiling


@pytest.mark.usefixtures("seeded")
def test_backoff_spread_keeps_a_retry_in_the_top_part_of_the_ceiling() -> None:
    draws = _draws(2, 0.5, 30.0, spread=0.5)  # ceiling 0.5 * 2**2 = 2.0
    assert all(1.0 <= d <= 2.0 for d in draws)
    assert min(draws) < 1.1 and max(draws) > 1.9
    none = _draws(2, 0.5, 30.0, spread=0.0)  # no jitter: the ceiling itself
    assert set(none) == {2.0}


@pytest.mark.usefixtures("seeded")
def test_backoff_of_a_huge_attempt_is_the_cap_without_overflow() -> None:
    # 2.0 ** 10_000 would overflow; the exponent stops at 30 (0.001 * 2**30 > 1e6).
    assert all(0.0 <= d <= 5.0 for d in _draws(10_000, 0.001, 5.0))
    assert max(_draws(10_000, 0.001, 5.0)) > 4.5
    assert max(_draws(10_000, 1e-9, 1e9)) <= 1e-9 * 2.0**30


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # delta-seconds is 1*DIGIT: leading zeros are allowed and do not make it long.
        ("0000000000000005", 5.0),
        ("000000000000000000000", 0.0),
        # An ISO value with its own offset: 22:14:20+00:00 is 60 s after NOW.
        ("2023-11-15T00:14:20+02:00", 60.0),
    ],
)
def test_retry_after_forms_read_by_hand(value: str, expected: float) -> None:
    assert parse_retry_after(value, 300.0, now=NOW) == expected


def test_a_zone_less_iso_retry_after_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Read as local time in Sao Paulo (UTC-3) it would be 3 h further: capped at 300.
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    time.tzset()
    try:
        assert parse_retry_after("2023-11-14T22:14:20", 3600.0, now=NOW) == 60.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_date_retry_after_without_now_is_read_against_the_wall_clock() -> None:
    ahead = email.utils.formatdate(time.time() + 120, usegmt=True)
    wait = parse_retry_after(ahead, 300.0)
    # Whole seconds in the date: between 119 and 120 s from now, give or take the call.
    assert wait is not None and 118.0 <= wait <= 120.0


# -- through the transport ------------------------------------------------------------------


def _client(tel: Telemetry) -> OpenFeatureClient:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def _sender(tel: Telemetry) -> Any:
    assert tel._worker is not None
    return tel._worker.sender


@pytest.mark.parametrize("retry_after", ["301", "3600", "date"])
def test_a_retry_after_above_the_cap_waits_300_s(
    make_telemetry: MakeTelemetry, intake: Intake, retry_after: str
) -> None:
    """README: a Retry-After longer than 300 s is read as 300 s."""
    if retry_after == "date":
        retry_after = email.utils.formatdate(time.time() + 7200, usegmt=True)
    tel = make_telemetry(retry_backoff_s=0.01)
    client = _client(tel)
    for _ in range(5):
        client.get_boolean_value("f", False)
    intake.script(Behaviour(status=429, headers={"Retry-After": retry_after}))
    t0 = time.monotonic()
    assert tel.flush(1.0) is False  # the wait is past this flush's deadline: held
    t1 = time.monotonic()
    not_before = _sender(tel).not_before
    # The answer came between t0 and t1; no POST before 300 s after it, none later.
    assert t0 + 300.0 <= not_before <= t1 + 300.0
    assert [r.status for r in intake.received] == [429]
    assert tel.stats().pending == 5 and tel.stats().dropped == {}


def test_a_retry_wait_that_leaves_no_time_for_the_answer_is_not_taken(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """A 429 said "not now": sleeping out its Retry-After to post with a few ms left
    would have the post cut off once sent, counted delivery_unknown (never resent),
    when the body only had to wait. It waits for the next flush instead."""
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=2.0)
    client = _client(tel)
    for _ in range(20):
        client.get_boolean_value("f", False)
    # The answer after the wait takes 0.5 s: more than the 0.1 s the wait leaves.
    intake.script(
        Behaviour(status=429, headers={"Retry-After": "1"}), Behaviour(status=200, delay_s=0.5)
    )
    assert tel.flush(1.1) is False
    st = tel.stats()
    assert st.dropped == {} and st.pending == 20
    assert tel.flush(5.0) is True  # the next flush waits out the rest, then delivers
    assert [r.status for r in intake.received] == [429, 200]
    assert intake.evaluations() == 20
    st = tel.stats()
    assert st.dropped == {} and st.evaluations_posted == 20 and st.conserved
