"""Under sustained load every flush interval posts, a worker that cannot keep up says so
in its own words, and shutdown under load ends on time with honest books.

Two shapes of load, one application thread each, against a real intake on 127.0.0.1:

* a worker that cannot keep up: each context carries a value the worker takes 0.3 ms
  to print, so it aggregates at most ~3,000 evaluations/s while the thread could make
  several times that (the same holds for any context the worker aggregates slower than
  the application evaluates: wide ones on a slow machine); the hand-off stays past half
  full, where the thread yields to the worker;
* wide contexts the worker can keep up with: 64 distinct attributes per evaluation, for
  10 s, flushed every second.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryProvider

import flageval
from flageval._lifecycle import Phase
from tests.intake import Intake
from tests.telemetry.reliability.helpers import FLAG, assert_conserved, client_with, flags, record

pytestmark = pytest.mark.reliability

#: What printing one ``Costly`` value costs the worker.
COST_S = 0.0003
KEEP_UP = re.compile(r"the worker cannot keep up: (\d+) evaluations/s arriving, (\d+)/s aggregated")


class Costly:
    """A context value whose text takes the worker ``COST_S`` to make."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __str__(self) -> str:
        end = time.perf_counter() + COST_S
        while time.perf_counter() < end:
            pass
        return f"costly-{self.n}"


class Load:
    """One thread evaluating ``make_context(i)`` through ``client`` until stopped."""

    def __init__(self, client: Any, make_context: Callable[[int], EvaluationContext]) -> None:
        self.client = client
        self.make_context = make_context
        self.made = 0
        self.started = self.ended = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        get = self.client.get_boolean_value
        make = self.make_context
        i = 0
        while not self._stop.is_set():
            get(FLAG, False, make(i))
            i += 1
        self.made = i

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.monotonic()
        self._stop.set()
        self._thread.join(30.0)
        assert not self._thread.is_alive()


