"""fast-feature (a real OFREP server from PyPI) embedded in the test process.

Its CLI needs uvicorn, which the project does not depend on; instead its own FastAPI
application (``fast_feature.server.Application``: OfrepRouter + AdminRouter on an
in-memory repository) is served over real HTTP on 127.0.0.1 by aiohttp, through a
minimal ASGI bridge (one request body in, one buffered response out: all that the
OFREP and admin JSON endpoints use). The provider talks to it over a socket exactly
as it would to a standalone fast-feature.

``corrupt_bulk_bodies`` replaces the next N bulk-evaluation request bodies with
invalid JSON before fast-feature sees them, which is how the tests make fast-feature
answer its real 422 ``{"detail": [...]}`` to a bad body.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from aiohttp import web
from fast_feature.server import Application, Settings

from .ofrep_server import BULK_PATH, ServerThread


class FastFeatureServer:
    def __init__(self) -> None:
        self._asgi = Application.create(Settings(backend="inmemory", admin=True))
        self.corrupt_bulk_bodies = 0
        self.bulk_statuses: list[int] = []
        self.bulk_if_none_match: list[str | None] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ServerThread(app)

    def start(self) -> FastFeatureServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    # -- admin API (synchronous, for tests) ----------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + "/admin/api/flags" + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create_flag(self, key: str, variants: dict[str, Any], default: str, **kw: Any) -> Any:
        return self.admin(
            "POST", "", {"key": key, "variants": variants, "default_variant": default, **kw}
        )

    def update_flag(self, key: str, variants: dict[str, Any], default: str, **kw: Any) -> Any:
        return self.admin(
            "PUT", f"/{key}", {"variants": variants, "default_variant": default, **kw}
        )

    # -- the bridge ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == BULK_PATH and request.method == "POST":
            self.bulk_if_none_match.append(request.headers.get("If-None-Match"))
            if self.corrupt_bulk_bodies > 0:
                self.corrupt_bulk_bodies -= 1
                body = b"{this is not json"
        host, port = request.transport.get_extra_info("peername")[:2]  # type: ignore[union-attr]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.raw_path.split("?", 1)[0].encode(),
            "query_string": request.query_string.encode(),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers.items()
                # The body may have been replaced: let its real length be recomputed.
                if k.lower() != "content-length"
            ]
            + [(b"content-length", str(len(body)).encode())],
            "client": (host, port),
            "server": ("127.0.0.1", self._server.port),
        }
        delivered = False
        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-length"
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._asgi(scope, receive, send)
        if request.path == BULK_PATH and request.method == "POST":
            self.bulk_statuses.append(status)
        response = web.Response(status=status, body=b"".join(chunks))
        for name, value in headers:
            response.headers.add(name, value)
        return response
