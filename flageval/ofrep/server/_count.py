"""Every evaluation the server serves, into a flageval telemetry pipeline.

:func:`record` is the only place an evaluation of the server enters a pipeline: the
same snapshot the hook takes (flag key, resolution details, evaluation context), on the
same bounded hand-off, which starts the pipeline's worker on first use. With the
killswitch set the pipeline has no hand-off and this does nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails

from flageval._handoff import State, snapshot
from flageval._losses import HOOK_ERROR
from flageval._telemetry import Telemetry


def record(
    telemetry: Telemetry,
    flag_key: str,
    details: FlagResolutionDetails[Any],
    context: EvaluationContext,
) -> None:
    """Count one evaluation; never raises (a failure is counted as ``hook_error``)."""
    handoff = telemetry.handoff
    if handoff is None:
        return
    try:
        if handoff.state is State.NEW:
            telemetry.ensure_started()
        handoff.offer(snapshot(flag_key, details, context))
    except Exception:
        with contextlib.suppress(Exception):
            handoff.count(HOOK_ERROR)
