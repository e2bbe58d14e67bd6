"""Shutdown is exact and keeps its word: every caller waits for the shutdown in
progress, a worker busy in application code at the deadline is halted and counted,
stats() stays bounded and adds up, a dropped pipeline releases its thread, queued
evaluations of a never-started pipeline say so, and one pipeline's failure never stops
another's shutdown nor reaches the caller."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from tests.intake import Behaviour, Intake

REPO = Path(__file__).resolve().parents[3]


def client_with(*hooks: Any) -> OpenFeatureClient:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks(list(hooks))
    return client


def worker_threads(others: set[threading.Thread]) -> list[threading.Thread]:
    """Worker threads alive now that were not among ``others``."""
    return [t for t in threading.enumerate() if t.name == "flageval-worker" and t not in others]


def wait_until(predicate: Any, timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return bool(predicate())


def run(code: str, *args: object, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_concurrent_shutdowns_all_wait_for_the_one_in_progress(
    make_telemetry: Any, intake: Intake
) -> None:
    """Ten threads call shutdown() at once while the intake holds the final post: not one
    of them returns before the test lets the post be answered, and each then returns
    with everything delivered and nothing pending."""
    intake.set_default(Behaviour(action="hold"))
    tel = make_telemetry(drain_interval_s=3600.0)  # all 5,000 wait in the hand-off
    tel.start()
    client = client_with(tel.hook)
    for i in range(5000):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i}"))
    seen: list[tuple[float, int, int]] = []
    lock = threading.Lock()
    entered = threading.Barrier(11)

    def call() -> None:
        entered.wait(30.0)
        tel.shutdown(30.0)
        returned, pending = time.monotonic(), tel.stats().pending
        with lock:
            seen.append((returned, pending, intake.evaluations()))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    entered.wait(30.0)  # every thread is calling shutdown() now
    assert intake.wait_for(lambda: len(intake.received) == 1)  # the final post, held
    # Give a wrong shutdown the chance to return early (no barrier: a right one never does).
    time.sleep(0.2)
    with lock:
        assert seen == []
    released = time.monotonic()
    intake.release_held()
    for t in threads:
        t.join(30.0)
    assert len(seen) == 10
    assert all(returned >= released for returned, _, _ in seen)
    assert [(pending, posted) for _, pending, posted in seen] == [(0, 5000)] * 10


def test_a_second_caller_waits_only_up_to_its_own_deadline(
    make_telemetry: Any, intake: Intake
) -> None:
    """The first caller's final post is held by the intake until the test lets it go:
    a second caller with 0.2 s waits that long and returns while the first shutdown
    is still in progress; the first then delivers everything."""
    intake.set_default(Behaviour(action="hold"))
    tel = make_telemetry()
    client = client_with(tel.hook)
    for i in range(10):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i}"))
    first = threading.Thread(target=tel.shutdown, args=(60.0,))
    first.start()
    assert intake.wait_for(lambda: len(intake.received) == 1)
    start = time.monotonic()
    tel.shutdown(0.2)
    assert time.monotonic() - start >= 0.15  # it did wait, for its own 0.2 s
    assert first.is_alive()  # and returned before the shutdown in progress ended
    intake.release_held()
    first.join(30.0)
    assert not first.is_alive()
    assert intake.evaluations() == 10 and tel.stats().pending == 0


DAEMON_SHUTDOWN = """
    import sys, threading, time
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    from flageval import Telemetry
    from flageval._lifecycle import Phase

    tel = Telemetry(agent_url=sys.argv[1], flush_interval_s=60, drain_interval_s=3600.0)
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    for i in range(int(sys.argv[2])):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i % 5000}"))
    threading.Thread(target=tel.shutdown, args=(20.0,), daemon=True).start()
    while tel._phase is Phase.RUNNING:  # the daemon's shutdown has begun
        time.sleep(0.001)
    # main returns: atexit's shutdown must wait for the daemon's, not return at once
    """


def test_atexit_waits_for_a_daemon_threads_shutdown_in_progress(intake: Intake) -> None:
    """A daemon thread's shutdown is in progress when the main thread returns: the
    shutdown at exit waits for it (rather than returning at once and letting the
    interpreter stop that thread), so all 60,000 are delivered."""
    done = run(DAEMON_SHUTDOWN, intake.url, 60_000)
    assert done.returncode == 0, done.stderr[-2000:]
    assert intake.evaluations() == 60_000


class Slow:
    """A context value whose ``__str__`` (run by the worker while pruning) does not
    return until the test releases it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.left = threading.Event()

    def __str__(self) -> str:
        self.entered.set()
        self.release.wait(60.0)
        self.left.set()
        return "slow"


