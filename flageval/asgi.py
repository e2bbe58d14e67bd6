"""The one line for ASGI servers that end without ``atexit`` (uvicorn)::

    app = flageval.asgi.FlagEvalMiddleware(app)  # or app.add_middleware(FlagEvalMiddleware)

uvicorn, on SIGTERM, stops accepting, waits for the requests in flight, runs the
application's lifespan shutdown, then restores the default action and re-raises the
signal: the process ends there, ``atexit`` never runs. flageval's signal handler
(flageval._process) flushes when the signal comes, but what requests in flight evaluate
afterwards has no later moment to go out, except the lifespan's end. This middleware
takes that moment: after the application's own lifespan shutdown (which may evaluate
flags too), it shuts every pipeline of the process down, so everything counted before
the process ends is delivered or counted as lost. Without lifespan support in the
application, it speaks the lifespan protocol itself. Every other scope passes through
untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import _process as process

log = logging.getLogger("flageval")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FlagEvalMiddleware:
    """ASGI middleware: deliver every count at the lifespan's end (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "lifespan":
            await self.app(scope, receive, send)
            return
        await _Lifespan(self.app).run(scope, receive, send)


class _Lifespan:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent: list[str] = []  # what the application has said
        self.asked: list[str] = []  # what the server has asked

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_() -> Message:
            message = await receive()
            self.asked.append(str(message.get("type")))
            return message

        async def send_(message: Message) -> None:
            kind = str(message.get("type"))
            self.sent.append(kind)
            if kind == "lifespan.startup.complete":
                process.lifespan_started()
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await _deliver()
            await send(message)

        try:
            await self.app(scope, receive_, send_)
        except asyncio.CancelledError:
            raise
        except BaseException:
            if self.sent:
                raise  # the application speaks lifespan and failed: the server decides
            # It does not speak lifespan (it raised before saying anything, which
            # uvicorn reads as "unsupported"): speak it here instead.
            await self._speak(receive, send)

    async def _speak(self, receive: Receive, send: Send) -> None:
        if "lifespan.startup" not in self.asked:
            await receive()
        process.lifespan_started()
        await send({"type": "lifespan.startup.complete"})
        while (await receive()).get("type") != "lifespan.shutdown":
            pass
        await _deliver()
        await send({"type": "lifespan.shutdown.complete"})


async def _deliver() -> None:
    try:
        await process.shutdown_all_async()
    finally:
        process.lifespan_ended()
