"""Evaluations made in worker processes, the hook added at import as README says.

``python -m tests.telemetry.servers.pool_app KIND METHOD``: KIND is ``pool``
(``multiprocessing.Pool``: ``close()`` then ``join()``), ``pool-with`` (the pool as a
context manager: its exit calls ``terminate()``), ``executor``
(``concurrent.futures.ProcessPoolExecutor``, its ``with``) or ``terminate-busy`` (two
tasks of ``N / 2`` evaluations that then block; the pool is terminated while they do);
METHOD the start method. Two workers evaluate ``N`` times between them, in tasks of 100
evaluations with targeting keys ``user-0`` ... ``user-{N-1}``; the parent evaluates
nothing. Prints the workers' pids. The pipeline comes from the environment (the test's
intake, a 60 s flush interval: nothing is posted before the workers stop).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval

N, TASK = 2_000, 100

api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})}))
api.add_hooks([flageval.FlagEvalHook()])


def evaluate(start: int, n: int = TASK, mark: str = "") -> int:
    client = api.get_client()
    for i in range(start, start + n):
        client.get_boolean_value("f", False, EvaluationContext(f"user-{i}"))
    if mark:  # say so, then block until terminated
        (Path(mark) / str(os.getpid())).touch()
        time.sleep(600)
    return os.getpid()


def terminate_busy(ctx: multiprocessing.context.BaseContext) -> list[int]:
    mark = tempfile.mkdtemp()
    pool = ctx.Pool(2)
    for start in (0, N // 2):
        pool.apply_async(evaluate, (start, N // 2, mark))
    deadline = time.monotonic() + 60
    while len(os.listdir(mark)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = [int(name) for name in os.listdir(mark)]
    pool.terminate()
    pool.join()
    return pids


def main(kind: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    starts = range(0, N, TASK)
    if kind == "pool":
        pool = ctx.Pool(2)
        pids = pool.map(evaluate, starts, chunksize=1)
        pool.close()
        pool.join()
    elif kind == "terminate-busy":
        pids = terminate_busy(ctx)
    elif kind == "pool-with":
        with ctx.Pool(2) as pool:
            pids = pool.map(evaluate, starts, chunksize=1)
    else:
        with ProcessPoolExecutor(2, mp_context=ctx) as executor:
            pids = list(executor.map(evaluate, starts))
    print(sorted(set(pids)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
