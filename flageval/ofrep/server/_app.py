"""The application factory and its life: start polling, stop streams, deliver counts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from flageval._common import RateLimitedLog
from flageval._telemetry import Telemetry

from . import _handlers as handlers
from ._logs import limit_log
from ._options import SSE_PATH, ServerOptions
from ._state import SERVER, SSE_ROUTE, Server

log = logging.getLogger("flageval.ofrep.server")
_errors = RateLimitedLog(log)

_POLLER = web.AppKey("flageval_ofrep_poller", asyncio.Task)
_OWN_TELEMETRY = web.AppKey("flageval_ofrep_own_telemetry", bool)
_TELEMETRY = web.AppKey("flageval_ofrep_telemetry", Telemetry)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    options: ServerOptions | None = None,
    *,
    telemetry: Telemetry | None = None,
    **settings: Any,
) -> web.Application:
    """An aiohttp application serving OFREP from flagd flag files.

    Give ``options``, or the settings of :class:`ServerOptions` as keywords
    (``create_app(flags=["flags.json"], cache_capacity=500)``); ``api_keys`` left out
    come from ``FLAGEVAL_OFREP_SERVER_API_KEYS``. ``telemetry``: the pipeline that counts
    the evaluations; None builds one from the environment (``flageval.Telemetry()``),
    which this application shuts down when it stops (a given one is left running).
    Mount it as it is, or under a prefix with ``app.add_subapp``.
    """
    if options is None:
        options = ServerOptions.load(**settings)
    elif settings:
        raise TypeError("create_app: give options or keyword settings, not both")
    limit_log()
    own = telemetry is None
    if telemetry is None:
        telemetry = Telemetry()
    server = Server(options, telemetry if telemetry.enabled else None)
    app = web.Application(middlewares=[_guard], client_max_size=options.max_body_bytes)
    app[SERVER] = server
    app[_OWN_TELEMETRY] = own
    app.router.add_post("/ofrep/v1/evaluate/flags", handlers.bulk)
    app.router.add_post("/ofrep/v1/evaluate/flags/{key}", handlers.single)
    app.router.add_get(SSE_PATH, handlers.stream, name=SSE_ROUTE)
    app.router.add_get("/ofrep/server/status", handlers.status)
    app.on_startup.append(_start)
    app.on_shutdown.append(_close_streams)
    app.on_cleanup.append(_stop)
    app[_TELEMETRY] = telemetry
    return app


@web.middleware
async def _guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Nothing escapes into aiohttp's loop but HTTP answers: a bug is a logged 500."""
    srv = request.app[SERVER]
    try:
        return await handler(request)
    except web.HTTPException as answer:
        if answer.status == 401:
            srv.counts["unauthorized"] += 1
        elif answer.status == 403:
            srv.counts["forbidden"] += 1
        raise
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        srv.counts["internal_errors"] += 1
        trace = traceback.format_exc(limit=8)
        _errors.log(logging.ERROR, "handler", "internal error serving %s\n%s", request.path, trace)
        return web.json_response({"errorDetails": "internal server error"}, status=500)


async def _start(app: web.Application) -> None:
    srv = app[SERVER]
    srv.started(app)
    app[_POLLER] = asyncio.create_task(srv.files.run(), name="flageval-ofrep-server-poll")


async def _close_streams(app: web.Application) -> None:
    await app[SERVER].hub.close(app[SERVER].options.shutdown_timeout_s / 2)


async def _stop(app: web.Application) -> None:
    srv = app[SERVER]
    poller = app.get(_POLLER)
    if poller is not None:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await poller
    if app[_OWN_TELEMETRY]:
        # Counts delivered (or counted as lost) within the deadline; never raises.
        await app[_TELEMETRY].shutdown_async(srv.options.shutdown_timeout_s)
