"""A FastAPI app as a new user writes it: the hook added at import, as README says.

Run by tests/telemetry/servers/test_graceful_stops_deliver.py under uvicorn and gunicorn as
a subprocess.
``/eval`` evaluates ``n`` times from an async endpoint, ``/eval_sync`` from a sync one
(FastAPI runs it on its thread pool); ``/hold`` evaluates ``k`` times, writes the file
named by ``HOLD_MARK`` (the request is in flight), waits until the test creates the
file named by ``HOLD_RELEASE`` (at most ``hold_s``), then evaluates ``m`` more times:
the evaluations of a request still running when the server is stopped.
``FLAGEVAL_TEST_MIDDLEWARE=1`` adds the one-line integration of flageval.asgi.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from fastapi import FastAPI
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import FlagEvalHook

api.set_provider(InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})}))
api.add_hooks([FlagEvalHook()])
client = api.get_client()

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/eval")
async def evaluate_async(n: int, tag: str) -> dict[str, int]:
    for i in range(n):
        await client.get_boolean_value_async("f", False, EvaluationContext(f"{tag}-{i}"))
    return {"n": n, "pid": os.getpid()}


@app.get("/eval_sync")
def evaluate_sync(n: int, tag: str) -> dict[str, int]:
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(f"{tag}-{i}"))
    return {"n": n, "pid": os.getpid()}


def _wait_for_release(hold_s: float) -> None:
    """Until the test creates the release file (another process: a file is what both
    can see), at most ``hold_s``."""
    release, end = Path(os.environ["HOLD_RELEASE"]), time.monotonic() + hold_s
    while not release.exists() and time.monotonic() < end:
        time.sleep(0.01)


@app.get("/hold")
async def hold(k: int, m: int, tag: str, hold_s: float) -> dict[str, int]:
    for i in range(k):
        await client.get_boolean_value_async("f", False, EvaluationContext(f"{tag}-k{i}"))
    await asyncio.to_thread(Path(os.environ["HOLD_MARK"]).write_text, str(os.getpid()))
    await asyncio.to_thread(_wait_for_release, hold_s)
    for i in range(m):
        await client.get_boolean_value_async("f", False, EvaluationContext(f"{tag}-m{i}"))
    return {"k": k, "m": m, "pid": os.getpid()}


@app.get("/hold_sync")
def hold_sync(k: int, m: int, tag: str, hold_s: float) -> dict[str, int]:
    for i in range(k):
        client.get_boolean_value("f", False, EvaluationContext(f"{tag}-k{i}"))
    Path(os.environ["HOLD_MARK"]).write_text(str(os.getpid()))
    _wait_for_release(hold_s)
    for i in range(m):
        client.get_boolean_value("f", False, EvaluationContext(f"{tag}-m{i}"))
    return {"k": k, "m": m, "pid": os.getpid()}


if os.environ.get("FLAGEVAL_TEST_MIDDLEWARE") == "1":
    from flageval.asgi import FlagEvalMiddleware

    app = FlagEvalMiddleware(app)  # type: ignore[assignment]
