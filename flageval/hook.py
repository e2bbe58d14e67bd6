"""The OpenFeature hook: the only code of ours on the evaluation's hot path.

``finally_after`` runs after every evaluation (success, error, code default,
PROVIDER_NOT_READY), on whatever thread evaluated. It builds one flat tuple of
references (no copying, no pruning, no hashing: that is the worker's job), appends it
to the bounded hand-off and returns. It never raises into the SDK: an exception there
would cost the caller a logged traceback per evaluation; instead it is counted under
``hook_error``.

Why references are safe: the SDK builds a fresh merged ``EvaluationContext`` per
evaluation, so its top-level attribute dict is ours to keep; nested values are shared
with the caller and read later by the worker (see prune.py for what a later mutation
can and cannot do).
"""

from __future__ import annotations

import contextlib
from time import time_ns
from typing import TYPE_CHECKING, Any

from openfeature.hook import Hook, HookContext, HookHints

from .handoff import HOOK_ERROR, NEW, Handoff

if TYPE_CHECKING:
    from collections.abc import Callable

    from openfeature.flag_evaluation import FlagEvaluationDetails


class FlagEvalHook(Hook):
    """Counts every evaluation into a :class:`flageval.Telemetry` pipeline.

    ``FlagEvalHook()`` with no argument feeds the process-wide default pipeline
    (built from the environment on first use); ``Telemetry(...).hook`` feeds its own.
    With the killswitch set the hook does nothing at all.
    """

    def __init__(self, telemetry: Any = None) -> None:
        if telemetry is None:
            from .telemetry import default_telemetry  # noqa: PLC0415 - import cycle

            telemetry = default_telemetry()
        self._telemetry = telemetry
        handoff: Handoff | None = telemetry._handoff
        if handoff is None:  # killswitch: replace the stage with a no-op
            self.finally_after = _noop  # type: ignore[method-assign]
            return
        self._handoff = handoff
        self._start: Callable[[], None] = telemetry._ensure_started

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[Any],
        hints: HookHints,
    ) -> None:
        try:
            ctx = hook_context.evaluation_context
            snapshot = (
                hook_context.flag_key,
                details.variant,
                details.error_code,
                details.error_message,
                details.flag_metadata,
                ctx.targeting_key,
                ctx.attributes,
                time_ns(),
            )
            h = self._handoff
            q = h.queue
            if h.accepting and len(q) < h.capacity:
                q.append(snapshot)
                return
            if h.state == NEW:
                self._start()  # first use: start the worker (once, under a lock)
            h.offer(snapshot)  # full, closed, or just started: queue or count why not
        except Exception:
            with contextlib.suppress(Exception):  # nothing may escape into the SDK
                self._handoff.count(HOOK_ERROR)


def _noop(hook_context: HookContext, details: Any, hints: HookHints) -> None:
    return None
