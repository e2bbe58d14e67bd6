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
