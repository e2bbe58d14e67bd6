"""flageval.ofrep: an asyncio OFREP provider for the OpenFeature Python SDK.

One module per job (the loop thread itself is ``flageval._loop``):

- ``provider``: ``OFREPProvider``, the OpenFeature-facing class and the resolve path;
- ``_config``: constructor arguments, ``OFREP_*`` environment fallbacks, validation;
- ``_refresh``: the coordinator: what each fetch outcome, stream report and trigger does;
- ``_status``: the provider's status, its transition table and the events reporting it;
- ``_queue``: when fetches run (one at a time, triggers merged, error backoff);
- ``_staleness``: how long change detection has been lost;
- ``_inactivity``: idleness and the wake-up handshake with resolves;
- ``_context``: the context fetched for, its generation and its ETag;
- ``_shared``: what resolving threads and the loop share without a lock;
- ``_fetch``: one bulk evaluation request (ETag, flagConfig* parameters, Retry-After)
  and what its answer means;
- ``_ratelimit``: the 429 gate every request waits on;
- ``_sse``: the Server-Sent Events reader;
- ``_streams``: event-stream connections, reconnection and backoff;
- ``_resolve``: bulk items -> ``FlagResolutionDetails``;
- ``_diagnostics``: the logger and the counters.
"""

from ._config import ChangeDetection, OFREPConfig
from .provider import OFREPProvider

__all__ = ["ChangeDetection", "OFREPConfig", "OFREPProvider"]
