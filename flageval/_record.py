"""Recording an evaluation made outside the hooks: the wrapper's resolvers, and
:func:`record` for code that evaluates by itself (the OFREP server).

The wrapper's resolvers delegate, then hand over what the hook would: one closure per
resolver and wrapped provider, with everything it reads bound once (the wrapped
resolver, the hand-off, the type to check): an evaluation costs the wrapped call, a
slot read, one type check and the hook's own hand-over (_handoff.put).

What each outcome records, as the SDK's ``finally_after`` would see it
(openfeature-sdk 0.10, ``OpenFeatureClient._create_provider_evaluation`` and
``evaluate_flag_details``):

* a resolution with an error code: its variant, code, message and metadata;
* a value not of the requested type: TYPE_MISMATCH, the SDK's message, no variant, no
  metadata (the SDK builds new details);
* an exception: no variant, no metadata; an ``OpenFeatureError``'s own code and
  message, any other ``Exception`` GENERAL with its ``error_message`` or ``str()``.
  The exception is re-raised unchanged (the SDK answers it). A ``BaseException``
  (cancellation) is not recorded: the SDK's ``finally_after`` never sees one either.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagMetadata, FlagType, Reason

from ._handoff import Details, Handoff, put
from ._hook import CLAIM, SEAM
from ._losses import Dropped
from ._telemetry import Telemetry

#: What the SDK checks a resolved value against (``client._typecheck_flag_value``).
TYPES: Mapping[FlagType, type | tuple[type, ...]] = {
    FlagType.BOOLEAN: bool,
    FlagType.STRING: str,
    FlagType.OBJECT: (dict, list),
    FlagType.FLOAT: float,
    FlagType.INTEGER: int,
}
_NO_CONTEXT = EvaluationContext(None, MappingProxyType({}))
_TYPE_MISMATCH = ErrorCode.TYPE_MISMATCH


def mismatch_message(expected: type | tuple[type, ...], value: Any) -> str:
    """The SDK's TypeMismatchError text, word for word."""
    return f"Expected type {expected} but got {type(value)}"


def raised(err: Exception) -> tuple[ErrorCode, str | None]:
    """The error code and message the SDK answers an exception from the provider with."""
    if isinstance(err, OpenFeatureError):
        return err.error_code, err.error_message
    return ErrorCode.GENERAL, getattr(err, "error_message", str(err))


class _Failed:
    """The details the SDK builds when it answers an error itself (the provider raised,
    or resolved a value of the wrong type): no variant, no metadata, reason ERROR."""

    __slots__ = ("error_code", "error_message", "flag_metadata")
    variant = None
    reason = Reason.ERROR

    def __init__(self, code: ErrorCode, message: str | None) -> None:
        self.error_code: ErrorCode | None = code
        self.error_message = message
        self.flag_metadata: FlagMetadata = {}


def record(
    telemetry: Telemetry,
    flag_key: str,
    details: Details,
    context: EvaluationContext | None,
) -> None:
    """Count one evaluation made without the SDK's hooks into ``telemetry``, exactly as
    the hook counts what the SDK answers: ``details`` is a ``FlagResolutionDetails``
    (or anything with its variant, error code, error message, flag metadata and reason),
    ``context`` the ``EvaluationContext`` it was evaluated for. For code that evaluates
    flags itself (an OFREP server). Starts the worker on first use; never raises (a
    failure here is counted ``hook_error``); does nothing with the killswitch set."""
    handoff = telemetry.handoff
    if handoff is None:
        return
    handoff.direct = True  # no provider of the OpenFeature API answers these
    try:
        put(handoff, telemetry.ensure_started, flag_key, details, context or _NO_CONTEXT)
    except Exception:
        with contextlib.suppress(Exception):  # nothing may escape into the caller
            handoff.count(Dropped.HOOK_ERROR)


def _record_raise(
    handoff: Handoff,
    start: Callable[[], None],
    flag_key: str,
    ctx: EvaluationContext | None,
    err: Exception,
) -> None:
    try:
        put(handoff, start, flag_key, _Failed(*raised(err)), ctx or _NO_CONTEXT)
    except Exception:
        # str() of the exception raised too: the SDK then answers nothing the hook could
        # see; counted here so that nothing is lost silently.
        with contextlib.suppress(Exception):
            handoff.count(Dropped.HOOK_ERROR)


