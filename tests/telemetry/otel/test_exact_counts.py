"""Exact counts: ``feature_flag.evaluations`` sums to the evaluations the worker took,
from many threads, per flag, variant, reason and error; what ``Stats`` counts as dropped
before aggregation is all that is missing; a failure of either export never costs the
other one an evaluation."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval._record import record
from tests.intake import Behaviour, Intake
from tests.telemetry.otel.meter import install, prefix, sums, total

THREADS = 8
PER_THREAD = 1200  # a multiple of 6: each thread's share of every kind is exact


def by_user(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    odd = int(str(ctx.targeting_key)) % 2
    return FlagResolutionDetails(bool(odd), variant=("odd" if odd else "even"), reason="SPLIT")


def _provider(p: str) -> InMemoryProvider:
    return InMemoryProvider({f"{p}f": InMemoryFlag("on", {"on": True}, context_evaluator=by_user)})


def _evaluate(client: Any, p: str, start: threading.Barrier) -> None:
    start.wait(10.0)
    for j in range(PER_THREAD):
        kind = j % 3
        if kind == 0:  # split: j even / odd alternate over j = 0, 3, 6, ...
            client.get_boolean_value(f"{p}f", False, EvaluationContext(str(j)))
        elif kind == 1:
            client.get_boolean_value(f"{p}missing", False)
        else:
            client.get_string_value(f"{p}f", "x", EvaluationContext("1"))  # type mismatch


def test_sums_from_many_threads_equal_the_evaluations_per_attribute_set(
    make_telemetry: Any, intake: Intake
) -> None:
    reader, _ = install()
    p = prefix("threads")
    api.set_provider_and_wait(_provider(p))
    tel = make_telemetry(otel_metrics=True, drain_interval_s=0.005)
    client = api.get_client()
    client.add_hooks([tel.hook])
    start = threading.Barrier(THREADS)
    threads = [threading.Thread(target=_evaluate, args=(client, p, start)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    assert tel.flush(20.0)
    n = THREADS * PER_THREAD
    s = sums(reader, p)
    # Per thread: 400 of each kind; of the 400 splits (j = 0, 3, ..., 1197) half even.
    assert len(s) == 4
    assert total(s, feature_flag__result__variant="even") == n // 6
    assert total(s, feature_flag__result__variant="odd") == n // 6
    assert total(s, feature_flag__result__reason="split") == n // 3
    assert total(s, feature_flag__key=f"{p}missing", error__type="flag_not_found") == n // 3
    assert total(s, feature_flag__key=f"{p}f", error__type="type_mismatch") == n // 3
    assert total(s, feature_flag__result__reason="error") == 2 * n // 3
    st = tel.stats()
    assert st.dropped == {}
    assert st.exports == ("datadog", "opentelemetry")
    assert st.evaluations == st.otel_recorded == st.evaluations_posted == sum(s.values()) == n
    assert intake.evaluations() == n
    assert st.conserved


@pytest.mark.parametrize("datadog", [False, True])
def test_recorded_is_the_evaluations_less_the_drops_before_aggregation(
    make_telemetry: Any, datadog: bool
) -> None:
    """A hand-off of 100 with no worker yet: 150 of 250 evaluations overflow."""
    reader, _ = install()
    p = prefix(f"overflow-{datadog}")
    api.set_provider_and_wait(_provider(p))
    tel = make_telemetry(otel_metrics=True, datadog=datadog, autostart=False, queue_size=100)
    client = api.get_client()
    client.add_hooks([tel.hook])
    for j in range(250):
        client.get_boolean_value(f"{p}f", False, EvaluationContext(str(j)))
    tel.start()
    assert tel.flush(10.0)
    tel.shutdown(5.0)
    client.get_boolean_value(f"{p}f", False, EvaluationContext("0"))  # closed
    st = tel.stats()
    assert st.evaluations == 251
    assert st.dropped["queue_overflow"] == 150 and st.dropped["closed"] == 1
    assert st.otel_recorded == sum(sums(reader, p).values()) == 100
    assert st.otel_recorded == st.evaluations - st.dropped["queue_overflow"] - st.dropped["closed"]
    assert st.otel_unrecorded == {} and st.pending == 0
    assert st.conserved


def test_the_intake_rejecting_everything_costs_the_counter_nothing(
    make_telemetry: Any, intake: Intake
) -> None:
    reader, _ = install()
    p = prefix("rejected")
    intake.set_default(Behaviour(status=400))
    api.set_provider_and_wait(_provider(p))
    tel = make_telemetry(otel_metrics=True)
    client = api.get_client()
    client.add_hooks([tel.hook])
    for j in range(40):
        client.get_boolean_value(f"{p}f", False, EvaluationContext(str(j)))
    tel.flush(10.0)
    st = tel.stats()
    assert st.dropped == {"intake_rejected": 40} and st.evaluations_posted == 0
    assert st.otel_recorded == sum(sums(reader, p).values()) == 40


def test_a_meter_provider_that_raises_costs_datadog_nothing_and_is_counted(
    make_telemetry: Any, intake: Intake, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from opentelemetry import metrics

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("meter provider broken")

    monkeypatch.setattr(metrics, "get_meter", broken)
    p = prefix("broken")
    api.set_provider_and_wait(_provider(p))
    tel = make_telemetry(otel_metrics=True)
    client = api.get_client()
    client.add_hooks([tel.hook])
    with caplog.at_level(logging.ERROR, logger="flageval"):
        for j in range(30):
            client.get_boolean_value(f"{p}f", False, EvaluationContext(str(j)))
            if j % 10 == 9:
                assert tel.flush(10.0)  # three batches: logged once
    st = tel.stats()
    assert st.evaluations_posted == intake.evaluations() == 30
    assert st.otel_recorded == 0 and st.otel_unrecorded == {"otel_error": 30}
    said = [r.getMessage() for r in caplog.records if "OpenTelemetry failed" in r.message]
    assert len(said) == 1 and "meter provider broken" in said[0], said


def test_an_unreadable_value_is_counted_unrecorded_and_the_books_balance(
    make_telemetry: Any,
) -> None:
    reader, _ = install()
    p = prefix("unreadable")

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no text")

    tel = make_telemetry(otel_metrics=True, datadog=False)
    good: Any = FlagResolutionDetails(True, variant="on", reason=Reason.STATIC)
    bad: Any = FlagResolutionDetails(True, variant=Unprintable(), reason=Reason.STATIC)
    for _ in range(3):
        record(tel, f"{p}f", good, None)
    record(tel, f"{p}f", bad, None)
    assert tel.flush(10.0)
    st = tel.stats()
    assert st.otel_recorded == sum(sums(reader, p).values()) == 3
    assert st.otel_unrecorded == {"unreadable_value": 1}
    assert st.evaluations == 4 and st.conserved


def test_runs_of_one_evaluation_split_where_any_field_or_the_metadata_changes(
    make_telemetry: Any,
) -> None:
    """One batch, in order: runs of the same evaluation broken by a changed allocation,
    variant, error, reason or flag, or by an unreadable variant, each counted where it
    belongs."""
    reader, _ = install()
    p = prefix("runs")

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no text")

    def details(
        variant: Any = "on", alloc: str = "a1", code: Any = None, reason: Any = Reason.STATIC
    ) -> Any:
        return FlagResolutionDetails(
            True,
            variant=variant,
            reason=reason,
            error_code=code,
            flag_metadata={"allocation_key": alloc},
        )

    order = (
        ["on"] * 3 + ["a2"] * 2 + ["on", "off", "bad", "off", "error", "on", "cached", "on", "g"]
    )
    tel = make_telemetry(otel_metrics=True, datadog=False, autostart=False)
    flag, other = f"{p}f", f"{p}g"  # one object each, as a call site's constant is
    for what in order:
        d = {
            "on": details(),
            "a2": details(alloc="a2"),
            "off": details("off"),
            "bad": details(Unprintable()),
            "error": details(code="GENERAL"),
            "cached": details(reason=Reason.CACHED),
            "g": details(),
        }[what]
        record(tel, other if what == "g" else flag, d, None)
    tel.start()
    assert tel.flush(10.0)

    def at(**kv: str) -> tuple[tuple[str, str], ...]:
        base = {"feature_flag.key": flag, "feature_flag.result.reason": "static"}
        base.update({k.replace("__", "."): v for k, v in kv.items()})
        return tuple(sorted(base.items()))

    assert sums(reader, p) == {
        at(feature_flag__result__variant="on", feature_flag__result__allocation_key="a1"): 6,
        at(feature_flag__result__variant="on", feature_flag__result__allocation_key="a2"): 2,
        at(feature_flag__result__variant="off", feature_flag__result__allocation_key="a1"): 2,
        at(
            feature_flag__result__variant="on",
            error__type="general",
            feature_flag__result__allocation_key="a1",
        ): 1,
        at(
            feature_flag__result__variant="on",
            feature_flag__result__reason="cached",
            feature_flag__result__allocation_key="a1",
        ): 1,
        at(
            feature_flag__key=other,
            feature_flag__result__variant="on",
            feature_flag__result__allocation_key="a1",
        ): 1,
    }
    assert tel.stats().otel_unrecorded == {"unreadable_value": 1}
