"""``flageval.instrument(provider)``: evaluations recorded by the provider, below the hooks.

openfeature-sdk 0.10 charges every hook for a ``HookContext`` and four stage calls,
whatever the hook does (an empty hook alone costs 1.36-1.43x no hook in
benchmarks/README.md: more than the whole pipeline's share). A provider is called once
per evaluation with the merged context and returns the resolution, so a provider that
wraps the user's records the same snapshot the hook takes, into the same hand-off, for
a fraction of that price::

    api.set_provider_and_wait(flageval.instrument(provider))

Recorded exactly as the hook records them: success, an error the provider returns, a
provider that raises (recorded, then re-raised unchanged, as the SDK then answers
GENERAL or the error's own code), and TYPE_MISMATCH (the SDK's own check, re-applied:
the wrapper knows the requested type). What the SDK decides without or after the
provider, only the hook sees; see ``ShortCircuitHook`` for the one case the wrapper
recovers (PROVIDER_NOT_READY / FATAL) and README ("What only the hook sees") for the rest.

Both ways in at once count an evaluation once: the hook claims it in ``before`` (see
``flageval._hook.CLAIM``) and the wrapper of the same pipeline stands aside.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata, ProviderStatus
from openfeature.track import TrackingEventDetails

from ._default import default_telemetry
from ._handoff import Handoff
from ._hook import CLAIM, FlagEvalHook, enable_claims
from ._record import recording_async, recording_sync
from ._telemetry import Telemetry

log = logging.getLogger("flageval")

try:  # the status the SDK answers evaluations by (keyed by the registered object)
    from openfeature.provider._registry import provider_registry as _registry
except ImportError:  # a later SDK: see status_reader
    _registry = None  # type: ignore[assignment]


def status_reader(registry: Any) -> Callable[[FeatureProvider], ProviderStatus] | None:
    """How to read the SDK's status of a registered provider from its (private)
    registry: its dict, read as the SDK reads it; else its getter; else None (an SDK
    with neither: the wrapper records no short-circuited evaluation, only the hook)."""
    if isinstance(getattr(registry, "_provider_status", None), dict):
        not_ready = ProviderStatus.NOT_READY
        # Read where it is at each call: clear_providers() replaces the dict.
        return lambda provider: registry._provider_status.get(provider, not_ready)
    getter = getattr(registry, "get_provider_status", None)
    return getter if callable(getter) else None


_status_of = status_reader(_registry)

#: The statuses in which the SDK answers without calling the provider.
_SHORT_CIRCUITED = frozenset({ProviderStatus.NOT_READY, ProviderStatus.FATAL})

ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]
_RESOLVERS: tuple[tuple[str, FlagType], ...] = (
    ("resolve_boolean_details", FlagType.BOOLEAN),
    ("resolve_string_details", FlagType.STRING),
    ("resolve_integer_details", FlagType.INTEGER),
    ("resolve_float_details", FlagType.FLOAT),
    ("resolve_object_details", FlagType.OBJECT),
)


def instrument(
    provider: FeatureProvider, telemetry: Telemetry | None = None
) -> InstrumentedProvider:
    """``provider``, wrapped so that every evaluation it answers is counted.

    Register the result instead of ``provider`` (and instead of adding the hook):
    ``api.set_provider_and_wait(flageval.instrument(provider))``. ``telemetry``: the
    pipeline to feed (a :class:`flageval.Telemetry`); default the process-wide one, as
    ``FlagEvalHook()``. With the killswitch set, the wrapper only delegates.
    """
    if isinstance(provider, InstrumentedProvider):
        pipeline = default_telemetry() if telemetry is None else telemetry
        if provider.handoff is pipeline.handoff:
            return provider  # already recording into this pipeline: counted once
    return InstrumentedProvider(provider, telemetry)


def check_provider(provider: object) -> None:
    """Raise TypeError unless ``provider`` has what the SDK calls on a provider."""
    missing = [n for n, _ in _RESOLVERS if not callable(getattr(provider, n, None))]
    if not callable(getattr(provider, "get_metadata", None)):
        missing.append("get_metadata")
    if missing:
        raise TypeError(
            f"flageval.instrument() needs an OpenFeature provider, got {type(provider)!r}"
            f" (missing: {', '.join(missing)})"
        )


class ShortCircuitHook(FlagEvalHook):
    """Records the evaluations the SDK answers without the provider (PROVIDER_NOT_READY,
    PROVIDER_FATAL), exactly as the hook does. The wrapper lists it among its provider
    hooks only while its status is NOT_READY or FATAL, so it costs nothing otherwise.

    It stands aside when the provider was reached after all (the status changed between
    the SDK's two reads: its ``before`` ran, and the wrapper recorded the evaluation) or
    when a flageval hook of the same pipeline will record it (that hook's ``before``
    claimed it, or this one leaves the hook a mark to skip)."""

    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        hook_context.hook_data["flageval.reached"] = True

    def finally_after(self, hook_context: HookContext, details: Any, hints: HookHints) -> None:
        with contextlib.suppress(Exception):
            if hook_context.hook_data or CLAIM.by is self._handoff:
                return
            FlagEvalHook.finally_after(self, hook_context, details, hints)
            CLAIM.by = (self._handoff, hook_context.evaluation_context)


class InstrumentedProvider(AbstractProvider):
    """A provider that delegates everything to ``provider`` and records each resolution
    (see the module docstring). Events the wrapped provider emits reach the SDK as this
    provider's: the SDK keys status by the registered object, which is this one."""

    def __init__(self, provider: FeatureProvider, telemetry: Telemetry | None = None) -> None:
        super().__init__()
        check_provider(provider)
        self._provider = provider
        pipeline = default_telemetry() if telemetry is None else telemetry
        self._handoff = handoff = pipeline.handoff
        if handoff is not None:
            enable_claims(handoff)  # from now on this pipeline's hooks claim what they record
        for name, flag_type in _RESOLVERS:
            inner_sync = getattr(provider, name)
            inner_async = getattr(provider, name + "_async", None)
            if handoff is None:  # killswitch: plain delegation, nothing recorded
                sync_fn: Callable[..., Any] = inner_sync
                async_fn: Callable[..., Any] = inner_async or _async_of(inner_sync)
            else:
                if getattr(inner_async, "__func__", None) is getattr(
                    AbstractProvider, name + "_async"
                ):
                    inner_async = None  # AbstractProvider's: it calls the sync one, as we then do
                start = pipeline.ensure_started
                sync_fn = recording_sync(inner_sync, flag_type, handoff, start, self.stand_aside)
                async_fn = recording_async(
                    inner_async, inner_sync, flag_type, handoff, start, self.stand_aside
                )
            # Instance attributes: the SDK's call finds them before the class's methods.
            setattr(self, name, sync_fn)
            setattr(self, name + "_async", async_fn)
        # Called by the SDK on every evaluation: bound straight to the wrapped provider's.
        self.get_metadata = provider.get_metadata  # type: ignore[method-assign]
        if handoff is not None and _status_of is not None:
            hooks = _hooks_while_short_circuited(self, ShortCircuitHook(pipeline), _status_of)
            self.get_provider_hooks = hooks  # type: ignore[method-assign]
        elif callable(getattr(provider, "get_provider_hooks", None)):
            self.get_provider_hooks = provider.get_provider_hooks  # type: ignore[method-assign]
        self._warned_both = False

    @property
    def provider(self) -> FeatureProvider:
        """The wrapped provider."""
        return self._provider

    @property
    def handoff(self) -> Handoff | None:
        """Where this wrapper's snapshots go (None: the pipeline is switched off)."""
        return self._handoff

    def __repr__(self) -> str:
        return f"<InstrumentedProvider of {self._provider!r}>"

    def __getattr__(self, name: str) -> Any:
        # The wrapped provider's own API (OFREPProvider.stats(), set_context(), ...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._provider, name)

    def stand_aside(self) -> None:
        """Called by a resolver that found the hook of its own pipeline claiming the
        evaluation: the hook records it (it sees more); said once."""
        if not self._warned_both:
            self._warned_both = True
            log.info(
                "flageval: the hook and instrument() feed the same pipeline; the hook "
                "records each evaluation once and the wrapper stands aside (keep one: "
                "the wrapper costs less)"
            )

    # -- the provider's face --------------------------------------------------------------
    def get_metadata(self) -> Metadata:
        return self._provider.get_metadata()  # pragma: no cover - shadowed per instance

    def get_provider_hooks(self) -> list[Hook]:
        inner = getattr(self._provider, "get_provider_hooks", None)
        return inner() if inner is not None else []

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        init = getattr(self._provider, "initialize", None)
        if init is not None:
            init(evaluation_context)

    def shutdown(self) -> None:
        stop = getattr(self._provider, "shutdown", None)
        if stop is not None:
            stop()

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        track = getattr(self._provider, "track", None)
        if track is not None:
            track(tracking_event_name, evaluation_context, tracking_event_details)

    # -- events: the wrapped provider emits as itself; the SDK must hear this object ------
    def attach(
        self,
        on_emit: Callable[[FeatureProvider, ProviderEvent, ProviderEventDetails], None],
    ) -> None:
        self._on_emit = on_emit
        attach = getattr(self._provider, "attach", None)
        if attach is not None:
            attach(self._forward)

    def detach(self) -> None:
        detach = getattr(self._provider, "detach", None)
        if detach is not None:
            detach()
        super().detach()

    def _forward(
        self, source: FeatureProvider, event: ProviderEvent, details: ProviderEventDetails
    ) -> None:
        on_emit = getattr(self, "_on_emit", None)
        if on_emit is not None:
            on_emit(self, event, details)

    # -- resolvers (replaced per instance in __init__; these satisfy the interface) ------
    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        raise NotImplementedError  # pragma: no cover - shadowed by the instance's

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        raise NotImplementedError  # pragma: no cover

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        raise NotImplementedError  # pragma: no cover

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        raise NotImplementedError  # pragma: no cover

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        raise NotImplementedError  # pragma: no cover


def _hooks_while_short_circuited(
    owner: InstrumentedProvider,
    short: ShortCircuitHook,
    status_of: Callable[[FeatureProvider], ProviderStatus],
) -> Callable[[], list[Hook]]:
    """``get_provider_hooks`` with ``short`` added while the SDK will not call the provider."""
    inner = getattr(owner.provider, "get_provider_hooks", None)
    ready = ProviderStatus.READY
    short_circuited = _SHORT_CIRCUITED

    def get_provider_hooks() -> list[Hook]:
        hooks: list[Hook] = inner() if inner is not None else []
        # Keyed by the registered object, this one (status_reader says how it is read).
        status = status_of(owner)
        if status is ready or status not in short_circuited:
            return hooks
        return [*hooks, short]

    return get_provider_hooks


def _async_of(sync_fn: Callable[..., Any]) -> Callable[..., Any]:
    """An async resolver for a provider that only has the sync one."""

    async def resolve(
        flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> Any:
        return sync_fn(flag_key, default_value, evaluation_context)

    return resolve