def returns(call: Any, timeout_s: float = 30.0) -> Any:
    """``call()``'s result, from another thread; fails if it has not returned by then."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert out, f"{call} did not return within {timeout_s} s"
    return out[0]


def test_a_worker_busy_in_application_code_at_the_deadline(intake: Intake) -> None:
    """The worker is stuck in application code (a value's __str__) at the deadline:
    stats() still answers, shutdown returns on time with every queued evaluation
    counted as worker_stalled (none pending, none "closed"), a caller's flush posts
    nothing after it, and the thread ends once the application code returns."""
    others = set(threading.enumerate())  # another suite's pipelines may share the process
    tel = Telemetry(agent_url=intake.url, service="t", flush_interval_s=60.0)
    slow = Slow()
    client = client_with(tel.hook)
    client.get_boolean_value("f", False, EvaluationContext("slow", {"v": slow}))
    assert slow.entered.wait(30.0)  # the worker is inside str(), until released
    for i in range(1000):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i}"))
    # While it is busy: stats() answers, from numbers that add up.
    busy = returns(tel.stats)
    assert not slow.left.is_set()  # answered while the worker was still in str()
    assert (busy.evaluations, busy.pending, busy.conserved) == (1001, 1001, True)
    # A caller's flush waits on the busy loop: it must not post after shutdown returns.
    flusher = threading.Thread(target=tel.flush, args=(10.0,), daemon=True)
    flusher.start()
    returns(lambda: tel.shutdown(1.0))
    assert not slow.left.is_set()  # it kept its deadline: the worker is still in str()
    for _ in range(3):
        after = tel.stats()  # the books are closed: the same answer, whatever the loop
        assert after.evaluations == 1001 and after.pending == 0
        assert after.dropped == {"worker_stalled": 1001} and after.conserved
    client.get_boolean_value("f", False)  # after shutdown: counted, as ever, "closed"
    slow.release.set()
    assert slow.left.wait(30.0)
    assert wait_until(lambda: not worker_threads(others))  # the thread ended after all
    flusher.join(30.0)
    assert intake.received == []  # nothing was posted, before or after shutdown returned
    final = tel.stats()
    assert final.dropped == {"worker_stalled": 1001, "closed": 1}
    assert final.evaluations == 1002 and final.pending == 0 and final.conserved


def test_a_dropped_pipeline_releases_its_thread_and_sockets(intake: Intake) -> None:
    """300 pipelines started and dropped without shutdown(): each one's thread does the
    final flush and ends, and no connection to the intake is left open."""
    gc.collect()
    threads_before = threading.active_count()
    client = client_with()
    for i in range(300):
        tel = Telemetry(agent_url=intake.url, service="t", flush_interval_s=60.0)
        client.add_hooks([tel.hook])
        client.get_boolean_value("f", False, EvaluationContext(f"dropped-{i}"))
        client.hooks.clear()
        del tel
    # Collected as an application's own allocations would have it: a gc.collect() made
    # while another thread's collection runs a finalizer is a no-op, so ask again.
    assert wait_until(
        lambda: gc.collect() >= 0 and threading.active_count() == threads_before, 20.0
    ), threading.active_count()
    gc.collect()
    assert intake.connections_from_here() == 0
    assert intake.evaluations() == 300  # and what each had counted was delivered


COLLECTED_WHILE_TRACKING = """
    import gc, os, sys
    import flageval, flageval._process as process

    gc.disable()
    tel = flageval.Telemetry(agent_url=os.environ["INTAKE_URL"], service="t")
    tel.start()
    del tel  # unreachable, in a cycle: only the collector releases it
    with process._lock:  # what track() holds while it allocates: the collector may run
        gc.collect()  # the release runs here, on this thread, and asks for the lock
    print("no deadlock")
"""


def test_a_pipeline_collected_while_another_is_tracked_does_not_deadlock(intake: Intake) -> None:
    """The collector may release a dropped pipeline on a thread that holds the
    registry's lock (while building another pipeline): the release does not ask for
    that lock again, so nothing deadlocks."""
    env = dict(os.environ, INTAKE_URL=intake.url)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COLLECTED_WHILE_TRACKING)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and "no deadlock" in done.stdout, done.stderr[-2000:]


def test_never_started_pipeline_counts_its_queue_as_never_started(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry(autostart=False)
    client = client_with(tel.hook)
    for i in range(100):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i}"))
    tel.at_exit()  # what the process's exit does
    assert tel._phase.value == "stopped"  # QUEUEING -> STOPPING -> STOPPED
    client.get_boolean_value("f", False)
    stats = tel.stats()
    assert stats.dropped == {"never_started": 100, "closed": 1}
    assert stats.evaluations == 101 and stats.pending == 0 and stats.conserved
    assert intake.received == []


TWO_PIPELINES = """
    import json, sys, time
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    from flageval import Telemetry

    class Hostile:
        def __str__(self):
            raise {exc}

    url = sys.argv[1]
    healthy = Telemetry(agent_url=url, service="healthy", flush_interval_s=60)
    # Built last, so shut down first at exit; it drains only then (an hour's interval).
    hostile = Telemetry(agent_url=url, service="hostile", flush_interval_s=60,
                        drain_interval_s=3600.0)
    api.set_provider_and_wait(InMemoryProvider({{"f": InMemoryFlag("on", {{"on": True}})}}))
    a, b = api.get_client("a"), api.get_client("b")
    a.add_hooks([healthy.hook])
    b.add_hooks([hostile.hook])
    for i in range(1000):
        a.get_boolean_value("f", False, EvaluationContext(f"h{{i}}"))
    hostile.start()
    b.get_boolean_value("f", False, EvaluationContext("x", {{"v": Hostile()}}))
    {direct}
    """


@pytest.mark.parametrize("exc", ["GeneratorExit", "KeyboardInterrupt", "SystemExit(3)"])
def test_one_pipelines_failure_never_stops_anothers_shutdown_at_exit(
    intake: Intake, exc: str
) -> None:
    done = run(TWO_PIPELINES.format(exc=exc, direct=""), intake.url)
    assert done.returncode == 0, done.stderr[-2000:]
    services = {r.json()["context"]["service"] for r in intake.accepted()}
    assert "healthy" in services
    healthy = [r for r in intake.accepted() if r.json()["context"]["service"] == "healthy"]
    assert sum(row["evaluation_count"] for r in healthy for row in r.json()["flagEvaluations"]) == (
        1000
    )


def test_shutdown_never_raises_what_application_code_raised_into_its_caller(
    intake: Intake,
) -> None:
    direct = textwrap.dedent(
        """
        hostile.shutdown(5.0)  # must return, not raise GeneratorExit here
        s = hostile.stats()
        print(json.dumps({"pending": s.pending, "conserved": s.conserved,
                          "evaluations": s.evaluations}))
        """
    ).replace("\n", "\n    ")
    done = run(TWO_PIPELINES.format(exc="GeneratorExit", direct=direct), intake.url)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"pending": 0, "conserved": True, "evaluations": 1}
