"""The hook driven through the real OpenFeature SDK, checked on what the real intake got.

Every expected value here is derived from the inputs (the flags, contexts and metadata
each test sets up) or from what the SDK itself returned to the caller, never from the
library's own output.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, ProviderFatalError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from flageval._handoff import Handoff
from tests.intake import Intake
from tests.schema_util import validate_body

MakeTelemetry = Callable[..., Telemetry]

JANE = "jane.doe@datadoghq.com"
# The test vector of docs/wire-format.md, checked here against hashlib too.
JANE_HASHED = "sha256_b4698f9b6d186781fa8dc59e533578fa2d8379a46b1cf6db85cda6aa9c99e51b"
# A flag value that must never reach the intake: grep the raw bytes for it.
SECRET_VALUE = "VALUE-zq81-never-on-the-wire"
STAMP = 1_760_000_000_123  # 2025-10-09, after the 2025-10-01 floor
MIN_EPOCH_MS = 1_759_276_800_000  # 2025-10-01T00:00:00Z, the intake schema's floor
ROW_KEYS = {
    "timestamp",
    "flag",
    "first_evaluation",
    "last_evaluation",
    "evaluation_count",
    "runtime_default_used",
    "targeting_key",
    "variant",
    "allocation",
    "error",
    "context",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def client_with(
    tel: Telemetry, flags: dict[str, InMemoryFlag[Any]], via_api: bool = False
) -> OpenFeatureClient:
    api.set_provider_and_wait(InMemoryProvider(flags))
    client = api.get_client()
    if via_api:
        api.add_hooks([tel.hook])
    else:
        client.add_hooks([tel.hook])
    return client


def flushed_rows(tel: Telemetry, intake: Intake) -> list[dict[str, Any]]:
    assert tel.flush(10.0)
    rows = intake.rows()
    for row in rows:
        assert set(row) <= ROW_KEYS
    return rows


def only_row(rows: list[dict[str, Any]], flag: str) -> dict[str, Any]:
    mine = [r for r in rows if r["flag"]["key"] == flag]
    assert len(mine) == 1, mine
    return mine[0]


def stamped(meta: dict[str, Any], variant: str = "on") -> Callable[..., Any]:
    """A context_evaluator returning a fixed variant with the given flag metadata."""

    def evaluate(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(
            value=flag.variants[variant],
            variant=variant,
            reason=Reason.TARGETING_MATCH,
            flag_metadata=meta,
        )

    return evaluate


# -- success rows ----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["allocationKey", "allocation_key", "dd.allocation.key"])
def test_success_row_with_allocation_and_flattened_context(
    make_telemetry: MakeTelemetry, intake: Intake, spelling: str
) -> None:
    tel = make_telemetry()
    flag = InMemoryFlag(
        "blue", {"blue": SECRET_VALUE, "red": "r"}, flag_metadata={spelling: "alloc-7"}
    )
    client = client_with(tel, {"checkout.color": flag})
    ctx = EvaluationContext(
        "user-42",
        {
            "country": "FR",
            "plan": {"tier": "gold", "seats": 3},
            "tags": ["beta", "ios"],
            "ratio": 0.5,
            "admin": False,
        },
    )
    before = now_ms()
    assert client.get_string_value("checkout.color", "none", ctx) == SECRET_VALUE
    after = now_ms()
    row = only_row(flushed_rows(tel, intake), "checkout.color")
    flushed = now_ms()

    assert row["variant"] == {"key": "blue"}
    assert row["allocation"] == {"key": "alloc-7"}
    assert row["targeting_key"] == "user-42"
    assert row["evaluation_count"] == 1
    evaluation = row["context"]["evaluation"]
    assert evaluation == {
        "admin": False,
        "country": "FR",
        "plan.seats": 3,
        "plan.tier": "gold",
        "ratio": 0.5,
        "tags[0]": "beta",
        "tags[1]": "ios",
    }
    assert list(evaluation) == sorted(evaluation)  # sorted on the wire too
    assert "runtime_default_used" not in row and "error" not in row
    assert before <= row["first_evaluation"] == row["last_evaluation"] <= after
    assert after <= row["timestamp"] <= flushed  # the flush time
    body = intake.accepted()[0].body
    assert SECRET_VALUE.encode() not in body


def test_hook_registered_on_the_api(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True, "off": False})}, via_api=True)
    for _ in range(3):
        assert client.get_boolean_value("f", False, EvaluationContext("u1")) is True
    # A second client of the same API is counted by the same (global) hook.
    api.get_client("other-domain").get_boolean_value("f", False, EvaluationContext("u1"))
    rows = flushed_rows(tel, intake)
    assert len(rows) == 1
    assert rows[0]["flag"] == {"key": "f"}
    assert rows[0]["variant"] == {"key": "on"}
    assert rows[0]["targeting_key"] == "u1"
    assert rows[0]["evaluation_count"] == 4
    assert "context" not in rows[0]  # no attributes: no context key at all
    stats = tel.stats()
    assert stats.evaluations == stats.evaluations_posted == 4 and stats.conserved


def test_hook_once_on_client_and_once_on_api_counts_twice(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    # Registering the hook at two levels runs it twice per evaluation: that is the SDK's
    # contract, and the counts must say so (not silently dedupe).
    tel = make_telemetry()
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True})}, via_api=True)
    client.add_hooks([tel.hook])
    client.get_boolean_value("f", False)
    assert sum(r["evaluation_count"] for r in flushed_rows(tel, intake)) == 2


# -- evaluation times -------------------------------------------------------------------


@pytest.mark.parametrize("stamp_key", ["dd.eval.timestamp_ms", "__dd_eval_timestamp_ms"])
def test_provider_stamp_is_the_evaluation_time(
    make_telemetry: MakeTelemetry, intake: Intake, stamp_key: str
) -> None:
    tel = make_telemetry()
    client = client_with(
        tel, {"f": InMemoryFlag("on", {"on": True}, flag_metadata={stamp_key: STAMP})}
    )
    client.get_boolean_value("f", False, EvaluationContext("u"))
    row = only_row(flushed_rows(tel, intake), "f")
    assert row["first_evaluation"] == row["last_evaluation"] == STAMP


@pytest.mark.parametrize(
    "bad_stamp",
    [str(STAMP), MIN_EPOCH_MS - 1, 1_700_000_000_000, 1_760_000_000, None, True],
    ids=["string", "just-before-floor", "2023", "seconds-not-ms", "none", "bool"],
)
def test_invalid_stamp_falls_back_to_the_hook_clock(
    make_telemetry: MakeTelemetry, intake: Intake, bad_stamp: Any
) -> None:
    tel = make_telemetry()
    meta = {"dd.eval.timestamp_ms": bad_stamp} if bad_stamp is not None else {}
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, flag_metadata=meta)})
    before = now_ms()
    client.get_boolean_value("f", False, EvaluationContext("u"))
    after = now_ms()
    row = only_row(flushed_rows(tel, intake), "f")
    assert before <= row["first_evaluation"] == row["last_evaluation"] <= after


def test_stamp_at_the_floor_is_accepted(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    meta = {"__dd_eval_timestamp_ms": MIN_EPOCH_MS}
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, flag_metadata=meta)})
    client.get_boolean_value("f", False)
    row = only_row(flushed_rows(tel, intake), "f")
    assert row["first_evaluation"] == row["last_evaluation"] == MIN_EPOCH_MS


def test_repeats_count_min_first_max_last(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    offsets = [500, 100, 900, 300, 900, 100, 400]
    stamps = iter(STAMP + o for o in offsets)

    def evaluate(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(
            value=True, variant="on", flag_metadata={"dd.eval.timestamp_ms": next(stamps)}
        )

    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, context_evaluator=evaluate)})
    ctx = EvaluationContext("u", {"k": "v"})
    for _ in offsets:
        client.get_boolean_value("f", False, ctx)
    row = only_row(flushed_rows(tel, intake), "f")
    assert row["evaluation_count"] == len(offsets)
    assert row["first_evaluation"] == STAMP + 100
    assert row["last_evaluation"] == STAMP + 900


# -- runtime default and errors -------------------------------------------------------


def test_runtime_default_without_variant(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()

    def no_variant(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(value=False, reason=Reason.DEFAULT)

    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, context_evaluator=no_variant)})
    assert client.get_boolean_value("f", True, EvaluationContext("u")) is False
    row = only_row(flushed_rows(tel, intake), "f")
    assert row["runtime_default_used"] is True
    assert "variant" not in row and "error" not in row
    assert row["evaluation_count"] == 1


def hashed(tk: str) -> str:
    return "sha256_" + hashlib.sha256(tk.encode()).hexdigest()


def test_flag_not_found_and_type_mismatch(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    """Details the SDK builds without the flag's metadata say nothing of its consent:
    sent protected (hashed key, no context, the code), even with full data the default."""
    tel = make_telemetry()
    client = client_with(
        tel,
        {
            "bool-flag": InMemoryFlag("on", {"on": True}),
            "string-flag": InMemoryFlag("s", {"s": SECRET_VALUE}),
        },
    )
    ctx = EvaluationContext("u", {"k": 1})
    missing = client.get_boolean_details("no-such-flag", False, ctx)
    wrong_type = client.get_string_details("bool-flag", "dflt", ctx)
    # TYPE_MISMATCH where the provider's value is in the SDK's details: still never sent.
    wrong_type2 = client.get_boolean_details("string-flag", False, ctx)
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND
    assert wrong_type.error_code == ErrorCode.TYPE_MISMATCH
    assert wrong_type2.error_code == ErrorCode.TYPE_MISMATCH and wrong_type2.error_message
    rows = flushed_rows(tel, intake)
    for name, details in [
        ("no-such-flag", missing),
        ("bool-flag", wrong_type),
        ("string-flag", wrong_type2),
    ]:
        row = only_row(rows, name)
        assert details.error_code is not None and details.error_message
        assert row["error"] == {"message": details.error_code.value}
        assert row["runtime_default_used"] is True and "variant" not in row
        assert row["targeting_key"] == hashed("u")
        assert "context" not in row
    assert all(SECRET_VALUE.encode() not in r.body for r in intake.accepted())


def test_an_error_path_never_sends_more_than_the_flags_success_path(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """A flag whose metadata refuses consent, evaluated with the wrong type: the SDK's
    TYPE_MISMATCH details carry no metadata, and the row must not fall back to the full
    data default (raw key, context and message) the success path never sends."""
    tel = make_telemetry(full_data_default=True)
    meta = {"__dd_observe_full_evaluation_data": False}
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, flag_metadata=meta)})
    assert client.get_boolean_value("f", False, JANE_CTX) is True
    assert client.get_string_details("f", "x", JANE_CTX).error_code == ErrorCode.TYPE_MISMATCH
    rows = flushed_rows(tel, intake)
    assert len(rows) == 2
    for row in rows:
        assert row["targeting_key"] == JANE_HASHED and "context" not in row
    errors = [r["error"] for r in rows if "error" in r]
    assert errors == [{"message": "TYPE_MISMATCH"}]
    assert b"jane.doe" not in intake.accepted()[0].body


class RaisingProvider(AbstractProvider):
    """A provider whose every resolve raises: the SDK turns that into GENERAL."""

    def get_metadata(self) -> Metadata:
        return Metadata(name="raising")

    def _boom(self, flag_key: str, *args: Any, **kwargs: Any) -> FlagResolutionDetails[Any]:
        raise RuntimeError(f"backend exploded on {flag_key}")

    resolve_boolean_details = _boom  # type: ignore[assignment]
    resolve_string_details = _boom  # type: ignore[assignment]
    resolve_integer_details = _boom  # type: ignore[assignment]
    resolve_float_details = _boom  # type: ignore[assignment]
    resolve_object_details = _boom  # type: ignore[assignment]


def test_provider_raising_sends_the_code_not_the_exception_text(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    tel = make_telemetry()  # full data by default: the raw text would carry the e-mail
    api.set_provider_and_wait(RaisingProvider())
    client = api.get_client()
    client.add_hooks([tel.hook])
    with caplog.at_level("CRITICAL", logger="openfeature"):  # the SDK logs a traceback
        details = client.get_integer_details("alice@example.com", 7, EvaluationContext("u"))
        client.get_integer_details("alice@example.com", 7, EvaluationContext("u"))
    assert details.value == 7 and details.error_code == ErrorCode.GENERAL
    assert details.error_message == "backend exploded on alice@example.com"
    row = only_row(flushed_rows(tel, intake), "alice@example.com")
    assert row["error"] == {"message": "GENERAL"}
    assert row["targeting_key"] == hashed("u")
    assert row["evaluation_count"] == 2
    assert row["runtime_default_used"] is True
    assert b"backend exploded" not in intake.accepted()[0].body


class SlowInitProvider(InMemoryProvider):
    """Blocks in initialize until released (or fails fatally): the SDK's NOT_READY case."""

    def __init__(self, fail_fatal: bool = False) -> None:
        super().__init__({"f": InMemoryFlag("on", {"on": True})})
        self.release = threading.Event()
        self.fail_fatal = fail_fatal

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self.fail_fatal:
            raise ProviderFatalError("cannot start")
        self.release.wait(10.0)


