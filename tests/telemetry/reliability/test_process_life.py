"""Process life: fork as a pre-fork server does, plain exit, SIGTERM, shutdown with the
intake down, evaluations after shutdown. Forking and exiting run in child Python
processes (scripts given with -c) so pytest's own process stays clean."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext

from tests.intake import Intake
from tests.telemetry.reliability.helpers import FLAG, client_with, free_port, record

pytestmark = pytest.mark.reliability

PRELUDE = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    from flageval import Telemetry

    tel = Telemetry(agent_url=os.environ["INTAKE_URL"], service="rel-proc",
                    flush_interval_s=60.0, shutdown_timeout_s=5.0)
    api.set_provider_and_wait(
        InMemoryProvider({"rel-flag": InMemoryFlag("on", {"on": True, "off": False})}))
    client = api.get_client()
    client.add_hooks([tel.hook])

    def ev(tag, n):
        for i in range(n):
            client.get_boolean_value("rel-flag", False, EvaluationContext(f"{tag}-{i}", {}))
    """
)


def _env(intake: Intake) -> dict[str, str]:
    env = dict(os.environ)
    env["INTAKE_URL"] = intake.url
    env.pop("DD_FLAGGING_EVALUATION_COUNTS_ENABLED", None)
    return env


def _run(intake: Intake, body: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        env=_env(intake),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _keys(intake: Intake) -> Counter[str]:
    return Counter(row["targeting_key"] for row in intake.rows())


def test_plain_script_exit_delivers_via_atexit(intake: Intake) -> None:
    proc = _run(intake, 'ev("exit", 100)\n')  # no flush, no shutdown: just the end
    assert proc.returncode == 0, proc.stderr
    assert _keys(intake) == Counter({f"exit-{i}": 1 for i in range(100)})


def test_sigterm_with_systemexit_handler_delivers(intake: Intake) -> None:
    script = PRELUDE + textwrap.dedent(
        """
        import signal
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        ev("term", 100)
        print("ready", flush=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            time.sleep(0.05)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=_env(intake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)  # bounded wait
        assert ready, "the child never got ready"
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert _keys(intake) == Counter({f"term-{i}": 1 for i in range(100)})


def test_fork_parent_keeps_counting_child_starts_its_own_worker(intake: Intake) -> None:
    """Pre-fork style: the parent evaluated (some aggregated, the latest most likely
    still queued) when it forks. The child starts with no worker and no inherited
    thread, starts its own on its first evaluation, and sends only its own counts; the
    parent sends what it had plus what it counts after the fork. No count is posted by
    both."""
    proc = _run(
        intake,
        """
        ev("before", 50)
        end = time.monotonic() + 30
        while tel.handoff.queue and time.monotonic() < end:
            time.sleep(0.01)     # drained into the parent's tiers
        assert not tel.handoff.queue
        ev("queued", 30)         # most likely still in the parent's hand-off at fork time
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            info = {"worker_at_fork": tel._worker is not None,
                    "threads_at_fork": threading.active_count()}
            ev("child", 40)
            info["worker_after"] = tel._worker is not None
            tel.shutdown(5.0)
            st = tel.stats()
            info.update(evaluations=st.evaluations, posted=st.evaluations_posted,
                        dropped=dict(st.dropped), pending=st.pending)
            print("CHILD " + json.dumps(info), flush=True)
            sys.exit(0)   # atexit runs in the child: the pipeline is already shut down
        ev("after", 60)
        _, status = os.waitpid(pid, 0)
        tel.shutdown(5.0)
        st = tel.stats()
        print("PARENT " + json.dumps({"status": status, "evaluations": st.evaluations,
              "posted": st.evaluations_posted, "dropped": dict(st.dropped),
              "pending": st.pending}), flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    child, parent = json.loads(lines["CHILD"]), json.loads(lines["PARENT"])
    assert child["worker_at_fork"] is False and child["threads_at_fork"] == 1
    assert child["worker_after"] is True
    assert child == child | {"evaluations": 40, "posted": 40, "dropped": {}, "pending": 0}
    assert parent == {"status": 0, "evaluations": 140, "posted": 140, "dropped": {}, "pending": 0}
    expected = Counter(
        {
            f"{tag}-{i}": 1
            for tag, n in (("before", 50), ("queued", 30), ("after", 60), ("child", 40))
            for i in range(n)
        }
    )
    assert _keys(intake) == expected  # each exactly once: no count posted by both
    record("fork", made=180, delivered=sum(_keys(intake).values()), dropped={})


def test_shutdown_with_intake_down_keeps_deadline_and_counts(make_telemetry: Any) -> None:
    tel = make_telemetry(
        agent_url=f"http://127.0.0.1:{free_port()}", max_retries=10, retry_backoff_s=0.3
    )
    client = client_with(tel)
    for i in range(100):
        client.get_boolean_value(FLAG, False, EvaluationContext(f"d{i}", {}))
    t0 = time.monotonic()
    # 2.5 s: the worker keeps its full margin after its own deadline for the final
    # accounting (flageval/_telemetry.py), which a loaded machine needs.
    tel.shutdown(2.5)
    took = time.monotonic() - t0
    # Ten retries backing off from 0.3 s, doubling, would take minutes; a loaded
    # machine does not turn the 2.5 s deadline into 20.
    assert took < 20.0, took
    st = tel.stats()
    assert st.pending == 0 and st.evaluations == 100
    assert st.dropped == {"intake_unavailable": 100}
    assert st.post_attempts >= 2  # it did retry within the deadline
    record(
        "shutdown_intake_down",
        made=100,
        delivered=0,
        dropped=dict(st.dropped),
        shutdown_s=round(took, 3),
    )


def test_evaluations_after_shutdown_are_closed_without_a_warning_storm(
    make_telemetry: Any, intake: Intake, caplog: Any
) -> None:
    tel = make_telemetry()
    client = client_with(tel)
    for i in range(10):
        client.get_boolean_value(FLAG, False, EvaluationContext(f"open-{i}", {}))
    tel.shutdown(2.0)
    caplog.clear()
    caplog.set_level(logging.DEBUG)  # every logger, every level
    for i in range(10_000):
        assert client.get_boolean_value(FLAG, False, EvaluationContext(f"late-{i}", {})) is True
    st = tel.stats()
    assert st.dropped == {"closed": 10_000}
    assert st.evaluations == 10_010 and st.evaluations_posted == 10 and st.pending == 0
    assert len(caplog.records) <= 1, [r.getMessage() for r in caplog.records[:5]]
    assert intake.evaluations() == 10


def _signalled(
    intake: Intake, body: str, sig: int, then: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + ``body`` (which prints "ready" then waits), send ``sig``, then
    write ``then`` to its standard input."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        env=_env(intake),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)  # bounded wait
        assert ready, "the child never got ready"
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        out, err = proc.communicate(then, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


WAIT = """
print("ready", flush=True)
end = time.monotonic() + 30
while time.monotonic() < end:
    time.sleep(0.05)
print("timed out", flush=True)
"""


def test_plain_script_killed_by_sigterm_delivers_then_dies_of_it(intake: Intake) -> None:
    """No handler of the application's: SIGTERM's default action ended the process at
    once and every count was lost. Our handler delivers, then the process still dies
    of the signal (exit status -15, as without us)."""
    done = _signalled(intake, 'ev("killed", 700)\n' + WAIT, signal.SIGTERM)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert _keys(intake) == Counter({f"killed-{i}": 1 for i in range(700)})


def test_an_ignored_sigterm_stays_ignored_and_asyncio_keeps_its_sigint(intake: Intake) -> None:
    body = """
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tel2 = Telemetry(agent_url=os.environ["INTAKE_URL"], service="rel-proc")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ev("ignored", 30)
    print("ready", flush=True)
    sys.stdin.readline()  # sent once the SIGTERM was: an ignored signal is discarded
    print("alive", flush=True)
    """
    done = _signalled(intake, body, signal.SIGTERM, then="go\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alive"
    assert _keys(intake) == Counter({f"ignored-{i}": 1 for i in range(30)})  # atexit
