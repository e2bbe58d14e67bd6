"""The fast keys (flageval/_keys.py, and its compiled flat path flageval/_ckeys.c) give
exactly the full pruner's bytes: property tests over random flat contexts of 0-400
attributes with values at every bound, and the compiled path against the pure-Python
one over the hostile corpus, down to the posted bodies."""

from __future__ import annotations

import enum
import math
import os
import random
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flageval._compiled import PURE_PYTHON_ENV
from flageval._keys import CORE, ContextKeys
from flageval._prune import EMPTY, ContextTooLarge, canonical
from flageval._tiers import Tiers
from flageval._wire import envelope_prefix, pack
from tests.telemetry.reliability.test_hostile_contexts import contexts as hostile_contexts

HYPO = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
IMPLEMENTATIONS = ["python"] + (["compiled"] if CORE is not None else [])
compiled_only = pytest.mark.skipif(CORE is None, reason="flageval._ckeys is not built here")


def keys_of(implementation: str) -> ContextKeys:
    return ContextKeys(core=None if implementation == "python" else CORE)


class Colour(enum.Enum):
    RED = "red"


class Label(str):
    """A str subclass: prunes by its string value, but is not a plain value."""


class Unequal(str):
    """Two of these with one text are two keys of one dict, alike in their own text."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


EDGE_STRINGS = [
    "",
    "a",
    "x" * 255,
    "x" * 256,
    "x" * 257,
    "é" * 256,  # 256 characters in 512 bytes: kept
    "é" * 257,
    '"quoted"',
    "back\\slash",
    "tab\tnew\nline",
    "\x00",
    "null",
    "\u2028",
    "😀" * 100,
    "lone \ud800 surrogate",
]
EDGE_INTS = [
    0,
    1,
    -1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**253,
    10**255,  # 256 digits: kept
    10**256,  # 257 digits: skipped
    -(10**255),  # 257 characters with the sign: skipped
    -(10**255) + 1,
    2**840,
    2**841,
    2**851,
    -(2**851),
    2**852,
]
EDGE_FLOATS = [0.0, -0.0, 1.0, 1.5, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, math.nan]
EDGE_FLOATS += [math.inf, -math.inf]
EDGE_KEYS = [
    "targetingKey",
    "targeting_key",
    "k" * 256,
    "k" * 257,
    "é" * 256,
    "\ud800x",
    "",
    "a.b",
    "null",
    '"',
    "\\",
    "zz",
]


def _value(rng: random.Random) -> Any:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(EDGE_STRINGS)
    if kind == 1:
        return rng.choice(EDGE_INTS)
    if kind == 2:
        return rng.choice(EDGE_FLOATS)
    if kind == 3:
        return rng.random() < 0.5
    if kind == 4:
        return rng.randrange(-(10**6), 10**6)
    if kind == 5:
        return rng.uniform(-1e6, 1e6)
    return f"v{rng.randrange(1000)}"


@st.composite
def flat_contexts(draw: Any) -> dict[Any, Any]:
    """0-400 attributes: generated keys and values from a drawn seed (cheap at 400),
    edge keys and values at every bound, and now and then a value or key that is not
    plain (the fast paths must hand those to the pruner)."""
    rng = draw(st.randoms(use_true_random=False))
    n = draw(st.one_of(st.integers(0, 12), st.integers(240, 270), st.integers(0, 400)))
    ctx: dict[Any, Any] = {}
    for i in range(n):
        key = rng.choice(EDGE_KEYS) if rng.random() < 0.03 else f"k{rng.randrange(10**4):04d}"
        ctx[key] = _value(rng)
        if rng.random() < 0.01:
            ctx[f"x{i}"] = rng.choice([None, [1], {"a": 1}, Colour.RED, Label("v"), True])
    if draw(st.integers(0, 19)) == 0:
        ctx[Label("label-key")] = 1
    if draw(st.integers(0, 29)) == 0:
        ctx[Unequal("plan")], ctx[Unequal("plan")] = "a", "b"
    if draw(st.booleans()):
        ctx = dict(reversed(ctx.items()))
    return ctx


@HYPO
@given(ctx=flat_contexts())
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_flat_contexts_key_to_the_full_pruners_bytes(
    implementation: str, ctx: dict[Any, Any]
) -> None:
    expected = canonical(ctx)
    keys = keys_of(implementation)
    assert keys.key(ctx) == expected
    assert keys.key(ctx) == expected  # again: the memo, the batch's table
    copy = dict(ctx)  # the same objects in a fresh dict, as the SDK hands them over
    assert keys.key(copy) == expected
    if ctx:
        first = next(iter(copy))
        copy[first] = "changed"  # the dict changes after it was keyed
        assert keys.key(copy) == canonical(copy)
    keys.end_batch()
    assert keys.key(dict(reversed(ctx.items()))) == expected


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        ({"k" * 257: 1, "a": 1}, b'{"a":1}'),  # a 257-character key is skipped
        ({"a": 10**256}, EMPTY),  # 257 digits
        ({"a": -(10**255)}, EMPTY),  # 256 digits and a sign
        ({"a": 10**255}, b'{"a":1' + b"0" * 255 + b"}"),
        ({"a": "x" * 257, "b": "y"}, b'{"b":"y"}'),
        ({"targetingKey": "u", "targeting_key": "u", "b": 2}, b'{"b":2}'),
        ({"v": math.nan, "w": -math.inf}, b'{"v":"NaN","w":"-Infinity"}'),
        ({"z": 1, "a": 2}, b'{"a":2,"z":1}'),
        (
            {"v": -0.0, "w": 1, "x": 1.0, "y": True, "z": "1"},
            b'{"v":-0.0,"w":1,"x":1.0,"y":true,"z":"1"}',
        ),
    ],
)
def test_bounds_by_hand(implementation: str, ctx: dict[str, Any], expected: bytes) -> None:
    """Expected bytes written by hand from the rules in _prune.py's docstring."""
    assert keys_of(implementation).key(ctx) == expected
    assert canonical(ctx) == expected


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_keys_alike_in_their_own_text_are_dropped_on_every_path(implementation: str) -> None:
    ctx = {Unequal("plan"): "a", Unequal("plan"): "b", "zone": "eu"}
    assert keys_of(implementation).key(ctx) == b'{"zone":"eu"}'


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_more_than_256_keys_keep_the_first_256_sorted_whatever_the_order(
    implementation: str,
) -> None:
    names = [f"n{i:03d}" for i in range(300)]
    expected = canonical({n: i for i, n in enumerate(names[:256])})
    keys = keys_of(implementation)
    for order in (names, names[::-1], sorted(names, key=lambda n: n[::-1])):
        assert keys.key({n: int(n[1:]) for n in order}) == expected


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_keys_are_exact_size_and_repeats_share_one_object(implementation: str) -> None:
    keys = keys_of(implementation)
    ctx = {"plan": "pro", "n": 3}
    first = keys.key(ctx)
    assert first == b'{"n":3,"plan":"pro"}' and type(first) is bytes
    assert keys.key(dict(ctx)) is first  # a bucket's key compares by identity


