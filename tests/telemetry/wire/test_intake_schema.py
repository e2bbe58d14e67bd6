"""Tests of the intake schema itself, with hand-written bodies (no library code)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from tests.schema_util import SCHEMA_PATH, validate_body

T0 = 1759276800000  # the schema's minimum epoch ms (2025-10-01T00:00:00Z)

FULL_BODY: dict[str, Any] = {
    "context": {"service": "checkout", "env": "prod", "version": "1.2.3"},
    "flagEvaluations": [
        {
            "timestamp": T0 + 10_000,
            "flag": {"key": "new-checkout"},
            "first_evaluation": T0 + 1,
            "last_evaluation": T0 + 9_000,
            "evaluation_count": 42,
            "runtime_default_used": True,
            "targeting_key": "jane.doe@datadoghq.com",
            "variant": {"key": "on"},
            "allocation": {"key": "rollout-50"},
            "error": {"message": "FLAG_NOT_FOUND"},
            "context": {
                "evaluation": {
                    "country": "FR",
                    "age": 33,
                    "score": 1.5,
                    "beta": True,
                    "user.plan": "pro",
                    "tags[0]": "a",
                    "signup": "2025-10-01T12:00:00+00:00",
                    "long": "x" * 256,
                }
            },
        },
        {
            "timestamp": T0 + 10_000,
            "flag": {"key": "dark-mode"},
            "first_evaluation": T0,
            "last_evaluation": T0,
            "evaluation_count": 1,
        },
    ],
}

MINIMAL_BODY: dict[str, Any] = {
    "context": {"service": "svc"},
    "flagEvaluations": [
        {
            "timestamp": T0,
            "flag": {"key": "f"},
            "first_evaluation": T0,
            "last_evaluation": T0,
            "evaluation_count": 1,
        }
    ],
}


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _validator() -> Draft202012Validator:
    return Draft202012Validator(_schema())


def _full_row(body: dict[str, Any]) -> dict[str, Any]:
    return body["flagEvaluations"][0]


def test_schema_is_valid_draft_2020_12() -> None:
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_full_body_with_every_optional_key_is_valid() -> None:
    assert list(_validator().iter_errors(FULL_BODY)) == []
    validate_body(FULL_BODY)
    validate_body(json.dumps(FULL_BODY).encode("utf-8"))


def test_minimal_body_is_valid() -> None:
    assert list(_validator().iter_errors(MINIMAL_BODY)) == []
    validate_body(MINIMAL_BODY)
    validate_body(json.dumps(MINIMAL_BODY, separators=(",", ":")).encode("utf-8"))


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target = body
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


ROW = ("flagEvaluations", 0)

REJECTIONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("unknown_top_level_key", _set(("extra",), 1)),
    ("unknown_row_key", _set((*ROW, "bogus"), "x")),
    ("reason_in_row", _set((*ROW, "reason"), "TARGETING_MATCH")),
    ("value_in_row", _set((*ROW, "value"), True)),
    ("null_optional_variant", _set((*ROW, "variant"), None)),
    ("runtime_default_used_false", _set((*ROW, "runtime_default_used"), False)),
    ("missing_service", _delete(("context", "service"))),
    ("evaluation_count_zero", _set((*ROW, "evaluation_count"), 0)),
    ("first_evaluation_below_minimum", _set((*ROW, "first_evaluation"), T0 - 1)),
    ("timestamp_as_float_string", _set((*ROW, "timestamp"), f"{T0 + 10_000}.0")),
    (
        "nested_object_in_context_evaluation",
        _set((*ROW, "context", "evaluation", "user"), {"plan": "pro"}),
    ),
    ("string_attribute_257_chars", _set((*ROW, "context", "evaluation", "long"), "x" * 257)),
    ("extra_key_in_flag", _set((*ROW, "flag", "name"), "new-checkout")),
]


@pytest.mark.parametrize("mutate", [m for _, m in REJECTIONS], ids=[name for name, _ in REJECTIONS])
def test_rejections(mutate: Callable[[dict[str, Any]], None]) -> None:
    body = copy.deepcopy(FULL_BODY)
    mutate(body)
    assert list(_validator().iter_errors(body)), "schema accepted an invalid body"
    with pytest.raises(jsonschema.ValidationError):
        validate_body(body)
    with pytest.raises(jsonschema.ValidationError):
        validate_body(json.dumps(body).encode("utf-8"))


def test_mutations_do_not_leak_into_the_shared_full_body() -> None:
    """Guards the rejection tests: each mutates a copy, so FULL_BODY stays what it was
    (whatever order the tests ran in) and each starts from a valid body."""
    pristine = json.dumps(FULL_BODY, sort_keys=True)
    for name, mutate in REJECTIONS:
        body = copy.deepcopy(FULL_BODY)
        mutate(body)
        assert json.dumps(body, sort_keys=True) != pristine, name  # the copy changed
        assert json.dumps(FULL_BODY, sort_keys=True) == pristine, name  # the shared did not
    assert list(_validator().iter_errors(FULL_BODY)) == []


def test_context_evaluation_holds_at_most_256_attributes() -> None:
    body = copy.deepcopy(MINIMAL_BODY)
    attrs = {f"k{i:03d}": i for i in range(256)}
    body["flagEvaluations"][0]["context"] = {"evaluation": attrs}
    validate_body(body)
    attrs["k256"] = 256
    with pytest.raises(jsonschema.ValidationError):
        validate_body(body)


def test_empty_flag_evaluations_is_rejected() -> None:
    body = copy.deepcopy(MINIMAL_BODY)
    body["flagEvaluations"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate_body(body)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"context": {"service": "s"}, "context": {"service": "s"}, "flagEvaluations": []}',
        b'{"context": {"service": "s"}, "flagEvaluations": [{"timestamp": NaN}]}',
    ],
    ids=["duplicate_key", "nan"],
)
def test_validate_body_rejects_non_strict_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        validate_body(raw)
