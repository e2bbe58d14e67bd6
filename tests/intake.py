"""A real aiohttp intake on 127.0.0.1, on its own thread, that records and misbehaves.

Tests script it with :meth:`Intake.script`: each request takes the next scripted
behaviour (status, headers, delay, or a connection reset / garbage / hang), then the
default (200, or what :meth:`Intake.set_default` says, for faults that last a while).
Every received body is recorded with its headers and the status it got.

Actions, and what the client can know of each:

* ``"reset"``: the whole body is read, then the connection is aborted before any answer
  (the intake has the body; the response is lost).
* ``"reset_mid_body"``: only the first bytes are read, then the connection is aborted
  (the intake does not have the body; recorded with ``complete=False``).
* ``"garbage"``: the body is read, then non-HTTP bytes are written back.
* ``"hang"``: the body is read and never answered (until the server stops).
* ``"hold"``: the body is read and answered (``status``) once the test calls
  :meth:`Intake.release_held` (or the server stops): a request kept in flight for as
  long as the test needs, without a timer.

A delayed answer (``delay_s``) the client gave up on before it came is recorded with
``answered=False``.

As an agent stand-in it also answers ``GET /info`` once :meth:`Intake.set_info` says
how (by default there is no /info: 404, an agent too old to have one) and takes bodies
on the v4 EVP proxy route as well as v2 (``Received.path`` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.schema_util import validate_body

PATH = "/evp_proxy/v2/api/v2/flagevaluation"
PATH_V4 = "/evp_proxy/v4/api/v2/flagevaluation"

#: What a current Datadog agent (7.6x) answers on GET /info, trimmed of its long
#: obfuscation and peer-tag settings: every EVP proxy version, and the request headers
#: its proxy forwards.
AGENT_INFO: dict[str, Any] = {
    "version": "7.64.3",
    "git_commit": "5d1c3b2",
    "endpoints": [
        "/v0.3/traces",
        "/v0.3/services",
        "/v0.4/traces",
        "/v0.4/services",
        "/v0.5/traces",
        "/v0.7/traces",
        "/profiling/v1/input",
        "/telemetry/proxy/",
        "/v0.6/stats",
        "/v0.1/pipeline_stats",
        "/openlineage/api/v1/lineage",
        "/evp_proxy/v1/",
        "/evp_proxy/v2/",
        "/evp_proxy/v3/",
        "/evp_proxy/v4/",
        "/debugger/v1/input",
        "/debugger/v1/diagnostics",
        "/debugger/v2/input",
        "/symdb/v1/input",
        "/dogstatsd/v1/proxy",
        "/dogstatsd/v2/proxy",
        "/tracer_flare/v1",
        "/config/set",
    ],
    "client_drop_p0s": True,
    "span_meta_structs": True,
    "long_running_spans": True,
    "span_events": True,
    "evp_proxy_allowed_headers": [
        "Content-Type",
        "Accept-Encoding",
        "Content-Encoding",
        "User-Agent",
        "DD-CI-PROVIDER-NAME",
        "DD-EVP-ORIGIN",
        "DD-EVP-ORIGIN-VERSION",
    ],
    "config": {
        "default_env": "none",
        "target_tps": 10,
        "max_eps": 200,
        "receiver_port": 8126,
        "receiver_socket": "/var/run/datadog/apm.socket",
        "connection_limit": 0,
        "receiver_timeout": 0,
        "max_request_bytes": 26214400,
        "statsd_port": 8125,
        "max_memory": 0,
        "max_cpu": 0,
        "analyzed_spans_by_service": {},
    },
    "peer_tags": ["_dd.base_service", "db.instance", "peer.service"],
    "obfuscation_version": 1,
}


@dataclasses.dataclass
class Behaviour:
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0
    #: "reset": read the body, then abort the connection before answering;
    #: "reset_mid_body": abort after reading only the first bytes of the body;
    #: "garbage": write non-HTTP bytes; "hang": never answer (until the server stops);
    #: "hold": answer once the test releases it; "stall_body": send the status and
    #: headers, then no byte of the body.
    action: str | None = None
    #: The answer's body (default ``{}``).
    text: str = "{}"


@dataclasses.dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int
    #: When it arrived (``time.monotonic()``).
    at: float
    #: True when the client could have seen the status (no reset/hang/garbage).
    answered: bool = True
    #: False when the connection was cut before the whole body was read.
    complete: bool = True
    path: str = PATH

    def json(self) -> Any:
        return json.loads(self.body)


_ABORTING = frozenset({"reset", "reset_mid_body", "garbage", "hang"})
#: How long stopping may take before it is a failure of its own (a loaded machine
#: stops in well under a second).
STOP_TIMEOUT_S = 30.0


class Intake:
    def __init__(self, validate: bool = True, ssl_context: ssl.SSLContext | None = None) -> None:
        self.validate = validate
        self.ssl_context = ssl_context
        self._default = Behaviour()
        self._release: asyncio.Event | None = None
        self._held: asyncio.Event | None = None
        self.received: list[Received] = []
        self._script: list[Behaviour] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0
        self.schema_errors: list[str] = []
        self.on_request: Callable[[Received], None] | None = None
        self._info: tuple[Any, Behaviour] | None = None
        #: The headers of every GET /info, in order.
        self.info_requests: list[dict[str, str]] = []

    # -- control --------------------------------------------------------------------
    def start(self, port: int = 0) -> Intake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(STOP_TIMEOUT_S)
        return self

    async def _start(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._handle)
        app.router.add_post(PATH_V4, self._handle)
        app.router.add_post("/api/v2/flagevaluation", self._handle)
        app.router.add_get("/info", self._handle_info)
        self._release = asyncio.Event()
        self._held = asyncio.Event()
        # No access log: it would print request lines (with query strings) into the
        # logs that security tests search for the library's leaks.
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.1, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return  # already stopped (a test may stop it before the fixture does)
        # One coroutine releases the handlers that wait, cleans up and only then stops
        # the loop: a loop stopped from outside while the cleanup was still queued (a
        # loaded machine) would leave that coroutine never awaited.
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(STOP_TIMEOUT_S)
        finally:
            self._thread.join(STOP_TIMEOUT_S)
        assert not self._thread.is_alive(), "the intake's loop did not stop"
        self._loop.close()

    async def _shutdown(self) -> None:
        try:
            for event in (self._release, self._held):
                if event is not None:
                    event.set()  # hanging and held handlers end: no task left pending
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    await self._runner.cleanup()
        finally:
            # After this coroutine's result reached stop(): the loop stops next turn.
            asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    def release_held(self) -> None:
        """Answer every request held by a ``"hold"`` behaviour, and later ones at once."""
        assert self._held is not None
        self._loop.call_soon_threadsafe(self._held.set)

    def connections_from_here(self) -> int:
        """This process's open TCP connections to this intake (Linux /proc): a client's
        sockets whose far end is the intake's port, not the intake's own."""
        ours = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed while listing
                link = os.readlink(f"/proc/self/fd/{fd}")
                if link.startswith("socket:["):
                    ours.add(link[len("socket:[") : -1])
        n = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    far_port = int(fields[2].rsplit(":", 1)[1], 16)
                    n += far_port == self.port and fields[9] in ours
        return n

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def set_info(self, body: Any, behaviour: Behaviour | None = None) -> None:
        """Answer GET /info with ``body`` (JSON) as ``behaviour`` says (status, delay,
        "hang"); ``body`` None with no behaviour: no /info again (404)."""
        with self._lock:
            none = body is None and behaviour is None
            self._info = None if none else (body, behaviour or Behaviour())

    def set_default(self, behaviour: Behaviour | None) -> None:
        """What every unscripted request gets from now on (None: 200 again)."""
        with self._lock:
            self._default = behaviour if behaviour is not None else Behaviour()

    # -- what arrived -----------------------------------------------------------------
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300 and r.answered]

    def rows(self) -> list[dict[str, Any]]:
        return [row for r in self.accepted() for row in r.json()["flagEvaluations"]]

    def evaluations(self) -> int:
        return sum(row["evaluation_count"] for row in self.rows())

    def complete(self) -> list[Received]:
        """Every whole body that arrived, answered or not (what the intake could count)."""
        with self._lock:
            return [r for r in self.received if r.complete]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # -- handler ------------------------------------------------------------------------
    async def _handle_info(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.info_requests.append(dict(request.headers))
            info = self._info
        if info is None:
            raise web.HTTPNotFound()
        body, behaviour = info
        if behaviour.action == "hang":
            assert self._release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), 3600)
            raise web.HTTPServiceUnavailable()
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=behaviour.status, text=text, content_type="application/json")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            behaviour = self._script.pop(0) if self._script else self._default
        if behaviour.action == "reset_mid_body":
            # Cut the upload short: the intake never has the whole body.
            partial = await request.content.read(16)
            with self._lock:
                self.received.append(
                    Received(
                        partial,
                        dict(request.headers),
                        behaviour.status,
                        time.monotonic(),
                        answered=False,
                        complete=False,
                        path=request.path,
                    )
                )
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        body = await request.read()
        rec = Received(
            body, dict(request.headers), behaviour.status, time.monotonic(), path=request.path
        )
        if behaviour.action in _ABORTING:
            rec.answered = False
            self._validate(body)
        with self._lock:
            self.received.append(rec)
        if behaviour.delay_s:
            # Unanswered until the answer can go out: a handler cancelled during the
            # delay, or a client that gave up, never saw the status.
            rec.answered = False
            await asyncio.sleep(behaviour.delay_s)
            closed = request.transport is None or request.transport.is_closing()
            rec.answered = behaviour.action not in _ABORTING and not closed
        if behaviour.action == "hold":
            # Unanswered until released; then answered like any other, if still wanted.
            rec.answered = False
            assert self._held is not None
            await self._held.wait()
            rec.answered = request.transport is not None and not request.transport.is_closing()
        if behaviour.action == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if behaviour.action == "garbage":
            assert request.transport is not None
            request.transport.write(b"\x00\x01 not http at all\r\n\r\n")
            request.transport.close()
            raise asyncio.CancelledError
        if behaviour.action in ("hang", "stall_body"):
            if behaviour.action == "stall_body":
                # The status line and headers go out, then not one byte of the body.
                stalled = web.StreamResponse(status=behaviour.status, headers=behaviour.headers)
                stalled.content_length = 1000
                await stalled.prepare(request)
            assert self._release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), 3600)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        resp = web.Response(status=behaviour.status, headers=behaviour.headers, text=behaviour.text)
        try:
            # Answer first, validate after: validation costs ~0.2 ms a row, and a busy
            # test process must not turn it into client timeouts.
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionError:
            rec.answered = False  # the client had gone: it never saw the status
            raise asyncio.CancelledError from None
        finally:
            self._validate(body)
        return resp

    def _validate(self, body: bytes) -> None:
        if self.validate:
            try:
                validate_body(body)
            except Exception as exc:  # recorded; the test fixture fails on it
                self.schema_errors.append(str(exc)[:500])
