"""Every reason an evaluation is dropped or degraded, named once, and the ledger.

An evaluation either lands in a posted row or in exactly one drop counter below; a
degraded evaluation is still posted, without its targeting key and context, and counted
by why. What the OpenTelemetry export could not record is counted apart, by why
(``Unrecorded``): it concerns that export only. Each reason is a ``StrEnum`` member: it
prints, compares and hashes as its string (``Stats.dropped`` is keyed by those strings),
and carries the sentence the reference (docs/counters.md) prints for it, word for word.

Producers count what never entered the hand-off on the hand-off itself (thread-safe:
``queue_overflow``, ``closed``, ``hook_error``, and what a pipeline's end discards from
it); every later stage (tiers, wire, sender, worker) records through the worker's one
:class:`Ledger`, on the worker's loop.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Self


class Reason(enum.StrEnum):
    """A reason with its sentence; members are declared as ``NAME = value, sentence``."""

    sentence: str

    def __new__(cls, value: str, sentence: str) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.sentence = sentence
        return member


class Dropped(Reason):
    """Why an evaluation was counted and never posted."""

    QUEUE_OVERFLOW = "queue_overflow", "the hand-off was full (the worker could not keep up)"
    CLOSED = "closed", "evaluated after `shutdown()` began"
    HOOK_ERROR = (
        "hook_error",
        "the hook or the provider wrapper itself failed (never raised into the SDK)",
    )
    DEGRADED_CAP = "degraded_cap", "a new degraded bucket past `max_degraded_buckets`"
    PAYLOAD_LIMIT = (
        "payload_limit",
        "a row too big for a body even without targeting key and context",
    )
    INTAKE_REJECTED = (
        "intake_rejected",
        "the intake answered 4xx other than 429, or a redirect (not retried, not followed: "
        "a redirect would replay the body and any API key elsewhere)",
    )
    DELIVERY_UNKNOWN = (
        "delivery_unknown",
        "the request may have reached the intake but no answer came (timeout after "
        "sending, dropped connection, garbage): never re-sent, so never counted twice",
    )
    RETRY_BUFFER_FULL = (
        "retry_buffer_full",
        "bodies waiting past `retry_buffer_bytes` (oldest first)",
    )
    INTAKE_UNAVAILABLE = "intake_unavailable", "still undelivered when shutdown's deadline came"
    WORKER_ERROR = (
        "worker_error",
        "an evaluation or batch the worker failed on (a bug; logged)",
    )
    AGENT_NO_EVP_PROXY = (
        "agent_no_evp_proxy",
        "the agent's `/info` lists no EVP proxy (`/evp_proxy/v4/` or `/evp_proxy/v2/`): "
        "nothing can be posted through it (logged once; asked again every minute)",
    )
    UNREADABLE = (
        "unreadable_value",
        "a flag key, variant or error message that could not be made text, or metadata "
        "that could not be read (the value's `__str__` or the mapping raised; logged, "
        "rate-limited): no row can be built without them",
    )
    WORKER_STALLED = (
        "worker_stalled",
        "not delivered when shutdown's deadline came before the worker was done (no time "
        "was given, or the worker was still busy: a backlog to aggregate, a context "
        "value's slow `__str__`): nothing is sent after `shutdown()` returns, though a "
        "body already in flight may still arrive",
    )
    NEVER_STARTED = (
        "never_started",
        "queued by an `autostart=False` pipeline whose worker was never started "
        "(`start()`) before its shutdown or the process's exit",
    )


class Degraded(Reason):
    """Why an evaluation was posted without its targeting key and context."""

    CARDINALITY_CAP = "cardinality_cap", "the full tier or the flag's per-flag cap was reached"
    MEMORY_BUDGET = "memory_budget", "the full tier would pass `memory_budget_bytes`"
    PAYLOAD_LIMIT = (
        "payload_limit",
        "the row was too big for a body with its targeting key and context",
    )
    CONTEXT_ERROR = "context_error", "the context could not be read at all"
    CONTEXT_BUDGET = (
        "context_budget",
        "the context has more attributes than pruning may read (4,096): it is not "
        "read at all, so its cost stays bounded",
    )
    TARGETING_KEY_ERROR = (
        "targeting_key_error",
        "the targeting key could not be made text (its `__str__` raised; logged, rate-limited)",
    )


class Unrecorded(Reason):
    """Why an evaluation the worker took is not in the OpenTelemetry counter (its row,
    if any, is still posted to Datadog)."""

    OTEL_ERROR = (
        "otel_error",
        "OpenTelemetry's API or the application's SDK raised (a meter provider that "
        "raises, an `add()` that raises): never raised into the application, logged once",
    )
    UNREADABLE = (
        "unreadable_value",
        "a flag key, variant, reason or error code that could not be made text, or "
        "metadata that could not be read (logged once)",
    )


class Ledger:
    """The worker's record of losses and degradations (one per worker, on its loop)."""

    __slots__ = ("degraded", "dropped")

    def __init__(self) -> None:
        self.dropped: Counter[Dropped] = Counter()
        self.degraded: Counter[Degraded] = Counter()

    def drop(self, reason: Dropped, evaluations: int = 1) -> None:
        """``evaluations`` are lost, for ``reason``."""
        self.dropped[reason] += evaluations

    def degrade(self, reason: Degraded, evaluations: int = 1) -> None:
        """``evaluations`` are posted without targeting key and context, for ``reason``."""
        self.degraded[reason] += evaluations
