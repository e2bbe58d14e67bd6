"""flageval.ofrep: an asyncio OFREP provider for the OpenFeature Python SDK.

Stages, one module each:

- ``_config``: constructor arguments, ``OFREP_*`` environment fallbacks, validation;
- ``_loop``: the provider's own event loop on a daemon thread;
- ``_fetch``: one bulk evaluation request (ETag, flagConfig* parameters, Retry-After)
  and what its answer means;
- ``_ratelimit``: the 429 gate every request waits on;
- ``_sse``: the Server-Sent Events reader;
- ``_streams``: event-stream connections, reconnection and backoff;
- ``_refresh``: fetch scheduling and coalescing, polling, inactivity, staleness, events;
- ``_resolve``: bulk items -> ``FlagResolutionDetails``;
- ``_diagnostics``: counters, rate-limited logging, log-safe URLs;
- ``provider``: ``OFREPProvider``, the OpenFeature-facing class.
"""

from ._config import ChangeDetection, OFREPConfig
from .provider import OFREPProvider

__all__ = ["ChangeDetection", "OFREPConfig", "OFREPProvider"]
