"""The telemetry hook records each per-context evaluation with its own context and the
variant that context was answered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

import flageval
from flageval.ofrep import OFREPProvider
from tests.ofrep.ofrep_server import OFREPTestServer
from tests.ofrep.test_e2e_telemetry import TinyIntake, intake, telemetry

__all__ = ["intake", "telemetry"]  # the fixtures, used here by name


def test_each_evaluation_reaches_the_intake_with_its_own_user_and_variant(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    intake: TinyIntake,
    telemetry: flageval.Telemetry,
) -> None:
    def answer(ctx: dict[str, object]) -> dict[str, dict[str, object]]:
        on = ctx.get("targetingKey") == "ann"
        item = {"key": "beta", "value": on, "variant": "on" if on else "off", "reason": "STATIC"}
        return {"beta": item}

    server.flags_for_context = answer
    api.add_hooks([telemetry.hook])
    api.set_provider_and_wait(make_provider(server.url, change_detection="none"))
    client = api.get_client()
    for _ in range(3):
        assert client.get_boolean_value("beta", False, EvaluationContext("ann")) is True
    for _ in range(2):
        assert client.get_boolean_value("beta", True, EvaluationContext("bob")) is False
    assert telemetry.flush(5.0)
    counts: Counter[tuple[str | None, str | None]] = Counter()
    for row in intake.rows():
        counts[(row.get("targeting_key"), row["variant"]["key"])] += row["evaluation_count"]
    assert counts == {("ann", "on"): 3, ("bob", "off"): 2}
