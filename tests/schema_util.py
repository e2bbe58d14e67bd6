"""Validate an intake request body against schemas/flagevaluation.schema.json.

The schema is written from the intake's contract (docs/wire-format.md), not from library
code, so tests can use it as an independent check of what the library posts.
"""

from __future__ import annotations

import json
import pathlib
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = pathlib.Path(__file__).resolve().parents[1] / "schemas" / "flagevaluation.schema.json"


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate JSON key: {key!r}")
        out[key] = value
    return out


def validate_body(body: bytes | dict[str, Any]) -> None:
    """Raise if ``body`` is not a valid intake request body.

    Bytes are decoded as UTF-8 JSON first (strictly: no NaN/Infinity, no duplicate
    keys; those raise ``ValueError``). Schema violations raise
    ``jsonschema.ValidationError``.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        doc = json.loads(
            bytes(body).decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    else:
        json.dumps(body, allow_nan=False)  # must be representable as strict JSON
        doc = body
    _validator().validate(doc)