_PARAMETERS = ("flag_key", "default_value", "evaluation_context")


def as_the_sdk_calls(resolver: Callable[..., Any]) -> Callable[[str, Any, Any], Any]:
    """``resolver`` called as the SDK calls it, by keyword; positionally when that is
    the same call (its first three parameters have the protocol's names: ~0.2 us less
    per evaluation), so that a provider named otherwise fails with the wrapper as it
    does without it."""
    try:
        params = list(inspect.signature(resolver).parameters.values())[:3]
    except (TypeError, ValueError):
        params = []
    if [p.name for p in params] == list(_PARAMETERS) and all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params
    ):
        return resolver

    def by_keyword(flag_key: str, default_value: Any, evaluation_context: Any) -> Any:
        return resolver(
            flag_key=flag_key, default_value=default_value, evaluation_context=evaluation_context
        )

    return by_keyword


def _recorder(
    handoff: Handoff, start: Callable[[], None], expected: type | tuple[type, ...]
) -> Callable[[str, Any, EvaluationContext | None], None]:
    """Hand over one resolution; never raises (counted under hook_error)."""
    # Past half full, the worker is starved of the GIL (8 threads evaluating through the
    # wrapper outpace its share by ~1.5x): each producer then gives the GIL up once per
    # evaluation, which holds the queue near half instead of overflowing. No waiting.
    high_water = handoff.capacity // 2  # fixed for the hand-off's life (a fork keeps it)
    sleep = time.sleep

    def record_one(flag_key: str, res: Any, ctx: EvaluationContext | None) -> None:
        try:
            if ctx is None:
                ctx = _NO_CONTEXT
            if res.error_code or isinstance(res.value, expected):
                depth = put(handoff, start, flag_key, res, ctx)  # the hook's own hand-over
            else:
                failed = _Failed(_TYPE_MISMATCH, mismatch_message(expected, res.value))
                depth = put(handoff, start, flag_key, failed, ctx)
            if depth > high_water:
                sleep(0)
        except Exception:
            with contextlib.suppress(Exception):  # nothing may escape into the SDK
                handoff.count(Dropped.HOOK_ERROR)

    return record_one


def recording_sync(
    inner: Callable[..., Any],
    flag_type: FlagType,
    handoff: Handoff,
    start: Callable[[], None],
    stand_aside: Callable[[], None],
) -> Callable[..., Any]:
    """The wrapper's sync resolver around ``inner``."""
    keep = _recorder(handoff, start, TYPES[flag_type])
    claim, seam = CLAIM, SEAM
    call = as_the_sdk_calls(inner)

    def resolve(
        flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> Any:
        # Read before the call: a provider that evaluates other flags must not see it.
        covered = seam.claimed and claim.by is handoff  # this pipeline's hook records it
        if covered:
            claim.by = None
            stand_aside()
        try:
            res = call(flag_key, default_value, evaluation_context)
        except Exception as err:
            if not covered:
                _record_raise(handoff, start, flag_key, evaluation_context, err)
            raise
        if not covered:
            keep(flag_key, res, evaluation_context)
        return res

    return resolve


def recording_async(
    inner_async: Callable[..., Any] | None,
    inner_sync: Callable[..., Any],
    flag_type: FlagType,
    handoff: Handoff,
    start: Callable[[], None],
    stand_aside: Callable[[], None],
) -> Callable[..., Any]:
    """The wrapper's async resolver around ``inner_async``; None: ``inner_sync`` is called
    positionally instead (a provider without async resolvers, or with AbstractProvider's,
    which do just that)."""
    keep = _recorder(handoff, start, TYPES[flag_type])
    claim, seam = CLAIM, SEAM
    call_async = None if inner_async is None else as_the_sdk_calls(inner_async)

    async def resolve(
        flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> Any:
        # Checked before the first await: the SDK ran the before hooks in this same step.
        covered = seam.claimed and claim.by is handoff
        if covered:
            claim.by = None
            stand_aside()
        try:
            if call_async is None:  # a provider with sync resolvers only
                res = inner_sync(flag_key, default_value, evaluation_context)
            else:
                res = await call_async(flag_key, default_value, evaluation_context)
        except Exception as err:
            if not covered:
                _record_raise(handoff, start, flag_key, evaluation_context, err)
            raise
        if not covered:
            keep(flag_key, res, evaluation_context)
        return res

    return resolve
