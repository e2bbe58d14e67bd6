"""A scriptable OFREP + SSE server for tests and benchmarks (aiohttp, 127.0.0.1 only).

It runs on its own event loop in its own thread, so synchronous tests (and the
provider's own loop thread) can talk to it while the test blocks. It serves:

- ``POST /ofrep/v1/evaluate/flags``: the bulk evaluation of ``flags`` with an ETag
  (hash of the body), 304 on a matching ``If-None-Match``, ``eventStreams`` when set;
  a queue of scripted answers (``script``) overrides the normal answer one by one,
  and ``hold_fetches`` keeps requests in flight until released;
- ``POST /ofrep/v1/evaluate/flags/{key}``: single-flag evaluation (benchmark baseline);
- ``GET /sse/...``: an event stream; tests push raw SSE text, heartbeats, or drop
  every open stream.

Every request is recorded with its wall-clock arrival time, path, query, headers and
body, so tests can count fetches exactly and check what was (not) sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

BULK_PATH = "/ofrep/v1/evaluate/flags"


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 5 ms; fail the test if it is still false at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.005)


class ServerThread:
    """An aiohttp application on 127.0.0.1:<free port>, served from a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@dataclass
class Recorded:
    t: float  # time.time() at arrival
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    target: str = ""  # the request target exactly as sent (path and query, undecoded)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Scripted:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def sse_event(data: Any, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE event; ``data`` that is not a string is JSON-encoded."""
    text = data if isinstance(data, str) else json.dumps(data)
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def refetch(etag: str | None = None, last_modified: Any = None, **kw: Any) -> bytes:
    payload: dict[str, Any] = {"type": "refetchEvaluation"}
    if etag is not None:
        payload["etag"] = etag
    if last_modified is not None:
        payload["lastModified"] = last_modified
    return sse_event(payload, **kw)


class OFREPTestServer:
    def __init__(self) -> None:
        self.flags: dict[str, dict[str, Any]] = {}
        self.event_streams: list[dict[str, Any]] | None = None
        # When set, called for every 200 instead of ``event_streams`` (fresh tokens...).
        self.streams_per_answer: Callable[[], list[dict[str, Any]]] | None = None
        self.script: deque[Scripted] = deque()
        self.sse_script: deque[Scripted] = deque()
        self.requests: list[Recorded] = []
        self.flags_for_context: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
        # True: the ETag hashes the flag configuration only, not the per-context answer
        # (flagd's first design), so the same ETag comes back for every context.
        self.etag_ignores_context = False
        self._lock = threading.Lock()
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._hold: asyncio.Event | None = None
        self.in_flight = 0
        app = web.Application()
        app.router.add_post(BULK_PATH, self._bulk)
        # The same evaluation under a path prefix, for base URLs with a path.
        app.router.add_post("/prefix" + BULK_PATH, self._bulk)
        app.router.add_post(BULK_PATH + "/{key}", self._single)
        app.router.add_get("/sse/{tail:.*}", self._sse)
        self._server = ServerThread(app)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> OFREPTestServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self.release_fetches()
        self.drop_streams()
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    # -- configuration from tests ----------------------------------------------------------

    def set_flag(self, key: str, value: Any, variant: str | None = None, **extra: Any) -> None:
        item: dict[str, Any] = {"key": key, "value": value, "reason": "STATIC"}
        if variant is not None:
            item["variant"] = variant
        item.update(extra)
        with self._lock:
            self.flags[key] = item

    def set_item(self, item: dict[str, Any]) -> None:
        with self._lock:
            self.flags[item["key"]] = item

    def sse_here(self, name: str = "main", query: str = "", **extra: Any) -> dict[str, Any]:
        """An eventStreams entry pointing at this server, as an absolute url."""
        suffix = f"?{query}" if query else ""
        return {"type": "sse", "url": f"{self.url}/sse/{name}{suffix}", **extra}

    def hold_fetches(self) -> None:
        """Bulk requests that arrive from now on wait until `release_fetches`."""

        async def make() -> None:
            self._hold = asyncio.Event()

        self._server.call(make())

    def release_fetches(self) -> None:
        hold = self._hold
        if hold is not None:
            self._server.loop.call_soon_threadsafe(hold.set)
        self._hold = None

    # -- streams -------------------------------------------------------------------------

    @property
    def sse_connected(self) -> int:
        return len(self._clients)

    def push(self, chunk: bytes) -> None:
        """Send raw bytes to every open stream."""

        def put() -> None:
            for queue in list(self._clients):
                queue.put_nowait(chunk)

        self._server.loop.call_soon_threadsafe(put)

    def drop_streams(self) -> None:
        """End every open stream (the client sees end of stream)."""

        def put() -> None:
            for queue in list(self._clients):
                queue.put_nowait(None)

        self._server.loop.call_soon_threadsafe(put)

    # -- recorded traffic -----------------------------------------------------------------

    def bulk_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(BULK_PATH)]

    def sse_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/sse/")]

    def all_requests(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    # -- handlers -------------------------------------------------------------------------

    def _record(self, request: web.Request, body: bytes) -> Recorded:
        rec = Recorded(
            t=time.time(),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            target=request.raw_path,
        )
        with self._lock:
            self.requests.append(rec)
        return rec

    def _current_flags(self, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            flags = dict(self.flags)
        if self.flags_for_context is not None:
            flags.update(self.flags_for_context(dict(context)))
        return list(flags.values())

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._record(request, body)
        self.in_flight += 1
        try:
            if self._hold is not None:
                await self._hold.wait()
            if self.script:
                scripted = self.script.popleft()
                return web.Response(
                    status=scripted.status, body=scripted.body, headers=scripted.headers
                )
            context = json.loads(body).get("context", {}) if body else {}
            doc: dict[str, Any] = {"flags": self._current_flags(context)}
            if self.streams_per_answer is not None:
                doc["eventStreams"] = self.streams_per_answer()
            elif self.event_streams is not None:
                doc["eventStreams"] = self.event_streams
            payload = json.dumps(doc, sort_keys=True).encode()
            tagged = payload
            if self.etag_ignores_context:
                with self._lock:
                    config = [self.flags, doc.get("eventStreams")]
                tagged = json.dumps(config, sort_keys=True).encode()
            etag = '"' + hashlib.sha256(tagged).hexdigest()[:16] + '"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(
                status=200,
                body=payload,
                headers={"ETag": etag, "Content-Type": "application/json"},
            )
        finally:
            self.in_flight -= 1

    async def _single(self, request: web.Request) -> web.Response:
        body = await request.read()
        context = json.loads(body).get("context", {}) if body else {}
        key = request.match_info["key"]
        for item in self._current_flags(context):
            if item["key"] == key:
                return web.json_response(item)
        return web.json_response({"key": key, "errorCode": "FLAG_NOT_FOUND"}, status=404)

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        self._record(request, b"")
        if self.sse_script:
            scripted = self.sse_script.popleft()
            return web.Response(
                status=scripted.status, body=scripted.body, headers=scripted.headers
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._clients.add(queue)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(queue.get(), 0.02)
                except TimeoutError:
                    # aiohttp does not cancel a handler whose client went away: look.
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    continue
                if chunk is None:
                    break
                await response.write(chunk)
        except ConnectionResetError:
            pass
        finally:
            self._clients.discard(queue)
        return response
