"""Lifecycle through the real SDK and intake: lazy start, start, flush, shutdown, closed,
the killswitch, autostart=False from async code, and process ends (exit, SIGTERM, fork)
run in real subprocesses."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval
from flageval import FlagEvalHook, Telemetry
from tests.intake import Behaviour, Intake

MakeTelemetry = Callable[..., Telemetry]
REPO = Path(__file__).resolve().parents[3]
KILLSWITCH = "DD_FLAGGING_EVALUATION_COUNTS_ENABLED"


def client_with(hook: Any, via_api: bool = False) -> OpenFeatureClient:
    flags = {"f": InMemoryFlag("on", {"on": True, "off": False})}
    api.set_provider_and_wait(InMemoryProvider(flags))
    client = api.get_client()
    if via_api:
        api.add_hooks([hook])
    else:
        client.add_hooks([hook])
    return client


def evaluate(client: OpenFeatureClient, n: int, who: str = "u") -> None:
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(who, {"i": i % 5}))


_OTHERS: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _not_this_tests_threads() -> None:
    """Threads alive before the test (another suite's pipelines, sharing the process)
    are not the test's: only what it starts is looked at."""
    _OTHERS.clear()
    _OTHERS.update(threading.enumerate())


def flageval_threads() -> list[threading.Thread]:
    """The flageval threads this test started that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("flageval") and t not in _OTHERS]


def assert_all_zero(stats: flageval.Stats) -> None:
    assert stats.evaluations == stats.evaluations_posted == stats.rows_posted == 0
    assert stats.bodies_posted == stats.pending == stats.post_attempts == 0
    assert stats.flushes == stats.worker_errors == 0
    assert stats.dropped == {} and stats.degraded == {}


# -- starting ------------------------------------------------------------------------------


def test_lazy_start_on_first_evaluation(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    assert flageval_threads() == []
    tel = make_telemetry()
    client = client_with(tel.hook)
    assert flageval_threads() == []  # building the pipeline starts nothing
    assert not tel.running
    evaluate(client, 1)
    threads = flageval_threads()
    assert [t.name for t in threads] == ["flageval-worker"]
    assert threads[0].daemon  # never keeps a script alive
    evaluate(client, 9)
    assert tel.flush(10.0)
    assert intake.evaluations() == 10
    tel.shutdown(5.0)
    assert flageval_threads() == []


def test_explicit_start(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    tel.start()
    assert [t.name for t in flageval_threads()] == ["flageval-worker"]
    tel.start()  # a second start is a no-op, not a second thread
    assert len(flageval_threads()) == 1
    evaluate(client_with(tel.hook), 7)
    assert tel.flush(10.0)
    assert intake.evaluations() == 7


# -- shutdown --------------------------------------------------------------------------------


def test_shutdown_drains_and_does_the_final_flush(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    tel = make_telemetry()
    client = client_with(tel.hook)
    evaluate(client, 1234)  # no flush: the final flush at shutdown must carry them
    tel.shutdown(10.0)
    assert intake.evaluations() == 1234
    stats = tel.stats()
    assert stats.evaluations == stats.evaluations_posted == 1234
    assert stats.pending == 0 and stats.dropped == {} and stats.conserved
    assert flageval_threads() == []


def test_after_shutdown_evaluations_are_closed_without_a_warning_storm(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    tel = make_telemetry()
    client = client_with(tel.hook)
    evaluate(client, 10)
    tel.shutdown(5.0)
    bodies = len(intake.received)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        evaluate(client, 5000)
        assert tel.flush(1.0)  # nothing left to send; returns at once
        stats = tel.stats()
    assert stats.dropped == {"closed": 5000}
    assert stats.evaluations == 5010 and stats.evaluations_posted == 10 and stats.conserved
    noisy = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(noisy) <= 2, [r.getMessage() for r in noisy]
    assert flageval_threads() == []  # nothing restarted the worker: nothing can post
    assert len(intake.received) == bodies  # and nothing was posted after shutdown


def test_shutdown_is_idempotent(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    evaluate(client_with(tel.hook), 3)
    tel.shutdown(5.0)
    for _ in range(3):
        tel.shutdown(5.0)  # returns, raises nothing, sends nothing again
    assert flageval_threads() == []
    with pytest.raises(RuntimeError):
        tel.start()  # a shut-down pipeline does not come back
    assert intake.evaluations() == 3
    assert len(intake.accepted()) == 1


def test_shutdown_meets_its_deadline_when_the_intake_hangs(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    intake.script(Behaviour(action="hang"))
    # Small bodies: one hangs in flight, the others wait behind it.
    tel = Telemetry(
        agent_url=intake.url, flush_interval_s=60.0, request_timeout_s=60.0, max_body_bytes=2048
    )
    client_with(tel.hook, via_api=True)
    client = api.get_client()
    for k in range(100):
        client.get_boolean_value("f", False, EvaluationContext(f"user-{k:03d}"))
    start = time.monotonic()
    # 2.5 s: the worker keeps its full margin after its own deadline for the final
    # accounting (flageval/_telemetry.py), which a loaded machine needs.
    tel.shutdown(2.5)
    # The hanging request alone would keep it 60 s; a loaded machine does not turn a
    # 2.5 s deadline into 20.
    assert time.monotonic() - start < 20.0
    start = time.monotonic()
    tel.shutdown(60.0)  # idempotent: nothing is waited for again
    assert time.monotonic() - start < 10.0
    assert len(intake.received) == 1  # one body went out and hangs; the rest never did
    in_flight = sum(r["evaluation_count"] for r in intake.received[0].json()["flagEvaluations"])
    assert 0 < in_flight < 100
    stats = tel.stats()
    # Everything is accounted for once shutdown returns: nothing left "pending".
    assert stats.pending == 0
    assert stats.dropped == {"delivery_unknown": in_flight, "intake_unavailable": 100 - in_flight}
    assert stats.evaluations_posted == 0 and stats.evaluations == 100 and stats.conserved
    # The worker thread ends with shutdown (it had its margin of the deadline).
    end = time.monotonic() + 30.0
    while flageval_threads() and time.monotonic() < end:
        time.sleep(0.01)
    assert flageval_threads() == []
    # And the HTTP session was closed, not left to the garbage collector (which would
    # log "Unclosed client session" at ERROR in the application's logs).
    api.clear_hooks()
    del tel
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert not [r for r in caplog.records if "nclosed" in r.getMessage()]


# -- killswitch ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "0", "NO", "Off"])
def test_killswitch_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, intake: Intake, value: str
) -> None:
    monkeypatch.setenv(KILLSWITCH, value)
    threads_before = set(threading.enumerate())
    tel = Telemetry(agent_url=intake.url, flush_interval_s=0.05, drain_interval_s=0.01)
    assert not tel.enabled
    client = client_with(tel.hook)
    evaluate(client, 200)
    assert tel.flush(1.0)
    assert_all_zero(tel.stats())
    assert intake.connections_from_here() == 0
    new = {t.name for t in set(threading.enumerate()) - threads_before}
    assert not any(name.startswith("flageval") for name in new), new
    tel.start()
    assert flageval_threads() == []
    tel.shutdown(1.0)
    assert intake.received == []


def test_killswitch_with_the_default_hook(monkeypatch: pytest.MonkeyPatch, intake: Intake) -> None:
    monkeypatch.setenv(KILLSWITCH, "False")
    monkeypatch.setenv("DD_TRACE_AGENT_URL", intake.url)
    hook = FlagEvalHook()
    client = client_with(hook, via_api=True)
    evaluate(client, 100)
    assert flageval.flush(1.0)
    assert_all_zero(flageval.stats())
    assert not flageval.default_telemetry().enabled
    assert flageval_threads() == []
    flageval.shutdown(1.0)
    assert intake.received == []


def test_default_hook_one_line_setup(monkeypatch: pytest.MonkeyPatch, intake: Intake) -> None:
    monkeypatch.delenv(KILLSWITCH, raising=False)
    monkeypatch.setenv("DD_TRACE_AGENT_URL", intake.url)
    monkeypatch.setenv("DD_SERVICE", "one-liner")
    client = client_with(FlagEvalHook(), via_api=True)
    evaluate(client, 12)
    assert flageval.flush(10.0)
    assert intake.evaluations() == 12
    assert intake.accepted()[0].json()["context"]["service"] == "one-liner"
    assert flageval.stats().evaluations_posted == 12
    flageval.shutdown(5.0)
    assert flageval_threads() == []


# -- autostart=False, from async code ----------------------------------------------------------


async def test_autostart_false_queues_until_start_and_async_calls_never_block_the_loop(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    tel = make_telemetry(autostart=False)
    client = client_with(tel.hook)
    for _ in range(5):  # before start: queued (bounded), not lost
        await client.get_boolean_value_async("f", False, EvaluationContext("early"))
    assert flageval_threads() == [] and not tel.running
    tel.start()
    assert [t.name for t in flageval_threads()] == ["flageval-worker"]
    for _ in range(20):
        await client.get_boolean_value_async("f", False, EvaluationContext("late"))
    evaluate(client, 4, who="sync")  # sync evaluation on the loop's thread counts too
    # The loop keeps running while the worker's own thread flushes.
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    intake.set_default(Behaviour(delay_s=0.3))  # the post takes a while
    assert await tel.flush_async(10.0)
    intake.set_default(Behaviour())
    assert ticks >= 2  # the loop ran during the flush (a blocking one: 0)
    ticker.cancel()
    counts = {r["targeting_key"]: 0 for r in intake.rows()}
    for r in intake.rows():
        counts[r["targeting_key"]] += r["evaluation_count"]
    assert counts == {"early": 5, "late": 20, "sync": 4}
    for _ in range(3):
        await client.get_boolean_value_async("f", False, EvaluationContext("last"))
    await tel.shutdown_async(5.0)
    assert intake.evaluations() == 32
    await client.get_boolean_value_async("f", False)
    stats = tel.stats()
    assert stats.evaluations_posted == 32 and stats.dropped == {"closed": 1}
    assert stats.conserved and flageval_threads() == []


# -- process ends (real subprocesses) -------------------------------------------------------------

PRELUDE = """
import json, os, signal, sys, time
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from flageval import Telemetry

URL = sys.argv[1]
tel = Telemetry(agent_url=URL, service="lifecycle-script", flush_interval_s=60.0)
api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
client = api.get_client()
client.add_hooks([tel.hook])

def evaluate(n, who):
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(who, {"i": i % 7}))
"""


def script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def run_script(body: str, *args: object, timeout_s: float = 60.0) -> str:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def counts_by_targeting_key(intake: Intake) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in intake.rows():
        tk = row["targeting_key"]
        counts[tk] = counts.get(tk, 0) + row["evaluation_count"]
    return counts


def test_plain_script_exit_loses_nothing(intake: Intake) -> None:
    n = 2_345
    run_script("evaluate(int(sys.argv[2]), 'script')\n", intake.url, n)
    # atexit's shutdown is synchronous: everything is there when the process is gone.
    assert counts_by_targeting_key(intake) == {"script": n}
    assert intake.accepted()[0].json()["context"]["service"] == "lifecycle-script"


def test_sigterm_handled_as_exit_loses_nothing(intake: Intake) -> None:
    n = 1_500
    code = PRELUDE + textwrap.dedent(
        """
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        evaluate(int(sys.argv[2]), "sigterm")
        print("ready", flush=True)
        for _ in range(600):  # bounded: 60 s at most
            time.sleep(0.1)
        sys.exit(3)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, intake.url, str(n)],
        cwd=REPO,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 30.0)
        assert readable, "the script never became ready"
        assert proc.stdout.readline().strip() == "ready"
        assert intake.received == []  # nothing flushed yet: the 60 s interval
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30.0) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
    assert counts_by_targeting_key(intake) == {"sigterm": n}


