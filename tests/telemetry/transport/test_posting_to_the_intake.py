"""Posting through the real intake: retries, 429, 4xx, refused connections, 5 MiB
splitting, the oversize row, and a unix-socket agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from tests.intake import AGENT_INFO, PATH_V4, Behaviour, Intake
from tests.schema_util import validate_body

MakeTelemetry = Callable[..., Telemetry]
FIVE_MIB = 5 * 1024 * 1024
FLAGS = ("split-a", "split-b", "split-c", "split-d")


def make_client(tel: Telemetry) -> OpenFeatureClient:
    flags = {name: InMemoryFlag("on", {"on": True}) for name in ("f", *FLAGS)}
    api.set_provider_and_wait(InMemoryProvider(flags))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def evaluate(client: OpenFeatureClient, n: int) -> None:
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(f"user-{i % 5}"))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_then_success_is_delivered_once(
    make_telemetry: MakeTelemetry, intake: Intake, status: int
) -> None:
    intake.script(Behaviour(status=status))
    tel = make_telemetry(retry_backoff_s=0.05)
    evaluate(make_client(tel), 50)
    assert tel.flush(10.0)
    assert [r.status for r in intake.received] == [status, 200]
    assert intake.received[0].body == intake.received[1].body  # the same body, resent
    assert intake.evaluations() == 50  # counted once: only the 200 was accepted
    stats = tel.stats()
    assert stats.post_attempts == 2 and stats.bodies_posted == 1
    assert stats.evaluations_posted == 50 and stats.dropped == {} and stats.conserved


def test_429_retry_after_is_respected(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    intake.script(Behaviour(status=429, headers={"Retry-After": "1"}))
    tel = make_telemetry(retry_backoff_s=0.01)  # the header, not the backoff, decides
    evaluate(make_client(tel), 20)
    assert tel.flush(10.0)
    assert [r.status for r in intake.received] == [429, 200]
    gap = intake.received[1].at - intake.received[0].at
    assert gap >= 0.95, gap  # no request before the second the intake asked for
    assert intake.received[0].body == intake.received[1].body
    assert intake.evaluations() == 20 and tel.stats().dropped == {}


@pytest.mark.parametrize("status", [400, 413])
def test_4xx_is_not_retried(make_telemetry: MakeTelemetry, intake: Intake, status: int) -> None:
    intake.script(Behaviour(status=status))
    tel = make_telemetry(retry_backoff_s=0.01)
    client = make_client(tel)
    evaluate(client, 30)
    assert tel.flush(10.0)  # nothing left waiting: the body was rejected, not buffered
    assert [r.status for r in intake.received] == [status]
    stats = tel.stats()
    assert stats.dropped == {"intake_rejected": 30}
    assert stats.evaluations_posted == 0 and stats.post_attempts == 1 and stats.conserved
    # The pipeline goes on: the next flush delivers new evaluations (and only those).
    evaluate(client, 4)
    assert tel.flush(10.0)
    assert [r.status for r in intake.received] == [status, 200]
    assert intake.evaluations() == 4


def test_connection_refused_is_retried_then_counted_unavailable(
    make_telemetry: MakeTelemetry,
) -> None:
    tel = make_telemetry(
        agent_url=f"http://127.0.0.1:{closed_port()}", retry_backoff_s=0.02, max_retries=2
    )
    evaluate(make_client(tel), 40)
    assert not tel.flush(5.0)  # could not deliver: still waiting in the retry buffer
    stats = tel.stats()
    assert stats.post_attempts == 3  # the first try and max_retries=2 retries
    assert stats.pending == 40 and stats.dropped == {} and stats.conserved
    assert not tel.flush(5.0)  # buffered bodies are tried again on the next flush
    assert tel.stats().post_attempts == 6
    tel.shutdown(5.0)
    stats = tel.stats()
    assert stats.dropped == {"intake_unavailable": 40}
    assert stats.pending == 0 and stats.evaluations_posted == 0 and stats.conserved


# -- body size -----------------------------------------------------------------------------------


def big_context(i: int) -> dict[str, str]:
    # 8 attributes of 240 characters (under the 256-character cut), unique per i.
    return {f"attr{j}": f"{i:06d}-{j}-" + "x" * 231 for j in range(8)}


def compact_len(row: dict[str, Any]) -> int:
    """Encoded length of a row as the library would send it (ASCII, no spaces): JSON's
    length does not depend on key order."""
    return len(json.dumps(row, separators=(",", ":")))


def test_5mib_splitting_with_the_default_limit(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    per_flag, repeats = 1_500, 100
    tel = make_telemetry()  # default max_body_bytes: 5 MiB
    client = make_client(tel)
    made = 0
    for i in range(per_flag * len(FLAGS)):
        ctx = EvaluationContext(f"user-{i}", big_context(i))
        times = 2 if i < repeats else 1
        for _ in range(times):
            client.get_boolean_value(FLAGS[i % len(FLAGS)], False, ctx)
            made += 1
    assert tel.flush(30.0)
    bodies = intake.accepted()
    assert len(bodies) == len(intake.received) >= 2
    assert all(len(b.body) <= FIVE_MIB for b in bodies)
    docs = [b.json() for b in bodies]
    rows = [row for doc in docs for row in doc["flagEvaluations"]]
    assert len(rows) == per_flag * len(FLAGS)  # every distinct context is one row
    assert sum(r["evaluation_count"] for r in rows) == made
    assert sorted(r["evaluation_count"] for r in rows).count(2) == repeats
    assert {r["targeting_key"] for r in rows} == {f"user-{i}" for i in range(per_flag * 4)}
    assert all(doc["context"] == docs[0]["context"] for doc in docs)
    # Greedy: a body was closed only because the next row did not fit in it.
    for body, nxt in zip(bodies, docs[1:], strict=False):
        assert len(body.body) + 1 + compact_len(nxt["flagEvaluations"][0]) > FIVE_MIB
    stats = tel.stats()
    assert stats.bodies_posted == len(bodies) and stats.rows_posted == len(rows)
    assert stats.evaluations_posted == made and stats.degraded == {} and stats.dropped == {}


def test_oversize_row_is_sent_without_targeting_key_and_context(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    limit = 4096
    tel = make_telemetry(max_body_bytes=limit)
    client = make_client(tel)
    huge = "k" * (limit + 1000)
    for _ in range(3):
        client.get_boolean_value("f", False, EvaluationContext(huge, {"plan": "pro"}))
    for _ in range(2):
        client.get_boolean_value("f", False, EvaluationContext("short", {"plan": "pro"}))
    assert tel.flush(10.0)
    assert all(len(r.body) <= limit for r in intake.accepted())
    assert all(b"kkkkkkkkkk" not in r.body for r in intake.accepted())
    rows = intake.rows()
    assert len(rows) == 2
    (stripped,) = [r for r in rows if "targeting_key" not in r]
    assert stripped["evaluation_count"] == 3 and "context" not in stripped
    assert stripped["flag"] == {"key": "f"} and stripped["variant"] == {"key": "on"}
    (kept,) = [r for r in rows if r.get("targeting_key") == "short"]
    assert kept["evaluation_count"] == 2 and kept["context"] == {"evaluation": {"plan": "pro"}}
    stats = tel.stats()
    assert stats.degraded == {"payload_limit": 3} and stats.dropped == {}
    assert stats.evaluations_posted == 5 and stats.conserved


# -- unix socket agent -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def unix_intake(path: str) -> Any:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.read()))
        if request.path == "/info":
            return web.json_response(AGENT_INFO)  # an agent with v4, over its socket
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    try:
        yield seen
    finally:
        await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def test_unix_socket_agent(make_telemetry: MakeTelemetry) -> None:
    path = f"/tmp/flageval_integ_{os.getpid()}_x.sock"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    async with unix_intake(path) as seen:
        tel = make_telemetry(agent_url=f"unix://{path}")
        evaluate(make_client(tel), 9)
        # flush blocks: run it off this loop, which serves the socket.
        assert await asyncio.to_thread(tel.flush, 10.0)
        await asyncio.to_thread(tel.shutdown, 5.0)
    assert [p for p, _, _ in seen] == ["/info", PATH_V4]  # discovered over the socket
    _, headers, body = seen[1]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Datadog-EVP-Subdomain"] == "event-platform-intake"
    validate_body(body)
    rows = json.loads(body)["flagEvaluations"]
    assert sum(r["evaluation_count"] for r in rows) == 9
    assert {r["targeting_key"] for r in rows} == {f"user-{i}" for i in range(5)}
