"""flageval: flag-evaluation telemetry for OpenFeature.

Add one hook; every evaluation is counted per flag, variant, allocation, targeting key
and pruned context, and posted in batches to the flag-evaluation intake::

    from openfeature import api
    from flageval import FlagEvalHook

    api.add_hooks([FlagEvalHook()])

See README.md for settings, guarantees and the OFREP provider (``flageval.ofrep``).
"""

from __future__ import annotations

from .config import Settings
from .default import default_telemetry, flush, shutdown, stats
from .hook import FlagEvalHook
from .instrumented import instrument
from .stats import Stats
from .telemetry import Telemetry

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
