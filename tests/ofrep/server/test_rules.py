"""flagd's evaluation rules, served: the expected values are those flagd's own test bed
(open-feature/flagd-testbed, gherkin/targeting.feature, the v3 fractional examples and
evaluation.feature) publishes for the same flag definitions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import RULES
from .process import ServerProcess, request


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess([RULES])
    yield srv
    assert srv.stop() == 0


def items(server: ServerProcess, context: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status, _, body = server.bulk(context, selector="rules")
    assert status == 200, body
    return {item["key"]: item for item in body["flags"]}


def value(server: ServerProcess, key: str, context: dict[str, Any]) -> Any:
    body_sent = json.dumps({"context": context}).encode()
    status, _, body = request(server.url, "POST", f"/ofrep/v1/evaluate/flags/{key}", body_sent)
    assert status == 200, body
    return body.get("value")


def test_static_flags_of_every_type_and_zero_values(server: ServerProcess) -> None:
    got = items(server, {"targetingKey": "u"})
    assert got["boolean-flag"] == {
        "key": "boolean-flag",
        "reason": "STATIC",
        "variant": "on",
        "value": True,
        "metadata": {"flagSetId": "rules", "owner": "tests"},
    }
    assert got["string-flag"]["value"] == "hi"
    assert got["integer-flag"]["value"] == 10
    assert got["float-flag"]["value"] == 0.5
    assert got["object-flag"]["value"] == {
        "showImages": True,
        "title": "Check out these pics!",
        "imagesPerPage": 100,
    }
    assert (got["zero-string-flag"]["value"], got["zero-integer-flag"]["value"]) == ("", 0)
    # flag metadata wins over the file's flag-set metadata
    assert got["targeted-flag"]["metadata"] == {
        "flagSetId": "rules",
        "owner": "tests",
        "team": "checkout",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("jack", "diamonds"),
        ("queen", "diamonds"),
        ("ten", "clubs"),
        ("nine", "clubs"),
        ("3", "spades"),
    ],
)
def test_fractional_buckets_as_flagd_publishes(
    server: ServerProcess, name: str, expected: str
) -> None:
    assert value(server, "fractional-flag", {"user": {"name": name}}) == expected


def test_fractional_shorthand_uses_the_targeting_key(server: ServerProcess) -> None:
    assert (
        value(server, "fractional-flag-shorthand", {"targetingKey": "jon@company.com"}) == "tails"
    )
    assert (
        value(server, "fractional-flag-shorthand", {"targetingKey": "jane@company.com"}) == "tails"
    )
    # no targeting key: the rule gives nothing, the default variant is served
    item = items(server, {})["fractional-flag-shorthand"]
    assert (item["reason"], item["value"]) == ("DEFAULT", "draw")


@pytest.mark.parametrize(
    ("id_", "expected"),
    [("abcdef", "prefix"), ("uvwxyz", "postfix"), ("abcxyz", "prefix"), ("lmnopq", "none")],
)
def test_starts_with_and_ends_with(server: ServerProcess, id_: str, expected: str) -> None:
    assert value(server, "starts-ends-flag", {"id": id_}) == expected


@pytest.mark.parametrize(
    ("flag", "version", "expected"),
    [
        ("equal-greater-lesser-version-flag", "2.0.0", "equal"),
        ("equal-greater-lesser-version-flag", "2.1.0", "greater"),
        ("equal-greater-lesser-version-flag", "1.9.0", "lesser"),
        ("equal-greater-lesser-version-flag", "2.0.0-alpha", "lesser"),
        ("major-minor-version-flag", "3.0.1", "minor"),
        ("major-minor-version-flag", "3.1.0", "major"),
        ("major-minor-version-flag", "4.0.0", "none"),
    ],
)
def test_sem_ver(server: ServerProcess, flag: str, version: str, expected: str) -> None:
    assert value(server, flag, {"version": version}) == expected


def test_targeting_with_an_evaluator_reference_and_in(server: ServerProcess) -> None:
    assert value(server, "targeted-flag", {"email": "ballmer@macrosoft.com"}) == "internal"
    assert value(server, "targeted-flag", {"country": "MX"}) == "internal"
    item = items(server, {"country": "FR"})["targeted-flag"]
    assert (item["reason"], item["value"]) == ("DEFAULT", "external")


def test_disabled_and_variantless_flags_defer_to_the_code_default(server: ServerProcess) -> None:
    got = items(server, {"targetingKey": "u"})
    assert {k: v for k, v in got["disabled-flag"].items() if k != "metadata"} == {
        "key": "disabled-flag",
        "reason": "DISABLED",
    }
    assert "value" not in got["no-default-flag"] and got["no-default-flag"]["reason"] == "DEFAULT"
    gold = items(server, {"tier": "gold"})["no-default-flag"]
    assert (gold["reason"], gold["variant"], gold["value"]) == ("TARGETING_MATCH", "on", True)


def test_evaluation_errors_are_items_in_bulk_and_400_alone(server: ServerProcess) -> None:
    got = items(server, {"kind": "number"})
    assert got["missing-variant-flag"]["errorCode"] == "GENERAL"
    assert "not-a-variant" in got["missing-variant-flag"]["errorDetails"]
    assert got["unknown-ref-flag"]["errorCode"] == "PARSE_ERROR"
    # the variant picked has another type than the flag's default: flagd's type check
    assert got["mixed-type-flag"]["errorCode"] == "TYPE_MISMATCH"
    assert items(server, {"kind": "text"})["mixed-type-flag"]["value"] == "one"
    status, _, body = request(
        server.url, "POST", "/ofrep/v1/evaluate/flags/unknown-ref-flag", b'{"context": {}}'
    )
    assert status == 400 and body["key"] == "unknown-ref-flag"
    assert body["errorCode"] == "PARSE_ERROR"


def test_unknown_key_is_404_on_the_single_endpoint(server: ServerProcess) -> None:
    status, _, body = request(
        server.url, "POST", "/ofrep/v1/evaluate/flags/nope", b'{"context": {}}'
    )
    assert (status, body["key"], body["errorCode"]) == (404, "nope", "FLAG_NOT_FOUND")
    # a key outside the selected flag set is not found there either
    status, _, _ = request(
        server.url,
        "POST",
        "/ofrep/v1/evaluate/flags/boolean-flag",
        b'{"context": {}}',
        {"Flagd-Selector": "flagSetId=other"},
    )
    assert status == 404


def test_client_caused_evaluator_errors_are_logged_once_a_minute(server: ServerProcess) -> None:
    """flagd's evaluator logs an ERROR with a traceback when sem_ver meets no version:
    thirty requests without one (and the bulk requests before) leave one record."""
    for _ in range(30):
        assert value(server, "major-minor-version-flag", {}) == "none"
    last_lines = [line for line in server.lines if line.startswith("ValueError: None.0.0")]
    assert len(last_lines) == 1
