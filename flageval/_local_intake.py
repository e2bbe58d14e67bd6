"""A stand-in for the Datadog agent's flag-evaluation route, for the demo: aiohttp on
127.0.0.1 (a free port), on its own thread, keeping every body it accepts."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from .config import INTAKE_PATH


class LocalIntake:
    """A minimal intake on 127.0.0.1 that stores every body it accepts."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> LocalIntake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)

        async def accept(request: web.Request) -> web.Response:
            self.bodies.append(await request.read())
            return web.json_response({})

        app.router.add_post(INTAKE_PATH, accept)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
