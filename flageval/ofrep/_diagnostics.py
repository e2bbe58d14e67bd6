"""The provider's logger and counters.

Counters live in one dict whose keys are all created up front: the loop thread only
increments existing keys, so another thread can copy the dict (``stats()``) without
ever seeing it change size mid-copy.
"""

from __future__ import annotations

import logging

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
    # a 200 past the JSON element budget (refused undecoded; the last values stay)
    "fetch_too_complex",
    # an ETag that could not be sent back in If-None-Match (dropped: fetches go without)
    "etag_unsendable",
    "fetch_network_error",
    "fetch_timeout",
    # an unexpected exception inside the fetch (a bug), handled as a failed fetch
    "fetch_internal_error",
    "fetch_discarded_old_context",
    # triggers that joined an already queued fetch instead of causing their own
    "fetch_coalesced",
    # refetch events that caused no fetch of their own (same etag, or debounced)
    "sse_events_coalesced",
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
    # an SSE id that could not go back in Last-Event-ID (dropped)
    "sse_id_unsendable",
    # an event's etag/lastModified too long for a URL (the fetch goes without it)
    "sse_field_dropped",
    # connections dropped for bringing 1000 events within one second (a flood)
    "sse_flood_closes",
    # 401/403 from a stream never sent our credentials: its URL token failed
    "sse_token_rejected",
    "inactivity_closes",
    "inactivity_resumes",
    "context_changes",
    # contexts that could not be encoded (INVALID_CONTEXT until the next good one)
    "context_unusable",
    # persisted evaluations (ADR-0009)
    "cache_hits",
    "cache_misses",
    "cache_expired",
    "cache_read_failed",
    "cache_writes",
    "cache_write_failed",
    "cache_write_too_large",
    "cache_write_discarded",
    # forked children that restarted their own loop, streams and polling
    "fork_restarts",
)


def new_stats() -> dict[str, int]:
    return dict.fromkeys(STAT_KEYS, 0)
