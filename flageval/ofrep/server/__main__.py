"""``python -m flageval.ofrep.server --flags PATH [--flags PATH ...] --host HOST --port PORT``

Logs to stderr; says ``listening on http://HOST:PORT`` once the socket is bound (with
``--port 0``, the port the system chose). SIGTERM or SIGINT stops it gracefully: no new
connections, event streams ended, in-flight requests finished, counts delivered; exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from ._app import create_app
from ._logs import AIOHTTP_SERVER_LOGGER, AccessLogger, access_log, limit_log
from ._options import ServerOptions, from_args

log = logging.getLogger("flageval.ofrep.server")


async def serve(options: ServerOptions) -> None:
    app = create_app(options)
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        access_log=access_log if options.access_log else None,
        handle_signals=False,
        shutdown_timeout=options.shutdown_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            log.info("listening on http://%s:%d", shown, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    options = from_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # A malformed request is an ERROR with a traceback in aiohttp's log: not one per request.
    limit_log(AIOHTTP_SERVER_LOGGER)
    try:
        asyncio.run(serve(options))
    except OSError as err:  # the port is taken, the host unknown
        log.error("cannot listen on %s:%d: %s", options.host, options.port, err.strerror or err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
