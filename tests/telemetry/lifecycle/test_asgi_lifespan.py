"""flageval.asgi.FlagEvalMiddleware, driven as an ASGI server drives it: the lifespan's
end shuts every pipeline down after the application's own shutdown (which may
evaluate flags), for apps that speak lifespan (Starlette/FastAPI, wrapped or added as
middleware) and for apps that do not; other scopes pass through untouched."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval.asgi import FlagEvalMiddleware
from tests.intake import Intake


async def lifespan(app: Any) -> list[str]:
    """Run the lifespan as uvicorn does: startup, then shutdown; what the app sent."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            await inbox.put({"type": "lifespan.shutdown"})

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    )
    await asyncio.wait_for(task, 15.0)
    return sent


def evaluating_app(client: Any) -> FastAPI:
    async def shutdown_hook() -> None:
        # The app's own shutdown evaluates too: delivered, since ours runs after it.
        await client.get_boolean_value_async("f", False, EvaluationContext("at-shutdown"))

    app = FastAPI()
    app.router.on_shutdown.append(shutdown_hook)
    return app


def client_for(hook: Any) -> Any:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([hook])
    return client


async def test_lifespan_end_delivers_after_the_apps_own_shutdown(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry()
    client = client_for(tel.hook)
    for i in range(25):
        await client.get_boolean_value_async("f", False, EvaluationContext(f"u{i}"))
    sent = await lifespan(FlagEvalMiddleware(evaluating_app(client)))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert intake.evaluations() == 26  # 25, and the one the app's shutdown made
    stats = tel.stats()
    assert stats.evaluations_posted == 26 and stats.pending == 0 and stats.conserved


async def test_added_as_starlette_middleware(make_telemetry: Any, intake: Intake) -> None:
    tel = make_telemetry()
    client = client_for(tel.hook)
    await client.get_boolean_value_async("f", False)
    app = evaluating_app(client)
    app.add_middleware(FlagEvalMiddleware)
    assert await lifespan(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert intake.evaluations() == 2


async def test_an_app_without_lifespan_support_gets_it_spoken_for_it(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry()
    client = client_for(tel.hook)
    await client.get_boolean_value_async("f", False)
    calls: list[str] = []

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        if scope["type"] != "http":
            raise RuntimeError("only http")  # what uvicorn reads as "lifespan unsupported"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = FlagEvalMiddleware(bare)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": "/"}, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert intake.evaluations() == 0  # an http request shuts nothing down
    assert await lifespan(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert calls == ["http", "lifespan"]
    assert intake.evaluations() == 1 and not tel.running
