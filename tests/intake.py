"""A real aiohttp intake on 127.0.0.1, on its own thread, that records and misbehaves.

Tests script it with :meth:`Intake.script`: each request takes the next scripted
behaviour (status, headers, delay, or a connection reset / garbage / hang), then the
default (200). Every received body is recorded with its headers and the status it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.schema_util import validate_body

PATH = "/evp_proxy/v2/api/v2/flagevaluation"


@dataclasses.dataclass
class Behaviour:
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0
    #: "reset": close the connection mid-request; "garbage": write non-HTTP bytes;
    #: "hang": never answer (until the server stops).
    action: str | None = None


@dataclasses.dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int
    at: float
    #: True when the client could have seen the status (no reset/hang/garbage).
    answered: bool = True

    def json(self) -> Any:
        return json.loads(self.body)


class Intake:
    def __init__(self, validate: bool = True) -> None:
        self.validate = validate
        self.received: list[Received] = []
        self._script: list[Behaviour] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0
        self.schema_errors: list[str] = []
        self.on_request: Callable[[Received], None] | None = None

    # -- control --------------------------------------------------------------------
    def start(self, port: int = 0) -> Intake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(10)
        return self

    async def _start(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._handle)
        app.router.add_post("/api/v2/flagevaluation", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    # -- what arrived -----------------------------------------------------------------
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300 and r.answered]

    def rows(self) -> list[dict[str, Any]]:
        return [row for r in self.accepted() for row in r.json()["flagEvaluations"]]

    def evaluations(self) -> int:
        return sum(row["evaluation_count"] for row in self.rows())

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # -- handler ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            behaviour = self._script.pop(0) if self._script else Behaviour()
        body = await request.read()
        rec = Received(body, dict(request.headers), behaviour.status, time.time())
        if self.validate:
            try:
                validate_body(body)
            except Exception as exc:  # recorded; the test fixture fails on it
                self.schema_errors.append(str(exc)[:500])
        if behaviour.action in {"reset", "garbage", "hang"}:
            rec.answered = False
        with self._lock:
            self.received.append(rec)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.action == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if behaviour.action == "garbage":
            assert request.transport is not None
            request.transport.write(b"\x00\x01 not http at all\r\n\r\n")
            request.transport.close()
            raise asyncio.CancelledError
        if behaviour.action == "hang":
            await asyncio.sleep(3600)
        return web.Response(status=behaviour.status, headers=behaviour.headers, text="{}")
