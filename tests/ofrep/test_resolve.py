"""Bulk items -> OpenFeature results, through the real SDK client (sync and async)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openfeature import api
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from flageval.ofrep import OFREPProvider

from .ofrep_server import OFREPTestServer


@pytest.fixture
def client(server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]):  # type: ignore[no-untyped-def]
    server.set_flag(
        "bool",
        True,
        "on",
        reason="TARGETING_MATCH",
        metadata={"allocationKey": "a1", "n": 2, "ok": True},
    )
    server.set_flag("str", "hello", "v1")
    server.set_flag("int", 7, "seven")
    server.set_flag("float", 2.5)
    server.set_flag("float-as-int", 3)
    server.set_flag("obj", {"a": [1, 2]})
    server.set_flag("list", [1, "x"])
    server.set_flag("int-is-bool", True)
    server.set_item(
        {"key": "no-value", "reason": "DISABLED", "variant": "off", "metadata": {"m": "x"}}
    )
    server.set_item(
        {"key": "failed", "errorCode": "TARGETING_KEY_MISSING", "errorDetails": "need a key"}
    )
    server.set_item({"key": "weird-failure", "errorCode": "SOMETHING_NEW"})
    server.set_item(
        {
            "key": "nested-meta",
            "value": 1,
            "reason": "STATIC",
            "metadata": {"ok": "y", "bad": {"x": 1}},
        }
    )
    api.set_provider_and_wait(make_provider(server.url))
    return api.get_client()


def test_success_passes_value_variant_reason_and_metadata(client) -> None:  # type: ignore[no-untyped-def]
    details = client.get_boolean_details("bool", False)
    assert details.value is True
    assert details.variant == "on"
    assert details.reason == "TARGETING_MATCH"
    assert details.flag_metadata == {"allocationKey": "a1", "n": 2, "ok": True}
    assert details.error_code is None


def test_each_type(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get_string_details("str", "d").variant == "v1"
    assert client.get_string_value("str", "d") == "hello"
    assert client.get_integer_value("int", 0) == 7
    assert client.get_float_value("float", 0.0) == 2.5
    assert client.get_object_value("obj", {}) == {"a": [1, 2]}
    assert client.get_object_value("list", {}) == [1, "x"]


def test_float_flag_accepts_a_json_integer(client) -> None:  # type: ignore[no-untyped-def]
    details = client.get_float_details("float-as-int", 0.0)
    assert details.value == 3.0 and isinstance(details.value, float)
    assert details.error_code is None


@pytest.mark.parametrize(
    ("getter", "key", "default"),
    [
        ("get_integer_details", "int-is-bool", 0),  # bool is an int subclass: still a mismatch
        ("get_integer_details", "float", 0),
        ("get_boolean_details", "int", False),
        ("get_string_details", "int", ""),
        ("get_float_details", "str", 0.0),
        ("get_object_details", "str", {}),
    ],
)
def test_wrong_type_is_type_mismatch(client, getter: str, key: str, default: object) -> None:  # type: ignore[no-untyped-def]
    details = getattr(client, getter)(key, default)
    assert details.error_code == ErrorCode.TYPE_MISMATCH
    assert details.value == default
    assert details.reason == Reason.ERROR


def test_item_without_value_gives_code_default_with_reason_default(client) -> None:  # type: ignore[no-untyped-def]
    details = client.get_string_details("no-value", "code-default")
    assert details.value == "code-default"
    assert details.reason == Reason.DEFAULT
    assert details.variant == "off"
    assert details.flag_metadata == {"m": "x"}
    assert details.error_code is None


def test_failure_items_map_error_codes(client) -> None:  # type: ignore[no-untyped-def]
    failed = client.get_boolean_details("failed", True)
    assert failed.error_code == ErrorCode.TARGETING_KEY_MISSING
    assert failed.error_message == "need a key"
    assert failed.value is True
    weird = client.get_boolean_details("weird-failure", False)
    assert weird.error_code == ErrorCode.GENERAL


def test_absent_key_is_flag_not_found(client) -> None:  # type: ignore[no-untyped-def]
    details = client.get_boolean_details("nope", True)
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.value is True


def test_non_scalar_metadata_values_are_dropped(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get_integer_details("nested-meta", 0).flag_metadata == {"ok": "y"}


def test_metadata_is_a_fresh_dict_each_time(client) -> None:  # type: ignore[no-untyped-def]
    first = client.get_boolean_details("bool", False).flag_metadata
    first["allocationKey"] = "tampered"  # type: ignore[index]
    assert client.get_boolean_details("bool", False).flag_metadata["allocationKey"] == "a1"


async def test_async_resolution_matches_sync(client) -> None:  # type: ignore[no-untyped-def]
    assert await client.get_boolean_value_async("bool", False) is True
    assert await client.get_string_value_async("str", "d") == "hello"
    assert await client.get_integer_value_async("int", 0) == 7
    assert await client.get_float_value_async("float-as-int", 0.0) == 3.0
    assert await client.get_object_value_async("obj", {}) == {"a": [1, 2]}
    mismatch = await client.get_integer_details_async("int-is-bool", 0)
    assert mismatch.error_code == ErrorCode.TYPE_MISMATCH
    missing = await client.get_boolean_details_async("nope", False)
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND


def test_resolve_sends_nothing(client, server: OFREPTestServer) -> None:  # type: ignore[no-untyped-def]
    before = len(server.all_requests())
    for _ in range(200):
        client.get_boolean_value("bool", False)
    assert len(server.all_requests()) == before