def test_fork_child_starts_clean_and_nothing_is_sent_twice(intake: Intake) -> None:
    n1, n2, n3 = 1_000, 700, 300
    out = run_script(
        """
        n1, n2, n3 = map(int, sys.argv[2:5])
        evaluate(n1, "before")
        end = time.monotonic() + 30
        while tel.handoff.queue and time.monotonic() < end:
            time.sleep(0.01)  # the parent's worker takes them into its tiers
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                evaluate(n2, "child")
                flushed = tel.flush(10.0)
                tel.shutdown(10.0)
                s = tel.stats()
                ok = flushed and s.evaluations == n2 and s.evaluations_posted == n2
                code = 0 if ok else 2
            finally:
                os._exit(code)
        evaluate(n3, "after")
        _, status = os.waitpid(pid, 0)
        flushed = tel.flush(10.0)
        tel.shutdown(10.0)
        s = tel.stats()
        print(json.dumps({
            "child": os.waitstatus_to_exitcode(status),
            "flushed": flushed,
            "evaluations": s.evaluations,
            "posted": s.evaluations_posted,
        }))
        """,
        intake.url,
        n1,
        n2,
        n3,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {
        "child": 0,
        "flushed": True,
        "evaluations": n1 + n3,
        "posted": n1 + n3,
    }
    assert counts_by_targeting_key(intake) == {"before": n1, "child": n2, "after": n3}
    assert intake.evaluations() == n1 + n2 + n3
    # No body mixes the two processes: the child's bodies hold only its own rows.
    for received in intake.accepted():
        keys = {row["targeting_key"] for row in received.json()["flagEvaluations"]}
        assert keys == {"child"} or "child" not in keys, keys


def test_a_worker_that_cannot_start_closes_the_pipeline_once(
    make_telemetry: MakeTelemetry, intake: Intake, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A start failure is logged once and later evaluations are counted as closed,
    never retried per evaluation (each retry would leak an event loop)."""
    import flageval._worker as tmod

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no resources")

    monkeypatch.setattr(tmod, "Worker", broken)
    tel = make_telemetry()
    client = client_with(tel.hook)
    with caplog.at_level(logging.ERROR, logger="flageval"):
        evaluate(client, 50)
    assert flageval_threads() == []
    assert tel._phase.value == "failed"  # IDLE -> FAILED: final, never retried
    st = tel.stats()
    assert st.evaluations == 50
    assert st.dropped == {"closed": 50}
    assert st.conserved
    assert len([r for r in caplog.records if "could not start" in r.getMessage()]) == 1
    assert intake.received == []
