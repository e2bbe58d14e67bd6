"""The OpenTelemetry export: ``feature_flag.evaluations``, counted from what the worker drains.

An Int64 ``Counter`` named ``feature_flag.evaluations`` (unit ``{evaluation}``), made on
the application's global ``MeterProvider`` (meter ``flageval``), with one attribute set
per distinct (flag, variant, reason, error, allocation, flag set, provider):

* ``feature_flag.key``; ``feature_flag.result.variant`` (left out when there is none);
* ``feature_flag.result.reason``, lowercase (``static``, ``targeting_match``, ...);
* ``error.type`` on an error only: the error code lowercase (``flag_not_found``, ...),
  ``general`` for a code that is not one of OpenFeature's;
* ``feature_flag.result.allocation_key`` from the flag's metadata (as the rows read it,
  ``flageval._fields.ALLOCATION_KEYS``), left out when empty;
* ``feature_flag.set.id`` from the metadata's ``flagSetId`` (OpenFeature's appendix D);
* ``feature_flag.provider.name``: see :meth:`OtelExport.provider_name`.

Never the targeting key nor the context: the sets are as few as the flags' variants.

Runs on the worker's loop only: each drained batch is counted per attribute set here,
then ``add()`` is called once per distinct set (never per evaluation, never on an
evaluating thread). ``opentelemetry`` is imported here, when the first batch comes,
never at ``import flageval``. Whatever OpenTelemetry's API or the application's SDK
raises (a meter provider that raises, an ``add()`` that raises) is caught, counted
(``otel_error``) and logged once: it never reaches the application nor stops the
Datadog export, which reads the same batch apart.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections import Counter
from typing import Any

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from ._fields import ALLOCATION_KEYS, MAX_FIELD_CHARS, text
from ._handoff import Handoff, Snapshot
from ._losses import Unrecorded

log = logging.getLogger("flageval")

NAME = "feature_flag.evaluations"
UNIT = "{evaluation}"
DESCRIPTION = "Number of feature flag evaluations"
KEY = "feature_flag.key"
VARIANT = "feature_flag.result.variant"
REASON = "feature_flag.result.reason"
ERROR = "error.type"
ALLOCATION = "feature_flag.result.allocation_key"
SET_ID = "feature_flag.set.id"
PROVIDER = "feature_flag.provider.name"
#: The flag metadata key OpenFeature maps to ``feature_flag.set.id``.
SET_ID_KEY = "flagSetId"

#: OpenFeature's error codes, as OpenTelemetry spells them.
ERROR_TYPES: dict[str, str] = {code.value: code.value.lower() for code in ErrorCode}
#: Attribute sets kept from one batch to the next (cleared past it: bounded).
MAX_CACHED_SETS = 4096

Labels = tuple[Any, ...]  # (flag, variant, reason, error code, allocation, flag set id)
_PLAIN_REASONS = (str, Reason)
_NOTHING: Any = object()


@dataclasses.dataclass(slots=True)
class OtelCounts:
    """The export's counter; ``otel_recorded`` is the ``Stats`` field of that name."""

    otel_recorded: int = 0  # evaluations added to the counter


def _lower(value: Any) -> str | None:
    """A reason's attribute text: lowercase, cut like a row's texts (may raise)."""
    out = text(value)
    return None if out is None else out.lower()


def _error_type(code: Any) -> str:
    """``error.type`` of an error code: OpenFeature's, lowercase, else ``general``."""
    return ERROR_TYPES.get(text(code) or "", "general")


def _meta_labels(meta: Any) -> tuple[str | None, str | None]:
    """(allocation, flag set id) stated by a flag's metadata (may raise: a Mapping's own
    methods run here)."""
    if not meta:
        return None, None
    get = meta.get
    allocation = None
    for name in ALLOCATION_KEYS:
        value = get(name)
        if isinstance(value, str) and value:
            allocation = value
            break
    set_id = get(SET_ID_KEY)
    if not (isinstance(set_id, str) and set_id):
        set_id = None
    return allocation, set_id


def _plain(value: Any) -> bool:
    """A text that is its own attribute value: short ASCII ``str``."""
    return type(value) is str and value.isascii() and len(value) <= MAX_FIELD_CHARS


def attributes(labels: Labels, provider: str | None) -> dict[str, str]:
    """The attribute set of ``labels`` (may raise: a value's ``__str__`` runs here)."""
    flag, variant, reason, code, allocation, set_id = labels
    out = {KEY: text(flag) or ""}
    if variant is not None:
        variant = text(variant)
        if variant:
            out[VARIANT] = variant
    if reason is not None:
        reason = _lower(reason)
        if reason:
            out[REASON] = reason
    if code is not None:
        out[ERROR] = _error_type(code)
    if allocation is not None:
        out[ALLOCATION] = text(allocation) or ""
    if set_id is not None:
        out[SET_ID] = text(set_id) or ""
    if provider:
        out[PROVIDER] = provider
    return out


def _version() -> str:
    """flageval's installed version, the meter's ("" where it is not installed)."""
    try:
        return importlib.metadata.version("flageval")
    except Exception:
        return ""


def _said(exc: BaseException) -> str:
    """An exception's text for a log line: at most 200 characters, never raising."""
    try:
        return text(exc, 200) or ""
    except BaseException:
        return "<unprintable>"


