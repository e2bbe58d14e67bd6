"""The sender keeps its word: waits that must be kept or refused, deadlines a request
must not outlive, what a cancelled or interrupted send leaves counted, the retry
buffer's byte count, how a moved route counts as a try, and the words and rate-limit
keys of its log lines. Expected values by hand from flageval/_transport.py's docstring,
through the real intake of tests/intake.py (and, for cancelling and interrupting, a
Sender driven directly)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from flageval import _wire as wire
from flageval._agent import RECHECK_S, REDISCOVER_AFTER_404_S
from flageval._config import Endpoint
from flageval._losses import Ledger
from flageval._transport import Sender
from tests.intake import AGENT_INFO, PATH, PATH_V4, Behaviour, Intake
from tests.telemetry.reliability.test_secrets_and_privacy import tls_files  # noqa: F401 - a fixture

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


def _sleeps(tel: Telemetry) -> list[float]:
    """Every wait the pipeline's sender asks for from now on (it still waits them)."""
    assert tel._worker is not None
    sender = tel._worker.sender
    asked: list[float] = []
    real = sender._sleep

    async def sleep(delay: float) -> bool:
        asked.append(delay)
        return await real(delay)

    sender._sleep = sleep  # type: ignore[method-assign]
    return asked


# -- waits --------------------------------------------------------------------------------
def test_a_wait_that_leaves_time_for_the_answer_is_taken(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """Retry-After 1 s inside a 4 s flush with a 2 s request timeout: after the wait
    nearly 3 s are left, more than the 0.25 s an answer is given, so the body goes now."""
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=2.0)
    _evaluate(tel, 4)
    intake.script(Behaviour(status=429, headers={"Retry-After": "1"}), Behaviour(status=200))
    assert tel.flush(4.0) is True
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
    """A flush that starts inside a 60 s Retry-After and has 0.5 s does not sleep: it
    asks for no wait at all, posts nothing, and the body still waits (counted pending)."""
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 5)
    intake.script(Behaviour(status=429, headers={"Retry-After": "60"}))
    assert tel.flush(0.5) is False
    asked = _sleeps(tel)
    assert tel.flush(0.5) is False
    assert asked == []  # refused at once, not slept up to the call's deadline
    assert len(intake.received) == 1
    st = tel.stats()
    assert st.pending == 5 and st.dropped == {} and st.conserved


# -- deadlines ----------------------------------------------------------------------------
def test_a_hanging_intake_is_cut_at_the_flush_deadline_and_said_in_words(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    """The request's own timeout (60 s) is longer than the flush (0.4 s): the flush's
    deadline cuts the request, the body may have been taken (delivery_unknown), and the
    log says there was no answer in time."""
    caplog.set_level(logging.WARNING, logger="flageval")
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=60.0)
    _evaluate(tel, 7)
    intake.script(Behaviour(action="hang"))
    t0 = time.monotonic()
    tel.flush(0.4)
    # The request's own timeout would be 60 s; a loaded machine does not make 0.4 s 20.
    assert time.monotonic() - t0 < 20.0
    assert tel.stats().dropped == {"delivery_unknown": 7}
    (line,) = _lines(caplog, "delivery_unknown")
    assert "no answer within" in line


def test_a_rejection_whose_body_never_comes_is_read_for_at_most_half_a_second(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """A 400 whose body never arrives: its error text is waited for 0.5 s, not for the
    request timeout nor the flush's deadline (60 s each), and the body is counted
    rejected (the status was read)."""
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=60.0)
    _evaluate(tel, 2)
    intake.script(Behaviour(status=400, action="stall_body"))
    t0 = time.monotonic()
    assert tel.flush(60.0) is True
    # Waiting for the body would take 60 s; a loaded machine does not make 0.5 s 20.
    assert time.monotonic() - t0 < 20.0
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


