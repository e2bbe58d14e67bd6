"""A stand-in for the Datadog agent's flag-evaluation route, for the demo and the bench:
aiohttp on 127.0.0.1 (a free port), on a loop thread of its own."""

from __future__ import annotations

from aiohttp import web

from flageval._config import INTAKE_PATH
from flageval._loop import LoopThread


class IntakeError(RuntimeError):
    """The local intake could not start."""


class LocalIntake:
    """Accepts every POST to the intake route; keeps the bodies when ``keep`` (the demo
    prints them), else only counts them (the bench posts for seconds on end)."""

    def __init__(self, *, keep: bool = True) -> None:
        self._keep = keep
        self._thread = LoopThread("flageval-local-intake")
        self._runner: web.AppRunner | None = None
        self.bodies: list[bytes] = []
        self.received = 0
        self.port = 0

    @property
    def url(self) -> str:
        """The intake route's URL (``intake_url`` for a pipeline)."""
        return f"http://127.0.0.1:{self.port}{INTAKE_PATH}"

    def start(self) -> str:
        """Start serving; returns :attr:`url`. Raises IntakeError when it cannot."""
        if not self._thread.start():
            raise IntakeError("the local intake's thread did not start")
        if self._thread.call(self._start(), 10.0) is None:
            self._thread.stop(5.0)
            raise IntakeError("the local intake did not start")
        return self.url

    async def _start(self) -> bool:
        async def accept(request: web.Request) -> web.Response:
            body = await request.read()
            self.received += 1
            if self._keep:
                self.bodies.append(body)
            return web.Response(status=202)

        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(INTAKE_PATH, accept)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return True

    def stop(self) -> None:
        if self._runner is not None:
            self._thread.call(self._runner.cleanup(), 5.0)
        self._thread.stop(5.0)

    def __enter__(self) -> LocalIntake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
