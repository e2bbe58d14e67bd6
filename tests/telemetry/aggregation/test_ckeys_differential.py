"""The compiled flat path (flageval/_ckeys.c) gives the pure-Python path's bytes, or its
exception, for every context, above all those aimed at the C checks: subclasses of str,
int, float and dict, ints at the 64-bit bounds and huge, non-str keys, NaN and
infinities, lone surrogates, text of every width at the 256-character bound, nested
values, more than 256 attributes, and a context changed by a value's own code while it
is keyed."""

from __future__ import annotations

import collections
import enum
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flageval._keys import CORE, ContextKeys
from flageval._prune import ContextTooLarge, canonical

pytestmark = pytest.mark.skipif(CORE is None, reason="flageval._ckeys is not built here")
HYPO = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


class Text(str):
    pass


class Twin(str):
    """Two of these with one text are two keys of one dict, alike in their own text."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class Number(int):
    pass


class Real(float):
    pass


class Level(enum.IntEnum):
    HIGH = 3


class Attrs(dict):  # type: ignore[type-arg]
    pass


# One character of each storage width (1, 2 and 4 bytes), and a lone surrogate.
WIDTHS = ["a", "é", "中", "😀"]
SURROGATE = "\udc80"


def _text(rng: random.Random, around: int, odd: tuple[str, ...] = (SURROGATE,)) -> str:
    """A string of about ``around`` characters of one width, maybe one other character
    in it (of another width, escaped in JSON, or one of ``odd``)."""
    n = max(0, around + rng.randrange(-2, 3))
    text = rng.choice(WIDTHS) * n
    if n and rng.random() < 0.3:
        i = rng.randrange(n)
        text = text[:i] + rng.choice([*WIDTHS, *odd, '"', "\\", "\x00"]) + text[i + 1 :]
    return text


INTS = [0, -1, 2**31, 2**62, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**255, 10**256]
FLOATS = [-0.0, 5e-324, 1.7976931348623157e308, math.nan, math.inf, -math.inf]


def _value(rng: random.Random) -> Any:
    kind = rng.randrange(16)
    if kind == 0:
        return _text(rng, rng.choice([0, 5, 256]))
    if kind == 1:
        return rng.choice(INTS) * rng.choice([1, -1])
    if kind == 2:
        return rng.choice(FLOATS)
    if kind == 3:
        return rng.choice([Text("t"), Text("x" * 300), Number(7), Number(2**70), Real(0.5)])
    if kind == 4:
        return rng.choice([Real(math.nan), Level.HIGH, True, False, None, b"raw"])
    if kind == 5:
        return rng.choice([{"a": 1}, [1, "x"], ("t",), {"n": {"m": "deep"}}, frozenset({1})])
    if kind == 6:
        return rng.uniform(-1e9, 1e9)
    return f"v{rng.randrange(100)}"


def _key(rng: random.Random, i: int) -> Any:
    kind = rng.randrange(40)
    if kind == 0:
        return _text(rng, rng.choice([3, 256]))
    if kind == 1:
        return rng.choice(["targetingKey", "targeting_key", Text("targetingKey"), Text("k")])
    if kind == 2:
        return rng.choice([1, 2.5, True, None, ("t",), math.nan])
    if kind == 3:
        return f"s{SURROGATE}{i}"
    if kind == 4:
        return rng.choice(WIDTHS) + f"{i}"
    return f"k{rng.randrange(10**4):04d}"


@st.composite
def contexts(draw: Any) -> Any:
    """A context of 0-400 attributes built from a drawn seed: mostly plain and flat (the
    C path's), with now and then one thing that must send it to the fallback."""
    # A seeded generator (shown in a failure), not hypothesis' own: that one keeps
    # nearly every draw at its simplest, and so nearly every context small.
    rng = random.Random(draw(st.integers(0, 2**32)))
    n = rng.choice([rng.randrange(13), rng.randrange(250, 263), rng.randrange(401)])
    plain = draw(st.booleans())  # half the contexts: only exact str keys, plain values
    ctx: dict[Any, Any] = {}
    for i in range(n):
        if plain:
            ctx[f"k{rng.randrange(10**4):04d}"] = rng.choice(
                [f"v{i}", i, i / 3, i % 2 == 0, _text(rng, 256, odd=())]
            )
        else:
            ctx[_key(rng, i)] = _value(rng)
    if not plain and rng.random() < 0.2:
        ctx[Twin("twin")], ctx[Twin("twin")] = "a", "b"
    if draw(st.booleans()):
        ctx = dict(sorted(ctx.items(), key=lambda kv: str(kv[0])))  # the in-order encoding
    shape = draw(st.sampled_from(["dict"] * 4 + ["subclass", "ordered"]))
    if shape == "subclass":
        return Attrs(ctx)
    return collections.OrderedDict(ctx) if shape == "ordered" else ctx


def _outcome(keys: ContextKeys, ctx: Any) -> Any:
    try:
        return keys.key(ctx)
    except ContextTooLarge:
        return ContextTooLarge
    except Exception as exc:  # a value's own: the same on both paths
        return type(exc)


@HYPO
@given(ctx=contexts())
def test_the_compiled_path_gives_the_python_paths_bytes(ctx: Any) -> None:
    python, compiled = ContextKeys(core=None), ContextKeys(core=CORE)
    expected = _outcome(python, ctx)
    assert expected == canonical(ctx)
    for _ in range(2):  # first sight, then the batch's table and the memo
        assert _outcome(compiled, ctx) == expected
        assert _outcome(compiled, dict(ctx)) == expected  # the same objects, a new dict
    compiled.end_batch()
    assert _outcome(compiled, dict(reversed(list(ctx.items())))) == expected


class Meddler:
    """A value whose text, read while its context is keyed, changes that context."""

    def __init__(self, ctx: dict[str, Any], change: str) -> None:
        self.ctx, self.change, self.calls = ctx, change, 0

    def __str__(self) -> str:
        self.calls += 1
        if self.change == "add":
            self.ctx[f"added{self.calls}"] = "x"
        elif self.change == "drop":
            self.ctx.pop("a", None)
        else:
            self.ctx.clear()
        return "meddler"


@pytest.mark.parametrize("change", ["add", "drop", "clear"])
def test_a_context_changed_by_a_values_own_code_while_keyed_agrees(change: str) -> None:
    """The compiled path reads the dict once, runs no Python code while it does, and
    hands such a context to the fallback: both paths see the same states."""
    outcomes = []
    for core in (None, CORE):
        keys = ContextKeys(core=core)
        ctx: dict[str, Any] = {"a": "first", "b": 2}
        ctx["m"] = Meddler(ctx, change)
        got = [_outcome(keys, ctx)]
        ctx.update(a="first", b=2)  # flat again, or a new state the meddler left
        ctx.pop("m", None)
        got += [_outcome(keys, ctx), _outcome(keys, dict(ctx))]
        outcomes.append(got)
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] == b'{"a":"first","b":2,"m":"meddler"}'  # read before it changed
