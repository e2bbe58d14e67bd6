"""Hostile and odd contexts, property-based: the hook never raises and never changes
the evaluation's result, pruning is deterministic and bounded, every body is strict
JSON that validates, and the worker never dies (a failing batch is counted, logged,
and later evaluations still flow).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag

from flageval import Telemetry
from flageval._handoff import Handoff
from flageval._keys import ContextKeys
from flageval._prune import MAX_FIELDS, MAX_STRING_CHARS, canonical, flatten
from flageval._tiers import Tiers
from tests.intake import Intake
from tests.schema_util import validate_body
from tests.telemetry.reliability.helpers import FLAG, assert_conserved, client_with, flags

pytestmark = pytest.mark.reliability

HYPO = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


class Unprintable:
    """Both __str__ and __repr__ raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class NoStr:
    """__str__ raises, __repr__ works."""

    def __str__(self) -> str:
        raise ValueError("no str")

    def __repr__(self) -> str:
        return "NoStr()"


surrogates = st.characters(categories=["Cs"])
texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.one_of(st.characters(), surrogates), max_size=12),
    st.integers(250, 300).map(lambda n: "L" * n),  # around the 256-character limit
)
hashables = st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=4), st.booleans()
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(200, 3000).map(lambda e: 7**e),  # huge ints, both sides of 256 digits
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=8),
    st.datetimes(timezones=st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=-3))])),
    st.dates(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.frozensets(hashables, max_size=4),
    st.sets(hashables, max_size=4),
    st.builds(Unprintable),
    st.builds(NoStr),
)
keys = st.one_of(
    texts,
    st.integers(-3, 3),
    st.booleans(),
    st.floats(allow_nan=True),  # distinct NaN objects are distinct keys that print alike
    st.just(None),
    st.builds(NoStr),  # hashable by identity, str() raises, repr() prints alike
)


def _containers(children: Any) -> Any:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    )


values = st.recursive(leaves, _containers, max_leaves=25)


#: A wide part's own keys: "w.k000".. and "w-b", which sorts before all of them.
WIDE = "w"


@st.composite
def contexts(draw: Any) -> dict[Any, Any]:
    ctx: dict[Any, Any] = draw(st.dictionaries(keys, values, max_size=10))
    # Drawn keys never start with "w": that name is the wide part's alone.
    ctx = {k: v for k, v in ctx.items() if not (isinstance(k, str) and k[:1] == WIDE)}
    # Half the contexts reach the 256 cut (and most pass it): a mapping of 200-400
    # keys, walked before its sibling "w-b" that sorts before every one of them.
    # Without the deep part, so the node budget never binds first.
    wide = draw(st.booleans())
    if wide:
        n = draw(st.integers(200, 400))
        items = [(f"k{i:03d}", i) for i in range(n)]
        ctx[WIDE] = dict(reversed(items) if draw(st.booleans()) else items)
        ctx["w-b"] = -1
    if draw(st.booleans()):
        # A cycle: the context reaches itself, and a nested dict reaches its parent.
        inner: dict[str, Any] = {"up": ctx}
        inner["me"] = inner
        ctx["cycle"] = inner
    if not wide and draw(st.booleans()):
        deep: dict[str, Any] = {"leaf": "bottom"}
        for i in range(draw(st.integers(1, 14))):
            deep = {f"d{i}": deep, "x": [deep]}
        ctx["deep"] = deep
    return ctx


def _reordered(value: Any, seen: set[int] | None = None) -> Any:
    """The same value with every dict's insertion order reversed (cycles preserved as
    cycles of the copies)."""
    memo: dict[int, Any] = {}

    def copy(v: Any) -> Any:
        if id(v) in memo:
            return memo[id(v)]
        if isinstance(v, dict):
            out: dict[Any, Any] = {}
            memo[id(v)] = out
            for k in reversed(list(v)):
                out[k] = copy(v[k])
            return out
        if isinstance(v, list):
            lst: list[Any] = []
            memo[id(v)] = lst
            lst.extend(copy(x) for x in v)
            return lst
        if isinstance(v, tuple):
            return tuple(copy(x) for x in v)
        return v

    return copy(value)


