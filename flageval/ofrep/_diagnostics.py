"""The provider's logger and counters.

Each counter is a `Counter` member, carrying its name in ``stats()`` and the sentence
that says what it counts; `Stats` maps every member to its count. A counter that does
not exist is a mypy error, not a ``KeyError`` on the provider's loop. Every key is
created up front and only values change afterwards, so another thread can copy the
mapping (``stats()``) without ever seeing it change size mid-copy. Adding a counter is
one member here (and its line in docs/ofrep.md, which a test checks).
"""

from __future__ import annotations

import enum
import logging

logger = logging.getLogger("flageval.ofrep")


class Counter(enum.Enum):
    """A provider counter: its value is its key in ``OFREPProvider.stats()``."""

    doc: str

    def __new__(cls, key: str, doc: str) -> Counter:
        member = object.__new__(cls)
        member._value_ = key
        member.doc = doc
        return member

    # bulk evaluation requests and their outcomes
    FETCHES = ("fetches", "bulk evaluation requests made")
    FETCH_OK = ("fetch_ok", "200 answers taken")
    FETCH_NOT_MODIFIED = ("fetch_not_modified", "304 answers")
    FETCH_RATE_LIMITED = ("fetch_rate_limited", "429 answers (bulk fetches and stream connects)")
    FETCH_UNAUTHORIZED = ("fetch_unauthorized", "401 and 403 answers")
    FETCH_STATUS_400 = ("fetch_status_400", "400 answers")
    FETCH_STATUS_5XX = ("fetch_status_5xx", "5xx answers")
    FETCH_STATUS_OTHER = ("fetch_status_other", "other statuses (404, 422...)")
    FETCH_MALFORMED = ("fetch_malformed", "200 answers that are not a bulk evaluation")
    FETCH_TOO_COMPLEX = (
        "fetch_too_complex",
        "200 answers past the JSON element budget (refused undecoded)",
    )
    ETAG_UNSENDABLE = (
        "etag_unsendable",
        "ETags that cannot go back in If-None-Match (dropped: fetches go without)",
    )
    FETCH_NETWORK_ERROR = ("fetch_network_error", "connection failures")
    FETCH_TIMEOUT = ("fetch_timeout", "requests without an answer within the timeout")
    FETCH_INTERNAL_ERROR = (
        "fetch_internal_error",
        "unexpected exceptions inside a fetch (a bug), handled as a failed fetch",
    )
    FETCH_DISCARDED_OLD_CONTEXT = (
        "fetch_discarded_old_context",
        "answers for a context replaced while they were in flight",
    )
    FETCH_COALESCED = (
        "fetch_coalesced",
        "triggers that joined a queued fetch (or a scheduled retry) instead of causing one",
    )
    FETCH_CEILING_DELAYED = (
        "fetch_ceiling_delayed",
        "fetches held back by the ceiling (a burst of 4, then about one a second)",
    )
    SSE_EVENTS_COALESCED = (
        "sse_events_coalesced",
        "refetch events that caused no fetch of their own (same etag, or debounced)",
    )
    POLLS = ("polls", "poll ticks")
    CONFIG_CHANGES = ("config_changes", "answers that changed a flag (CONFIGURATION_CHANGED)")
    ITEMS_INVALID = ("items_invalid", "flag items without a string key (skipped)")
    STREAM_ENTRIES_INVALID = (
        "stream_entries_invalid",
        "eventStreams entries that cannot be used, or past the 8 followed",
    )
    # event streams
    SSE_CONNECTS = ("sse_connects", "event streams connected")
    SSE_CONNECT_FAILURES = ("sse_connect_failures", "event stream connects that failed")
    SSE_DISCONNECTS = ("sse_disconnects", "connected event streams that ended")
    SSE_TOKEN_REPLACED = (
        "sse_token_replaced",
        "stream URLs that changed only in their query: the token replaced, no reconnect",
    )
    SSE_EVENTS = ("sse_events", "events read from streams")
    SSE_REFETCH_EVENTS = ("sse_refetch_events", "refetchEvaluation events")
    SSE_IGNORED_EVENTS = ("sse_ignored_events", "events of another type (ignored)")
    SSE_MALFORMED_EVENTS = (
        "sse_malformed_events",
        "events whose data is not a JSON object with a string type",
    )
    SSE_ID_UNSENDABLE = (
        "sse_id_unsendable",
        "SSE ids that cannot go back in Last-Event-ID (dropped)",
    )
    SSE_FIELD_DROPPED = (
        "sse_field_dropped",
        "an event's etag or lastModified too long for a URL (the fetch goes without it)",
    )
    SSE_FLOOD_CLOSES = (
        "sse_flood_closes",
        "connections dropped for bringing 1,000 events within one second",
    )
    SSE_TOKEN_REJECTED = (
        "sse_token_rejected",
        "401/403 from a stream never sent our credentials: its URL's token failed",
    )
    INACTIVITY_CLOSES = ("inactivity_closes", "idle periods begun (streams and polling paused)")
    INACTIVITY_RESUMES = ("inactivity_resumes", "idle periods ended by a resolve")
    CONTEXT_CHANGES = ("context_changes", "switches to another evaluation context")
    CONTEXT_UNUSABLE = (
        "context_unusable",
        "contexts that could not be encoded (INVALID_CONTEXT until the next good one)",
    )
    # persisted evaluations (ADR-0009)
    CACHE_HITS = ("cache_hits", "persisted entries used")
    CACHE_MISSES = ("cache_misses", "no entry, or one for another identity or context")
    CACHE_EXPIRED = ("cache_expired", "entries older than cache_ttl_s (or from the future)")
    CACHE_READ_FAILED = ("cache_read_failed", "reads that failed, of any kind (a miss)")
    CACHE_WRITES = ("cache_writes", "entries written")
    CACHE_WRITE_FAILED = ("cache_write_failed", "writes that failed (the old entry stays)")
    CACHE_WRITE_TOO_LARGE = ("cache_write_too_large", "entries over 4 MiB, not written")
    CACHE_WRITE_DISCARDED = (
        "cache_write_discarded",
        "writes superseded, or for a context replaced, before their turn",
    )
    # process life
    FORK_RESTARTS = (
        "fork_restarts",
        "forked children that restarted their own loop, streams and polling",
    )


#: Every counter's count; all keys exist from the start (see the module docstring).
Stats = dict[Counter, int]


def new_stats() -> Stats:
    return dict.fromkeys(Counter, 0)


def snapshot(stats: Stats) -> dict[str, int]:
    """The counts by key, for ``stats()``: safe from any thread (values only change)."""
    return {counter.value: count for counter, count in list(stats.items())}
