"""Differential test: flageval against dd-trace-py 4.16.0 on the same evaluations.

One OpenFeature client carries both hooks, flageval's (``Telemetry(...).hook``, default
settings) and dd-trace-py's ``FlagEvalEVPHook`` over its ``FlagEvaluationWriter``; a
scripted provider answers every case. Each side posts to its own real intake on
127.0.0.1. The rows are normalised (one row per case, matched by flag key; the flush
``timestamp`` and clock-taken evaluation times compared for presence only, provider
stamps exactly; context values with their JSON type) and compared field by field.

Every difference allowed is listed below in ``ALLOWED`` with its reason (the same text
is the docs' "Compared with dd-trace-py" table) and named by the case it occurs in; any
other difference fails, and so does a listed difference that does not occur. Both
sides' bodies are validated against schemas/flagevaluation.schema.json: flageval's
must all pass; dd-trace-py's rows that fail are named in ``DD_SCHEMA_FAILS`` with why.

Driving dd-trace-py in-process: its pytest plugin reads its settings before any
conftest, so the writer is given the intake through its own ``route_selector``
argument (the remote_config route, /evp_proxy/v2, as benchmarks/_harness.py does). It
is not started: ``periodic()`` (what its flush thread runs) drains and posts, so the
run takes seconds and nothing is left running.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, FlagNotFoundError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from flageval import Telemetry
from tests.intake import Intake, Received
from tests.schema_util import validate_body

ALLOWED: dict[str, str] = {
    "consent_default": (
        "No consent in the metadata: flageval's `full_data_default` (true by default) "
        "sends the targeting key and context; dd-trace-py hashes the key and sends no "
        "context unless its provider stamped consent. flageval serves any provider, so "
        "the default is a setting; metadata always wins."
    ),
    "consent_spelling": (
        "flageval also reads `observe_full_evaluation_data` (the spelling of Datadog's "
        "other SDKs); dd-trace-py reads only `__dd_observe_full_evaluation_data`."
    ),
    "consent_fails_closed": (
        "Spellings that disagree: an explicit no in either wins in flageval (privacy "
        "fails closed); dd-trace-py reads only its own spelling."
    ),
    "allocation_spellings": (
        "flageval also reads `allocationKey` and `dd.allocation.key` (other providers' "
        "spellings) after `allocation_key`; dd-trace-py reads only `allocation_key`."
    ),
    "stamp_spelling": "flageval also reads the stamp spelled `__dd_eval_timestamp_ms`.",
    "stamp_validated": (
        "A stamp that is not epoch milliseconds after 2025-10-01 (too old, in seconds, a "
        "boolean) is replaced by the hook's clock in flageval; dd-trace-py sends it, and "
        "its row fails the schema (`first_evaluation` minimum)."
    ),
    "error_message_with_consent": (
        "With consent stated in the flag's metadata, flageval sends the provider's error "
        "message; dd-trace-py 4.16 always sends the code. Without stated consent both "
        "send the code."
    ),
    "cut_1024": (
        "Flag keys and variants over 1,024 characters are cut to 1,024 in flageval (bucket "
        "keys stay bounded); dd-trace-py sends them whole."
    ),
    "depth_8": "flageval flattens nested mappings 8 path segments deep, dd-trace-py 4.",
    "list_64": "flageval keeps the first 64 items of a list, dd-trace-py 256.",
    "sorted_cut": (
        "Past 256 attributes flageval keeps the first 256 by sorted key (one context gives "
        "one row whatever the insertion order); dd-trace-py keeps the first 256 inserted."
    ),
    "long_strings_take_no_slot": (
        "A string over 256 characters is skipped by both, but in dd-trace-py it still uses "
        "one of the 256 keys it inspects per mapping; in flageval it takes no slot."
    ),
    "none_dropped": (
        "A None value is dropped by flageval (it says nothing); dd-trace-py sends null, "
        "which the schema refuses."
    ),
    "text_of_other_values": (
        "date, Decimal, UUID and bytes values are sent as their ISO or str() text by "
        "flageval; dd-trace-py drops them."
    ),
    "nan_text": (
        'NaN and infinities become "NaN", "Infinity", "-Infinity" in flageval (JSON has '
        "no spelling for them); dd-trace-py drops the attribute."
    ),
    "set_items": (
        "Set items flatten like a list, in sorted order, in flageval; dd-trace-py drops sets."
    ),
    "int_targeting_key": (
        "A non-string targeting key (an int id) is sent as its text by flageval; "
        "dd-trace-py leaves the key out."
    ),
}
DD_SCHEMA_FAILS: dict[str, str] = {
    "null_value": "a context value of null (schema: attribute values are string, number, bool)",
    "stamp_before_floor": "first/last_evaluation below 2025-10-01 (the provider stamp as sent)",
}

ABSENT = "<absent>"
CONSENT = {"__dd_observe_full_evaluation_data": True}
STAMP = 1_790_000_000_123
TK = "user-1"


def sha(text: str) -> str:
    return "sha256_" + hashlib.sha256(text.encode()).hexdigest()


def ctx(**values: Any) -> dict[str, tuple[str, Any]]:
    """A normalised context: attribute -> (JSON type, value)."""
    return {k: _typed(v) for k, v in values.items()}


def _typed(v: Any) -> tuple[str, Any]:
    kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(v), type(v).__name__)
    return (kind, v)


@dataclasses.dataclass
class Case:
    flag: str
    attrs: dict[Any, Any] = dataclasses.field(default_factory=dict)
    tk: Any = TK
    meta: dict[str, Any] | None = dataclasses.field(default_factory=lambda: dict(CONSENT))
    kind: str = "boolean"
    variant: str | None = "on"
    #: Instead of a success with ``variant``: raise this, or return these details.
    resolve: Callable[[str, EvaluationContext], FlagResolutionDetails[Any]] | None = None
    repeat: int = 1
    #: field -> (flageval's value, dd-trace-py's value, ALLOWED reason)
    diffs: dict[str, tuple[Any, Any, str]] = dataclasses.field(default_factory=dict)
    dd_schema: str | None = None  # a DD_SCHEMA_FAILS reason
    sent_flag: str | None = None  # flageval's flag key, when it is cut
    domain: str = "parity"


VALUES = {"boolean": True, "string": "s", "integer": 7, "float": 1.5, "object": {"o": 1}}
DEFAULTS = {"boolean": False, "string": "d", "integer": 0, "float": 0.0, "object": {}}


class Scripted(AbstractProvider):
    """Answers each flag as its case says; blocks in initialize when ``ready`` is set."""

    def __init__(self, cases: dict[str, Case], ready: threading.Event | None = None) -> None:
        super().__init__()
        self.cases = cases
        self.ready = ready

    def get_metadata(self) -> Metadata:
        return Metadata(name="scripted")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self.ready is not None:
            self.ready.wait(30.0)

    def _resolve(self, flag_key: str, default_value: Any, evaluation_context: Any = None) -> Any:
        case = self.cases[flag_key]
        if case.resolve is not None:
            return case.resolve(flag_key, evaluation_context)
        return FlagResolutionDetails(
            value=VALUES[case.kind],
            variant=case.variant,
            reason=Reason.TARGETING_MATCH,
            flag_metadata=dict(case.meta) if case.meta is not None else {},
        )

    resolve_boolean_details = _resolve  # type: ignore[assignment]
    resolve_string_details = _resolve  # type: ignore[assignment]
    resolve_integer_details = _resolve  # type: ignore[assignment]
    resolve_float_details = _resolve  # type: ignore[assignment]
    resolve_object_details = _resolve  # type: ignore[assignment]


def _not_found(flag_key: str, context: Any) -> Any:
    raise FlagNotFoundError(f"Flag '{flag_key}' not found")


def _raises(flag_key: str, context: Any) -> Any:
    raise RuntimeError("boom for alice@example.com")


def _wrong_type(flag_key: str, context: Any) -> Any:
    return FlagResolutionDetails(value="not-a-bool", variant="on", flag_metadata=dict(CONSENT))


def _parse_error(flag_key: str, context: Any) -> Any:
    return FlagResolutionDetails(
        value=False,
        reason=Reason.ERROR,
        error_code=ErrorCode.PARSE_ERROR,
        error_message="rule 3 does not parse",
        flag_metadata=dict(CONSENT),
    )


SHARED_META: dict[str, Any] = {**CONSENT, "dd.eval.timestamp_ms": STAMP}


def _shared(flag_key: str, context: Any) -> Any:
    # One metadata dict the provider mutates per evaluation (as InMemoryProvider's is).
    SHARED_META["dd.eval.timestamp_ms"] += 1
    return FlagResolutionDetails(value=True, variant="on", flag_metadata=SHARED_META)


def _stamp(meta: dict[str, Any]) -> Callable[..., Any]:
    def resolve(flag_key: str, context: Any) -> Any:
        return FlagResolutionDetails(value=True, variant="on", flag_metadata=dict(meta))

    return resolve


HASHED = {"targeting_key": sha(TK)}
PRO = {"plan": "pro"}
LONG_FLAG = "F" * 2000
LONG_VARIANT = "V" * 2000
WIDE_REVERSED = {f"a{i:03d}": i for i in reversed(range(300))}
LONG_FIRST = {f"a{i:03d}": "x" * 300 for i in range(44)} | {f"b{i:03d}": i for i in range(256)}
DEEP = {"a": {"b": {"c": {"d": {"e": 1}}}}, "top": 1}
BIG = "t" * (6 * 1024 * 1024)
SPLIT_ATTRS = {f"a{i:03d}": f"{i:03d}" + "y" * 247 for i in range(256)}


def _cases() -> list[Case]:
    c: list[Case] = []
    # -- flag types, value types -------------------------------------------------------
    for kind in VALUES:
        c.append(Case(f"type-{kind}", kind=kind, attrs={"plan": "pro"}))
    for name, value in (("str", "1"), ("int", 1), ("float", 1.0), ("bool", True)):
        c.append(Case(f"value-{name}", attrs={"v": value}))
    c.append(Case("nested", attrs={"user": {"name": "ana", "tags": ["a", "b"]}, "n": 2}))
    c.append(Case("strings-256-257", attrs={"ok": "x" * 256, "long": "x" * 257}))
    c.append(
        Case(
            "wide-reversed",
            attrs=WIDE_REVERSED,
            diffs={
                "context": (
                    ctx(**{f"a{i:03d}": i for i in range(256)}),
                    ctx(**{f"a{i:03d}": i for i in range(44, 300)}),
                    "sorted_cut",
                )
            },
        )
    )
    c.append(
        Case(
            "long-strings-first",
            attrs=LONG_FIRST,
            diffs={
                "context": (
                    ctx(**{f"b{i:03d}": i for i in range(256)}),
                    ctx(**{f"b{i:03d}": i for i in range(212)}),
                    "long_strings_take_no_slot",
                )
            },
        )
    )
    c.append(
        Case(
            "deep",
            attrs=DEEP,
            diffs={"context": (ctx(**{"a.b.c.d.e": 1, "top": 1}), ctx(top=1), "depth_8")},
        )
    )
    c.append(
        Case(
            "long-list",
            attrs={"l": list(range(100))},
            diffs={
                "context": (
                    ctx(**{f"l[{i}]": i for i in range(64)}),
                    ctx(**{f"l[{i}]": i for i in range(100)}),
                    "list_64",
                )
            },
        )
    )
    naive, aware = dt.datetime(2026, 1, 2, 3, 4, 5), dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    c.append(Case("datetimes", attrs={"naive": naive, "aware": aware}))
    c.append(
        Case(
            "none",
            attrs={"x": None, "y": 1},
            diffs={
                "context": (ctx(y=1), {"x": ("NoneType", None), "y": ("int", 1)}, "none_dropped")
            },
            dd_schema="null_value",
        )
    )
    c.append(
        Case(
            "nan",
            attrs={"n": math.nan, "i": math.inf, "y": 1},
            diffs={"context": (ctx(n="NaN", i="Infinity", y=1), ctx(y=1), "nan_text")},
        )
    )
    the_uuid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    c.append(
        Case(
            "other-values",
            attrs={
                "day": dt.date(2026, 1, 2),
                "dec": decimal.Decimal("1.50"),
                "id": the_uuid,
                "raw": b"ab",
                "y": 1,
            },
            diffs={
                "context": (
                    ctx(day="2026-01-02", dec="1.50", id=str(the_uuid), raw="b'ab'", y=1),
                    ctx(y=1),
                    "text_of_other_values",
                )
            },
        )
    )
    c.append(
        Case(
            "set",
            attrs={"s": {"b", "a"}, "y": 1},
            diffs={"context": (ctx(**{"s[0]": "a", "s[1]": "b", "y": 1}), ctx(y=1), "set_items")},
        )
    )
    c.append(Case("non-string-keys", attrs={1: "int", (2, 3): "t", None: "n", "1": "real"}))
    # -- targeting key ---------------------------------------------------------------------
    c.append(Case("tk-absent", tk=None, attrs=PRO))
    c.append(
        Case(
            "tk-int",
            tk=42,
            attrs=PRO,
            diffs={"targeting_key": ("42", ABSENT, "int_targeting_key")},
        )
    )
    c.append(Case("tk-6mib", tk=BIG, attrs=PRO))  # both: over 5 MiB, sent without key/context
    # -- consent ---------------------------------------------------------------------------
    a, b = "observe_full_evaluation_data", "__dd_observe_full_evaluation_data"
    full = {"targeting_key": TK, "context": ctx(plan="pro")}
    hashed = {"targeting_key": sha(TK), "context": ABSENT}

    def consent_diff(reason: str, fe: dict[str, Any], dd: dict[str, Any]) -> dict[str, Any]:
        return {f: (fe[f], dd[f], reason) for f in fe}

    for name, meta, diffs in [
        ("dd-true", {b: True}, {}),
        ("dd-false", {b: False}, {}),
        ("dd-string-true", {b: "true"}, {}),
        ("plain-true", {a: True}, consent_diff("consent_spelling", full, hashed)),
        ("plain-false", {a: False}, {}),
        ("plain-string-true", {a: "true"}, {}),
        ("absent", {}, consent_diff("consent_default", full, hashed)),
        ("disagree-plain-true-dd-false", {a: True, b: False}, {}),
        (
            "disagree-plain-false-dd-true",
            {a: False, b: True},
            consent_diff("consent_fails_closed", hashed, full),
        ),
        ("disagree-plain-true-dd-string", {a: True, b: "true"}, {}),
    ]:
        c.append(Case(f"consent-{name}", meta=meta, attrs=PRO, diffs=diffs))
    # -- allocation --------------------------------------------------------------------------
    for name, meta, diffs in [
        ("allocation_key", {"allocation_key": "a1"}, {}),
        (
            "allocationKey",
            {"allocationKey": "a2"},
            {"allocation": ("a2", ABSENT, "allocation_spellings")},
        ),
        (
            "dd.allocation.key",
            {"dd.allocation.key": "a3"},
            {"allocation": ("a3", ABSENT, "allocation_spellings")},
        ),
        ("both", {"allocationKey": "x", "allocation_key": "a4"}, {}),
        ("empty", {"allocation_key": ""}, {}),
        ("non-string", {"allocation_key": 7}, {}),
    ]:
        c.append(Case(f"allocation-{name}", meta={**CONSENT, **meta}))
        c[-1].diffs = diffs
    # -- time stamps -------------------------------------------------------------------------
    c.append(Case("stamp-valid", resolve=_stamp({**CONSENT, "dd.eval.timestamp_ms": STAMP})))
    c.append(
        Case(
            "stamp-other-spelling",
            resolve=_stamp({**CONSENT, "__dd_eval_timestamp_ms": STAMP}),
            diffs={
                "first": (STAMP, "<clock>", "stamp_spelling"),
                "last": (STAMP, "<clock>", "stamp_spelling"),
            },
        )
    )
    for name, stamp in (("too-old", 1_700_000_000_000), ("seconds", 1_790_000_000), ("bool", True)):
        c.append(
            Case(
                f"stamp-{name}",
                resolve=_stamp({**CONSENT, "dd.eval.timestamp_ms": stamp}),
                diffs={
                    "first": ("<clock>", int(stamp), "stamp_validated"),
                    "last": ("<clock>", int(stamp), "stamp_validated"),
                },
                dd_schema="stamp_before_floor",
            )
        )
    c.append(Case("stamp-shared-dict", resolve=_shared, repeat=3))
    # -- errors and variants -----------------------------------------------------------------
    c.append(Case("error-flag-not-found", resolve=_not_found, attrs=PRO))
    c.append(Case("error-type-mismatch", resolve=_wrong_type, attrs=PRO))
    c.append(Case("error-provider-raises", resolve=_raises, attrs=PRO))
    c.append(
        Case(
            "error-with-consent",
            resolve=_parse_error,
            attrs=PRO,
            diffs={"error": ("rule 3 does not parse", "PARSE_ERROR", "error_message_with_consent")},
        )
    )
    c.append(Case("no-variant", variant=None, attrs=PRO))
    c.append(Case("empty-variant", variant="", attrs=PRO))
    c.append(
        Case(
            "long-variant",
            variant=LONG_VARIANT,
            diffs={"variant": (LONG_VARIANT[:1024], LONG_VARIANT, "cut_1024")},
        )
    )
    c.append(
        Case(
            LONG_FLAG,
            sent_flag=LONG_FLAG[:1024],
            diffs={"flag": (LONG_FLAG[:1024], LONG_FLAG, "cut_1024")},
        )
    )
    c.append(Case("repeat-1000", attrs=PRO, repeat=1000))
    for i in range(90):  # ~66 KB rows: more than one 5 MiB body on both sides
        c.append(Case(f"split-{i:02d}", attrs=SPLIT_ATTRS))
    c.append(Case("not-ready", attrs=PRO, domain="not-ready"))
    return c


CASES = _cases()


@dataclasses.dataclass
class Run:
    flageval: list[Received]
    ddtrace: list[Received]
    window: tuple[int, int]  # epoch ms around the evaluations: the clocks' range
    ddtrace_dropped: int
    flageval_schema_errors: list[str]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    from ddtrace.internal.openfeature._evp_transport import FeatureFlagEVPRouteSelector
    from ddtrace.internal.openfeature._flag_eval_evp_hook import FlagEvalEVPHook
    from ddtrace.internal.openfeature._flagevaluation_writer import FlagEvaluationWriter

    fe_intake = Intake().start()  # validates every body it gets
    dd_intake = Intake(validate=False).start()  # validated below, row by row
    selector = FeatureFlagEVPRouteSelector(
        configuration_source="remote_config",
        agent_url=dd_intake.url,
        api_key=None,
        site="datadoghq.com",
    )
    writer = FlagEvaluationWriter(interval=3600.0, route_selector=selector)
    tel = Telemetry(agent_url=fe_intake.url, service="parity", flush_interval_s=60.0)
    gate = threading.Event()
    # dd-trace-py names the service from its own config, which its pytest plugin fills
    # in one process and leaves empty in a pytest-xdist worker: named here, as ours is.
    from ddtrace import config as dd_config

    dd_service = dd_config.service
    dd_config.service = "parity"
    try:
        by_domain = {
            d: {c.flag: c for c in CASES if c.domain == d} for d in ("parity", "not-ready")
        }
        api.set_provider_and_wait(Scripted(by_domain["parity"]), domain="parity")
        api.set_provider(Scripted(by_domain["not-ready"], ready=gate), domain="not-ready")
        clients = {d: api.get_client(d) for d in by_domain}
        for client in clients.values():
            client.add_hooks([tel.hook, FlagEvalEVPHook(writer)])
        start = _now_ms()
        for case in CASES:
            evaluate = getattr(clients[case.domain], f"get_{case.kind}_details")
            context = EvaluationContext(case.tk, case.attrs)
            for _ in range(case.repeat):
                evaluate(case.flag, DEFAULTS[case.kind], context)
        end = _now_ms()
        gate.set()
        assert tel.flush(30.0)
        writer.periodic()  # what its flush thread runs: drain, aggregate, post
        dropped = int(writer._dropped_pre_queue + writer._dropped_queue)
        yield Run(
            fe_intake.accepted(),
            dd_intake.accepted(),
            (start, end),
            dropped,
            fe_intake.schema_errors,
        )
    finally:
        dd_config.service = dd_service
        gate.set()
        tel.shutdown(5.0)
        fe_intake.stop()
        dd_intake.stop()
        api.clear_providers()


def _rows(records: list[Received]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        for row in rec.json()["flagEvaluations"]:
            key = row["flag"]["key"]
            assert key not in out, f"two rows for {key[:60]!r}"
            out[key] = row
    return out


def _fields(row: dict[str, Any], window: tuple[int, int]) -> dict[str, Any]:
    """One row, normalised: clock-taken times as "<clock>" (when within the run),
    provider stamps as they are, optional keys only when sent, context values typed."""
    assert type(row["timestamp"]) is int  # the flush time: presence only
    out: dict[str, Any] = {"flag": row["flag"]["key"], "count": row["evaluation_count"]}
    for name in ("first", "last"):
        value = row[f"{name}_evaluation"]
        out[name] = "<clock>" if window[0] <= value <= window[1] else value
    if "runtime_default_used" in row:
        out["runtime_default_used"] = row["runtime_default_used"]
    for name in ("variant", "allocation"):
        if name in row:
            out[name] = row[name]["key"]
    if "error" in row:
        out["error"] = row["error"]["message"]
    if "targeting_key" in row:
        out["targeting_key"] = row["targeting_key"]
    if "context" in row:
        out["context"] = {k: _typed(v) for k, v in row["context"]["evaluation"].items()}
    return out


def test_every_row_matches_ddtrace_except_the_listed_differences(run: Run) -> None:
    fe_rows, dd_rows = _rows(run.flageval), _rows(run.ddtrace)
    assert run.ddtrace_dropped == 0
    identical = 0
    by_reason: Counter[str] = Counter()
    for case in CASES:
        fe = _fields(fe_rows.pop(case.sent_flag or case.flag), run.window)
        dd = _fields(dd_rows.pop(case.flag), run.window)
        found: set[str] = set()
        for field in sorted(fe.keys() | dd.keys()):
            pair = (fe.get(field, ABSENT), dd.get(field, ABSENT))
            if pair[0] == pair[1]:
                continue
            assert field in case.diffs, (
                f"{case.flag[:40]}: unlisted difference in {field}: "
                f"flageval {str(pair[0])[:300]}, ddtrace {str(pair[1])[:300]}"
            )
            *expected, reason = case.diffs[field]
            assert pair == tuple(expected), (case.flag[:40], field, pair)
            assert reason in ALLOWED
            found.add(field)
        assert found == set(case.diffs), f"{case.flag[:40]}: listed but not seen"
        if found:
            by_reason.update({case.diffs[f][2] for f in found})
        else:
            identical += 1
    assert fe_rows == {} and dd_rows == {}, (list(fe_rows)[:3], list(dd_rows)[:3])
    assert set(by_reason) == set(ALLOWED)  # every allowed difference is exercised
    print(f"\nddtrace parity: {len(CASES)} cases, {identical} identical;", dict(by_reason))


def test_both_sides_bodies_against_the_schema(run: Run) -> None:
    """flageval's bodies all validate. dd-trace-py's are validated row by row: exactly
    the rows of the cases named in DD_SCHEMA_FAILS fail, for the reason given."""
    assert run.flageval and not run.flageval_schema_errors, run.flageval_schema_errors[:3]
    for rec in run.flageval:
        validate_body(rec.body)
    failing: dict[str, str] = {}
    for rec in run.ddtrace:
        doc = rec.json()
        assert set(doc) == {"context", "flagEvaluations"} and doc["context"]["service"]
        for row in doc["flagEvaluations"]:
            try:
                validate_body({"context": doc["context"], "flagEvaluations": [row]})
            except Exception as exc:  # jsonschema.ValidationError
                failing[row["flag"]["key"]] = str(exc).split("\n")[0]
    expected = {c.flag: c.dd_schema for c in CASES if c.dd_schema is not None}
    assert set(failing) == set(expected), failing
    for flag, reason in expected.items():
        assert reason in DD_SCHEMA_FAILS
        wanted = "None is not of type" if reason == "null_value" else "is less than the minimum"
        assert wanted in failing[flag], (flag, failing[flag])


def test_rows_split_across_bodies_on_both_sides(run: Run) -> None:
    for side in (run.flageval, run.ddtrace):
        assert len(side) >= 2
        assert all(len(rec.body) <= 5 * 1024 * 1024 for rec in side)
    split = {f"split-{i:02d}" for i in range(90)}
    for side in (run.flageval, run.ddtrace):
        holding = [
            rec for rec in side if split & {r["flag"]["key"] for r in rec.json()["flagEvaluations"]}
        ]
        assert len(holding) >= 2  # the 90 ~66 KB rows did not fit one body
