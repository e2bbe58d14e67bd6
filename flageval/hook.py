"""The OpenFeature hook: the only code of ours on the evaluation's hot path.

``finally_after`` runs after every evaluation (success, error, code default,
PROVIDER_NOT_READY), on whatever thread evaluated. It builds one flat tuple
(handoff.snapshot: references, and a copy of the flag's small metadata dict so consent
is read as the evaluation saw it; no pruning, no hashing: that is the worker's job),
appends it to the bounded hand-off and returns. It never raises into the SDK: an
exception there would cost the caller a logged traceback per evaluation; instead it is
counted under ``hook_error``.

Why references are safe: the SDK builds a fresh merged ``EvaluationContext`` per
evaluation, so its top-level attribute dict is ours to keep; nested values are shared
with the caller and read later by the worker (see prune.py for what a later mutation
can and cannot do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from openfeature.hook import Hook, HookContext, HookHints

from .handoff import Handoff, State, snapshot
from .losses import HOOK_ERROR

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagEvaluationDetails


class Pipeline(Protocol):
    """What the hook needs of a pipeline: where snapshots go (None: switched off) and a
    way to start the worker on first use."""

    @property
    def handoff(self) -> Handoff | None: ...

    def ensure_started(self) -> None: ...


_default_pipeline: Callable[[], Pipeline] | None = None


def set_default_pipeline(factory: Callable[[], Pipeline]) -> None:
    """Give ``FlagEvalHook()`` its process-wide pipeline (flageval.process does, at import)."""
    global _default_pipeline
    _default_pipeline = factory


class FlagEvalHook(Hook):
    """Counts every evaluation into a :class:`flageval.Telemetry` pipeline.

    ``FlagEvalHook()`` with no argument feeds the process-wide default pipeline
    (built from the environment on first use); ``Telemetry(...).hook`` feeds its own.
    With the killswitch set the hook does nothing at all.
    """

    def __init__(self, telemetry: Pipeline | None = None) -> None:
        if telemetry is None:
            assert _default_pipeline is not None  # set when the flageval package loads
            telemetry = _default_pipeline()
        handoff = telemetry.handoff
        if handoff is None:  # killswitch: replace the stage with a no-op
            self.finally_after = _noop  # type: ignore[method-assign]
            return
        self._handoff = handoff
        self._start = telemetry.ensure_started

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[Any],
        hints: HookHints,
    ) -> None:
        try:
            snap = snapshot(hook_context.flag_key, details, hook_context.evaluation_context)
            h = self._handoff
            q = h.queue
            if h.accepting and len(q) < h.capacity:
                q.append(snap)
                return
            if h.state is State.NEW:
                self._start()  # first use: start the worker (once, under a lock)
            h.offer(snap)  # full, closed, or just started: queue or count why not
        except Exception:
            with contextlib.suppress(Exception):  # nothing may escape into the SDK
                self._handoff.count(HOOK_ERROR)


def _noop(hook_context: HookContext, details: Any, hints: HookHints) -> None:
    return None