def test_provider_not_ready_is_counted(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    provider = SlowInitProvider()
    try:
        api.set_provider(provider)  # initialize runs (and blocks) on the SDK's thread
        client = api.get_client()
        client.add_hooks([tel.hook])
        details = client.get_boolean_details("f", False, EvaluationContext("u"))
        assert details.error_code == ErrorCode.PROVIDER_NOT_READY
        assert details.error_message is None  # the SDK sends no message: the code is used
    finally:
        provider.release.set()
    row = only_row(flushed_rows(tel, intake), "f")
    assert row["error"] == {"message": "PROVIDER_NOT_READY"}
    assert row["runtime_default_used"] is True and row["targeting_key"] == hashed("u")


def test_provider_fatal_is_counted(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    with pytest.raises(ProviderFatalError):
        api.set_provider_and_wait(SlowInitProvider(fail_fatal=True))
    client = api.get_client()
    client.add_hooks([tel.hook])
    details = client.get_boolean_details("f", False)
    assert details.error_code == ErrorCode.PROVIDER_FATAL
    row = only_row(flushed_rows(tel, intake), "f")
    assert row["error"] == {"message": "PROVIDER_FATAL"}


async def test_async_evaluation_is_counted(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    client = client_with(
        tel, {"f": InMemoryFlag("on", {"on": True}), "g": InMemoryFlag("x", {"x": 1})}
    )
    for i in range(30):
        assert await client.get_boolean_value_async("f", False, EvaluationContext(f"u{i % 3}"))
    assert await client.get_integer_value_async("g", 0) == 1
    assert await client.get_integer_value_async("missing", 5) == 5
    rows = await asyncio.to_thread(flushed_rows, tel, intake)
    by_tk = {r["targeting_key"]: r["evaluation_count"] for r in rows if r["flag"]["key"] == "f"}
    assert by_tk == {"u0": 10, "u1": 10, "u2": 10}
    assert only_row(rows, "g")["variant"] == {"key": "x"}
    assert only_row(rows, "missing")["error"] == {"message": "FLAG_NOT_FOUND"}


# -- consent ------------------------------------------------------------------------------


def test_hash_test_vector_matches_sha256() -> None:
    assert "sha256_" + hashlib.sha256(JANE.encode()).hexdigest() == JANE_HASHED


JANE_CTX = EvaluationContext(JANE, {"email": JANE, "plan": "pro"})
FULL = "full"
HASHED = "hashed"


@pytest.mark.parametrize(
    ("meta", "default", "expected"),
    [
        ({"observe_full_evaluation_data": True}, True, FULL),
        ({"observe_full_evaluation_data": True}, False, FULL),  # metadata wins
        ({"__dd_observe_full_evaluation_data": True}, False, FULL),
        ({"observe_full_evaluation_data": False}, True, HASHED),
        ({"__dd_observe_full_evaluation_data": False}, True, HASHED),
        ({"observe_full_evaluation_data": "true"}, True, HASHED),  # only boolean True
        ({"observe_full_evaluation_data": 1}, True, HASHED),
        # Both spellings: an explicit no in either wins (privacy fails closed).
        (
            {"observe_full_evaluation_data": True, "__dd_observe_full_evaluation_data": True},
            False,
            FULL,
        ),
        (
            {"observe_full_evaluation_data": True, "__dd_observe_full_evaluation_data": False},
            True,
            HASHED,
        ),
        (
            {"observe_full_evaluation_data": False, "__dd_observe_full_evaluation_data": True},
            True,
            HASHED,
        ),
        (
            {"observe_full_evaluation_data": True, "__dd_observe_full_evaluation_data": "true"},
            True,
            HASHED,
        ),
        ({}, False, HASHED),  # the setting, no metadata
        ({}, True, FULL),
    ],
)
def test_consent(
    make_telemetry: MakeTelemetry,
    intake: Intake,
    meta: dict[str, Any],
    default: bool,
    expected: str,
) -> None:
    tel = make_telemetry(full_data_default=default)
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, flag_metadata=meta)})
    client.get_boolean_value("f", False, JANE_CTX)
    # A different context for the same user: a separate row only with full data.
    client.get_boolean_value("f", False, EvaluationContext(JANE, {"email": JANE, "plan": "free"}))
    rows = flushed_rows(tel, intake)
    body = intake.accepted()[0].body
    if expected == FULL:
        assert len(rows) == 2
        assert {r["targeting_key"] for r in rows} == {JANE}
        plans = sorted(r["context"]["evaluation"]["plan"] for r in rows)
        assert plans == ["free", "pro"]
        assert all(r["context"]["evaluation"]["email"] == JANE for r in rows)
    else:
        assert len(rows) == 1
        assert rows[0]["targeting_key"] == JANE_HASHED
        assert rows[0]["evaluation_count"] == 2
        assert "context" not in rows[0]
        assert b"jane.doe" not in body and b"pro" not in body


