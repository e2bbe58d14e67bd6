"""End to end: flags served by OFREPProvider, counted by the flageval hook, posted to an
intake. The variant and the allocation (from the flag metadata the OFREP server sent)
must reach the intake's rows unchanged."""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

import flageval
from flageval.ofrep import OFREPProvider

from .ofrep_server import OFREPTestServer, ServerThread, refetch, wait_until

INTAKE_PATH = "/evp_proxy/v2/api/v2/flagevaluation"


class TinyIntake:
    """Records every body posted to the flag-evaluation intake path; answers 202."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_post(INTAKE_PATH, self._receive)
        self.server = ServerThread(app)

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        with self._lock:
            self.bodies.append(json.loads(raw))
        return web.Response(status=202)

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [row for body in self.bodies for row in body["flagEvaluations"]]

    def counts(self) -> Counter[tuple[str, str | None, str | None]]:
        out: Counter[tuple[str, str | None, str | None]] = Counter()
        for row in self.rows():
            variant = row.get("variant", {}).get("key")
            allocation = row.get("allocation", {}).get("key")
            out[(row["flag"]["key"], variant, allocation)] += row["evaluation_count"]
        return out


@pytest.fixture
def intake() -> Iterator[TinyIntake]:
    srv = TinyIntake()
    srv.server.start()
    yield srv
    srv.server.stop()


@pytest.fixture
def telemetry(intake: TinyIntake) -> Iterator[flageval.Telemetry]:
    tel = flageval.Telemetry(agent_url=intake.server.url, flush_interval_s=0.2, service="ofrep-e2e")
    yield tel
    tel.shutdown(5.0)


def test_provider_evaluations_reach_the_intake_with_variant_and_allocation(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    intake: TinyIntake,
    telemetry: flageval.Telemetry,
) -> None:
    server.set_flag(
        "checkout", True, "on", reason="TARGETING_MATCH", metadata={"allocationKey": "rollout-20"}
    )
    server.set_flag("theme", "dark", "dark", metadata={"allocationKey": "everyone"})
    server.event_streams = [server.sse_here()]
    api.add_hooks([telemetry.hook])
    api.set_evaluation_context(EvaluationContext("user-1", {"plan": "pro"}))
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    client = api.get_client()

    for _ in range(5):
        assert client.get_boolean_value("checkout", False) is True
    for _ in range(3):
        assert client.get_string_value("theme", "light") == "dark"

    # A change pushed over SSE: later evaluations carry the new variant and allocation.
    wait_until(lambda: server.sse_connected == 1)
    server.set_flag("checkout", False, "off", metadata={"allocationKey": "control"})
    server.push(refetch())
    # (polled on the provider directly, so that waiting adds no evaluation to the counts)
    wait_until(lambda: provider.resolve_boolean_details("checkout", True).value is False)
    for _ in range(2):
        assert client.get_boolean_value("checkout", True) is False

    assert telemetry.flush(5.0)
    assert intake.counts() == {
        ("checkout", "on", "rollout-20"): 5,
        ("theme", "dark", "everyone"): 3,
        ("checkout", "off", "control"): 2,
    }
    assert {row.get("targeting_key") for row in intake.rows()} == {"user-1"}
    assert all(body["context"]["service"] == "ofrep-e2e" for body in intake.bodies)


async def test_async_evaluations_reach_the_intake(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    intake: TinyIntake,
    telemetry: flageval.Telemetry,
) -> None:
    server.set_flag("limit", 50, "fifty", metadata={"allocationKey": "tier-a"})
    server.set_flag("ratio", 1, "one")  # a JSON integer read as a float flag
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    client.add_hooks([telemetry.hook])
    for _ in range(4):
        assert await client.get_integer_value_async("limit", 0) == 50
    assert await client.get_float_value_async("ratio", 0.0) == 1.0
    assert telemetry.flush(5.0)
    assert intake.counts() == {("limit", "fifty", "tier-a"): 4, ("ratio", "one", None): 1}
