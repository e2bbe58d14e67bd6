"""flageval: flag-evaluation telemetry for OpenFeature.

Add one hook; every evaluation is counted per flag, variant, allocation, targeting key
and pruned context, and posted in batches to the flag-evaluation intake::

    from openfeature import api
    from flageval import FlagEvalHook

    api.add_hooks([FlagEvalHook()])

The public names are those in ``__all__`` below, plus two public modules:
``flageval.asgi`` (the ASGI middleware) and ``flageval.ofrep`` (the OFREP provider).
Every module whose name starts with an underscore is internal; one module per stage:

- ``_hook``: the OpenFeature hook, the only code of ours on the evaluation's hot path;
- ``_instrumented`` and ``_record``: ``instrument(provider)``, the wrapper's resolvers;
  ``_record.record()`` for evaluations made without the SDK (an OFREP server's);
- ``_handoff``: the snapshot (``put``) and the bounded hand-off between threads and the
  worker;
- ``_worker``: drains the hand-off, aggregates, flushes, on the worker's loop;
- ``_prune`` and ``_fields``: context pruning and canonical keys; row fields, consent;
- ``_tiers``: full and degraded tiers, their caps and memory budget;
- ``_wire``: rows and bodies of at most 5 MiB;
- ``_otel``: the OpenTelemetry export, ``feature_flag.evaluations`` counted per
  attribute set from the batches the worker drains (``Telemetry(otel_metrics=True)``);
- ``_transport``, ``_http`` and ``_agent``: posting with retries; the agent's routes;
- ``_losses`` and ``_stats``: every drop and degrade reason; ``Stats``, built in one
  place from each stage's counters;
- ``_telemetry`` and ``_lifecycle``: a pipeline, and its life as one phase with a
  transition table; ``_runner`` and ``_loop``: the worker's own loop thread;
- ``_process`` and ``_default``: exit, signals and fork; the process-wide pipeline;
- ``_settings``: how a setting is declared, and the one loader both halves use;
- ``_config`` and ``_checks``: the pipeline's settings; ``_service``, ``_container``: who
  is posting;
- ``_common``: helpers both halves share;
- ``_cli``: ``python -m flageval demo`` and ``python -m flageval bench``.
"""

from __future__ import annotations

from ._config import Settings
from ._default import default_telemetry, flush, shutdown, stats
from ._hook import FlagEvalHook
from ._instrumented import instrument
from ._stats import Stats
from ._telemetry import Telemetry

__version__ = "0.1.0"

__all__ = [
    "FlagEvalHook",
    "Settings",
    "Stats",
    "Telemetry",
    "__version__",
    "default_telemetry",
    "flush",
    "instrument",
    "shutdown",
    "stats",
]
