"""Many producers at once (threads, tasks, both): every evaluation is accounted for.

Each producer tags its context with its own id, so the intake's rows say exactly which
producer made which evaluation; the expected counts are computed from the same inputs
by plain Python, not by the library.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from tests.intake import Intake

MakeTelemetry = Callable[..., Telemetry]
Key = tuple[str, int, str, str]  # (producer kind, producer id, flag, variant)

FLAG_NAMES = ("f-color", "f-beta", "f-static")
USERS = 11


def variant_for(flag: str, user: int) -> str:
    """The variant each flag serves a user: what the provider below implements."""
    if flag == "f-color":
        return ("red", "green", "blue")[user % 3]
    if flag == "f-beta":
        return "on" if user % 2 == 0 else "off"
    return "only"


def inputs(producer: int, i: int) -> tuple[str, int]:
    """The (flag, user) of a producer's i-th evaluation."""
    return FLAG_NAMES[(producer + i) % len(FLAG_NAMES)], (i * 7 + producer) % USERS


def expected(kind: str, producers: int, per_producer: int) -> Counter[Key]:
    out: Counter[Key] = Counter()
    for p in range(producers):
        for i in range(per_producer):
            flag, user = inputs(p, i)
            out[(kind, p, flag, variant_for(flag, user))] += 1
    return out


def by_context(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    user = int(str(ctx.targeting_key).split("-")[1])
    variant = variant_for(flag.default_variant, user)
    return FlagResolutionDetails(value=True, variant=variant)


def make_client(tel: Telemetry) -> OpenFeatureClient:
    # default_variant carries the flag's name to the shared evaluator.
    flags = {
        name: InMemoryFlag(name, {name: True}, context_evaluator=by_context) for name in FLAG_NAMES
    }
    api.set_provider_and_wait(InMemoryProvider(flags))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def contexts(kind: str, producer: int) -> list[EvaluationContext]:
    return [EvaluationContext(f"user-{u}", {kind: producer}) for u in range(USERS)]


def run_threads(client: OpenFeatureClient, threads: int, per_thread: int) -> None:
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            ctxs = contexts("thread", t)
            start.wait(30.0)
            for i in range(per_thread):
                flag, user = inputs(t, i)
                client.get_boolean_value(flag, False, ctxs[user])
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,), name=f"producer-{t}") for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(60.0)
    assert not any(th.is_alive() for th in pool)
    assert not errors, errors


async def run_tasks(client: OpenFeatureClient, tasks: int, per_task: int) -> None:
    async def work(k: int) -> None:
        ctxs = contexts("task", k)
        for i in range(per_task):
            flag, user = inputs(k, i)
            await client.get_boolean_value_async(flag, False, ctxs[user])
            if i % 10 == 9:
                await asyncio.sleep(0)  # interleave the tasks on the loop

    await asyncio.wait_for(asyncio.gather(*(work(k) for k in range(tasks))), 60.0)


def received(intake: Intake) -> Counter[Key]:
    out: Counter[Key] = Counter()
    for row in intake.rows():
        ((kind, producer),) = row["context"]["evaluation"].items()
        out[(kind, producer, row["flag"]["key"], row["variant"]["key"])] += row["evaluation_count"]
    return out


def assert_exact(tel: Telemetry, intake: Intake, want: Counter[Key]) -> None:
    made = sum(want.values())
    stats = tel.stats()
    assert stats.dropped == {} and stats.degraded == {}
    assert stats.evaluations == made
    assert stats.evaluations_posted == made
    assert stats.pending == 0
    assert stats.conserved
    assert intake.evaluations() == made
    assert received(intake) == want


def test_sync_from_8_threads(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    threads, per_thread = 8, 5_000
    tel = make_telemetry(queue_size=threads * per_thread + 1)  # overflow impossible
    client = make_client(tel)
    run_threads(client, threads, per_thread)
    assert tel.flush(30.0)
    assert_exact(tel, intake, expected("thread", threads, per_thread))


async def test_async_from_200_tasks(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tasks, per_task = 200, 100
    tel = make_telemetry(queue_size=tasks * per_task + 1)
    client = make_client(tel)
    await run_tasks(client, tasks, per_task)
    assert await asyncio.to_thread(tel.flush, 30.0)
    assert_exact(tel, intake, expected("task", tasks, per_task))


async def test_threads_and_tasks_at_once(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    threads, per_thread, tasks, per_task = 8, 2_500, 200, 50
    tel = make_telemetry(queue_size=threads * per_thread + tasks * per_task + 1)
    client = make_client(tel)
    producers = asyncio.create_task(asyncio.to_thread(run_threads, client, threads, per_thread))
    await run_tasks(client, tasks, per_task)
    await asyncio.wait_for(producers, 60.0)
    assert await asyncio.to_thread(tel.flush, 30.0)
    want = expected("thread", threads, per_thread) + expected("task", tasks, per_task)
    assert_exact(tel, intake, want)


def test_overflow_is_counted_exactly(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    threads, per_thread, capacity = 4, 1_000, 64
    made = threads * per_thread
    # The drain loop drains once when it starts, then not for an hour: the queue fills.
    tel = make_telemetry(queue_size=capacity, drain_interval_s=3600.0)
    client = make_client(tel)
    run_threads(client, threads, per_thread)
    assert tel.flush(30.0)
    stats = tel.stats()
    overflow = stats.dropped["queue_overflow"]
    delivered = intake.evaluations()
    assert set(stats.dropped) == {"queue_overflow"}
    assert overflow + delivered == made
    assert stats.evaluations == made and stats.evaluations_posted == delivered
    assert stats.conserved and stats.pending == 0
    # The queue filled before anything overflowed; at most two drains (start, flush)
    # each took at most capacity + one racing append per producer thread.
    assert capacity <= delivered <= 2 * (capacity + threads)
    # What was delivered is a subset of what each producer made.
    want = expected("thread", threads, per_thread)
    got = received(intake)
    assert all(got[k] <= want[k] for k in got)
