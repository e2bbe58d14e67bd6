"""Counters, rate-limited warnings and log-safe URLs.

Counters live in one dict whose keys are all created up front: the loop thread only
increments existing keys, so another thread can copy the dict (``stats()``) without
ever seeing it change size mid-copy.
"""

from __future__ import annotations

import logging
import time

from yarl import URL

logger = logging.getLogger("flageval.ofrep")

STAT_KEYS: tuple[str, ...] = (
    # bulk evaluation requests and their outcomes
    "fetches",
    "fetch_ok",
    "fetch_not_modified",
    "fetch_rate_limited",
    "fetch_unauthorized",
    "fetch_status_400",
    "fetch_status_5xx",
    "fetch_status_other",
    "fetch_malformed",
    "fetch_network_error",
    "fetch_timeout",
    # an unexpected exception inside the fetch (a bug), handled as a failed fetch
    "fetch_internal_error",
    "fetch_discarded_old_context",
    # triggers that joined an already queued fetch instead of causing their own
    "fetch_coalesced",
    "polls",
    "config_changes",
    "items_invalid",
    "stream_entries_invalid",
    # event streams
    "sse_connects",
    "sse_connect_failures",
    "sse_disconnects",
    "sse_events",
    "sse_refetch_events",
    "sse_ignored_events",
    "sse_malformed_events",
    "inactivity_closes",
    "inactivity_resumes",
    "context_changes",
)


def new_stats() -> dict[str, int]:
    return dict.fromkeys(STAT_KEYS, 0)


class RateLimitedLog:
    """At most one record per key per interval; the next one says how many were
    swallowed. Keeps a flapping server from flooding the application's logs."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)


def safe_url(url: URL) -> str:
    """scheme://host[:port]/path: stream URLs may carry tokens in the query string or
    in user info, neither of which may reach a log."""
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"
