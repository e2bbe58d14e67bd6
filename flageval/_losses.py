"""Every reason an evaluation is dropped or degraded, named once, and the ledger.

An evaluation either lands in a posted row or in exactly one drop counter below; a
degraded evaluation is still posted, without its targeting key and context, and counted
by why. ``DROPPED`` and ``DEGRADED`` give each reason the sentence the reference
(docs/counters.md) prints for it.

Producers count what never entered the hand-off on the hand-off itself (thread-safe:
``queue_overflow``, ``closed``, ``hook_error``); every later stage (tiers, wire, sender,
worker) records through the worker's one :class:`Ledger`, on the worker's loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

# -- dropped: counted, never posted ---------------------------------------------------
QUEUE_OVERFLOW = "queue_overflow"
CLOSED = "closed"
HOOK_ERROR = "hook_error"
DEGRADED_CAP = "degraded_cap"
PAYLOAD_LIMIT = "payload_limit"
INTAKE_REJECTED = "intake_rejected"
DELIVERY_UNKNOWN = "delivery_unknown"
RETRY_BUFFER_FULL = "retry_buffer_full"
INTAKE_UNAVAILABLE = "intake_unavailable"
WORKER_ERROR = "worker_error"
AGENT_NO_EVP_PROXY = "agent_no_evp_proxy"
UNREADABLE = "unreadable_value"
WORKER_STALLED = "worker_stalled"
NEVER_STARTED = "never_started"

DROPPED: Mapping[str, str] = {
    QUEUE_OVERFLOW: "the hand-off was full (the worker could not keep up)",
    CLOSED: "evaluated after `shutdown()` began",
    HOOK_ERROR: "the hook or the provider wrapper itself failed (never raised into the SDK)",
    DEGRADED_CAP: "a new degraded bucket past `max_degraded_buckets`",
    PAYLOAD_LIMIT: "a row too big for a body even without targeting key and context",
    INTAKE_REJECTED: (
        "the intake answered 4xx other than 429, or a redirect (not retried, not followed: "
        "a redirect would replay the body and any API key elsewhere)"
    ),
    DELIVERY_UNKNOWN: (
        "the request may have reached the intake but no answer came (timeout after "
        "sending, dropped connection, garbage): never re-sent, so never counted twice"
    ),
    RETRY_BUFFER_FULL: "bodies waiting past `retry_buffer_bytes` (oldest first)",
    INTAKE_UNAVAILABLE: "still undelivered when shutdown's deadline came",
    WORKER_ERROR: "an evaluation or batch the worker failed on (a bug; logged)",
    AGENT_NO_EVP_PROXY: (
        "the agent's `/info` lists no EVP proxy (`/evp_proxy/v4/` or `/evp_proxy/v2/`): "
        "nothing can be posted through it (logged once; asked again every minute)"
    ),
    UNREADABLE: (
        "a flag key, variant or error message that could not be made text, or metadata "
        "that could not be read (the value's `__str__` or the mapping raised; logged, "
        "rate-limited): no row can be built without them"
    ),
    WORKER_STALLED: (
        "not delivered when shutdown's deadline came while the worker was still busy in "
        "application code (a slow `__str__` of a context value): nothing is sent after "
        "`shutdown()` returns, though a body already in flight may still arrive"
    ),
    NEVER_STARTED: (
        "queued by an `autostart=False` pipeline whose worker was never started "
        "(`start()` / `start_async()`) before its shutdown or the process's exit"
    ),
}

# -- degraded: posted without targeting key and context ---------------------------------
CARDINALITY_CAP = "cardinality_cap"
MEMORY_BUDGET = "memory_budget"
CONTEXT_ERROR = "context_error"
CONTEXT_BUDGET = "context_budget"
TARGETING_KEY_ERROR = "targeting_key_error"

DEGRADED: Mapping[str, str] = {
    CARDINALITY_CAP: "the full tier or the flag's per-flag cap was reached",
    MEMORY_BUDGET: "the full tier would pass `memory_budget_bytes`",
    PAYLOAD_LIMIT: "the row was too big for a body with its targeting key and context",
    CONTEXT_ERROR: "the context could not be read at all",
    CONTEXT_BUDGET: (
        "the context has more attributes than pruning may read (4,096): it is not "
        "read at all, so its cost stays bounded"
    ),
    TARGETING_KEY_ERROR: (
        "the targeting key could not be made text (its `__str__` raised; logged, rate-limited)"
    ),
}

#: What the hand-off counts on the producers' side (see handoff.py).
PRODUCER_DROPS = (QUEUE_OVERFLOW, CLOSED, HOOK_ERROR)


class Ledger:
    """The worker's record of losses and degradations (one per worker, on its loop)."""

    __slots__ = ("degraded", "dropped")

    def __init__(self) -> None:
        self.dropped: Counter[str] = Counter()
        self.degraded: Counter[str] = Counter()

    def drop(self, reason: str, evaluations: int = 1) -> None:
        """``evaluations`` are lost, for ``reason`` (one of ``DROPPED``)."""
        self.dropped[reason] += evaluations

    def degrade(self, reason: str, evaluations: int = 1) -> None:
        """``evaluations`` are posted without targeting key and context (``DEGRADED``)."""
        self.degraded[reason] += evaluations
