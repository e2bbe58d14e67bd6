"""What one evaluation's snapshot says, field by field: row texts, what the flag's
metadata states (allocation, consent, the provider's time stamp), the error text, and
the hashed targeting key. Pure functions: the tiers decide what a bucket keeps.

Metadata rules (the row fields of ``schemas/flagevaluation.schema.json``, and the
choices written down in docs/ddtrace.md's comparison with dd-trace-py):

* allocation: the first of ``allocation_key`` (dd-trace-py's spelling, read first so a
  provider sending two gives the row Datadog's SDK gives), ``allocationKey`` and
  ``dd.allocation.key`` that holds a non-empty string. An empty or non-string value
  identifies no allocation and is passed over (providers spell allocation keys as
  strings).
* consent: ``observe_full_evaluation_data`` and ``__dd_observe_full_evaluation_data``.
  Only the boolean ``True`` is consent, and a present value that is anything else is an
  explicit no that wins over the other spelling: privacy fails closed. Neither
  present: not stated (the ``full_data_default`` setting decides).
* stamp: ``dd.eval.timestamp_ms`` (else ``__dd_eval_timestamp_ms``), used when it is an
  int or float of epoch milliseconds between 2025-10-01 and the year 3000 (not a bool,
  not seconds); otherwise the hook's clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from openfeature.exception import ErrorCode

from ._prune import clean_text

ALLOCATION_KEYS = ("allocation_key", "allocationKey", "dd.allocation.key")
TIMESTAMP_KEYS = ("dd.eval.timestamp_ms", "__dd_eval_timestamp_ms")
CONSENT_KEYS = ("observe_full_evaluation_data", "__dd_observe_full_evaluation_data")
#: Provider stamps before this (2025-10-01) are not epoch ms: the hook's clock is used.
MIN_EPOCH_MS = 1_759_276_800_000
_MAX_EPOCH_MS = 32_503_680_000_000  # year 3000: past it a stamp is not epoch ms either
#: Flag key, variant, allocation and error text are cut to this many characters.
MAX_FIELD_CHARS = 1024
#: OpenFeature's error codes: the only error text sent without stated consent.
ERROR_CODES = frozenset(code.value for code in ErrorCode)

#: Every metadata key read_meta may read.
READ_KEYS = (*ALLOCATION_KEYS, *CONSENT_KEYS, *TIMESTAMP_KEYS)

#: (allocation, consent as stated or None, stamp in ms or None)
MetaFields = tuple[str | None, bool | None, int | None]
NOTHING_STATED: MetaFields = (None, None, None)
_ABSENT = object()


def text(value: Any, max_chars: int | None = MAX_FIELD_CHARS) -> str | None:
    """A row field's text: a ``str`` subclass by its string value, anything else by
    ``str()`` (may raise: the caller counts it); lone surrogates replaced by U+FFFD
    (bodies are UTF-8 JSON: one such code point would fail the whole flush); cut to
    ``max_chars`` (the degraded tier has no byte budget: its keys must be small)."""
    if value is None:
        return None
    if type(value) is str:
        out = value
    elif isinstance(value, str):
        out = str.__str__(value)
    else:
        out = str(value)
        if type(out) is not str:  # a str subclass could misbehave later
            out = str.__str__(out)
    if max_chars is not None and len(out) > max_chars:
        out = out[:max_chars]
    return out if out.isascii() else clean_text(out)


def read_meta(meta: Mapping[str, Any]) -> MetaFields:
    """What a flag's metadata states (see the module docstring)."""
    get = meta.get
    allocation = None
    for name in ALLOCATION_KEYS:
        value = get(name)
        if isinstance(value, str) and value:
            allocation = text(value)
            break
    consent = None
    for name in CONSENT_KEYS:
        value = get(name, _ABSENT)
        if value is not _ABSENT:
            if value is not True:
                consent = False
                break
            consent = True
    t_ms = None
    for name in TIMESTAMP_KEYS:
        stamp = get(name)
        if stamp is not None:
            if type(stamp) in (int, float) and MIN_EPOCH_MS <= stamp <= _MAX_EPOCH_MS:
                t_ms = int(stamp)
            break
    return allocation, consent, t_ms


def error_text(code: Any, message: Any, consented: bool) -> str:
    """The row's error: the provider's message only when the flag's own metadata
    consented (free text from code we do not know may carry anything); else the error
    code, and ``GENERAL`` for a code that is not one of OpenFeature's (low-cardinality,
    no user data)."""
    if consented and message:
        return text(message) or ""
    name = code.value if isinstance(code, ErrorCode) else code
    if type(name) is str and name in ERROR_CODES:
        return name
    return ErrorCode.GENERAL.value


def hash_targeting_key(targeting_key: str) -> str:
    """What is sent without consent: ``sha256_`` + hex digest of the UTF-8 key."""
    data = targeting_key.encode("utf-8", "surrogatepass")
    return "sha256_" + hashlib.sha256(data).hexdigest()