def _check_pruned(pruned: dict[str, Any]) -> None:
    assert len(pruned) <= MAX_FIELDS
    for k, v in pruned.items():
        assert isinstance(k, str) and len(k) <= 256
        assert type(v) in (str, int, float, bool)
        if isinstance(v, str):
            assert len(v) <= MAX_STRING_CHARS
            v.encode("utf-8")  # valid Unicode: no lone surrogate survives
        k.encode("utf-8")


def _strict_json(data: bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(name)

    return json.loads(data.decode("utf-8"), parse_constant=no_constant)


@HYPO
@given(ctx=contexts())
def test_pruning_is_bounded_and_independent_of_insertion_order(ctx: dict[Any, Any]) -> None:
    flat = flatten(ctx)
    _check_pruned(flat)
    if WIDE in ctx:
        # Flatten, sort the keys, keep the first 256 (docs/wire-format.md). The rest of
        # the context is flattened alone (the wide part out of the root; "cycle.up" is
        # still the root, so still skipped), the wide part's keys are known by
        # construction.
        wide, wb = ctx.pop(WIDE), ctx.pop("w-b")
        rest = flatten(ctx)
        ctx[WIDE], ctx["w-b"] = wide, wb
        candidates = set(rest) | {f"w.{k}" for k in wide} | {"w-b"}
        event(f"fields before the cut: {'> 256' if len(candidates) > MAX_FIELDS else '<= 256'}")
        assert set(flat) == set(sorted(candidates)[:MAX_FIELDS])
        assert len(flat) == min(len(candidates), MAX_FIELDS)
    key = canonical(ctx)
    again = canonical(_reordered(ctx))
    assert key == again
    # The worker's fast path + memo agrees with the full pruner, in both orders.
    assert ContextKeys().key(ctx) == key
    assert ContextKeys().key(_reordered(ctx)) == key
    if key:
        assert _strict_json(key) == json.loads(json.dumps(flat))


@pytest.fixture(scope="module")
def pipeline() -> Iterator[tuple[Intake, Telemetry]]:
    intake = Intake().start()
    tel = Telemetry(agent_url=intake.url, service="rel-hostile", flush_interval_s=60.0)
    yield intake, tel
    tel.shutdown(5.0)
    intake.stop()
    assert not intake.schema_errors, intake.schema_errors[:3]


def test_hostile_contexts_end_to_end(pipeline: tuple[Intake, Telemetry]) -> None:
    """Generated contexts through the real SDK and the hook, twice each (the second in
    reversed insertion order): the result is what the provider says, both land in one
    row (count 2) whose context is the pruned form, and the books balance."""
    intake, tel = pipeline
    client = client_with(tel)
    plain = api.get_client("no-hook-domain")  # the same provider, no hook
    expected = plain.get_boolean_details(FLAG, False)
    seen: dict[str, bytes] = {}
    counter = [0]

    @HYPO
    @given(ctx=contexts())
    def one(ctx: dict[Any, Any]) -> None:
        counter[0] += 1
        tk = f"hostile-{counter[0]}"
        a = client.get_boolean_details(FLAG, False, EvaluationContext(tk, ctx))
        b = client.get_boolean_details(FLAG, False, EvaluationContext(tk, _reordered(ctx)))
        for details in (a, b):
            assert (details.value, details.variant, details.reason, details.error_code) == (
                expected.value,
                expected.variant,
                expected.reason,
                expected.error_code,
            )
        # The SDK hands the hook a shallow copy of the context (a fresh top-level
        # dict): a cycle back to the caller's own dict is one level longer there.
        seen[tk] = canonical({**ctx})

    one()
    assert tel.flush(10.0)
    st_ = tel.stats()
    assert st_.dropped == {} and st_.worker_errors == 0, st_
    rows = {r["targeting_key"]: r for r in intake.rows() if r["targeting_key"] in seen}
    assert set(rows) == set(seen)
    for tk, key in seen.items():
        row = rows[tk]
        assert row["evaluation_count"] == 2  # both insertion orders: one bucket
        if key:
            assert row["context"]["evaluation"] == _strict_json(key)
            _check_pruned(row["context"]["evaluation"])
        else:
            assert "context" not in row
    for rec in intake.accepted():
        _strict_json(rec.body)
        validate_body(rec.body)
    assert_conserved_partial(tel, intake)


def assert_conserved_partial(tel: Telemetry, intake: Intake) -> None:
    st_ = tel.stats()
    assert st_.pending == 0
    assert st_.evaluations == intake.evaluations() + sum(st_.dropped.values())


def test_wide_contexts_keep_the_first_256_sorted_or_are_counted_past_the_budget(
    pipeline: tuple[Intake, Telemetry],
) -> None:
    intake, tel = pipeline
    client = client_with(tel)
    names = [f"attr{i:05d}" for i in range(4_000)]
    forward = {n: i for i, n in enumerate(names)}
    backward = {n: forward[n] for n in reversed(names)}
    client.get_boolean_value(FLAG, False, EvaluationContext("wide", forward))
    client.get_boolean_value(FLAG, False, EvaluationContext("wide", backward))
    # Past MAX_ENTRIES (4,096) attributes the context is not read at all: the
    # evaluation is posted without targeting key and context, and counted.
    before = tel.stats().degraded.get("context_budget", 0)
    huge = {f"k{i:06d}": i for i in range(200_000)}
    client.get_boolean_value(FLAG, False, EvaluationContext("too-wide", huge))
    assert tel.flush(10.0)
    (row,) = [r for r in intake.rows() if r.get("targeting_key") == "wide"]
    assert row["evaluation_count"] == 2
    assert row["context"]["evaluation"] == {n: forward[n] for n in sorted(names)[:256]}
    assert tel.stats().degraded.get("context_budget", 0) == before + 1
    assert not [r for r in intake.rows() if r.get("targeting_key") == "too-wide"]


def test_unprintable_and_invalid_text_outside_the_context(
    make_telemetry: Any, intake: Intake
) -> None:
    """Targeting keys, variants, allocation keys and error messages are not pruned
    like context values: one whose __str__ raises, or text with lone surrogates, must
    neither lose the evaluations around it nor break a flush."""

    def evaluator(flag: InMemoryFlag, ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        kind = ctx.attributes.get("kind") if ctx else None
        if kind == "variant-unprintable":
            return FlagResolutionDetails(True, variant=Unprintable())  # type: ignore[arg-type]
        if kind == "variant-surrogate":
            return FlagResolutionDetails(True, variant="v\ud800")
        if kind == "error-surrogate":  # consent stated: the message itself is sent
            return FlagResolutionDetails(
                False,
                error_message="bad \udcff text",
                error_code=None,
                variant=None,
                flag_metadata={"observe_full_evaluation_data": True},
            )
        return FlagResolutionDetails(True, variant="on")

    provider_flags = flags(
        odd=InMemoryFlag("on", {"on": True}, context_evaluator=evaluator),
        alloc=InMemoryFlag("on", {"on": True}, flag_metadata={"allocationKey": "a\udc80"}),
        alloc_bad=InMemoryFlag("on", {"on": True}, flag_metadata={"allocationKey": Unprintable()}),  # type: ignore[dict-item]
    )
    tel = make_telemetry()
    client = client_with(tel, provider_flags)
    good: list[str] = []

    def good_one() -> None:
        tk = f"good-{len(good)}"
        client.get_boolean_value(FLAG, False, EvaluationContext(tk, {}))
        good.append(tk)

    odd_calls = [
        lambda: client.get_boolean_value(FLAG, False, EvaluationContext("tk\ud83d", {})),
        lambda: client.get_boolean_value(FLAG, False, EvaluationContext(Unprintable(), {})),  # type: ignore[arg-type]
        lambda: client.get_boolean_value(
            "odd", False, EvaluationContext("o1", {"kind": "variant-unprintable"})
        ),
        lambda: client.get_boolean_value(
            "odd", False, EvaluationContext("o2", {"kind": "variant-surrogate"})
        ),
        lambda: client.get_boolean_value(
            "odd", False, EvaluationContext("o3", {"kind": "error-surrogate"})
        ),
        lambda: client.get_boolean_value("alloc", False, EvaluationContext("o4", {})),
        lambda: client.get_boolean_value("alloc_bad", False, EvaluationContext("o5", {})),
    ]
    for call in odd_calls:
        good_one()
        call()
        good_one()
    assert tel.flush(5.0) is True
    tel.shutdown(2.0)
    made = len(good) + len(odd_calls)
    st_ = assert_conserved(tel, intake, made)
    delivered = {r.get("targeting_key") for r in intake.rows()}
    assert set(good) <= delivered  # nothing around an odd one was lost
    # Lone surrogates became U+FFFD; what could not be printed at all is counted.
    text = "".join(rec.body.decode("utf-8") for rec in intake.accepted())
    for fixed in ("tk\ufffd", "v\ufffd", "a\ufffd", "bad \ufffd text"):
        assert fixed in text
    # The unprintable targeting key: posted without it (and its context), counted; the
    # unprintable variant: no row can be built, counted; a non-string allocation key
    # names no allocation and is passed over.
    assert st_.dropped == {"unreadable_value": 1}
    assert st_.degraded == {"targeting_key_error": 1}
    assert len(delivered) == made - 1  # the targeting-key-less row prints as None
    assert any(r.get("targeting_key") == "o5" and "allocation" not in r for r in intake.rows())


def test_failed_batch_is_counted_logged_and_the_worker_goes_on(
    make_telemetry: Any, intake: Intake, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    original = Tiers.add_batch
    failed: list[int] = []

    def flaky(self: Tiers, batch: list[Any]) -> None:
        if not failed:
            failed.append(len(batch))
            raise RuntimeError("injected batch failure")
        original(self, batch)

    monkeypatch.setattr(Tiers, "add_batch", flaky)
    caplog.set_level(logging.WARNING, logger="flageval")
    tel = make_telemetry()
    client = client_with(tel)
    for i in range(50):
        client.get_boolean_value(FLAG, False, EvaluationContext(f"first-{i}", {}))
    assert tel.flush(5.0)
    for i in range(70):
        client.get_boolean_value(FLAG, False, EvaluationContext(f"later-{i}", {}))
    assert tel.flush(5.0)
    tel.shutdown(2.0)
    assert len(failed) == 1 and 1 <= failed[0] <= 50
    st_ = assert_conserved(tel, intake, 120)
    assert st_.dropped == {"worker_error": failed[0]}
    assert st_.worker_errors == 1
    keys = {r["targeting_key"] for r in intake.rows()}
    assert {f"later-{i}" for i in range(70)} <= keys  # later evaluations still flow
    assert len(keys) == 120 - failed[0]
    logged = [r for r in caplog.records if "worker failed on a batch" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_caller_mutating_nested_dicts_concurrently(make_telemetry: Any, intake: Intake) -> None:
    """The SDK copies only the top level of a context; nested dicts, lists and sets are
    the caller's. One thread evaluates with shared nested values while another mutates
    them (add, delete, replace, clear) as fast as it can, so the worker prunes values
    that change under it. Nothing raises, every row is bounded and valid, and the books
    balance. A row shows the nested values as they were when the worker read them."""
    tel = make_telemetry(drain_interval_s=0.001)
    client = client_with(tel)
    shared: dict[str, Any] = {"prefs": {"a": 1}, "tags": ["x"], "ids": {1, 2}}
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            prefs = shared["prefs"]
            prefs[f"k{i % 50}"] = i
            prefs.pop(f"k{(i + 25) % 50}", None)
            shared["tags"].append(i)
            if len(shared["tags"]) > 80:
                shared["tags"].clear()
            shared["ids"].add(i % 100)
            shared["ids"].discard((i + 50) % 100)
            if i % 1000 == 0:
                prefs.clear()

    mutator = threading.Thread(target=mutate, daemon=True)
    mutator.start()
    n = 0
    end = time.monotonic() + 0.6
    try:
        while time.monotonic() < end and n < 10_000:
            client.get_boolean_value(FLAG, False, EvaluationContext(f"m{n % 20}", shared))
            n += 1
    finally:
        stop.set()
        mutator.join(5)
    assert tel.flush(5.0)
    tel.shutdown(2.0)
    st_ = assert_conserved(tel, intake, n)
    assert st_.dropped == {} and st_.worker_errors == 0
    assert not st_.degraded.get("context_error")
    for row in intake.rows():
        if "context" in row:
            _check_pruned(row["context"]["evaluation"])


def test_mutation_after_evaluation_top_level_is_isolated_nested_is_read_later(
    make_telemetry: Any, intake: Intake, drained: Callable[[Handoff], threading.Event]
) -> None:
    """What a caller's later mutation can and cannot change. The SDK gives the hook a
    fresh top-level dict per evaluation, so adding, removing or replacing top-level
    attributes afterwards changes nothing. Nested dicts are the caller's own: the worker
    reads them when it drains (here: at the flush), so the row shows them as they are
    then. Either way the row is bounded, valid, and counted once."""
    tel = make_telemetry(drain_interval_s=3600.0)  # nothing is drained before the flush
    client = client_with(tel)
    tel.start()
    assert drained(tel.handoff).wait(30.0)  # its first drain ran, on an empty hand-off
    nested = {"tier": "gold"}
    ctx = {"plan": "pro", "prefs": nested}
    client.get_boolean_value(FLAG, False, EvaluationContext("mut", ctx))
    ctx["plan"] = "free"  # top level: the hook holds its own copy
    ctx["added"] = "later"
    nested["tier"] = "silver"  # nested: shared with the caller
    nested["extra"] = "x" * 300  # too long: pruned whenever it is read
    assert tel.flush(5.0)
    tel.shutdown(2.0)
    (row,) = intake.rows()
    assert row["context"]["evaluation"] == {"plan": "pro", "prefs.tier": "silver"}
    assert_conserved(tel, intake, 1)


class Same:
    """Distinct objects (hashable by identity) that all print the same."""

    def __str__(self) -> str:
        return "same"


def test_keys_that_print_alike_never_let_insertion_order_decide() -> None:
    nan_a, nan_b = float("nan"), float("nan")
    s1, s2 = Same(), Same()
    cases = [
        ({nan_a: 1, nan_b: 2}, {nan_b: 2, nan_a: 1}),
        ({s1: "x", s2: {"deep": 1}}, {s2: {"deep": 1}, s1: "x"}),
        # Two different keys that are equal once each lone surrogate is U+FFFD.
        (dict([("a\ud800", 1), ("a\udc00", 2)]), dict([("a\udc00", 2), ("a\ud800", 1)])),
    ]
    for first, second in cases:
        assert canonical(first) == canonical(second)
        assert ContextKeys().key(first) == ContextKeys().key(second) == canonical(first)


def test_keys_whose_str_raises_and_repr_ties_never_decide_by_order() -> None:
    """Two NoStr keys (repr "NoStr()"), one nested in the other's value: whichever order
    they come in, non-string keys are dropped (OpenFeature keys are strings), so both
    orders give the same row, with only the real key in it."""
    a, b = NoStr(), NoStr()
    first = {a: [False], b: {a: True}, "k": 1}
    second = {"k": 1, b: {a: True}, a: [False]}
    assert flatten(first) == flatten(second) == {"k": 1}
    assert canonical(first) == canonical(second) == b'{"k":1}'


def test_undecodable_service_name_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An undecodable byte in DD_SERVICE (os.environ gives it as a lone surrogate)
    would fail every worker start: each evaluation a hook_error, and an event loop
    leaked per try. A keyword is refused when the pipeline is built, naming the
    setting; from the environment it is logged and the default used (the environment
    never crashes an application: tests/telemetry/config/test_environment_cannot_crash.py)."""
    with pytest.raises(ValueError, match="service"):
        Telemetry(service="svc\udcff", agent_url="http://127.0.0.1:9")
    monkeypatch.setenv("DD_SERVICE", "svc\udcff")
    assert Telemetry(agent_url="http://127.0.0.1:9").settings.service.isascii()
    monkeypatch.setenv("DD_SERVICE", "caf\u00e9")  # valid non-ASCII text is fine
    tel = Telemetry(agent_url="http://127.0.0.1:9")
    assert tel.settings.service == "caf\u00e9"


class Raises:
    """A value whose __str__ raises ``exc``: what no worker may die of."""

    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    def __str__(self) -> str:
        raise self.exc()

    def __repr__(self) -> str:
        raise self.exc()


@pytest.mark.parametrize(
    "exc", [SystemExit, KeyboardInterrupt, GeneratorExit, asyncio.CancelledError, ValueError]
)
def test_a_value_raising_any_base_exception_never_stops_the_worker(
    make_telemetry: Any, intake: Intake, exc: type[BaseException], caplog: Any
) -> None:
    """The drained batch stays on the books, the worker thread lives, later evaluations
    are delivered, and shutdown() raises nothing. In the context a BaseException that
    is not an Exception costs the context (``context_error``); as the targeting key, the
    key (``targeting_key_error``, logged once); as the variant, the row
    (``unreadable_value``, logged once)."""
    caplog.set_level(logging.WARNING, logger="flageval")

    def bad_variant(flag: InMemoryFlag, ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(True, variant=Raises(exc))  # type: ignore[arg-type]

    tel = make_telemetry()
    client = client_with(
        tel, flags(odd=InMemoryFlag("on", {"on": True}, context_evaluator=bad_variant))
    )

    def good(tag: str, n: int) -> None:
        for i in range(n):
            client.get_boolean_value(FLAG, False, EvaluationContext(f"{tag}-{i}", {"n": i}))

    good("before", 10)
    client.get_boolean_value(FLAG, False, EvaluationContext("ctx", {"v": Raises(exc)}))
    client.get_boolean_value(FLAG, False, EvaluationContext(Raises(exc), {}))  # type: ignore[arg-type]
    client.get_boolean_value("odd", False, EvaluationContext("variant", {}))
    good("after", 10)
    assert tel.flush(5.0) is True
    good("later", 5)  # drained by a worker that is still alive
    tel.shutdown(5.0)
    st_ = assert_conserved(tel, intake, 28)
    assert st_.dropped == {"unreadable_value": 1}
    if issubclass(exc, Exception):
        # The pruner's own rule: repr(), then a placeholder; the context survives.
        assert st_.degraded == {"targeting_key_error": 1}
        (row,) = [r for r in intake.rows() if r.get("targeting_key") == "ctx"]
        assert row["context"] == {"evaluation": {"v": "<unprintable Raises>"}}
    else:
        assert st_.degraded == {"context_error": 1, "targeting_key_error": 1}
    assert st_.worker_errors == 0
    keys = {r.get("targeting_key") for r in intake.rows()}
    for tag, n in (("before", 10), ("after", 10), ("later", 5)):
        assert {f"{tag}-{i}" for i in range(n)} <= keys
    logged = [r.getMessage() for r in caplog.records]
    assert sum("targeting key could not be made text" in m for m in logged) == 1
    assert sum("could not be read" in m for m in logged) == 1


def test_a_failing_pipeline_at_exit_never_stops_another(intake: Intake) -> None:
    """At exit every pipeline is shut down in turn: a value raising GeneratorExit in the
    first one shut down (the newest) must not keep the second's 1,000 from the intake."""
    script = textwrap.dedent(
        f"""
        from openfeature import api
        from openfeature.evaluation_context import EvaluationContext
        from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
        from flageval import Telemetry

        class Raises:
            def __str__(self):
                raise GeneratorExit
            __repr__ = __str__

        healthy = Telemetry(agent_url={intake.url!r}, service="a", flush_interval_s=60.0)
        hostile = Telemetry(agent_url={intake.url!r}, service="b", flush_interval_s=60.0)
        api.set_provider_and_wait(InMemoryProvider({{"f": InMemoryFlag("on", {{"on": True}})}}))
        one, two = api.get_client("one"), api.get_client("two")
        one.add_hooks([healthy.hook])
        two.add_hooks([hostile.hook])
        for i in range(1000):
            one.get_boolean_value("f", False, EvaluationContext(f"h-{{i}}", {{}}))
        two.get_boolean_value("f", False, EvaluationContext("x", {{"v": Raises()}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    services = Counter(rec.json()["context"]["service"] for rec in intake.accepted())
    assert set(services) == {"a", "b"}
    by_service: Counter[str] = Counter()
    for rec in intake.accepted():
        doc = rec.json()
        by_service[doc["context"]["service"]] += sum(
            r["evaluation_count"] for r in doc["flagEvaluations"]
        )
    assert by_service == {"a": 1000, "b": 1}  # b's one is posted degraded (context_error)