def registered_provider_name() -> str | None:
    """The name every provider registered with the OpenFeature API shares (the default
    one too: until one is set, the SDK's No-op provider), which is the name the SDK puts
    in every hook's context; None when they differ or one cannot be read. Read from the
    SDK's registry (private: None on an SDK without it), on the worker's thread."""
    try:
        from openfeature.provider._registry import (  # noqa: PLC0415 - loaded by the SDK
            provider_registry as registry,
        )

        providers = [registry._default_provider, *registry._providers.values()]
    except Exception:
        return None
    names: set[str | None] = set()
    seen: set[int] = set()
    for provider in providers:
        if id(provider) in seen:
            continue
        seen.add(id(provider))
        try:
            names.add(text(provider.get_metadata().name))
        except BaseException:  # the provider's own code
            return None
        if len(names) > 1:
            return None
    return names.pop() or None if len(names) == 1 else None


class OtelExport:
    """Counts drained batches into ``feature_flag.evaluations`` (on the worker's loop)."""

    def __init__(self, handoff: Handoff) -> None:
        self._handoff = handoff
        self.counts = OtelCounts()
        self.unrecorded: Counter[Unrecorded] = Counter()
        self._counter: Any = None
        self._sets: dict[tuple[Labels, str | None], dict[str, str]] = {}
        self._told: set[Unrecorded] = set()

    def provider_name(self) -> str | None:
        """``feature_flag.provider.name``, where it is known without asking the
        evaluating thread anything: the name every provider registered with the
        OpenFeature API shares (:func:`registered_provider_name`, read once per batch),
        unless the pipeline also counts evaluations made without the SDK
        (``flageval._record.record``: no provider answered those)."""
        return None if self._handoff.direct else registered_provider_name()

    # -- the instrument -------------------------------------------------------------------
    def _instrument(self) -> Any:
        """The counter, made on first use on the global MeterProvider (may raise)."""
        if self._counter is None:
            from opentelemetry import metrics  # noqa: PLC0415 - only with the export on

            meter = metrics.get_meter("flageval", _version())
            self._counter = meter.create_counter(NAME, unit=UNIT, description=DESCRIPTION)
        return self._counter

    # -- a batch ------------------------------------------------------------------------
    def add_batch(self, batch: list[Snapshot]) -> None:
        """Count ``batch`` per attribute set and add each set once. Never raises."""
        try:
            self._add(batch)
        except BaseException as exc:  # a bug of ours: the batch is in no counter yet
            self._lost(Unrecorded.OTEL_ERROR, len(batch), exc)

    def _add(self, batch: list[Snapshot]) -> None:
        counted: dict[Labels, int] = {}
        get = counted.get
        unreadable = 0
        # The previous snapshot's fields, its metadata and what that stated: a run of
        # the same evaluation (the common case) costs a few identity checks and one
        # dict comparison per snapshot (each carries its own copy of the metadata).
        p_flag = p_variant = p_reason = p_code = p_meta = _NOTHING
        p_labels: tuple[str | None, str | None] = (None, None)
        key: Labels = ()
        run = 0
        for snap in batch:
            flag, variant, code, _message, meta, _tk, _attrs, _t, reason = snap
            same = meta is p_meta
            if not same and type(meta) is dict and type(p_meta) is dict:
                try:
                    same = meta == p_meta
                except BaseException:  # a value's __eq__: read the metadata again
                    same = False
            try:
                if same:
                    if (
                        flag is p_flag
                        and variant is p_variant
                        and reason is p_reason
                        and code is p_code
                    ):
                        run += 1
                        continue
                else:
                    p_meta = _NOTHING  # until read whole
                    p_labels = _meta_labels(meta)
                    p_meta = meta
                if (
                    _plain(flag)
                    and (variant is None or _plain(variant))
                    and (reason is None or type(reason) in _PLAIN_REASONS)
                    and (code is None or type(code) is ErrorCode)
                ):
                    new: Labels = (flag, variant, reason, code, *p_labels)
                else:  # made text once here: a value's own methods never run again
                    new = (text(flag), text(variant), _lower(reason), text(code), *p_labels)
            except BaseException:  # a value's __str__, a Mapping's get...
                unreadable += 1
                continue
            if run:
                counted[key] = get(key, 0) + run
            key, run = new, 1
            p_flag, p_variant, p_reason, p_code = flag, variant, reason, code
        if run:
            counted[key] = get(key, 0) + run
        if unreadable:
            self._lost(Unrecorded.UNREADABLE, unreadable, None)
        if not counted:
            return
        provider = self.provider_name()
        try:
            counter = self._instrument()
        except BaseException as exc:
            self._lost(Unrecorded.OTEL_ERROR, sum(counted.values()), exc)
            return
        sets = self._sets
        if len(sets) + len(counted) > MAX_CACHED_SETS:
            sets.clear()
        for labels, n in counted.items():
            cached = (labels, provider)
            attrs = sets.get(cached)
            try:
                if attrs is None:
                    attrs = sets[cached] = attributes(labels, provider)
                counter.add(n, attrs)
            except BaseException as exc:  # the application's SDK, or a value's __str__
                self._lost(Unrecorded.OTEL_ERROR, n, exc)
                continue
            self.counts.otel_recorded += n

    def _lost(self, reason: Unrecorded, n: int, exc: BaseException | None) -> None:
        self.unrecorded[reason] += n
        if reason in self._told:
            return
        self._told.add(reason)
        if exc is None:
            log.warning(
                "an evaluation's flag key, variant, reason or metadata could not be read: "
                "not in %s (counted as %s; said once)",
                NAME,
                reason,
            )
        else:
            log.error(
                "OpenTelemetry failed (%s: %s): %d evaluations not in %s, counted as %s; "
                "the Datadog export goes on (said once)",
                type(exc).__name__,
                _said(exc),
                n,
                NAME,
                reason,
            )
