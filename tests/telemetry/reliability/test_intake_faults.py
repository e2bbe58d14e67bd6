"""Intake faults: the hot path never waits, retries stay bounded, shutdown keeps its
deadline, and every evaluation is accounted for exactly.

Each fault runs against the real aiohttp intake of tests/intake.py on 127.0.0.1, with
short intervals so a fault lasts a few flush cycles and the test a few seconds.
Deadlines are shown against the alternative (a request timeout of 20 s or 30 s) with a
bound a loaded machine cannot reach.
"""

from __future__ import annotations

import email.utils
import threading
import time
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext

from flageval import Telemetry
from tests.intake import Behaviour, Intake
from tests.telemetry.reliability.helpers import (
    FLAG,
    PeakSampler,
    assert_conserved,
    assert_rows_unique,
    body_counts,
    client_with,
    evaluate_timed,
    free_port,
    median_us,
    record,
)

pytestmark = pytest.mark.reliability

#: Long enough that the worker keeps its full margin after its own deadline (0.25 s,
#: flageval/_telemetry.py) for the final accounting; shorter, a loaded machine may not
#: give it the CPU in time, and what it held is then counted worker_stalled instead.
SHUTDOWN_S = 2.5
#: A shutdown that waited for a hanging request instead of its deadline would take the
#: request timeout (60 s); one that keeps its 2.5 s deadline stays far under this bound
#: however loaded the machine (it also joins the worker thread).
SHUTDOWN_BOUND_S = 20.0
#: Bodies are capped well below the retry buffer, as with the defaults (5 MiB bodies,
#: 16 MiB buffer): the buffer's bound is exact only when a body fits in it.
MAX_BODY = 32_768
RETRY_BUFFER = 100_000
FAST = {
    "max_body_bytes": MAX_BODY,
    "service": "rel-faults",
    "flush_interval_s": 0.5,
    # Long: a healthy post is never cut short on a loaded machine, and a hang outlasts
    # every deadline the test checks.
    "request_timeout_s": 60.0,
    "retry_backoff_s": 0.02,
    "max_retries": 1,
    "retry_buffer_bytes": RETRY_BUFFER,
    "shutdown_timeout_s": SHUTDOWN_S,
}


def _http_date(in_s: float) -> str:
    return email.utils.formatdate(time.time() + in_s, usegmt=True)


