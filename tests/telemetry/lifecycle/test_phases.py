"""A pipeline's life is one phase: every transition the table allows is taken, every
other is refused and changes nothing, the hand-off accepts exactly in the accepting
phases, a forked child starts in the phase its parent's maps to, and each transition
happens through the public API where it should (first evaluation, start(), shutdown,
a failed start, a deadline, a failed final drain, the process ending), with shutdown's
warning saying what happened in its own words."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from flageval._handoff import Handoff
from flageval._lifecycle import TRANSITIONS, Lifecycle, Phase
from flageval._losses import Dropped
from tests.intake import Behaviour, Intake

REPO = Path(__file__).resolve().parents[2]
P = Phase

#: The table, written out by hand: (from, to) pairs that may be taken.
ALLOWED = {
    (P.IDLE, P.RUNNING),
    (P.IDLE, P.FAILED),
    (P.IDLE, P.STOPPING),
    (P.QUEUEING, P.RUNNING),
    (P.QUEUEING, P.FAILED),
    (P.QUEUEING, P.STOPPING),
    (P.RUNNING, P.STOPPING),
    (P.STOPPING, P.STOPPED),
    (P.STOPPING, P.HALTED),
}
ACCEPTING = {P.QUEUEING, P.RUNNING}
FINAL = {P.DISABLED, P.STOPPED, P.HALTED, P.FAILED}
CHILD_OF = {
    P.DISABLED: P.DISABLED,
    P.IDLE: P.IDLE,
    P.QUEUEING: P.QUEUEING,
    P.RUNNING: P.IDLE,
    P.STOPPING: P.STOPPED,
    P.STOPPED: P.STOPPED,
    P.HALTED: P.STOPPED,
    P.FAILED: P.STOPPED,
}


def test_the_table_is_the_one_written_down() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert {p for p in Phase if p.accepting} == ACCEPTING
    assert {p for p in Phase if p.final} == FINAL


@pytest.mark.parametrize("start", list(Phase), ids=lambda p: p.name)
def test_every_move_is_taken_if_allowed_else_refused_with_no_effect(start: Phase) -> None:
    for to in Phase:
        h = Handoff(10)
        life = Lifecycle(h, start)
        assert h.accepting is (start in ACCEPTING)
        moved = life.move(to)
        assert moved is ((start, to) in ALLOWED), (start, to)
        now = to if moved else start
        assert life.phase is now
        assert h.accepting is (now in ACCEPTING)
        assert life.wait_final(0.0) is (now in FINAL)


def test_stopped_and_halted_race_and_the_first_one_wins() -> None:
    for first, second in ((P.STOPPED, P.HALTED), (P.HALTED, P.STOPPED)):
        life = Lifecycle(Handoff(1), P.RUNNING)
        assert life.move(P.STOPPING)
        assert life.move(first) and not life.move(second)
        assert life.phase is first


def test_the_stopper_never_waits_for_itself_and_others_wait_for_the_end() -> None:
    life = Lifecycle(Handoff(1), P.RUNNING)
    assert life.move(P.STOPPING)
    assert life.wait_final(5.0) is False  # the stopper's own thread: at once
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(life.wait_final(10.0)))
    waiter.start()
    assert life.move(P.STOPPED)
    waiter.join(10.0)
    assert seen == [True]


@pytest.mark.parametrize("parent", list(Phase), ids=lambda p: p.name)
def test_a_forked_child_starts_clean_in_the_phase_its_parents_maps_to(parent: Phase) -> None:
    h = Handoff(10, accepting=True)
    h.queue.append(("the parent's",))  # type: ignore[arg-type]
    h.count(Dropped.QUEUE_OVERFLOW, 2)
    life = Lifecycle(h, parent)
    lock = life.lock
    life.after_fork()
    child = CHILD_OF[parent]
    assert life.phase is child
    assert not h.queue and h.counts() == {}  # the parent's to send and to count
    assert h.accepting is (child in ACCEPTING)
    assert life.lock is not lock and life.stopper is None
    assert life.wait_final(0.0) is (child in FINAL)


# -- through the public API ----------------------------------------------------------------


def client_with(tel: Telemetry) -> OpenFeatureClient:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def evaluate(client: OpenFeatureClient, n: int) -> None:
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i}"))


def test_disabled_stays_disabled(monkeypatch: pytest.MonkeyPatch, intake: Intake) -> None:
    monkeypatch.setenv("DD_FLAGGING_EVALUATION_COUNTS_ENABLED", "false")
    tel = Telemetry(agent_url=intake.url)
    evaluate(client_with(tel), 2)
    tel.start()
    tel.shutdown(1.0)
    assert tel._phase is P.DISABLED and tel.handoff is None and tel._thread is None
    assert tel.stats().evaluations == 0 and intake.received == []


def test_idle_runs_on_first_evaluation_then_stops(make_telemetry: Any, intake: Intake) -> None:
    tel = make_telemetry()
    assert tel._phase is P.IDLE and not tel.handoff.accepting
    client = client_with(tel)
    evaluate(client, 3)
    assert tel._phase is P.RUNNING and tel.running
    intake.set_default(Behaviour(delay_s=0.5))  # the final flush takes a while
    stopper = threading.Thread(target=tel.shutdown, args=(10.0,))
    stopper.start()
    assert intake.wait_for(lambda: len(intake.received) == 1, 5.0)
    assert tel._phase is P.STOPPING  # the final flush is under way
    evaluate(client, 1)  # not accepted any more
    stopper.join(10.0)
    assert tel._phase is P.STOPPED
    stats = tel.stats()
    assert stats.evaluations_posted == 3 and stats.dropped == {"closed": 1} and stats.conserved


def test_idle_stops_with_nothing_to_deliver_and_never_starts_again(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry()
    tel.shutdown(1.0)
    assert tel._phase is P.STOPPED and tel._thread is None
    evaluate(client_with(tel), 2)
    assert tel._thread is None  # nothing started it
    with pytest.raises(RuntimeError, match="stopped"):
        tel.start()
    stats = tel.stats()
    assert stats.evaluations == 2 and stats.dropped == {"closed": 2} and stats.conserved
    assert intake.received == []


def test_queueing_runs_on_start(make_telemetry: Any, intake: Intake) -> None:
    tel = make_telemetry(autostart=False)
    client = client_with(tel)
    evaluate(client, 4)
    assert tel._phase is P.QUEUEING and len(tel.handoff.queue) == 4
    tel.start()
    assert tel._phase is P.RUNNING
    assert tel.flush(10.0) and intake.evaluations() == 4


def test_queueing_fails_when_its_worker_cannot_start(
    make_telemetry: Any, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flageval._worker as worker_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no resources")

    tel = make_telemetry(autostart=False)
    client = client_with(tel)
    evaluate(client, 3)
    monkeypatch.setattr(worker_module, "Worker", broken)
    tel.start()  # logged, not raised
    assert tel._phase is P.FAILED and not tel.handoff.accepting
    evaluate(client, 2)
    with pytest.raises(RuntimeError, match="failed"):
        tel.start()
    assert tel.flush(1.0) is True  # nothing left to settle
    stats = tel.stats()
    assert stats.dropped == {"never_started": 3, "closed": 2} and stats.conserved


def test_a_worker_failing_in_its_final_drain_halts_the_pipeline_and_says_so(
    make_telemetry: Any, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    tel = make_telemetry()
    client = client_with(tel)
    evaluate(client, 5)
    assert tel.flush(5.0)
    evaluate(client, 3)  # aggregated, then the final drain fails before posting them
    tel._worker.tiers.take = _raise_generator_exit  # anything escaping the final drain
    with caplog.at_level(logging.WARNING, logger="flageval"):
        tel.shutdown(5.0)
    assert tel._phase is P.HALTED
    stats = tel.stats()
    assert stats.dropped == {"worker_error": 3} and stats.evaluations_posted == 5
    assert stats.pending == 0 and stats.conserved
    said = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert said == [
        "the worker failed during shutdown (above); 3 evaluations not "
        "delivered, counted as worker_error"
    ]


def _raise_generator_exit() -> Any:
    raise GeneratorExit


def test_no_time_given_halts_and_says_so_without_blaming_application_code(
    make_telemetry: Any, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    tel = make_telemetry()
    client = client_with(tel)
    evaluate(client, 7)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        tel.shutdown(0)
    assert tel._phase is P.HALTED
    stats = tel.stats()
    assert stats.dropped == {"worker_stalled": 7} and stats.pending == 0 and stats.conserved
    said = [r.getMessage() for r in caplog.records if r.name == "flageval"]
    assert said == [
        "shutdown was given no time (timeout 0); 7 evaluations not delivered, counted as "
        "worker_stalled"
    ]


def test_a_busy_worker_at_the_deadline_is_said_to_be_at_work_not_blamed(
    make_telemetry: Any, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    class Busy:  # holds the worker, as a long backlog would, until the test lets it go
        def __str__(self) -> str:
            entered.set()
            release.wait(30.0)
            return "busy"

    tel = make_telemetry()
    client = client_with(tel)
    client.get_boolean_value("f", False, EvaluationContext("b", {"v": Busy()}))
    assert entered.wait(5.0)
    try:
        with caplog.at_level(logging.WARNING, logger="flageval"):
            tel.shutdown(0.3)
    finally:
        release.set()
    assert tel._phase is P.HALTED
    said = [r.getMessage() for r in caplog.records if r.name == "flageval"]
    assert (
        "the worker was still at work when shutdown's deadline (0.3 s) came; 1 evaluations "
        "not delivered, counted as worker_stalled"
    ) in said
    assert not [line for line in said if "__str__" in line or "application" in line], said
    assert tel.stats().dropped == {"worker_stalled": 1}


FORKED = """
    import json, os, sys
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    from flageval import Telemetry

    url = sys.argv[1]
    running = Telemetry(agent_url=url, service="running", flush_interval_s=60)
    queueing = Telemetry(agent_url=url, service="queueing", flush_interval_s=60,
                         autostart=False)
    stopped = Telemetry(agent_url=url, service="stopped", flush_interval_s=60)
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    clients = {}
    for tel in (running, queueing, stopped):
        clients[tel] = api.get_client(tel.settings.service)
        clients[tel].add_hooks([tel.hook])
        clients[tel].get_boolean_value("f", False, EvaluationContext("parent"))
    stopped.shutdown(5.0)
    pid = os.fork()
    if pid == 0:
        seen = {t.settings.service: t._phase.value for t in clients}
        for tel, client in clients.items():
            client.get_boolean_value("f", False, EvaluationContext("child"))
        queueing.start()
        out = {"at_fork": seen}
        for tel in clients:
            tel.shutdown(5.0)
            s = tel.stats()
            out[tel.settings.service] = [s.evaluations, s.evaluations_posted, dict(s.dropped)]
        print(json.dumps(out), flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    out = {"status": status}
    for tel in clients:
        tel.shutdown(5.0)
        s = tel.stats()
        out[tel.settings.service] = [s.evaluations, s.evaluations_posted, dict(s.dropped)]
    print(json.dumps(out))
    """


def test_a_forked_child_of_running_queueing_and_stopped_pipelines(intake: Intake) -> None:
    done = _run(FORKED, intake.url)
    child, parent = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert parent == {  # the parent's own, whatever the child did
        "status": 0,
        "running": [1, 1, {}],
        "queueing": [1, 0, {"never_started": 1}],  # its worker was never started here
        "stopped": [1, 1, {}],
    }
    assert child["at_fork"] == {"running": "idle", "queueing": "queueing", "stopped": "stopped"}
    assert child["running"] == [1, 1, {}]  # its own, on a worker of its own
    assert child["queueing"] == [1, 1, {}]
    assert child["stopped"] == [1, 0, {"closed": 1}]
    by_key: dict[tuple[str, str], int] = {}
    for body in intake.accepted():
        doc = body.json()
        for row in doc["flagEvaluations"]:
            key = (doc["context"]["service"], row["targeting_key"])
            by_key[key] = by_key.get(key, 0) + row["evaluation_count"]
    assert by_key == {
        ("running", "parent"): 1,
        ("stopped", "parent"): 1,
        ("running", "child"): 1,
        ("queueing", "child"): 1,
    }


ENDING = """
    import os, sys
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    from flageval import Telemetry, _process

    tel = Telemetry(agent_url=sys.argv[1], service="ending", flush_interval_s=60)
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    for i in range(250):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i}"))
    _process.ending()  # what a pool child's last hook calls: atexit never runs here
    _process.ending()  # idempotent
    print(tel._phase.value, flush=True)
    os._exit(0)
    """


def test_the_process_ending_delivers_before_os_exit(intake: Intake) -> None:
    done = _run(ENDING, intake.url)
    assert done.stdout.split() == ["stopped"]
    assert intake.evaluations() == 250


def _run(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
