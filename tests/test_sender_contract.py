"""The sender's contract where the mutation run (issue 13, docs/mutation.md) found it
unchecked: waits that must be kept or refused, deadlines a request must not outlive,
what a cancelled or interrupted send leaves counted, the retry buffer's byte count, how
a moved route counts as a try, and the words and rate-limit keys of its log lines.
Expected values by hand from transport.py's docstring, through the real intake of
tests/intake.py (and, for cancelling and interrupting, a Sender driven directly)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry, wire
from flageval.config import Endpoint
from flageval.losses import Ledger
from flageval.transport import Sender
from tests.intake import AGENT_INFO, PATH, PATH_V4, Behaviour, Intake

MakeTelemetry = Callable[..., Telemetry]
T0 = 1_790_000_000_000


def _client(tel: Telemetry) -> OpenFeatureClient:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def _evaluate(tel: Telemetry, n: int) -> None:
    client = _client(tel)
    for _ in range(n):
        client.get_boolean_value("f", False)


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


# -- waits --------------------------------------------------------------------------------
def test_a_wait_that_leaves_time_for_the_answer_is_taken(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """Retry-After 1 s inside a 1.9 s flush with a 2 s request timeout: after the wait
    0.9 s are left, more than the 0.25 s an answer is given, so the body goes now."""
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=2.0)
    _evaluate(tel, 4)
    intake.script(Behaviour(status=429, headers={"Retry-After": "1"}), Behaviour(status=200))
    assert tel.flush(1.9) is True
    assert [r.status for r in intake.received] == [429, 200]
    assert intake.received[1].at - intake.received[0].at >= 0.95
    assert tel.stats().evaluations_posted == 4


def test_a_429_wait_is_kept_by_the_next_flush(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """The body a 429 held is not posted before its Retry-After has passed, even by a
    later flush with time to spare: that flush sleeps out the rest first."""
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=2.0)
    _evaluate(tel, 3)
    intake.script(Behaviour(status=429, headers={"Retry-After": "1"}), Behaviour(status=200))
    assert tel.flush(0.5) is False  # 1 s does not fit in 0.5 s: held
    assert tel.stats().pending == 3
    assert tel.flush(3.0) is True
    first, second = intake.received
    assert second.at - first.at >= 0.95
    assert tel.stats().evaluations_posted == 3 and tel.stats().dropped == {}


def test_a_wait_past_the_flush_is_refused_at_once_and_the_body_kept(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """A flush that starts inside a 2 s Retry-After and has 0.5 s does not sleep: it
    returns at once, posts nothing, and the body still waits (counted pending)."""
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 5)
    intake.script(Behaviour(status=429, headers={"Retry-After": "2"}))
    assert tel.flush(0.5) is False
    t0 = time.monotonic()
    assert tel.flush(0.5) is False
    assert time.monotonic() - t0 < 1.0  # sleeping it out would take 1.5 s (the call's bound)
    assert len(intake.received) == 1
    st = tel.stats()
    assert st.pending == 5 and st.dropped == {} and st.conserved


# -- deadlines ----------------------------------------------------------------------------
def test_a_hanging_intake_is_cut_at_the_flush_deadline_and_said_in_words(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    """The request's own timeout (5 s) is longer than the flush (0.4 s): the flush's
    deadline cuts the request, the body may have been taken (delivery_unknown), and the
    log says there was no answer in time."""
    caplog.set_level(logging.WARNING, logger="flageval")
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=5.0)
    _evaluate(tel, 7)
    intake.script(Behaviour(action="hang"))
    t0 = time.monotonic()
    tel.flush(0.4)
    assert time.monotonic() - t0 < 0.95  # the request's own timeout would be 5 s
    assert tel.stats().dropped == {"delivery_unknown": 7}
    (line,) = _lines(caplog, "delivery_unknown")
    assert "no answer within" in line


def test_a_rejection_whose_body_never_comes_is_read_for_at_most_half_a_second(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """A 400 whose body never arrives: its error text is waited for 0.5 s, not for the
    request timeout (5 s), and the body is counted rejected (the status was read)."""
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=5.0)
    _evaluate(tel, 2)
    intake.script(Behaviour(status=400, action="stall_body"))
    t0 = time.monotonic()
    assert tel.flush(4.0) is True
    assert time.monotonic() - t0 < 2.0
    assert tel.stats().dropped == {"intake_rejected": 2}


# -- log lines ----------------------------------------------------------------------------
def test_two_kinds_of_failure_each_get_their_own_line(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    """Repeats of one failure are rate-limited; a different failure is not a repeat."""
    caplog.set_level(logging.WARNING, logger="flageval")
    tel = make_telemetry(retry_backoff_s=0.01, max_retries=3)
    _evaluate(tel, 3)
    intake.script(Behaviour(status=500), Behaviour(status=502), Behaviour(status=200))
    assert tel.flush(5.0) is True
    assert len(_lines(caplog, "it answered 500")) == 1
    assert len(_lines(caplog, "it answered 502")) == 1


def test_a_refused_connection_is_said_in_words(
    make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flageval")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tel = make_telemetry(agent_url=f"http://127.0.0.1:{port}", retry_backoff_s=0.01)
    _evaluate(tel, 1)
    assert tel.flush(0.5) is False
    (line,) = _lines(caplog, "will retry")
    assert "(connection refused)" in line


@pytest.mark.parametrize(("text", "said"), [("", ""), ("bad row", " (it said: bad row)")])
def test_a_rejection_says_what_the_intake_said_only_when_it_said_something(
    make_telemetry: MakeTelemetry,
    intake: Intake,
    caplog: pytest.LogCaptureFixture,
    text: str,
    said: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="flageval")
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 2)
    intake.script(Behaviour(status=400, text=text))
    assert tel.flush(5.0) is True
    (line,) = _lines(caplog, "counted as intake_rejected")
    assert line.endswith("2 evaluations counted as intake_rejected" + said)


# -- a moved route ------------------------------------------------------------------------
def test_a_route_moved_by_a_404_counts_as_one_try(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """max_retries=2: the 404 that moved the body to v2 is its first try, so v2 gets
    two posts (tries 2 and 3) before the body waits: 404, 500, 500, nothing more."""
    intake.set_info(AGENT_INFO)
    tel = make_telemetry(retry_backoff_s=0.01, max_retries=2)
    _evaluate(tel, 1)
    assert tel.flush(5.0) is True
    v2_only = {**AGENT_INFO, "endpoints": [e for e in AGENT_INFO["endpoints"] if "/v4/" not in e]}
    intake.set_info(v2_only)
    intake.script(
        Behaviour(status=404), Behaviour(status=500), Behaviour(status=500), Behaviour(status=200)
    )
    _evaluate(tel, 2)
    assert tel.flush(5.0) is False
    assert [(r.path, r.status) for r in intake.received] == [
        (PATH_V4, 200),
        (PATH_V4, 404),
        (PATH, 500),
        (PATH, 500),
    ]
    assert tel.stats().pending == 2


# -- the sender driven directly: cancel, interrupt, the retry buffer -----------------------
def _body(n: int, tk: str = "u") -> wire.Body:
    full: dict[Any, list[int]] = {("f", "on", None, False, None, tk, b""): [n, T0, T0]}
    (body,) = wire.pack(
        full,
        {},
        timestamp_ms=T0 + 10_000,
        prefix=wire.envelope_prefix("svc", None, None),
        max_body_bytes=5 << 20,
        ledger=Ledger(),
    )
    assert body.evaluations == n
    return body


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(2000):  # 10 s at most
        if done():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not within 10 s")


def _sender(intake: Intake, **kw: Any) -> Sender:
    url = intake.url + PATH
    settings: dict[str, Any] = {
        "request_timeout_s": 5.0,
        "max_retries": 0,
        "retry_backoff_s": 0.01,
        "retry_buffer_bytes": 1 << 20,
        "verify_tls": True,
    }
    settings.update(kw)
    return Sender(Endpoint(url, None, {}, url), **settings)


def test_a_send_cancelled_after_the_request_left_is_counted_unknown_once(
    intake: Intake,
) -> None:
    intake.script(Behaviour(action="hang"))

    async def run() -> Sender:
        sender = _sender(intake)
        task = asyncio.create_task(sender.send_all([_body(6)], time.monotonic() + 10.0))
        await _until(lambda: bool(intake.received))  # the intake has the body
        assert sender.report().pending_evaluations == 6  # in flight, still held
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sender.close()
        return sender

    sender = asyncio.run(run())
    # It may have been taken: counted once, never held for a resend.
    assert dict(sender.ledger.dropped) == {"delivery_unknown": 6}
    assert sender.report().pending_evaluations == 0
    assert not sender.outbox and sender.outbox_bytes == 0


def test_a_send_cancelled_while_it_backs_off_keeps_the_body(intake: Intake) -> None:
    intake.script(Behaviour(status=500))

    async def run() -> Sender:
        sender = _sender(intake, max_retries=3, retry_backoff_s=5.0)
        body = _body(4)
        task = asyncio.create_task(sender.send_all([body], time.monotonic() + 60.0))
        await _until(lambda: bool(intake.received))
        await asyncio.sleep(0.05)  # now in its backoff sleep
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sender.close()
        return sender

    sender = asyncio.run(run())
    assert dict(sender.ledger.dropped) == {}
    assert sender.report().pending_evaluations == 4
    assert len(sender.outbox) == 1 and sender.outbox_bytes == len(sender.outbox[0].data)


@pytest.mark.parametrize("when", ["before", "during"])
def test_an_interrupted_backoff_stops_the_send_and_keeps_the_body(
    intake: Intake, when: str
) -> None:
    """Shutdown interrupts backoff: no further try, the body waits (for the final
    accounting), and send_all says so (False, not anything else)."""
    intake.script(Behaviour(status=500))

    async def run() -> tuple[Sender, object]:
        sender = _sender(intake, max_retries=3, retry_backoff_s=0.2)
        if when == "before":
            sender.interrupt()
        task = asyncio.create_task(sender.send_all([_body(3)], time.monotonic() + 30.0))
        if when == "during":
            await _until(lambda: bool(intake.received))
            await asyncio.sleep(0.005)
            sender.interrupt()
        done = await asyncio.wait_for(task, 10.0)
        await sender.close()
        return sender, done

    sender, done = asyncio.run(run())
    assert done is False
    assert sender.attempts == 1 and len(intake.received) == 1
    assert dict(sender.ledger.dropped) == {}
    assert sender.report().pending_evaluations == 3


def test_the_retry_buffer_counts_exactly_the_bytes_it_holds(intake: Intake) -> None:
    a, b = _body(1, "a"), _body(2, "bb")
    intake.script(Behaviour(status=500), Behaviour(status=500))

    async def run() -> None:
        sender = _sender(intake)
        now = time.monotonic
        assert await sender.send_all([a, b], now() + 5.0) is False  # a fails; both wait
        assert sender.outbox_bytes == len(a.data) + len(b.data)
        assert await sender.send_all([], now() + 5.0) is False  # a fails again, first
        assert list(sender.outbox) == [a, b]
        assert sender.outbox_bytes == len(a.data) + len(b.data)
        intake.script(Behaviour(status=200), Behaviour(status=200))
        assert await sender.send_all([], now() + 5.0) is True
        assert sender.outbox_bytes == 0 and sender.evaluations_posted == 3
        await sender.close()

    asyncio.run(run())
    assert [r.status for r in intake.received] == [500, 500, 200, 200]
