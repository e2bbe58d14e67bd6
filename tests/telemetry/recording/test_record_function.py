"""``flageval._record.record``: an evaluation made without the SDK (an OFREP server's) is
counted exactly as the hook counts the same evaluation through the SDK, starts the
worker on first use and is delivered, never raises, and does nothing when switched off."""

from __future__ import annotations

from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from flageval._record import record
from tests.intake import Intake

META = {"allocation_key": "a1", "__dd_observe_full_evaluation_data": True}


def by_context(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    plan = ctx.attributes.get("plan")
    return FlagResolutionDetails(plan == "pro", variant=f"v-{plan}", flag_metadata=META)


def test_recorded_as_the_hook_records_the_same_evaluation(make_telemetry: Any) -> None:
    provider = InMemoryProvider(
        {"f": InMemoryFlag("on", {"on": True}, context_evaluator=by_context)}
    )
    via_hook, via_record = make_telemetry(autostart=False), make_telemetry(autostart=False)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    client.add_hooks([via_hook.hook])
    contexts = [EvaluationContext(f"u{i}", {"plan": p}) for i, p in enumerate(["pro", "free"])]
    for ctx in contexts:
        client.get_boolean_value("f", False, ctx)
        record(via_record, "f", provider.resolve_boolean_details("f", False, ctx), ctx)
    client.get_boolean_value("absent", False)
    missing = provider.resolve_boolean_details("absent", False, None)  # an error, returned
    assert missing.error_code is ErrorCode.FLAG_NOT_FOUND
    record(via_record, "absent", missing, None)
    hooked, recorded = list(via_hook.handoff.queue), list(via_record.handoff.queue)
    assert len(hooked) == len(recorded) == 3
    for h, r in zip(hooked, recorded, strict=True):
        assert h[:5] == r[:5]  # flag, variant, error code and message, metadata
        assert h[5] == r[5] and dict(h[6]) == dict(r[6])  # targeting key, attributes
    assert recorded[0][1] == "v-pro" and recorded[0][4] == META and recorded[0][4] is not META


def test_first_use_starts_the_worker_and_it_is_delivered(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry()
    assert not tel.running
    details = FlagResolutionDetails(True, variant="on", flag_metadata=META)
    for i in range(5):
        record(tel, "f", details, EvaluationContext(f"u{i}", {"plan": "pro"}))
    assert tel.running
    assert tel.flush(10.0)
    assert intake.evaluations() == 5
    assert {r["targeting_key"] for r in intake.rows()} == {f"u{i}" for i in range(5)}


def test_never_raises_a_failure_is_counted(make_telemetry: Any) -> None:
    class Broken:
        variant = error_code = error_message = None

        @property
        def flag_metadata(self) -> Any:
            raise RuntimeError("a details object that cannot be read")

    tel = make_telemetry()
    record(tel, "f", Broken(), EvaluationContext("u"))  # type: ignore[arg-type]
    stats = tel.stats()
    assert stats.dropped == {"hook_error": 1} and stats.evaluations == 1 and stats.conserved


def test_switched_off_it_does_nothing(monkeypatch: pytest.MonkeyPatch, intake: Intake) -> None:
    monkeypatch.setenv("DD_FLAGGING_EVALUATION_COUNTS_ENABLED", "false")
    tel = Telemetry(agent_url=intake.url)
    record(tel, "f", FlagResolutionDetails(True), EvaluationContext("u"))
    assert tel.stats().evaluations == 0 and tel._thread is None
