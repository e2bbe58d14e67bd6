"""What one server application holds: files, cache, streams, credentials, counters."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web
from yarl import URL

from flageval._telemetry import Telemetry

from ._auth import Auth
from ._cache import BodyCache
from ._options import SSE_PATH, ServerOptions
from ._streams import Hub
from ._views import Config
from ._watch import FlagFiles

SSE_ROUTE = "flageval-ofrep-sse"

COUNT_KEYS = (
    "bulk_requests",
    "single_requests",
    "ok",
    "not_modified",
    "not_found",
    "bad_requests",
    "evaluation_errors",
    "unauthorized",
    "forbidden",
    "internal_errors",
    "evaluations",
)


class Server:
    def __init__(self, options: ServerOptions, telemetry: Telemetry | None) -> None:
        self.options = options
        self.telemetry = telemetry
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.auth = Auth(options.api_keys)
        self.cache = BodyCache(options.cache_capacity, options.cache_max_bytes)
        self.hub = Hub(options.max_streams, options.keepalive_s, options.stream_write_timeout_s)
        self.files = FlagFiles(options.flags, options.poll_interval_s, self._changed)
        # Until the application starts (and knows where it is mounted): the plain path.
        self.sse_path = SSE_PATH
        self.advert = self._advert()

    def started(self, app: web.Application) -> None:
        """The application is frozen: the stream route's path includes any mount prefix."""
        self.sse_path = str(app.router[SSE_ROUTE].url_for())
        self.advert = self._advert()

    def _advert(self) -> str:
        """Everything besides flags and context that a 200's body depends on: it enters
        the ETag, so that replicas configured differently never share one."""
        o = self.options
        if not o.event_streams:
            return "no-streams"
        parts = (o.public_origin or "", self.sse_path, o.inactivity_delay_s, self.auth.token(None))
        return "sse|" + "|".join(map(str, parts))

    def stream_advert(self, set_id: str | None) -> dict[str, Any] | None:
        """The ``eventStreams`` entry of a flag set (ADR-0008, the structured form)."""
        o = self.options
        if not o.event_streams:
            return None
        query: dict[str, str] = {}
        if set_id is not None:
            query["channels"] = set_id
        if self.auth.enabled:
            query["token"] = self.auth.token(set_id)
        uri = str(URL.build(path=self.sse_path, query=query or None))
        endpoint: dict[str, str] = {"requestUri": uri}
        if o.public_origin is not None:
            endpoint = {"origin": o.public_origin, **endpoint}
        return {"type": "sse", "endpoint": endpoint, "inactivityDelaySec": o.inactivity_delay_s}

    def _changed(self, config: Config, set_ids: set[str | None]) -> None:
        """A reload changed these flag sets: forget their answers, tell their streams."""
        self.cache.drop_sets(set_ids)
        self.hub.publish([config.view(s) for s in set_ids])

    def status(self) -> dict[str, Any]:
        config = self.files.config
        return {
            "pid": os.getpid(),
            "counts": dict(self.counts),
            "cache": {"entries": len(self.cache), "bytes": self.cache.bytes, **self.cache.counts},
            "streams": {"open": self.hub.open, **self.hub.counts},
            "files": {
                "reloads": self.files.reloads,
                "failures": self.files.failures,
                "lastChange": self.files.last_change_s,
            },
            "flagSets": [
                {"flagSetId": k, "fingerprint": v.fingerprint, "flags": len(v.entries)}
                for k, v in config.views.items()
            ],
        }


SERVER = web.AppKey("flageval_ofrep_server", Server)
