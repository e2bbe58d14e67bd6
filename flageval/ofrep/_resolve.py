"""Bulk-response items -> OpenFeature ``FlagResolutionDetails``.

The loop thread turns each item of a 200 into a frozen `FlagEntry` once; a resolve is
then a dict lookup plus a type check on the caller's thread. Mapping rules:

- success with ``value``: value, variant, reason and metadata as sent (metadata keeps
  only bool/str/number values, which is all OFREP allows, so ``allocationKey`` and
  friends reach the hooks unchanged);
- success without ``value`` (ADR-0006): the caller's default with reason DEFAULT;
- a value of the wrong type: TYPE_MISMATCH. ``bool`` is a subclass of ``int`` in Python,
  so integer flags reject booleans explicitly; float flags accept JSON integers (the SDK
  checks ``isinstance(value, float)``, so they are converted);
- failure item: its ``errorCode`` mapped onto ``ErrorCode`` (unknown codes -> GENERAL),
  ``errorDetails`` as the message;
- a key absent from the bulk response: FLAG_NOT_FOUND;
- an evaluation read back from the persisted entry (ADR-0009): reason CACHED;
- while the context cannot be encoded (`ContextError`): INVALID_CONTEXT for every flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

T = TypeVar("T")

_MISSING: Any = object()
_ERROR_CODES = {code.value: code for code in ErrorCode}
_EMPTY: Mapping[str, bool | int | float | str] = {}


@dataclass(frozen=True, slots=True)
class FlagEntry:
    value: Any  # _MISSING when the server sent no value
    variant: str | None
    reason: str | None
    metadata: Mapping[str, bool | int | float | str]
    error_code: ErrorCode | None
    error_message: str | None


def _metadata(raw: object) -> Mapping[str, bool | int | float | str]:
    if not isinstance(raw, dict) or not raw:
        return _EMPTY
    return {
        k: v
        for k, v in raw.items()
        if isinstance(k, str) and isinstance(v, bool | int | float | str)
    }


def entry_from_item(item: Mapping[str, Any]) -> FlagEntry:
    """``item`` is one decoded object of a bulk answer's ``flags`` array."""
    metadata = _metadata(item.get("metadata"))
    raw_code = item.get("errorCode")
    if raw_code is not None:
        details = item.get("errorDetails")
        return FlagEntry(
            value=_MISSING,
            variant=None,
            reason=Reason.ERROR,
            metadata=metadata,
            error_code=_ERROR_CODES.get(raw_code, ErrorCode.GENERAL)
            if isinstance(raw_code, str)
            else ErrorCode.GENERAL,
            error_message=details if isinstance(details, str) else str(raw_code),
        )
    reason = item.get("reason")
    variant = item.get("variant")
    return FlagEntry(
        value=item.get("value", _MISSING),
        variant=variant if isinstance(variant, str) else None,
        reason=reason if isinstance(reason, str) else None,
        metadata=metadata,
        error_code=None,
        error_message=None,
    )


def cached(entry: FlagEntry) -> FlagEntry:
    """The same evaluation, served from the persisted entry before the server confirmed it."""
    return entry if entry.error_code is not None else replace(entry, reason=Reason.CACHED)


class ContextError(Mapping[str, FlagEntry]):
    """Served in place of the evaluations while the context cannot be encoded: every key
    resolves to INVALID_CONTEXT, never to another context's value."""

    __slots__ = ("_entry",)

    def __init__(self, message: str) -> None:
        self._entry = FlagEntry(
            value=_MISSING,
            variant=None,
            reason=Reason.ERROR,
            metadata=_EMPTY,
            error_code=ErrorCode.INVALID_CONTEXT,
            error_message=message,
        )

    def get(self, key: str, default: object = None) -> FlagEntry:
        return self._entry

    def __getitem__(self, key: str) -> FlagEntry:
        return self._entry

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _is_bool(value: object) -> bool:
    return type(value) is bool


def _is_str(value: object) -> bool:
    return type(value) is str


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _is_object(value: object) -> bool:
    return isinstance(value, dict | list)


def _same(value: Any) -> Any:
    return value


# Per flag type: (accepts, converts, name used in the TYPE_MISMATCH message).
BOOL = (_is_bool, _same, "boolean")
STR = (_is_str, _same, "string")
INT = (_is_int, _same, "integer")
FLOAT = (_is_number, float, "float")
OBJECT = (_is_object, _same, "object")

TypeRule = tuple[Callable[[object], bool], Callable[[Any], Any], str]


def resolve(
    entries: Mapping[str, FlagEntry] | None,
    flag_key: str,
    default_value: T,
    rule: TypeRule,
) -> FlagResolutionDetails[T]:
    if entries is None:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.PROVIDER_NOT_READY,
            error_message="no bulk evaluation has succeeded yet",
        )
    entry = entries.get(flag_key)
    if entry is None:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.FLAG_NOT_FOUND,
            error_message=f"flag {flag_key!r} is not in the bulk evaluation",
        )
    # A copy per resolve: hooks receive a dict they may keep or mutate.
    metadata = dict(entry.metadata) if entry.metadata else {}
    if entry.error_code is not None:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=entry.error_code,
            error_message=entry.error_message,
            flag_metadata=metadata,
        )
    value = entry.value
    if value is _MISSING:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.DEFAULT,
            variant=entry.variant,
            flag_metadata=metadata,
        )
    accepts, convert, type_name = rule
    if not accepts(value):
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.TYPE_MISMATCH,
            error_message=(
                f"flag {flag_key!r} is {type(value).__name__}, not the requested {type_name}"
            ),
            flag_metadata=metadata,
        )
    return FlagResolutionDetails(
        value=convert(value),
        reason=entry.reason,
        variant=entry.variant,
        flag_metadata=metadata,
    )
