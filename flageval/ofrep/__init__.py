"""flageval.ofrep: an asyncio OFREP provider for the OpenFeature Python SDK.

One module per job (the loop thread itself is ``flageval._loop``):

- ``provider``: ``OFREPProvider``, the OpenFeature-facing class and the resolve path;
- ``_config``: constructor arguments, ``OFREP_*`` environment fallbacks, validation;
- ``_headers``: ``OFREP_HEADERS`` (ADR-0007 amendment), header checks, sendable values;
- ``_refresh``: the coordinator: what each fetch outcome and trigger does;
- ``_status``: the provider's status, its transition table and the events reporting it;
- ``_queue``: when fetches run (one at a time, triggers merged, error backoff, the
  ceiling) and the 429 gate every request waits on;
- ``_coalesce``: refetch events -> fetches (dedup by etag, debounce, ceiling);
- ``_detection``: streams, polling, inactivity and staleness together (the polling tick
  and the stale clock live here);
- ``_inactivity``: idleness and the wake-up handshake with resolves;
- ``_context``: the context fetched for (its body, generation and ETag);
- ``_snapshot``: what is served and where it came from (live or persisted), and what
  resolving threads and the loop share without a lock;
- ``_cache`` and ``_persist``: persisted evaluations (ADR-0009): policy and file;
- ``_fetch``: one bulk evaluation request (ETag, flagConfig* parameters, Retry-After);
- ``_bulk``: what an answer means (outcomes, the 200's body within a budget, streams);
- ``_sse``: the Server-Sent Events reader;
- ``_streams``: event-stream connections, reconnection and backoff;
- ``_resolve``: bulk items -> ``FlagResolutionDetails``;
- ``_diagnostics``: the logger and the counters;
- ``server``: an OFREP server on flagd flag files (the ``server`` extra; its own module
  map in ``flageval/ofrep/server/__init__.py``; docs/server.md).
"""

from ._config import ChangeDetection, OFREPConfig
from .provider import OFREPProvider

__all__ = ["ChangeDetection", "OFREPConfig", "OFREPProvider"]