@pytest.mark.parametrize("way_in", ["hook", "wrapper"])
def test_a_worker_that_cannot_keep_up_posts_every_interval_and_stops_on_time(
    way_in: str, make_telemetry: Any, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    """Flushes post while the hand-off stays past half full (before: a flush drained for
    as long as the producers kept it fed, and never reached its post), the worker says
    it cannot keep up, with the rates, blaming no application code; a shutdown made while the
    load goes on ends with the worker done (not halted): what it aggregated is posted,
    what it could not reach in the time it had is counted `worker_stalled`, later
    evaluations `closed`, and no healthy post is lost (`delivery_unknown`)."""
    intake.validate = False
    tel = make_telemetry(flush_interval_s=0.5, queue_size=16_384)
    if way_in == "hook":
        client = client_with(tel)
    else:
        api.set_provider_and_wait(flageval.instrument(InMemoryProvider(flags()), tel))
        client = api.get_client()

    def context(i: int) -> EvaluationContext:
        return EvaluationContext(f"user-{i}", {"n": i, "costly": Costly(i)})

    with caplog.at_level(logging.WARNING, logger="flageval"), Load(client, context) as load:
        # Three posts while the thread evaluates flat out (none came before), and the
        # worker's word that it cannot keep up (once the hand-off stayed past half full
        # between two flushes: how soon depends on how fast the thread fills it).
        def posted_and_said() -> bool:
            said = any(KEEP_UP.search(r.getMessage()) for r in list(caplog.records))
            return said and len(intake.accepted()) >= 3

        assert intake.wait_for(posted_and_said, 30.0), tel.stats()
        posts_during = len(intake.accepted())
        queued_at_shutdown = len(tel.handoff.queue)
        tel.shutdown(3.0)
    assert tel._phase is Phase.STOPPED
    st = assert_conserved(tel, intake, load.made)
    assert st.evaluations_posted > 0
    assert set(st.dropped) <= {"queue_overflow", "worker_stalled", "closed"}, st.dropped
    assert st.dropped.get("closed", 0) > 0  # the load went on past the shutdown
    said = [r.getMessage() for r in caplog.records if r.name == "flageval"]
    assert not [line for line in said if "__str__" in line or "application" in line], said
    # Past half full the thread yields to the worker, which holds the hand-off near half
    # (what overflows is counted): either way the worker says it cannot keep up.
    assert [line for line in said if KEEP_UP.search(line)], said
    record(
        f"cannot_keep_up_{way_in}",
        made=load.made,
        posts_during_load=posts_during,
        queued_at_shutdown=queued_at_shutdown,
        posted=st.evaluations_posted,
        dropped=dict(st.dropped),
        said=[line for line in said if KEEP_UP.search(line)][:2],
    )


def test_rows_reach_the_intake_every_interval_during_ten_seconds_of_wide_contexts(
    make_telemetry: Any, intake: Intake
) -> None:
    """One thread evaluates distinct 64-attribute contexts for 10 s with a 1 s flush:
    every flush made while the load lasts reaches the intake while it lasts (but the
    one in flight at its end), and the books balance exactly once it is over. (How many
    flushes fit in 10 s is not pinned: each posts about 10 MB of rows, and a flush that
    takes longer than its interval is followed by the next at once.)"""
    intake.validate = False
    tel = make_telemetry(flush_interval_s=1.0)
    client = client_with(tel)

    def context(i: int) -> EvaluationContext:
        return EvaluationContext(f"user-{i}", {f"attr{k:02d}": f"value-{i}-{k}" for k in range(64)})

    with Load(client, context) as load:
        time.sleep(10.0)  # the load's length, not a barrier: nothing waits on it
        made_flushes = tel.stats().flushes  # flushes that packed rows by then
    tel.shutdown(10.0)
    # Each body parsed once (about 150 MB of rows in all): the books, and what came
    # while the load lasted (a row's ``timestamp`` is its flush's time).
    posts = accepted = 0
    during: set[int] = set()
    for r in intake.accepted():
        rows = r.json()["flagEvaluations"]
        accepted += sum(row["evaluation_count"] for row in rows)
        if load.started < r.at <= load.ended:
            posts += 1
            during.update(row["timestamp"] for row in rows)
    flushes = len(during)
    st = tel.stats()
    assert st.pending == 0 and st.conserved, st
    assert st.evaluations == load.made == accepted + sum(st.dropped.values()), (st, load.made)
    assert st.evaluations_posted == accepted, (st, accepted)
    record(
        "wide_contexts_10s",
        made=load.made,
        posts_during_load=posts,
        flushes_posted_during_load=flushes,
        flushes_made_during_load=made_flushes,
        flushes=st.flushes,
        dropped=dict(st.dropped),
    )
    # Every flush made during the load posted during it, but the one in flight at its
    # end (before: flushes that never reached a post).
    assert flushes >= max(2, made_flushes - 1), (posts, flushes, made_flushes, st)
    assert set(st.dropped) <= {"queue_overflow"}, st.dropped


def test_past_half_full_each_hooked_evaluation_gives_the_gil_up_once(
    make_telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many threads evaluating through the hook outpace the worker's share of the GIL
    (about 1/9 with eight); past half a full hand-off each evaluation then yields the
    GIL once to let it aggregate, and never waits; below half, none does."""
    import flageval._hook as hook_module

    yields: list[float] = []
    monkeypatch.setattr(hook_module.time, "sleep", yields.append)
    tel = make_telemetry(autostart=False, queue_size=8)  # no worker: the queue only fills
    client = client_with(tel)
    for i in range(10):
        assert client.get_boolean_value(FLAG, False, EvaluationContext(f"user-{i}")) is True
    assert len(tel.handoff.queue) == 8
    assert yields == [0, 0, 0]  # the appends made at depths 5, 6 and 7 (half is 4)
    assert tel.stats().dropped == {"queue_overflow": 2}
