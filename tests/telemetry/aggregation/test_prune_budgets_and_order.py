"""Pruning at its bounds and in its order: the sort-then-cut (flatten, sort the keys,
keep the first 256) where walk order and sorted order differ, the exact node and entry
budgets, depth and key-length bounds at their edges, cycles through the root, shared
containers, subclassed values, and sets sorted by type before text. Expected values by
hand from docs/wire-format.md and flageval/_prune.py's docstring, never from flatten's
output."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from flageval._prune import MAX_ENTRIES, MAX_NODES, ContextTooLarge, canonical, flatten

A_KEYS = [f"k{i:03d}" for i in range(300)]


def _a_beside_a_b(n: int, reverse: bool = False) -> dict[str, Any]:
    a = {k: i for i, k in enumerate(A_KEYS[:n])}
    if reverse:
        a = dict(reversed(a.items()))
    return {"a-b": "x", "a": a} if reverse else {"a": a, "a-b": "x"}


@pytest.mark.parametrize("reverse", [False, True])
def test_the_cut_sorts_flattened_keys_not_the_walk_order(reverse: bool) -> None:
    """Flatten, sort the keys, keep the first 256 (docs/wire-format.md). The walker
    visits "a" before "a-b" ("a" sorts first alone), but "a-b" sorts before every
    "a.kNNN" ('-' is 0x2d, '.' 0x2e): of 257 fields, "a-b" stays and "a.k255" goes."""
    expected = {"a-b": "x"} | {f"a.k{i:03d}": i for i in range(255)}
    assert flatten(_a_beside_a_b(256, reverse)) == expected
    assert canonical(_a_beside_a_b(256, reverse)).startswith(b'{"a-b":"x","a.k000":0,')


def _filler(nodes: int) -> list[Any]:
    """A value costing exactly ``nodes`` visits and giving no field: a list (1 visit)
    of lists (1 each) of None items (1 each; None is dropped)."""
    rest, out = nodes - 1, []
    while rest >= 65:
        out.append([None] * 64)
        rest -= 65
    if rest:
        out.append([None] * (rest - 1))
    assert len(out) <= 64  # a list past 64 items would be cut
    return out


def test_the_node_budget_visits_exactly_max_nodes_values() -> None:
    # "0" sorts first: its filler is visited first. Then "a" (1), 256 of its leaves
    # (the 257th sorts after 256 kept ones: not visited), then "a-b" (1).
    spent = MAX_NODES - 258
    ctx = {"0": _filler(spent), **_a_beside_a_b(300)}
    assert flatten(ctx) == {"a-b": "x"} | {f"a.k{i:03d}": i for i in range(255)}
    # One visit more before them: "a-b" would be value 4,097, so it is never visited.
    ctx = {"0": _filler(spent + 1), **_a_beside_a_b(300)}
    assert flatten(ctx) == {f"a.k{i:03d}": i for i in range(256)}
    # "a" itself is the 4,096th value: nothing in it is visited.
    assert flatten({"0": _filler(MAX_NODES - 1), "a": {"k": 1}}) == {}
    # Inside a list: ten items are left for "l".
    ctx2 = {"0": _filler(MAX_NODES - 11), "l": list(range(64))}
    assert flatten(ctx2) == {f"l[{i}]": i for i in range(10)}


def test_the_walk_past_the_cut_costs_no_budget() -> None:
    # Keys above "XXXX" in no position: upper case. Past 256 kept fields, what "A" has
    # left sorts after all of them (each a 64-item list: 65 visits) and is not walked,
    # so "A-B" (sorting before "A.K...") still has budget left.
    a = {f"K{i:03d}": i for i in range(256)} | {f"K{i:03d}": [0] * 64 for i in range(256, 320)}
    out = flatten({"A": a, "A-B": "x"})
    assert out == {"A-B": "x"} | {f"A.K{i:03d}": i for i in range(255)}


def _nested(segments: int) -> dict[str, Any]:
    value: Any = 1
    for i in range(segments, 1, -1):
        value = {f"s{i}": value}
    return {"s1": value}


def test_depth_is_at_most_eight_path_segments() -> None:
    assert flatten(_nested(8)) == {"s1.s2.s3.s4.s5.s6.s7.s8": 1}
    assert flatten(_nested(9)) == {}
    # A list index is a segment too: s1..s7 then [0] is eight.
    seven = _nested(7)
    seven["s1"]["s2"]["s3"]["s4"]["s5"]["s6"]["s7"] = [True]
    assert flatten(seven) == {"s1.s2.s3.s4.s5.s6.s7[0]": True}


def test_a_key_of_exactly_256_characters_is_kept() -> None:
    assert flatten({"k" * 256: 1, "j" * 257: 2}) == {"k" * 256: 1}
    assert flatten({"a": {"k" * 254: 1, "j" * 255: 2}}) == {"a." + "k" * 254: 1}


def test_a_context_reaching_itself_is_walked_once() -> None:
    ctx: dict[str, Any] = {"a": 1}
    ctx["me"] = ctx
    ctx["l"] = [ctx, 2]
    assert flatten(ctx) == {"a": 1, "l[1]": 2}


def test_one_container_under_two_keys_is_not_a_cycle() -> None:
    shared = {"x": 1}
    items = [1, 2]
    assert flatten({"a": shared, "b": shared, "c": items, "d": items}) == {
        "a.x": 1,
        "b.x": 1,
        "c[0]": 1,
        "c[1]": 2,
        "d[0]": 1,
        "d[1]": 2,
    }


def test_too_many_attributes_says_which_budget() -> None:
    with pytest.raises(ContextTooLarge, match="more than 4096 attributes"):
        flatten({f"k{i:05d}": i for i in range(MAX_ENTRIES + 1)})


# -- values of subclassed and odd types ---------------------------------------------------


class Shout(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


class Odd:
    """str() gives a str subclass (could misbehave later: made a plain str)."""

    def __str__(self) -> str:
        return Shout("odd")

    def __repr__(self) -> str:
        return "Odd-repr"


def test_subclassed_scalars_are_read_by_their_base_value() -> None:
    out = flatten({"s": Shout("hi"), "i": Count(7), "f": Ratio(2.5), "o": Odd()})
    assert out == {"s": "hi", "i": 7, "f": 2.5, "o": "odd"}
    assert [type(out[k]) for k in ("s", "i", "f", "o")] == [str, int, float, str]
    assert canonical({"i": Count(7), "f": Ratio(2.5)}) == b'{"f":2.5,"i":7}'


class Text:
    def __init__(self, n: int) -> None:
        self.n = n

    def __str__(self) -> str:
        return "t" * self.n


def test_an_objects_text_is_skipped_past_256_characters_not_truncated() -> None:
    assert flatten({"a": Text(256), "b": Text(257)}) == {"a": "t" * 256}


def test_an_int_of_851_bits_and_256_digits_is_kept() -> None:
    # 2**850 has 851 bits and floor(850 * log10(2)) + 1 = 256 digits.
    assert (2**850).bit_length() == 851 and len(str(2**850)) == 256
    assert flatten({"a": 2**850, "b": -(2**850)}) == {"a": 2**850}  # "-" is a 257th char


# -- budgets of mappings and sets whose len() lies ----------------------------------------


class Lying(Mapping[str, Any]):
    """A Mapping whose len() says 1 and whose items() counts what is read."""

    def __init__(self, n: int) -> None:
        # Inserted in reverse: the key read last sorts first.
        self.keys_ = [f"m{i:05d}" for i in reversed(range(n))]
        self.read = 0

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key: str) -> Any:
        return key

    def __iter__(self) -> Iterator[str]:
        for key in self.keys_:
            self.read += 1
            yield key


def test_a_mapping_whose_len_lies_is_read_one_past_the_budget_then_skipped() -> None:
    left = MAX_ENTRIES - 1  # the top level read one entry: "m"
    big = Lying(left + 50)
    assert flatten({"m": big}) == {}
    assert big.read == left + 1  # one past what is left, no more
    exact = Lying(left)  # exactly what is left: read whole, the smallest 256 kept
    assert flatten({"m": exact}) == {f"m.m{i:05d}": f"m{i:05d}" for i in range(256)}


class LyingSet(frozenset[Any]):
    """A frozenset subclass whose len() says 1 and whose iteration counts reads."""

    read = 0

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Any]:
        for item in frozenset.__iter__(self):
            LyingSet.read += 1
            yield item


def test_a_set_whose_len_lies_is_read_one_past_the_budget_then_skipped() -> None:
    left = MAX_ENTRIES - 1
    LyingSet.read = 0
    assert flatten({"s": LyingSet(range(left + 50))}) == {}
    assert LyingSet.read == left + 1  # one past what is left, no more
    LyingSet.read = 0
    # Exactly what is left: read whole, sorted by text ("0" < "1" < "10" < ...).
    out = flatten({"s": LyingSet(range(left))})
    assert LyingSet.read == left
    assert out == {f"s[{i}]": n for i, n in enumerate(sorted(range(left), key=str)[:64])}
    # A real set of exactly what is left is kept too; one more is skipped.
    assert len(flatten({"s": set(range(left))})) == 64
    assert flatten({"s": set(range(left + 1))}) == {}


class zstr(str):  # its type name must sort after "int"
    def __hash__(self) -> int:
        return 1  # hash(1) is 1: both land in one slot, so the set keeps insertion order


def test_set_items_sort_by_type_name_then_text() -> None:
    # ("int", "1") < ("zstr", "1"): the int comes first whichever went in first.
    for items in ([zstr("1"), 1], [1, zstr("1")]):
        assert flatten({"s": set(items)}) == {"s[0]": 1, "s[1]": "1"}


def test_keys_alike_even_in_their_own_text_never_compare_their_values() -> None:
    class Unequal(str):
        def __eq__(self, other: object) -> bool:
            return self is other

        def __hash__(self) -> int:
            return id(self)

    # Values that cannot be ordered: the tie on the key is never settled by them.
    ctx = {Unequal("plan"): {"x": 1}, Unequal("plan"): [2], "zone": "eu"}
    assert flatten(ctx) == {"zone": "eu"}


def test_the_cut_keeps_a_kept_keys_value_as_it_was_without_the_cut() -> None:
    # "a.b" is both a nested path and a top-level key; the walk (sorted: "a" before
    # "a.b") writes the top-level value last. The cut may only remove keys: with 255
    # more fields that sort before "a.b" the kept "a.b" has the same value.
    small: dict[str, Any] = {"a": {"b": "nested"}, "a.b": "top"}
    assert flatten(small) == {"a.b": "top"}
    wide: dict[str, Any] = {"a": {"b": "nested"} | {f"a{i:03d}": i for i in range(255)}}
    wide["a.b"] = "top"
    assert flatten(wide)["a.b"] == "top"
