"""The server's log lines: an access log without query strings, and flagd's own logger
kept from flooding.

The access log shows method, path, status and time only: a query may hold a stream
token, and headers hold credentials. flagd's evaluator logs an ERROR, some with a
traceback, per evaluation for conditions a client causes (a ``fractional`` rule and a
context without ``targetingKey``, a ``sem_ver`` rule and no version), and aiohttp logs
one per malformed request: each distinct message of those loggers passes at most once
a minute, with the count of those held back.
"""

from __future__ import annotations

import logging
import threading
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

access_log = logging.getLogger("flageval.ofrep.server.access")

#: The logger flagd's evaluator (openfeature-flagd-core) writes to.
EVALUATOR_LOGGER = "openfeature.contrib"
#: Where aiohttp says a request could not be parsed (the command limits it too).
AIOHTTP_SERVER_LOGGER = "aiohttp.server"
_INTERVAL_S = 60.0
_MAX_KEYS = 32


class AccessLogger(AbstractAccessLogger):
    """``METHOD /path STATUS 1.2ms``: never the query string, never a header."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1fms", request.method, request.path, response.status, time * 1000
        )


class _Limit(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        now = time.monotonic()
        with self._lock:
            if key not in self._last and len(self._last) >= _MAX_KEYS:
                key = "(other messages)"
            last = self._last.get(key)
            if last is not None and now - last < _INTERVAL_S:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} like it in the last minute not shown)"
        return True


_installed = threading.Lock()


def limit_log(name: str = EVALUATOR_LOGGER) -> None:
    """Install the once-a-minute filter on a logger (once per process and logger)."""
    logger = logging.getLogger(name)
    with _installed:
        if not any(isinstance(f, _Limit) for f in logger.filters):
            logger.addFilter(_Limit())
