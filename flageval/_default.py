"""The process-wide default pipeline behind ``FlagEvalHook()``, and the module-level
``flageval.flush()``, ``flageval.shutdown()`` and ``flageval.stats()`` that act on it."""

from __future__ import annotations

import os
import threading

from ._hook import set_default_pipeline
from ._stats import Stats
from ._telemetry import Telemetry

_default: Telemetry | None = None
_lock = threading.Lock()


def default_telemetry() -> Telemetry:
    """The process-wide pipeline, built from the environment on first use."""
    global _default
    tel = _default
    if tel is None:
        with _lock:
            if _default is None:
                _default = Telemetry()
            tel = _default
    return tel


def shutdown(timeout_s: float | None = None) -> None:
    """Shut down the default pipeline (if one was built)."""
    if _default is not None:
        _default.shutdown(timeout_s)


def flush(timeout_s: float = 10.0) -> bool:
    """Flush the default pipeline (if one was built)."""
    return True if _default is None else _default.flush(timeout_s)


def stats() -> Stats:
    """Counters of the default pipeline (building it from the environment if needed)."""
    return default_telemetry().stats()


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held at fork time


set_default_pipeline(default_telemetry)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