@compiled_only
def test_the_compiled_table_lets_the_batchs_contexts_go() -> None:
    keys = ContextKeys(core=CORE)
    ctx = {"plan": "pro", "n": 3}
    before = sys.getrefcount(ctx)
    keys.key(ctx)
    assert sys.getrefcount(ctx) == before + 1  # held for the rest of the batch
    keys.end_batch()
    assert sys.getrefcount(ctx) == before


@compiled_only
def test_the_compiled_table_never_answers_for_a_dict_changed_since() -> None:
    keys = ContextKeys(core=CORE)
    ctx: dict[str, Any] = {"a": 1, "b": "x"}
    assert keys.key(ctx) == b'{"a":1,"b":"x"}'
    ctx["a"] = 2  # the same dict, another value (the table holds the dict itself)
    assert keys.key(ctx) == b'{"a":2,"b":"x"}'
    del ctx["a"]
    assert keys.key(ctx) == b'{"b":"x"}'


def test_the_environment_selects_the_pure_python_path() -> None:
    code = "import flageval._keys as k; print(k.CORE is None)"
    env = dict(os.environ, **{PURE_PYTHON_ENV: "1"})
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "True", out.stderr
    env[PURE_PYTHON_ENV] = "0"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == str(CORE is None), out.stderr


def _outcome(keys: ContextKeys, ctx: Any) -> Any:
    try:
        return keys.key(ctx)
    except ContextTooLarge:
        return ContextTooLarge
    except Exception as exc:  # a hostile value's own: the same on both paths
        return type(exc)


@compiled_only
@HYPO
@given(ctx=hostile_contexts())
def test_compiled_and_python_agree_on_hostile_contexts(ctx: dict[Any, Any]) -> None:
    python, compiled = ContextKeys(core=None), ContextKeys(core=CORE)
    for _ in range(2):  # first sight, then the memo and the batch's table
        assert _outcome(compiled, ctx) == _outcome(python, ctx)
        assert _outcome(compiled, dict(ctx)) == _outcome(python, dict(ctx))


def _bodies(implementation: str, snaps: list[tuple[Any, ...]]) -> list[bytes]:
    tiers = Tiers(
        max_full_buckets=10_000,
        max_buckets_per_flag=10_000,
        max_degraded_buckets=1_000,
        memory_budget_bytes=1 << 30,
        full_data_default=True,
    )
    tiers.keys = keys_of(implementation)
    tiers.add_batch(snaps)
    full, degraded, _ = tiers.take()
    return pack(
        full,
        degraded,
        timestamp_ms=1_790_000_000_000,
        prefix=envelope_prefix("svc", "test", "1.0"),
        max_body_bytes=5 << 20,
        ledger=tiers.ledger,
    )


@compiled_only
@HYPO
@given(
    ctxs=st.lists(st.one_of(flat_contexts(), hostile_contexts()), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_compiled_and_python_post_the_same_bodies(ctxs: list[Any], order: random.Random) -> None:
    # Each context three times: as given, as a fresh dict of its objects, and again.
    snaps = [
        ("flag", "on", None, None, {}, f"user-{i}", variant, 1_790_000_000_000_000_000 + j, None)
        for j, (i, variant) in enumerate(
            (i, v) for i, ctx in enumerate(ctxs) for v in (ctx, dict(ctx), ctx)
        )
    ]
    order.shuffle(snaps)
    assert _bodies("compiled", snaps) == _bodies("python", snaps)
