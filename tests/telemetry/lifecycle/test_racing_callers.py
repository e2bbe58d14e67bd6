"""Shutdown, stats() and flush() racing from other threads (and a signal handler):
nothing raises or deadlocks, nothing made before shutdown began is counted "closed",
each call keeps its own deadline, and the books always add up."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval._lifecycle import Phase
from tests.intake import Behaviour, Intake


def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    assert wait_until(predicate, timeout_s), "timed out"


def wait_until(predicate: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _client(tel: Any) -> Any:
    api.set_provider_and_wait(
        InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})})
    )
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def test_stats_during_shutdown_does_not_drop_evaluations_made_before_it(
    make_telemetry: Any, intake: Intake
) -> None:
    # The drain loop never runs on its own during the test (an hour's interval), so
    # evaluations stay in the hand-off until a flush drains them.
    tel = make_telemetry(drain_interval_s=3600.0)
    client = _client(tel)
    for _ in range(5):
        client.get_boolean_value("f", False)
    # The intake holds the first flush (and so the flush lock) until released below.
    intake.script(Behaviour(action="hold"))
    flusher = threading.Thread(target=tel.flush, args=(30.0,))
    flusher.start()
    # The first flush has drained the 5 and is posting them.
    assert intake.wait_for(lambda: len(intake.received) == 1)
    for _ in range(7):
        client.get_boolean_value("f", False)  # queued before shutdown begins
    stopper = threading.Thread(target=tel.shutdown, args=(30.0,))
    stopper.start()
    # Shutdown began (it then waits for the flush lock); the 7 are still queued.
    wait_for(lambda: tel._phase is Phase.STOPPING)
    during = tel.stats()  # a monitoring thread looks at the counters
    intake.release_held()
    flusher.join(30)
    stopper.join(30)
    assert not flusher.is_alive() and not stopper.is_alive()
    after = tel.stats()
    # All 12 were made before shutdown began: none of them is "closed".
    assert during.dropped.get("closed", 0) == 0, during
    assert after.dropped.get("closed", 0) == 0, after
    assert intake.evaluations() == 12
    assert after.evaluations_posted == 12 and after.conserved


def test_blocking_calls_from_the_workers_own_thread_refuse_before_closing_anything(
    make_telemetry: Any, intake: Intake
) -> None:
    # Application code the worker runs (a value's __str__) calling the blocking flush()
    # or shutdown() would wait for the very thread it runs on: it is refused, and that
    # mistake must not leave the pipeline half shut: a shutdown afterwards still drains
    # and posts what was counted.
    tel = make_telemetry()
    client = _client(tel)
    for _ in range(4):
        client.get_boolean_value("f", False)
    errors: list[str] = []

    async def on_the_workers_thread() -> None:
        for call in (tel.flush, tel.shutdown):
            try:
                call(5.0)
            except RuntimeError as exc:
                errors.append(str(exc))

    tel._thread.call(on_the_workers_thread(), 5.0)
    assert len(errors) == 2 and all("worker's own thread" in e for e in errors), errors
    assert tel._phase is Phase.RUNNING
    tel.shutdown(5.0)
    after = tel.stats()
    assert intake.evaluations() == 4, after
    assert after.evaluations_posted == 4 and after.pending == 0 and after.conserved


def test_a_worker_thread_that_cannot_start_closes_the_pipeline_once(
    make_telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    real_start = threading.Thread.start
    loops: list[asyncio.AbstractEventLoop] = []
    real_new_loop = asyncio.new_event_loop

    def start(self: threading.Thread) -> None:
        if self.name == "flageval-worker":
            raise RuntimeError("can't start new thread")  # as at a pids limit
        real_start(self)

    def new_loop() -> asyncio.AbstractEventLoop:
        loops.append(real_new_loop())
        return loops[-1]

    monkeypatch.setattr(threading.Thread, "start", start)
    monkeypatch.setattr(asyncio, "new_event_loop", new_loop)
    tel = make_telemetry()
    client = _client(tel)
    for _ in range(50):
        assert client.get_boolean_value("f", False) is True
    monkeypatch.undo()
    assert len(loops) == 1 and loops[0].is_closed()  # tried once, nothing left open
    started = time.monotonic()
    tel.shutdown(60.0)  # no error: there is no thread to join
    assert tel.flush(60.0) is True
    # Nothing to wait for: it ended at the start. Waiting for a worker that never ran
    # would take a deadline (60 s); a loaded machine does not turn these calls into 20.
    assert time.monotonic() - started < 20.0
    stats = tel.stats()
    assert stats.dropped == {"closed": 50} and stats.evaluations == 50 and stats.conserved


def test_flush_and_stats_racing_a_shutdown_return_and_do_not_raise(intake: Intake) -> None:
    """Three threads call flush() and stats() in a loop while another shuts the
    pipeline down, 25 times: nothing raises, a flush that says True left nothing
    pending, the books always add up, and every evaluation is delivered once."""
    from flageval import Telemetry

    failures: list[str] = []
    slowest = 0.0
    made = delivered = 0
    for round_no in range(25):
        tel = Telemetry(agent_url=intake.url, service="t", flush_interval_s=60.0)
        client = _client(tel)
        for _ in range(20):  # all made before the race: a True flush leaves none pending
            client.get_boolean_value("f", False)
        made += 20
        stop = threading.Event()
        calls = [0, 0, 0]  # per thread, calls that began after shutdown() returned
        shut = threading.Event()
        started_together = threading.Barrier(4)

        def hammer(
            i: int,
            tel: Any = tel,
            stop: threading.Event = stop,
            shut: threading.Event = shut,
            calls: list[int] = calls,
            barrier: threading.Barrier = started_together,
        ) -> None:
            nonlocal slowest
            barrier.wait(30.0)
            while not stop.is_set():
                after = shut.is_set()
                started = time.monotonic()
                try:
                    flushed = tel.flush(60.0)
                    stats = tel.stats()
                    assert stats.conserved, stats
                    assert not flushed or stats.pending == 0, stats
                except BaseException as exc:  # any escape is the bug
                    failures.append(repr(exc))
                    return
                slowest = max(slowest, time.monotonic() - started)
                calls[i] += after

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        started_together.wait(30.0)  # the three are calling when shutdown begins
        tel.shutdown(30.0)
        shut.set()
        # Each thread makes calls on the shut-down pipeline too, then they stop.
        assert wait_until(lambda calls=calls: min(calls) >= 1 or bool(failures))
        stop.set()
        for t in threads:
            t.join(30.0)
        assert not any(t.is_alive() for t in threads), round_no
        stats = tel.stats()
        assert stats.pending == 0 and stats.dropped == {} and stats.conserved, stats
        delivered += stats.evaluations_posted
    assert failures == []
    assert delivered == made == intake.evaluations()
    # A call submitted to a loop that a shutdown stopped returns at once, not after
    # waiting out its 60 s flush deadline; a loaded machine does not make it 20 s.
    assert slowest < 20.0


def test_shutdown_bounds_a_callers_longer_flush_and_still_does_its_final_count(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry(drain_interval_s=3600.0, request_timeout_s=60.0)
    client = _client(tel)
    for _ in range(5):
        client.get_boolean_value("f", False)
    intake.script(Behaviour(action="hang"))  # the intake never answers the caller's flush
    result: list[bool] = []
    flusher = threading.Thread(target=lambda: result.append(tel.flush(60.0)))
    flusher.start()
    assert intake.wait_for(lambda: len(intake.received) == 1)
    for _ in range(7):
        client.get_boolean_value("f", False)  # queued before shutdown begins
    started = time.monotonic()
    # 2.5 s: the worker keeps its full margin after its own deadline for the final
    # accounting (flageval/_telemetry.py), which a loaded machine needs.
    tel.shutdown(2.5)
    # Its own deadline, not the flush's 60 s: a loaded machine does not make 2.5 s 20.
    assert time.monotonic() - started < 20.0
    flusher.join(30.0)
    assert result == [False]  # cut short by the shutdown
    stats = tel.stats()
    # The caller's body may have reached the intake: unknown. The 7 were made before
    # shutdown began, so they are not "closed": the deadline left them undelivered.
    assert stats.dropped == {"delivery_unknown": 5, "intake_unavailable": 7}, stats
    assert stats.pending == 0 and stats.conserved
    assert tel._worker.sender._session is None  # the session was closed


def test_building_many_pipelines_does_not_grow_the_process_hooks(intake: Intake) -> None:
    import atexit
    import gc
    import weakref

    from flageval import Telemetry

    Telemetry(agent_url=intake.url, service="t")  # the process hooks exist from here
    before = atexit._ncallbacks()
    refs = []
    for _ in range(200):
        tel = Telemetry(agent_url=intake.url, service="t")
        refs.append(weakref.ref(tel))
        del tel
    gc.collect()
    assert atexit._ncallbacks() == before  # one set of process hooks, not one per pipeline
    assert all(ref() is None for ref in refs)  # and the hooks keep none of them alive


async def test_aflush_and_ashutdown_from_an_app_loop_use_the_workers_own_thread(
    make_telemetry: Any, intake: Intake
) -> None:
    # The default mode (own thread) in an asyncio app: the natural async calls.
    tel = make_telemetry()
    client = _client(tel)
    for _ in range(3):
        await client.get_boolean_value_async("f", False)
    assert await tel.flush_async(5.0) is True
    assert intake.evaluations() == 3
    # The session (and so every post) belongs to the worker's loop, not to this one.
    session = tel._worker.sender._session
    assert session is not None and session._loop is tel._thread._loop
    for _ in range(2):
        await client.get_boolean_value_async("f", False)
    await tel.shutdown_async(5.0)
    assert not tel._thread.alive  # really shut down: no second call needed
    stats = tel.stats()
    assert intake.evaluations() == 5
    assert stats.evaluations_posted == 5 and stats.pending == 0 and stats.conserved


def test_shutdown_from_a_signal_handler_during_the_first_start_does_not_deadlock(
    intake: Intake,
) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import json, os, signal, time
        import flageval, flageval._worker as tm
        from openfeature import api
        from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

        real_init = tm.Worker.__init__

        def interrupted_init(self, *args, **kwargs):
            # The signal arrives while the first start holds the start lock; its
            # handler runs right here, on this thread, before the start goes on.
            signal.raise_signal(signal.SIGALRM)
            real_init(self, *args, **kwargs)

        tm.Worker.__init__ = interrupted_init
        tel = flageval.Telemetry(agent_url=os.environ["INTAKE_URL"], service="t")
        signal.signal(signal.SIGALRM, lambda *a: tel.shutdown(5.0))  # as on SIGTERM
        api.set_provider_and_wait(
            InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})}))
        client = api.get_client()
        client.add_hooks([tel.hook])
        client.get_boolean_value("f", False)
        s = tel.stats()
        print(json.dumps({"dropped": s.dropped, "evaluations": s.evaluations,
                          "conserved": s.conserved, "alive": tel._thread.alive}))
        """
    )
    env = dict(os.environ, INTAKE_URL=intake.url)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The shutdown ran once the interrupted start let the lock go: the worker stopped,
    # and the evaluation that started it came after the shutdown: "closed".
    assert result == {
        "dropped": {"closed": 1},
        "evaluations": 1,
        "conserved": True,
        "alive": False,
    }