@pytest.mark.parametrize("consent", [True, False])
def test_error_text_follows_consent(
    make_telemetry: MakeTelemetry, intake: Intake, consent: bool
) -> None:
    tel = make_telemetry()
    message = f"rule 3 failed for {JANE}"

    def failing(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(
            value=False,
            reason=Reason.ERROR,
            error_code=ErrorCode.PARSE_ERROR,
            error_message=message,
            flag_metadata={"observe_full_evaluation_data": consent},
        )

    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, context_evaluator=failing)})
    details = client.get_boolean_details("f", True, JANE_CTX)
    assert details.error_code == ErrorCode.PARSE_ERROR and details.error_message == message
    row = only_row(flushed_rows(tel, intake), "f")
    if consent:
        assert row["error"] == {"message": message}
        assert row["targeting_key"] == JANE
    else:
        assert row["error"] == {"message": "PARSE_ERROR"}
        assert row["targeting_key"] == JANE_HASHED
        assert b"jane.doe" not in intake.accepted()[0].body


def test_no_consent_setting_hashes_errors_too(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    # FLAG_NOT_FOUND carries no metadata: the setting decides alone.
    tel = make_telemetry(full_data_default=False)
    client = client_with(tel, {})
    client.get_boolean_value("gone", False, JANE_CTX)
    row = only_row(flushed_rows(tel, intake), "gone")
    assert row["error"] == {"message": "FLAG_NOT_FOUND"}
    assert row["targeting_key"] == JANE_HASHED and "context" not in row


def test_metadata_is_read_as_the_evaluation_saw_it(
    make_telemetry: MakeTelemetry, intake: Intake, drained: Callable[[Handoff], threading.Event]
) -> None:
    """InMemoryProvider hands out one metadata dict per flag; a provider that mutates it
    in place between evaluations must not change rows already evaluated: consent, the
    time stamp and the allocation are those of each evaluation, even when the worker
    reads them only at the flush."""
    tel = make_telemetry(drain_interval_s=3600.0)  # nothing is drained before the flush
    meta: dict[str, Any] = {
        "__dd_observe_full_evaluation_data": False,
        "dd.eval.timestamp_ms": STAMP,
        "allocation_key": "before",
    }
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True}, flag_metadata=meta)})
    tel.start()
    assert drained(tel.handoff).wait(30.0)  # its first drain ran, on an empty hand-off
    client.get_boolean_value("f", False, JANE_CTX)
    meta["__dd_observe_full_evaluation_data"] = True
    meta["dd.eval.timestamp_ms"] = STAMP + 5000
    meta["allocation_key"] = "after"
    client.get_boolean_value("f", False, JANE_CTX)
    rows = sorted(flushed_rows(tel, intake), key=lambda r: r["first_evaluation"])
    assert len(rows) == 2
    before, after = rows
    assert before["targeting_key"] == JANE_HASHED and "context" not in before
    assert (before["first_evaluation"], before["allocation"]) == (STAMP, {"key": "before"})
    assert after["targeting_key"] == JANE and after["context"]["evaluation"]["plan"] == "pro"
    assert (after["first_evaluation"], after["allocation"]) == (STAMP + 5000, {"key": "after"})