def test_a_rejection_and_a_lost_answer_each_get_their_own_line(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flageval")
    tel = make_telemetry(retry_backoff_s=0.01, request_timeout_s=2.0)
    _evaluate(tel, 1)
    intake.script(Behaviour(status=400))
    assert tel.flush(5.0) is True
    intake.script(Behaviour(action="hang"))
    _evaluate(tel, 2)
    tel.flush(5.0)
    assert tel.stats().dropped == {"intake_rejected": 1, "delivery_unknown": 2}
    assert len(_lines(caplog, "counted as intake_rejected")) == 1
    assert len(_lines(caplog, "counted as delivery_unknown")) == 1


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
    for _ in range(6000):  # 30 s at most
        if done():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not within 30 s")


def _sender(intake: Intake, *, agent: bool = False, **kw: Any) -> Sender:
    """A sender posting to the intake: at its v2 path, or (agent) along the route the
    intake's /info gives, as through a Datadog agent."""
    url = intake.url if agent else intake.url + PATH
    settings: dict[str, Any] = {
        "request_timeout_s": 5.0,
        "max_retries": 0,
        "retry_backoff_s": 0.01,
        "retry_buffer_bytes": 1 << 20,
        "verify_tls": True,
    }
    settings.update(kw)
    return Sender(Endpoint(url, None, {}, url, "agent" if agent else "url"), **settings)


def test_a_send_cancelled_after_the_request_left_is_counted_unknown_once(
    intake: Intake,
) -> None:
    intake.script(Behaviour(action="hang"))

    async def run() -> Sender:
        sender = _sender(intake)
        task = asyncio.create_task(sender.send_all([_body(6)], time.monotonic() + 10.0))
        await _until(lambda: bool(intake.received))  # the intake has the body
        assert sender.pending_evaluations == 6  # in flight, still held
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sender.close()
        return sender

    sender = asyncio.run(run())
    # It may have been taken: counted once, never held for a resend.
    assert dict(sender.ledger.dropped) == {"delivery_unknown": 6}
    assert sender.pending_evaluations == 0
    assert not sender.outbox and sender.outbox_bytes == 0


def test_a_send_cancelled_while_it_backs_off_keeps_the_body(intake: Intake) -> None:
    intake.script(Behaviour(status=500))

    async def run() -> Sender:
        sender = _sender(intake, max_retries=3, retry_backoff_s=30.0)
        backing_off = asyncio.Event()
        real_sleep = sender._sleep

        async def sleep(delay: float) -> bool:
            backing_off.set()
            return await real_sleep(delay)

        sender._sleep = sleep  # type: ignore[method-assign]
        body = _body(4)
        task = asyncio.create_task(sender.send_all([body], time.monotonic() + 120.0))
        await asyncio.wait_for(backing_off.wait(), 30.0)  # now in its backoff sleep
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sender.close()
        return sender

    sender = asyncio.run(run())
    assert dict(sender.ledger.dropped) == {}
    assert sender.pending_evaluations == 4
    assert len(sender.outbox) == 1 and sender.outbox_bytes == len(sender.outbox[0].data)


@pytest.mark.parametrize("when", ["before", "during"])
def test_an_interrupted_backoff_stops_the_send_and_keeps_the_body(
    intake: Intake, when: str
) -> None:
    """Shutdown interrupts backoff: no further try, the body waits (for the final
    accounting), and send_all says so (False, not anything else)."""
    intake.script(Behaviour(status=500))

    async def run() -> tuple[Sender, object]:
        sender = _sender(intake, max_retries=3, retry_backoff_s=30.0)
        backing_off = asyncio.Event()
        real_sleep = sender._sleep

        async def sleep(delay: float) -> bool:
            # The draw is jittered over [0, 30 s]: held at 60 s, it cannot end before
            # the interrupt, whatever it drew.
            backing_off.set()
            return await real_sleep(60.0)

        sender._sleep = sleep  # type: ignore[method-assign]
        if when == "before":
            sender.interrupt()
        task = asyncio.create_task(sender.send_all([_body(3)], time.monotonic() + 120.0))
        if when == "during":
            await asyncio.wait_for(backing_off.wait(), 30.0)
            sender.interrupt()
        done = await asyncio.wait_for(task, 30.0)
        await sender.close()
        return sender, done

    sender, done = asyncio.run(run())
    assert done is False
    assert sender.counts.post_attempts == 1 and len(intake.received) == 1
    assert dict(sender.ledger.dropped) == {}
    assert sender.pending_evaluations == 3


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
        assert sender.outbox_bytes == 0 and sender.counts.evaluations_posted == 3
        await sender.close()

    asyncio.run(run())
    assert [r.status for r in intake.received] == [500, 500, 200, 200]


# -- the backoff's draws, the agent's route, the clock -------------------------------------
class _Clock:
    """The monotonic clock, moved on by hand: waits of a minute without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


V2_ONLY = {**AGENT_INFO, "endpoints": [e for e in AGENT_INFO["endpoints"] if "/v4/" not in e]}


def test_retries_back_off_from_the_base_doubling(intake: Intake) -> None:
    """Three 500s, retry_backoff_s=1: the waits are draws from [0, 1], [0, 2], [0, 4],
    in that order (full jitter); the draws are made the same by seeding the generator."""
    intake.script(Behaviour(status=500), Behaviour(status=500), Behaviour(status=500))
    waits: list[float] = []

    async def no_wait(delay: float) -> bool:
        waits.append(delay)
        return True

    async def run() -> bool:
        sender = _sender(intake, max_retries=3, retry_backoff_s=1.0)
        sender._sleep = no_wait  # type: ignore[method-assign]
        try:
            return await sender.send_all([_body(1)], time.monotonic() + 60.0)
        finally:
            await sender.close()

    state = random.getstate()
    try:
        random.seed(2026)
        expected = [random.uniform(0.0, 1.0), random.uniform(0.0, 2.0), random.uniform(0.0, 4.0)]
        random.seed(2026)
        assert asyncio.run(run()) is True
    finally:
        random.setstate(state)
    assert waits == expected
    assert [r.status for r in intake.received] == [500, 500, 500, 200]


def test_a_400_is_not_a_reason_to_ask_the_agent_again(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    intake.set_info(AGENT_INFO)
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 1)
    assert tel.flush(5.0) is True
    assert len(intake.info_requests) == 1
    intake.script(Behaviour(status=400))
    _evaluate(tel, 2)
    assert tel.flush(5.0) is True
    assert len(intake.info_requests) == 1  # only a 404 says the route may have moved
    assert tel.stats().dropped == {"intake_rejected": 2}


def test_a_flush_with_nothing_to_send_does_not_ask_the_agent(intake: Intake) -> None:
    """No /info (an old agent): v2, asked again a minute later, but only by a flush
    that has something to post."""
    clock = _Clock()

    async def run() -> None:
        sender = _sender(intake, agent=True, clock=clock)
        try:
            sender.start()
            assert await sender.send_all([_body(1)], clock() + 5.0) is True
            assert len(intake.info_requests) == 1
            clock.offset += RECHECK_S + 1.0  # asking again is due
            assert await sender.send_all([], clock() + 5.0) is True
            assert len(intake.info_requests) == 1
            assert await sender.send_all([_body(2)], clock() + 5.0) is True
            assert len(intake.info_requests) == 2  # due indeed, for a flush with a body
        finally:
            await sender.close()

    asyncio.run(run())
    assert [r.path for r in intake.received] == [PATH, PATH]


def test_a_route_found_after_the_deadline_keeps_the_body(intake: Intake) -> None:
    """A 404 sends the sender to ask the agent; the deadline passes while it waits for
    the answer. The new route is not tried so late: the body waits, counted pending."""
    clock = _Clock()
    intake.set_info(AGENT_INFO)

    async def run() -> tuple[Sender, bool]:
        sender = _sender(intake, agent=True, clock=clock)
        try:
            sender.start()
            assert await sender.send_all([_body(1)], clock() + 5.0) is True
            intake.set_info(V2_ONLY, Behaviour(delay_s=0.3))
            intake.script(Behaviour(status=404))
            task = asyncio.create_task(sender.send_all([_body(5)], clock() + 10.0))
            await _until(lambda: len(intake.info_requests) == 2)  # it is asking
            clock.offset += 100.0  # and the deadline passes meanwhile
            return sender, await asyncio.wait_for(task, 30.0)
        finally:
            await sender.close()

    sender, done = asyncio.run(run())
    assert done is False
    assert [(r.path, r.status) for r in intake.received] == [(PATH_V4, 200), (PATH_V4, 404)]
    assert dict(sender.ledger.dropped) == {}
    assert sender.pending_evaluations == 5


def test_each_move_of_the_route_counts_as_a_try(intake: Intake) -> None:
    """max_retries=2. v4 answers 404 (move to v2: try 1), v2 answers 404 half a minute
    later (move back to v4: try 2), v4 answers 500 (try 3): the body waits."""
    clock = _Clock()
    intake.set_info(AGENT_INFO)

    async def run() -> tuple[Sender, bool]:
        sender = _sender(intake, agent=True, clock=clock, max_retries=2)
        try:
            sender.start()
            assert await sender.send_all([_body(1)], clock() + 5.0) is True
            intake.set_info(V2_ONLY)
            intake.script(
                Behaviour(status=404),
                Behaviour(status=404, delay_s=0.3),
                Behaviour(status=500),
                Behaviour(status=200),
            )
            task = asyncio.create_task(sender.send_all([_body(4)], clock() + 100.0))
            await _until(lambda: len(intake.received) == 3)  # v2's post is in flight
            intake.set_info(AGENT_INFO)
            clock.offset += REDISCOVER_AFTER_404_S + 1.0  # a second 404 may ask again
            return sender, await asyncio.wait_for(task, 30.0)
        finally:
            await sender.close()

    sender, done = asyncio.run(run())
    assert done is False
    assert [(r.path, r.status) for r in intake.received] == [
        (PATH_V4, 200),
        (PATH_V4, 404),
        (PATH, 404),
        (PATH_V4, 500),
    ]
    assert sender.pending_evaluations == 4


def test_an_untrusted_certificate_is_said_again_after_a_post_got_through(
    tls_files: tuple[Path, Path],  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="flageval")
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    intake = Intake(ssl_context=ctx).start()
    try:

        async def run() -> None:
            sender = _sender(intake)
            try:
                assert await sender.send_all([_body(1)], time.monotonic() + 5.0) is False
                assert await sender.send_all([], time.monotonic() + 5.0) is False
                await sender.close()
                sender.verify_tls = False  # the certificate is fixed (trusted) ...
                assert await sender.send_all([], time.monotonic() + 5.0) is True
                await sender.close()
                sender.verify_tls = True  # ... and later broken again
                assert await sender.send_all([_body(2)], time.monotonic() + 5.0) is False
            finally:
                await sender.close()

        asyncio.run(run())
    finally:
        intake.stop()
    told = [r for r in caplog.records if "is not trusted" in r.getMessage()]
    assert len(told) == 2  # once for each time it broke, not for every flush
