"""The attribute sets of ``feature_flag.evaluations``, read back through the SDK's
``InMemoryMetricReader``: a success, a provider's default, every OpenFeature error code,
a code of no standard, the metadata's allocation and flag set, the provider's name."""

from __future__ import annotations

from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval
from flageval._record import record
from tests.telemetry.otel.meter import attrs, install, prefix, sums

PROVIDER = "In-Memory Provider"  # InMemoryProvider's metadata name


class Raising(AbstractProvider):
    """Raises the OpenFeature error whose code ends the flag key (``.../PARSE_ERROR``)."""

    def get_metadata(self) -> Metadata:
        return Metadata(name="raising")

    def _raise(self, flag_key: str, *_: Any, **__: Any) -> FlagResolutionDetails[Any]:
        raise OpenFeatureError(ErrorCode(flag_key.rsplit("/", 1)[1]), "went wrong")

    resolve_boolean_details = resolve_string_details = _raise
    resolve_integer_details = resolve_float_details = resolve_object_details = _raise


def test_a_success_carries_key_variant_reason_allocation_set_and_provider(
    make_telemetry: Any,
) -> None:
    reader, _ = install()
    p = prefix("success")
    meta = {"allocation_key": "alloc-7", "flagSetId": "checkout", "other": 1}
    api.set_provider_and_wait(
        InMemoryProvider(
            {
                f"{p}on": InMemoryFlag("on", {"on": True, "off": False}, flag_metadata=meta),
                f"{p}bare": InMemoryFlag("off", {"on": True, "off": False}),
            }
        )
    )
    tel = make_telemetry(otel_metrics=True, datadog=False)
    client = api.get_client()
    client.add_hooks([tel.hook])
    for i in range(3):
        assert client.get_boolean_value(f"{p}on", False, EvaluationContext(f"user-{i}"))
    assert client.get_boolean_value(f"{p}bare", True) is False
    assert tel.flush(10.0)
    static = {"feature_flag__result__reason": "static", "feature_flag__provider__name": PROVIDER}
    assert sums(reader, p) == {
        attrs(
            feature_flag__key=f"{p}on",
            feature_flag__result__variant="on",
            feature_flag__result__allocation_key="alloc-7",
            feature_flag__set__id="checkout",
            **static,
        ): 3,
        # no allocation, no flag set: left out, never empty
        attrs(feature_flag__key=f"{p}bare", feature_flag__result__variant="off", **static): 1,
    }
    assert tel.stats().otel_recorded == 4


def test_a_providers_default_and_a_type_mismatch(make_telemetry: Any) -> None:
    """The provider answers "the caller's default" (reason DEFAULT, no variant); the SDK
    answers a type mismatch itself, with the code's default and reason ERROR."""
    reader, _ = install()
    p = prefix("default")

    def default(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(False, reason=Reason.DEFAULT)

    api.set_provider_and_wait(
        InMemoryProvider({f"{p}d": InMemoryFlag("on", {"on": True}, context_evaluator=default)})
    )
    tel = make_telemetry(otel_metrics=True, datadog=False)
    client = api.get_client()
    client.add_hooks([tel.hook])
    assert client.get_boolean_value(f"{p}d", True) is False
    assert client.get_string_value(f"{p}d", "code-default") == "code-default"
    assert tel.flush(10.0)
    assert sums(reader, p) == {
        attrs(
            feature_flag__key=f"{p}d",
            feature_flag__result__reason="default",
            feature_flag__provider__name=PROVIDER,
        ): 1,
        attrs(
            feature_flag__key=f"{p}d",
            feature_flag__result__reason="error",
            error__type="type_mismatch",
            feature_flag__provider__name=PROVIDER,
        ): 1,
    }


def test_every_error_code_is_its_lowercase_error_type(make_telemetry: Any) -> None:
    reader, _ = install()
    p = prefix("errors")
    api.set_provider_and_wait(Raising())
    tel = make_telemetry(otel_metrics=True, datadog=False)
    client = api.get_client()
    client.add_hooks([tel.hook])
    for code in ErrorCode:
        for _ in range(2):
            assert client.get_integer_value(f"{p}{code.value}", 42) == 42
    assert tel.flush(10.0)
    expected = {
        "flag_not_found",
        "invalid_context",
        "parse_error",
        "provider_fatal",
        "provider_not_ready",
        "targeting_key_missing",
        "type_mismatch",
        "general",
    }
    assert {code.value.lower() for code in ErrorCode} == expected  # the SDK's, as typed here
    assert sums(reader, p) == {
        attrs(
            feature_flag__key=f"{p}{code.value}",
            feature_flag__result__reason="error",
            error__type=code.value.lower(),
            feature_flag__provider__name="raising",
        ): 2
        for code in ErrorCode
    }


def test_a_code_of_no_standard_is_general_and_records_carry_no_provider(
    make_telemetry: Any,
) -> None:
    """``record()`` counts evaluations no registered provider answered: no provider name
    is claimed for any of the pipeline's evaluations. A provider's own reason and code
    are lowercased, and a code outside OpenFeature's is ``general``."""
    reader, _ = install()
    p = prefix("record")
    tel = make_telemetry(otel_metrics=True, datadog=False)
    own: Any = FlagResolutionDetails(1, variant="v1", reason="Custom_Rule")
    odd: Any = FlagResolutionDetails(0, reason="ERROR", error_code="QUOTA_EXCEEDED")
    record(tel, f"{p}own", own, None)
    record(tel, f"{p}odd", odd, None)
    record(tel, f"{p}odd", odd, None)
    assert tel.flush(10.0)
    assert sums(reader, p) == {
        attrs(
            feature_flag__key=f"{p}own",
            feature_flag__result__variant="v1",
            feature_flag__result__reason="custom_rule",
        ): 1,
        attrs(
            feature_flag__key=f"{p}odd", feature_flag__result__reason="error", error__type="general"
        ): 2,
    }


@pytest.mark.parametrize("via", ["hook", "wrapper"])
def test_hook_and_wrapper_record_the_same_sets(make_telemetry: Any, via: str) -> None:
    reader, _ = install()
    p = prefix(f"same-{via}")
    provider = InMemoryProvider(
        {f"{p}f": InMemoryFlag("b", {"a": 1, "b": 2}, flag_metadata={"allocationKey": "x"})}
    )
    tel = make_telemetry(otel_metrics=True, datadog=False)
    if via == "hook":
        api.set_provider_and_wait(provider)
    else:
        api.set_provider_and_wait(flageval.instrument(provider, tel))
    client = api.get_client()
    if via == "hook":
        client.add_hooks([tel.hook])
    assert client.get_integer_value(f"{p}f", 0) == 2
    assert client.get_integer_value(f"{p}missing", 0) == 0
    assert tel.flush(10.0)
    provider_name = {"feature_flag__provider__name": PROVIDER}
    assert sums(reader, p) == {
        attrs(
            feature_flag__key=f"{p}f",
            feature_flag__result__variant="b",
            feature_flag__result__reason="static",
            feature_flag__result__allocation_key="x",
            **provider_name,
        ): 1,
        attrs(
            feature_flag__key=f"{p}missing",
            feature_flag__result__reason="error",
            error__type="flag_not_found",
            **provider_name,
        ): 1,
    }