# -- canonical keys and what is never sent ---------------------------------------------


def test_type_tagged_attribute_values_are_four_rows(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    tel = make_telemetry()
    client = client_with(tel, {"f": InMemoryFlag("on", {"on": True})})
    values: list[Any] = [1, 1.0, True, "1"]
    for value in values:
        for _ in range(2):
            client.get_boolean_value("f", False, EvaluationContext("u", {"v": value}))
    rows = flushed_rows(tel, intake)
    assert len(rows) == 4
    seen = sorted(
        (type(r["context"]["evaluation"]["v"]).__name__, r["evaluation_count"]) for r in rows
    )
    assert seen == [("bool", 2), ("float", 2), ("int", 2), ("str", 2)]
    body = intake.accepted()[0].body
    for text in (b'{"v":1}', b'{"v":1.0}', b'{"v":true}', b'{"v":"1"}'):
        assert body.count(text) == 1, text


def test_value_and_reason_never_sent(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    flags = {
        "s": InMemoryFlag("a", {"a": SECRET_VALUE}),
        "o": InMemoryFlag("a", {"a": {"nested": SECRET_VALUE}}),
        "t": InMemoryFlag("a", {"a": SECRET_VALUE}, context_evaluator=stamped({})),
    }
    client = client_with(tel, flags)
    client.get_string_value("s", "d", EvaluationContext("u"))
    client.get_object_value("o", {}, EvaluationContext("u"))
    client.get_string_value("t", "d", EvaluationContext("u"))
    rows = flushed_rows(tel, intake)
    assert len(rows) == 3
    body = intake.accepted()[0].body
    assert SECRET_VALUE.encode() not in body
    for word in (b"reason", b"STATIC", b"TARGETING_MATCH", b'"value"', b"targeting_rule"):
        assert word not in body, word


# -- headers, path, envelope ----------------------------------------------------------


@contextlib.asynccontextmanager
async def catch_all_server() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """An aiohttp server on 127.0.0.1 that records the path of any POST (tests.intake
    routes only the two known paths, so it cannot show a wrong one)."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        if request.method == "POST":  # not the agent discovery's GET /info
            seen.append((request.path, dict(request.headers), await request.read()))
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_path_and_headers(make_telemetry: MakeTelemetry) -> None:
    async with catch_all_server() as (url, seen):
        tel = make_telemetry(agent_url=url)
        client = client_with(tel, {"f": InMemoryFlag("on", {"on": True})})
        client.get_boolean_value("f", False)
        # flush blocks: run it off this loop, which serves the server.
        assert await asyncio.to_thread(tel.flush, 10.0)
        await asyncio.to_thread(tel.shutdown, 5.0)
    assert len(seen) == 1
    path, headers, body = seen[0]
    assert path == "/evp_proxy/v2/api/v2/flagevaluation"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Datadog-EVP-Subdomain"] == "event-platform-intake"
    assert "Content-Encoding" not in headers  # no compression in any SDK
    validate_body(body)


def test_headers_through_the_intake(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    tel = make_telemetry()
    client_with(tel, {"f": InMemoryFlag("on", {"on": True})}).get_boolean_value("f", False)
    flushed_rows(tel, intake)
    (received,) = intake.accepted()
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Datadog-EVP-Subdomain"] == "event-platform-intake"


@pytest.fixture
def no_dd_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DD_SERVICE", "DD_ENV", "DD_VERSION"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def envelope_after_one_evaluation(tel: Telemetry, intake: Intake) -> dict[str, Any]:
    client_with(tel, {"f": InMemoryFlag("on", {"on": True})}).get_boolean_value("f", False)
    flushed_rows(tel, intake)
    (received,) = intake.accepted()
    doc = received.json()
    assert set(doc) == {"context", "flagEvaluations"}
    context: dict[str, Any] = doc["context"]
    return context


def test_envelope_from_settings(
    make_telemetry: MakeTelemetry, intake: Intake, no_dd_env: pytest.MonkeyPatch
) -> None:
    no_dd_env.setenv("DD_SERVICE", "env-svc")  # settings win over the environment
    tel = make_telemetry(service="svc-a", env="prod", version="1.2.3")
    assert envelope_after_one_evaluation(tel, intake) == {
        "service": "svc-a",
        "env": "prod",
        "version": "1.2.3",
    }


def test_envelope_from_env_vars(
    make_telemetry: MakeTelemetry, intake: Intake, no_dd_env: pytest.MonkeyPatch
) -> None:
    no_dd_env.setenv("DD_SERVICE", "billing")
    no_dd_env.setenv("DD_ENV", "staging")
    no_dd_env.setenv("DD_VERSION", "9.9.9")
    tel = make_telemetry(service=None)
    assert envelope_after_one_evaluation(tel, intake) == {
        "service": "billing",
        "env": "staging",
        "version": "9.9.9",
    }


def test_envelope_without_env_and_version(
    make_telemetry: MakeTelemetry, intake: Intake, no_dd_env: pytest.MonkeyPatch
) -> None:
    no_dd_env.setenv("DD_SERVICE", "billing")
    tel = make_telemetry(service=None)
    assert envelope_after_one_evaluation(tel, intake) == {"service": "billing"}


def test_envelope_service_defaults_to_a_name(
    make_telemetry: MakeTelemetry, intake: Intake, no_dd_env: pytest.MonkeyPatch
) -> None:
    tel = make_telemetry(service=None)
    context = envelope_after_one_evaluation(tel, intake)
    assert set(context) == {"service"}
    assert isinstance(context["service"], str) and context["service"]


def test_the_snapshot_is_references_and_a_copy_of_the_metadata_dict() -> None:
    """handoff.put(): what every producer hands over (the hook, a provider wrapper,
    _record.record); the hook's tuple is exactly it."""
    from types import MappingProxyType

    from openfeature.flag_evaluation import FlagEvaluationDetails, FlagType
    from openfeature.hook import HookContext

    from flageval._handoff import Handoff, put

    def snapshot(key: str, details: Any, context: EvaluationContext) -> tuple[Any, ...]:
        h = Handoff(1, accepting=True)
        assert put(h, lambda: None, key, details, context) == 0
        return h.queue.popleft()

    meta = {"allocation_key": "a1", "__dd_observe_full_evaluation_data": True}
    details = FlagEvaluationDetails("f", True, variant="on", flag_metadata=meta)
    context = EvaluationContext("u", {"plan": "pro"})
    before = time.time_ns()
    snap = snapshot("f", details, context)
    assert snap[:4] == ("f", "on", None, None)
    assert snap[4] == meta and snap[4] is not meta  # as at evaluation: a copy
    assert snap[5] == "u" and snap[6] is context.attributes
    assert before <= snap[7] <= time.time_ns()
    empty: dict[str, Any] = {}
    assert snapshot("f", FlagEvaluationDetails("f", True, flag_metadata=empty), context)[4] is empty
    proxy = MappingProxyType(meta)  # not a dict: kept, read when drained
    assert snapshot("f", FlagEvaluationDetails("f", True, flag_metadata=proxy), context)[4] is proxy
    # A provider's FlagResolutionDetails has the same four fields.
    resolved = FlagResolutionDetails(False, variant=None, error_code=ErrorCode.GENERAL)
    assert snapshot("g", resolved, context)[:4] == ("g", None, ErrorCode.GENERAL, None)

    tel = Telemetry(agent_url="http://127.0.0.1:9", service="t", autostart=False)
    try:
        hook_context = HookContext("f", FlagType.BOOLEAN, False, context)
        tel.hook.finally_after(hook_context, details, {})
        assert tel.handoff is not None
        (queued,) = list(tel.handoff.queue)
        expected = snapshot("f", details, context)
        assert queued[:7] == expected[:7] and queued[4] is not meta
    finally:
        tel.shutdown(1.0)


def test_a_hook_built_from_a_telemetry_feeds_that_pipeline(
    make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FlagEvalHook(telemetry)`` shares the pipeline's own hook's hand-off; built from a
    switched-off pipeline it does nothing."""
    from flageval import FlagEvalHook

    tel = make_telemetry(autostart=False)
    monkeypatch.setenv("DD_FLAGGING_EVALUATION_COUNTS_ENABLED", "false")
    off = Telemetry(agent_url="http://127.0.0.1:9")
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([FlagEvalHook(tel), FlagEvalHook(off)])
    client.get_boolean_value("f", False, EvaluationContext("u"))
    assert tel.handoff is not None and [s[:2] for s in tel.handoff.queue] == [("f", "on")]
    assert off.stats().evaluations == 0