#: name -> (behaviour factory or None for "nothing listening", class of fault)
FAULTS: dict[str, tuple[Any, str]] = {
    "refused": (None, "retry"),
    "status_500": (lambda: Behaviour(status=500), "retry"),
    "status_503": (lambda: Behaviour(status=503), "retry"),
    "status_503_retry_after": (lambda: Behaviour(503, {"Retry-After": "1"}), "retry"),
    "status_429_retry_after_s": (lambda: Behaviour(429, {"Retry-After": "1"}), "retry"),
    "status_429_retry_after_date": (
        lambda: Behaviour(429, {"Retry-After": _http_date(2)}),
        "retry",
    ),
    "status_400": (lambda: Behaviour(status=400), "rejected"),
    "status_413": (lambda: Behaviour(status=413), "rejected"),
    "slow": (lambda: Behaviour(delay_s=120.0), "unknown"),  # past the request timeout
    "hang": (lambda: Behaviour(action="hang"), "unknown"),
    "reset_mid_body": (lambda: Behaviour(action="reset_mid_body"), "unknown"),
    "lost_response": (lambda: Behaviour(action="reset"), "unknown"),
    "garbage": (lambda: Behaviour(action="garbage"), "unknown"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_keeps_hot_path_memory_deadline_and_books(fault: str) -> None:
    """Healthy phase, then the fault for at least 0.8 s (two flush cycles) and until a
    post met it, then shutdown during the fault. Latency medians of the two phases
    are compared in one test."""
    make_behaviour, kind = FAULTS[fault]
    intake = Intake().start(free_port())
    tel = Telemetry(agent_url=intake.url, **FAST)
    stopped = False
    try:
        client = client_with(tel)
        made = 0
        _, n = evaluate_timed(client, min_s=0.0, max_n=512, tk_space=100, tag="warm")
        made += n
        healthy, n = evaluate_timed(client, min_s=0.4, max_n=60_000, tk_space=100, tag="ok")
        made += n
        assert tel.flush(5.0)
        assert intake.evaluations() == made  # healthy: everything so far delivered
        healthy_made = made
        healthy_requests = len(intake.received)
        attempts_before = tel.stats().post_attempts

        if make_behaviour is None:
            intake.stop()  # nothing listens on the port any more: connection refused
            stopped = True
        else:
            intake.set_default(make_behaviour())
        assert tel._worker is not None
        sender = tel._worker.sender
        met = sender.counts.post_attempts
        with PeakSampler(lambda: sender.outbox_bytes) as peak:
            faulty, n = evaluate_timed(
                client,
                min_s=0.8,
                max_n=60_000,
                tk_space=100,
                tag="bad",
                until=lambda: sender.counts.post_attempts > met,  # a post met the fault
            )
            made += n
        fault_attempts = tel.stats().post_attempts - attempts_before
        assert fault_attempts >= 1  # the fault was really met during the phase
        # What the phase made is aggregated before the shutdown: its final accounting
        # is then the same small work however far a loaded machine let the worker lag.
        assert _until(lambda: not tel.handoff.queue)

        t0 = time.monotonic()
        tel.shutdown(SHUTDOWN_S)
        took = time.monotonic() - t0
    finally:
        if not stopped:
            intake.stop()
        tel.shutdown(0.5)
    assert not intake.schema_errors, intake.schema_errors[:2]

    st = assert_conserved(tel, intake, made)
    assert_rows_unique(intake)
    fault_made = made - healthy_made
    # Nothing was accepted during the fault, so every fault-phase evaluation is in a
    # drop counter, by the reason this kind of fault implies.
    assert sum(st.dropped.values()) == fault_made
    during = intake.received[healthy_requests:]
    if kind == "retry":
        assert set(st.dropped) <= {"retry_buffer_full", "intake_unavailable"}, st.dropped
        assert all(not (200 <= r.status < 300) for r in during)
    elif kind == "rejected":
        status = int(fault.rsplit("_", 1)[1])
        assert st.dropped == {"intake_rejected": body_counts(during)}, st.dropped
        assert all(r.status == status and r.answered for r in during)
        # Not retried: every rejected body arrived exactly once.
        assert len({r.body for r in during}) == len(during)
    else:
        assert set(st.dropped) <= {"delivery_unknown", "intake_unavailable", "retry_buffer_full"}
        assert st.dropped.get("delivery_unknown", 0) > 0
        # Every body the intake got but did not answer is counted as unknown (the
        # client may count more: a body cut off before the intake read all of it).
        unanswered = [r for r in during if r.complete and not r.answered]
        assert st.dropped["delivery_unknown"] >= body_counts(unanswered)
        # Never resent: a body whose delivery is unknown reached the intake once.
        assert len({r.body for r in during if r.complete}) == len([r for r in during if r.complete])
        if fault == "reset_mid_body":
            assert during and not any(r.complete for r in during)

    # Memory held for retries stayed under its bound.
    assert peak.samples > 10
    assert peak.peak <= RETRY_BUFFER
    # Shutdown kept its deadline, fault or not.
    assert took < SHUTDOWN_BOUND_S, took
    h, f = median_us(healthy), median_us(faulty)
    record(
        f"fault[{fault}]",
        healthy_us=round(h, 2),
        fault_us=round(f, 2),
        ratio=round(f / h, 3),
        made=made,
        delivered=intake.evaluations(),
        dropped=dict(st.dropped),
        peak_retry_bytes=peak.peak,
        shutdown_s=round(took, 3),
    )
    # What this proves: a fault never blocks evaluation (the claim is "never block", not
    # "matches the healthy latency"; the ratio is a figure, in the summary). An
    # evaluation waiting on the intake would wait at least a backoff (20 ms), and it
    # would be every evaluation of the phase, not a few: its median would be past
    # 20,000 us. The bound is a tenth of that and 100 times the healthy median here
    # (~12 us): a neighbour's load on a shared 2-core box slows an evaluation a few
    # times, not a hundred.
    assert f < max(2_000.0, 50.0 * h), f"evaluation blocked? healthy {h} us, fault {f} us"


def _until(done: Any, timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def _unique_evaluations(client: Any, tag: str, n: int) -> list[str]:
    """n evaluations, each with its own targeting key: each is its own row."""
    keys = [f"{tag}-{i}" for i in range(n)]
    for key in keys:
        client.get_boolean_value(FLAG, False, EvaluationContext(key, {"k": tag}))
    return keys


def _tks(records: Any) -> list[str]:
    return [row["targeting_key"] for r in records for row in r.json()["flagEvaluations"]]


def test_refused_then_up_delivers_held_counts_once(make_telemetry: Any) -> None:
    """Nothing listens on the port; counts wait in the retry buffer; the intake comes up
    on that port; the held counts arrive exactly once, nothing is lost."""
    port = free_port()
    tel = make_telemetry(agent_url=f"http://127.0.0.1:{port}", max_retries=2, retry_backoff_s=0.01)
    client = client_with(tel)
    first = _unique_evaluations(client, "down", 300)
    assert tel.flush(1.0) is False  # could not deliver: held
    st = tel.stats()
    assert st.pending == 300 and st.evaluations_posted == 0 and not st.dropped
    assert st.post_attempts == 3  # one try + max_retries, all refused
    intake = Intake().start(port)
    try:
        second = _unique_evaluations(client, "up", 200)
        assert tel.flush(5.0) is True
        tel.shutdown(2.0)
    finally:
        intake.stop()
    assert not intake.schema_errors
    got = _tks(intake.accepted())
    assert sorted(got) == sorted(first + second)  # each key exactly once
    assert all(row["evaluation_count"] == 1 for row in intake.rows())
    assert_rows_unique(intake)
    st = assert_conserved(tel, intake, 500)
    assert st.dropped == {}


def test_500s_then_recovery_resends_the_same_body_once_accepted(
    make_telemetry: Any, intake: Intake
) -> None:
    """5xx means the intake did not take the body: the very same bytes are sent again
    (never a re-aggregated copy), and accepted once."""
    tel = make_telemetry(max_retries=1, retry_backoff_s=0.01)
    client = client_with(tel)
    keys = _unique_evaluations(client, "r", 50)
    intake.script(*(Behaviour(status=500) for _ in range(3)))
    assert tel.flush(10.0) is False  # 2 tries in this flush, both 500
    assert tel.flush(10.0) is True  # 500 then 200
    tel.shutdown(2.0)
    statuses = [r.status for r in intake.received]
    assert statuses == [500, 500, 500, 200]
    assert len({r.body for r in intake.received}) == 1  # the same body every time
    assert sorted(_tks(intake.accepted())) == sorted(keys)
    st = assert_conserved(tel, intake, 50)
    assert st.dropped == {}


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(503, "1"), (429, "1"), (429, "date"), (503, None)],
    ids=["503-seconds", "429-seconds", "429-http-date", "503-no-header"],
)
def test_retry_after_is_honoured(
    make_telemetry: Any, intake: Intake, status: int, retry_after: str | None
) -> None:
    tel = make_telemetry(max_retries=2, retry_backoff_s=0.05)
    client = client_with(tel)
    keys = _unique_evaluations(client, "ra", 40)
    headers = {}
    if retry_after == "date":
        # An HTTP date has whole seconds: 3 s ahead is at least 2 s from now.
        headers["Retry-After"] = _http_date(3)
    elif retry_after is not None:
        headers["Retry-After"] = retry_after
    intake.script(Behaviour(status, headers))
    assert tel._worker is not None
    sender = tel._worker.sender
    waits: list[float] = []  # what the sender chose to wait before each retry
    real_sleep = sender._sleep

    async def sleep(delay: float) -> bool:
        waits.append(delay)
        return await real_sleep(delay)

    sender._sleep = sleep  # type: ignore[method-assign]
    done: list[bool] = []
    flusher = threading.Thread(target=lambda: done.append(tel.flush(6.0)))
    flusher.start()
    # The hot path keeps running while the worker waits out Retry-After.
    more = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        client.get_boolean_value(FLAG, False, EvaluationContext("busy", {"k": "b"}))
        more += 1
    flusher.join(30)
    assert done == [True]  # within the flush's 6 s, so no longer than that either
    first, second = intake.received[0], intake.received[1]
    assert (first.status, second.status) == (status, 200)
    assert first.body == second.body
    wait, *rest = waits
    assert all(r < 0.01 for r in rest), waits  # at most a timer's early wake, slept out
    if retry_after is None:
        assert 0.0 <= wait <= 0.05, waits  # the backoff (jittered), not a long wait
    else:
        # "1": one second; the date: 3 s ahead in whole seconds, read a moment later.
        assert (wait == 1.0) if retry_after == "1" else (1.5 <= wait <= 3.0), waits
        assert second.at - first.at >= 0.9 * wait  # and it was waited out
    tel.shutdown(2.0)
    assert set(keys) <= set(_tks(intake.accepted()))
    st = assert_conserved(tel, intake, 40 + more)
    assert st.dropped == {}


@pytest.mark.parametrize("status", [400, 413])
def test_client_errors_are_counted_not_retried(
    make_telemetry: Any, intake: Intake, status: int
) -> None:
    tel = make_telemetry(max_retries=3, retry_backoff_s=0.01)
    client = client_with(tel)
    _unique_evaluations(client, "bad", 30)
    intake.script(Behaviour(status=status))
    assert tel.flush(10.0) is True  # done with it: rejected is final
    _unique_evaluations(client, "good", 20)
    assert tel.flush(10.0) is True
    tel.shutdown(2.0)
    assert [r.status for r in intake.received] == [status, 200]  # one try each
    st = assert_conserved(tel, intake, 50)
    assert st.dropped == {"intake_rejected": 30}
    assert sorted(_tks(intake.accepted())) == sorted(f"good-{i}" for i in range(20))


def test_healthy_flush_bigger_than_retry_buffer_loses_nothing(
    make_telemetry: Any, intake: Intake
) -> None:
    """The retry buffer bounds what waits for a retry, not what one flush may send:
    a flush whose bodies add up to more than retry_buffer_bytes, to a healthy intake,
    delivers everything."""
    tel = make_telemetry(retry_buffer_bytes=10_000, max_body_bytes=4096)
    client = client_with(tel)
    keys = _unique_evaluations(client, "big", 400)  # ~70 KB of rows
    assert tel.flush(5.0) is True
    tel.shutdown(2.0)
    assert len(intake.accepted()) > 10  # many bodies, more bytes than the buffer
    assert sorted(_tks(intake.accepted())) == sorted(keys)
    st = assert_conserved(tel, intake, 400)
    assert st.dropped == {}


def test_retry_buffer_is_bounded_and_evicts_oldest_counted(make_telemetry: Any) -> None:
    """While the intake is down each flush adds bodies; past retry_buffer_bytes the
    oldest go, counted under retry_buffer_full; when the intake is back the newest
    arrive. Which keys were evicted is checked key by key."""
    port = free_port()
    tel = make_telemetry(
        agent_url=f"http://127.0.0.1:{port}",
        max_retries=0,
        retry_buffer_bytes=6_000,
        max_body_bytes=2_048,
    )
    client = client_with(tel)
    batches = []
    peak = 0
    for b in range(6):
        batches.append(_unique_evaluations(client, f"b{b}", 15))
        assert tel.flush(0.5) is False
        assert tel._worker is not None
        sender = tel._worker.sender
        peak = max(peak, sender.outbox_bytes)
        assert sender.outbox_bytes <= 6_000
    held = tel.stats()
    evicted = held.dropped.get("retry_buffer_full", 0)
    assert evicted > 0 and held.pending + evicted == 90
    intake = Intake().start(port)
    try:
        assert tel.flush(5.0) is True
        tel.shutdown(2.0)
    finally:
        intake.stop()
    assert not intake.schema_errors
    got = _tks(intake.accepted())
    everything = [k for batch in batches for k in batch]
    assert len(got) == len(set(got)) == 90 - evicted
    # Oldest first out: what arrived is a suffix of the evaluation order.
    assert got == everything[evicted:]
    st = assert_conserved(tel, intake, 90)
    assert st.dropped == {"retry_buffer_full": evicted}
    record(
        "retry_buffer_eviction",
        made=90,
        delivered=len(got),
        dropped=dict(st.dropped),
        peak_retry_bytes=peak,
    )


def test_shutdown_with_hanging_intake_keeps_deadline_and_counts_every_body(
    make_telemetry: Any, intake: Intake
) -> None:
    """The intake accepts connections and never answers, the request timeout is far
    longer than the shutdown deadline, and the final flush has many bodies: shutdown
    returns within its deadline, and every body is counted (the one in flight as
    delivery_unknown, the rest as intake_unavailable), none left pending."""
    tel = make_telemetry(request_timeout_s=60.0, max_body_bytes=2_048)
    client = client_with(tel)
    _unique_evaluations(client, "h", 120)  # ~20 bodies
    intake.set_default(Behaviour(action="hang"))
    t0 = time.monotonic()
    tel.shutdown(SHUTDOWN_S)
    took = time.monotonic() - t0
    assert took < SHUTDOWN_BOUND_S, took  # the request alone would take 60 s
    st = tel.stats()
    assert st.pending == 0, st
    assert st.evaluations == 120
    assert st.evaluations_posted == 0
    assert set(st.dropped) == {"delivery_unknown", "intake_unavailable"}, st.dropped
    assert sum(st.dropped.values()) == 120
    # What the intake has (unanswered) is what was counted as unknown.
    assert st.dropped["delivery_unknown"] == body_counts(intake.complete())
    record(
        "shutdown_hanging_intake",
        made=120,
        delivered=0,
        dropped=dict(st.dropped),
        shutdown_s=round(took, 3),
    )
