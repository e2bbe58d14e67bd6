"""Flags -> OFREP items, through flagd's own evaluator (``openfeature-flagd-core``).

Each flag is resolved with the typed resolver its variants call for (see
``_flagfile.kind_of``), with a private default: when flagd answers with that default (a
disabled flag, or no variant selected and no default variant) the item has no
``value``, which OFREP defines as "use the code default". A resolution that raises
becomes an error item (the OpenFeature error code and its message; any other exception
GENERAL), never an exception out of the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from ._flagfile import BOOLEAN, FLOAT, INTEGER, OBJECT, STRING
from ._views import Entry, View

_CODE_DEFAULT: Any = object()
_RESOLVERS: dict[str, Callable[..., FlagResolutionDetails[Any]]] = {
    BOOLEAN: FlagdCore.resolve_boolean_value,
    STRING: FlagdCore.resolve_string_value,
    INTEGER: FlagdCore.resolve_integer_value,
    FLOAT: FlagdCore.resolve_float_value,
    OBJECT: FlagdCore.resolve_object_value,
}
#: The longest errorDetails sent (flagd's messages may quote a whole rule).
_MAX_DETAILS = 300

Item = dict[str, Any]
Result = tuple[str, FlagResolutionDetails[Any]]


def evaluate(entry: Entry, context: EvaluationContext) -> tuple[Item, FlagResolutionDetails[Any]]:
    """One flag: its OFREP item and the resolution details that telemetry records."""
    key = entry.flag.key
    try:
        res = _RESOLVERS[entry.flag.kind](entry.core, key, _CODE_DEFAULT, context)
    except OpenFeatureError as err:
        return _failure(key, err.error_code, err.error_message or err.error_code.value)
    except Exception as err:  # a rule the evaluator chokes on (recursion, a bad operand)
        return _failure(key, ErrorCode.GENERAL, f"{type(err).__name__}: {err}")
    reason = res.reason.value if isinstance(res.reason, Reason) else str(res.reason or "UNKNOWN")
    item: Item = {"key": key, "reason": reason}
    if res.variant is not None:
        item["variant"] = res.variant
    if res.value is _CODE_DEFAULT:
        res = FlagResolutionDetails(None, None, None, res.reason, res.variant, res.flag_metadata)
    else:
        item["value"] = res.value
    if res.flag_metadata:
        item["metadata"] = dict(res.flag_metadata)
    return item, res


def _failure(key: str, code: ErrorCode, message: str) -> tuple[Item, FlagResolutionDetails[Any]]:
    message = message if len(message) <= _MAX_DETAILS else message[:_MAX_DETAILS] + "..."
    item: Item = {"key": key, "errorCode": code.value, "errorDetails": message}
    return item, FlagResolutionDetails(None, code, message, Reason.ERROR)


def evaluate_all(view: View, context: EvaluationContext) -> tuple[list[Item], list[Result]]:
    """Every flag of ``view``, in key order."""
    items: list[Item] = []
    results: list[Result] = []
    for entry in view.entries:
        item, res = evaluate(entry, context)
        items.append(item)
        results.append((entry.flag.key, res))
    return items, results
