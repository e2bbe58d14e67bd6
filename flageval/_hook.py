"""The OpenFeature hook: the only code of ours on the evaluation's hot path.

``finally_after`` runs after every evaluation (success, error, code default,
PROVIDER_NOT_READY), on whatever thread evaluated. It hands the evaluation over
(_handoff.put: one flat tuple of references, and a copy of the flag's small metadata
dict so consent is read as the evaluation saw it; no pruning, no hashing: that is the
worker's job, appended to the bounded hand-off) and returns; past half a full hand-off
it first gives up the GIL once, to a worker starved of it. It never raises into the SDK: an
exception there would cost the caller a logged traceback per evaluation; instead it is
counted under ``hook_error``.

Why references are safe: the SDK builds a fresh merged ``EvaluationContext`` per
evaluation, so its top-level attribute dict is ours to keep; nested values are shared
with the caller and read later by the worker (see prune.py for what a later mutation
can and cannot do).

``FlagEvalHook(telemetry)`` takes a :class:`flageval.Telemetry` (typed by the
``Pipeline`` protocol: anything with such a hook) and shares its hook's hand-off.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from openfeature.hook import Hook, HookContext, HookHints

from ._handoff import Handoff, put
from ._losses import Dropped

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagEvaluationDetails


class Pipeline(Protocol):
    """What ``FlagEvalHook(telemetry)`` counts into: a :class:`flageval.Telemetry`."""

    @property
    def hook(self) -> FlagEvalHook: ...


_default_pipeline: Callable[[], Pipeline] | None = None


class _Claim(threading.local):
    """Per thread: which pipeline's hook is between its ``before`` and the provider call.

    The seam with ``flageval.instrument``: a wrapped provider that finds its own
    hand-off here leaves the evaluation to the hook (counted once, the hook wins), and
    its short-circuit hook leaves ``(hand-off, context)`` here for the hook to skip."""

    by: object = None


CLAIM = _Claim()
#: The hand-offs a wrapped provider feeds too: only hooks of those claim their
#: evaluations. Any other hook pays one global read per stage for the seam.
_wrapped: set[Handoff] = set()
_claims = False  # _wrapped is not empty


class _Seam:
    """``claimed``: a hook has claimed an evaluation once; until then a wrapper skips
    reading CLAIM (a thread-local read costs ~85 ns here, a slot ~15 ns)."""

    __slots__ = ("claimed",)

    def __init__(self) -> None:
        self.claimed = False


SEAM = _Seam()


def enable_claims(handoff: Handoff) -> None:
    """Have hooks of ``handoff`` claim their evaluations (a wrapper of it was built)."""
    global _claims
    _wrapped.add(handoff)
    _claims = True


def set_default_pipeline(factory: Callable[[], Pipeline]) -> None:
    """Give ``FlagEvalHook()`` its process-wide pipeline (flageval._process does, at import)."""
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
        own = telemetry.hook
        self._bind(getattr(own, "_handoff", None), own._start)

    _handoff: Handoff  # set unless switched off

    def _bind(self, handoff: Handoff | None, start: Callable[[], None]) -> None:
        self._start = start
        if handoff is None:  # killswitch: replace the stages with no-ops
            self.before = _noop_before  # type: ignore[method-assign]
            self.finally_after = _noop  # type: ignore[method-assign]
            return
        self._handoff = handoff
        self._high_water = handoff.capacity // 2  # as the wrapper's (_record.py)

    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        # The SDK calls every hook's before anyway; claiming here costs one assignment.
        if _claims and self._handoff in _wrapped:
            CLAIM.by = self._handoff
            SEAM.claimed = True

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[Any],
        hints: HookHints,
    ) -> None:
        try:
            ctx = hook_context.evaluation_context
            if _claims and self._handoff in _wrapped:
                claim = CLAIM
                mark = claim.by
                if mark is not None:
                    claim.by = None
                    if mark.__class__ is tuple and mark[0] is self._handoff and mark[1] is ctx:
                        return  # a wrapped provider's short-circuit hook recorded it already
            # Past half full the worker is starved of the GIL: give it up once. No waiting.
            if (
                put(self._handoff, self._start, hook_context.flag_key, details, ctx)
                > self._high_water
            ):
                time.sleep(0)
        except Exception:
            with contextlib.suppress(Exception):  # nothing may escape into the SDK
                self._handoff.count(Dropped.HOOK_ERROR)


def hook_for(handoff: Handoff | None, start: Callable[[], None]) -> FlagEvalHook:
    """The hook a pipeline builds for itself: it feeds ``handoff`` (None: switched off,
    the hook does nothing at all), and ``start`` starts the pipeline's worker on first
    use."""
    hook = FlagEvalHook.__new__(FlagEvalHook)
    hook._bind(handoff, start)
    return hook


def _noop(hook_context: HookContext, details: Any, hints: HookHints) -> None:
    return None


def _noop_before(hook_context: HookContext, hints: HookHints) -> None:
    return None
