"""Rules pinned at the unit level: the header checks' exact messages and edges
(flageval/ofrep/_headers.py), the event coalescer's timing and cancel (_coalesce.py),
and the fetch queue's merges (_queue.py). Expected values by hand from ADR-0007, ADR-0008
and each module's docstring. Times are checked as lower bounds: load only delays."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from flageval.ofrep._coalesce import EventCoalescer
from flageval.ofrep._diagnostics import Counter, new_stats
from flageval.ofrep._fetch import FetchRequest
from flageval.ofrep._headers import (
    MAX_ECHOED_VALUE_CHARS,
    check_headers,
    name_problem,
    parse_headers,
    redacted,
    sendable,
    value_problem,
)
from flageval.ofrep._queue import FetchQueue, RateGate
from tests.ofrep.test_fetch_queue import POLL, Runs, until

# -- headers ------------------------------------------------------------------------------


def test_header_problems_are_named_in_words_never_quoting_the_entry() -> None:
    assert name_problem("") == "the name is empty"
    assert name_problem("a b") == (
        "the name has a character a header name cannot have (space, ':', '=', ...)"
    )
    assert name_problem("X-Api_Key.1") is None
    assert (
        value_problem("a\r\nb") == value_problem("a\0") == "the value contains a line break or NUL"
    )
    assert value_problem("XX plain, visible value") is None


def test_malformed_env_entries_are_skipped_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("flageval.ofrep")
    with caplog.at_level(logging.WARNING, logger="flageval.ofrep"):
        got = parse_headers("a=1,Bearer SECRET,bad name=2,b=3", "OFREP_HEADERS", log)
    assert got == {"a": "1", "b": "3"}
    assert caplog.messages == [
        "OFREP_HEADERS: entry 2 skipped: it has no '='",
        "OFREP_HEADERS: entry 3 skipped: the name has a character a header name cannot "
        "have (space, ':', '=', ...)",
    ]
    assert "SECRET" not in caplog.text


def test_header_arguments_are_checked_with_messages_naming_the_position() -> None:
    with pytest.raises(ValueError, match=r"^headers must be a mapping of header name to value$"):
        check_headers([("a", "1")], "headers")
    for bad in ({"a": "1", "b": 2}, {"a": "1", 2: "b"}):
        with pytest.raises(
            ValueError, match=r"^headers: names and values must be strings \(entry 2\)$"
        ):
            check_headers(bad, "headers")
    with pytest.raises(ValueError, match=r"^headers: entry 1 is invalid: the name is empty$"):
        check_headers({"": "x"}, "headers")
    assert check_headers({"Authorization": "Bearer t"}, "headers") == {"Authorization": "Bearer t"}


def test_a_value_is_sent_back_only_if_visible_and_at_most_1024_characters() -> None:
    assert MAX_ECHOED_VALUE_CHARS == 1024
    assert sendable('W/"abc" \t~')
    assert sendable("e" * 1024) and not sendable("e" * 1025)
    assert not sendable("a\nb") and not sendable("caf\u00e9") and not sendable("a\x7f")


def test_redacted_keeps_names_and_hides_every_value() -> None:
    assert redacted({"Authorization": "Bearer t", "X-Org": "o"}) == {
        "Authorization": "<redacted>",
        "X-Org": "<redacted>",
    }


# -- the event coalescer ------------------------------------------------------------------


def _coalescer(
    debounce_s: float, interval_s: float
) -> tuple[EventCoalescer, list[FetchRequest], dict[str, int]]:
    sent: list[FetchRequest] = []
    stats = new_stats()
    return EventCoalescer(sent.append, stats, debounce_s, interval_s), sent, stats


async def test_an_event_is_fetched_after_the_debounce_with_its_own_metadata() -> None:
    sent: list[FetchRequest] = []
    sent_at: list[float] = []
    stats = new_stats()

    def send(request: FetchRequest) -> None:
        sent_at.append(time.monotonic())
        sent.append(request)

    c = EventCoalescer(send, stats, 0.1, 0.1)
    t0 = time.monotonic()
    c.event("", "2026-02-20T21:28:18Z")  # an empty ETag is still a first one
    await until(lambda: len(sent) == 1)
    assert sent_at[0] - t0 >= 0.095  # not before the debounce
    assert sent == [
        FetchRequest(
            conditional=True, flag_config_etag="", flag_config_last_modified="2026-02-20T21:28:18Z"
        )
    ]
    assert stats[Counter.SSE_EVENTS_COALESCED] == 0


async def test_a_repeated_etag_and_a_merged_event_each_count_one() -> None:
    c, sent, stats = _coalescer(debounce_s=0.05, interval_s=0.05)
    c.event("e1", None)
    c.event("e1", None)  # the same ETag: nothing new, counted once
    assert stats[Counter.SSE_EVENTS_COALESCED] == 1
    c.event("e2", None)  # joins the held burst, counted once
    assert stats[Counter.SSE_EVENTS_COALESCED] == 2
    await until(lambda: len(sent) == 1)
    assert sent == [FetchRequest(conditional=True, flag_config_etag="e2")]


async def test_the_next_burst_waits_for_the_interval_after_the_previous_fetch() -> None:
    c, sent, _ = _coalescer(debounce_s=0.02, interval_s=0.3)
    c.event("e1", None)
    await until(lambda: len(sent) == 1)
    t1 = time.monotonic()
    c.event("e2", None)
    await until(lambda: len(sent) == 2)
    # Not when its debounce (0.02 s) ended: the interval after the previous fetch.
    assert time.monotonic() - t1 >= 0.3 - 0.005


async def test_a_burst_that_goes_on_is_fetched_within_the_longest_wait() -> None:
    loop = asyncio.get_running_loop()
    delivered: list[str] = []
    sent: list[tuple[FetchRequest, int]] = []
    c = EventCoalescer(lambda r: sent.append((r, len(delivered))), new_stats(), 0.1, 0.1)

    def deliver(etag: str) -> None:
        delivered.append(etag)
        c.event(etag, None)

    # An event every 20 ms for a second, far closer than the 0.1 s debounce: that alone
    # would never end. Loop timers run in deadline order, so the coalescer's own timer
    # (due 0.1 s after the first event) runs between the events due before and after it,
    # however late a loaded machine runs them all.
    t0 = loop.time()
    for k in range(50):
        loop.call_at(t0 + 0.02 * k, deliver, f"e{k}")
    await until(lambda: len(delivered) == 50 and len(sent) >= 2, timeout_s=10.0)
    first, events_before = sent[0]
    assert 5 <= events_before <= 7  # sent ~0.1 s into the burst, while it went on
    assert first.flag_config_etag == f"e{events_before - 1}"  # the newest event before it


async def test_cancel_drops_what_is_held_and_the_next_event_starts_afresh() -> None:
    c, sent, _ = _coalescer(debounce_s=0.05, interval_s=0.05)
    c.cancel()  # nothing held, no timer: a no-op (the provider may stop before any event)
    c.event("e1", None)
    c.cancel()
    c.cancel()
    await asyncio.sleep(0.1)
    assert sent == []
    c.event("e2", None)
    await until(lambda: len(sent) == 1)
    assert sent == [FetchRequest(conditional=True, flag_config_etag="e2")]


# -- the fetch queue ----------------------------------------------------------------------


def _queue(runs: Runs) -> FetchQueue:
    return FetchQueue(runs, RateGate(), new_stats(), 0.2, 0.4)


async def test_an_urgent_trigger_during_the_backoff_fetches_the_merge_at_once() -> None:
    runs = Runs()
    queue = FetchQueue(runs, RateGate(), new_stats(), 60.0, 60.0)
    queue.failed(FetchRequest(conditional=False))  # retry of a full fetch, >= 30 s away
    queue.request(POLL, urgent=True)
    await until(lambda: len(runs.seen) == 1, timeout_s=10.0)  # not the retry: far sooner
    assert runs.requests == [FetchRequest(conditional=False)]  # unconditional wins
    queue.stop()


async def test_a_second_failure_before_the_retry_keeps_both_triggers_merged() -> None:
    runs = Runs()
    queue = FetchQueue(runs, RateGate(), new_stats(), 0.02, 0.04)
    queue.failed(FetchRequest(conditional=False))
    queue.failed(POLL)  # the retry now covers both: unconditional wins
    await until(lambda: len(runs.seen) == 1)
    await asyncio.sleep(0.1)
    assert runs.requests == [FetchRequest(conditional=False)]


async def test_the_runner_task_is_named_for_diagnostics() -> None:
    runs = Runs()
    runs.hold.clear()
    queue = _queue(runs)
    queue.request(POLL)
    await until(lambda: len(runs.seen) == 1)
    assert "ofrep-fetch" in {t.get_name() for t in asyncio.all_tasks()}
    runs.hold.set()
    task = queue.stop()
    assert task is not None
    await task
