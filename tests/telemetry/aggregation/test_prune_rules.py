"""Context pruning rules and the canonical key (flageval/_prune.py), one rule per test."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections import OrderedDict
from typing import Any

import pytest

from flageval._keys import ContextKeys
from flageval._prune import (
    EMPTY,
    MAX_ENTRIES,
    MAX_FIELDS,
    MAX_NODES,
    ContextTooLarge,
    canonical,
    flatten,
)


def test_nested_mappings_and_lists_flatten_to_dotted_and_indexed_paths() -> None:
    ctx = {"user": {"name": "ana", "tags": ["a", "b"]}, "n": 1}
    assert flatten(ctx) == {"n": 1, "user.name": "ana", "user.tags[0]": "a", "user.tags[1]": "b"}


def test_lists_of_mappings_flatten_to_index_then_key() -> None:
    assert flatten({"a": [{"b": 1}, {"c": True}]}) == {"a[0].b": 1, "a[1].c": True}


def test_targeting_key_attributes_are_excluded_at_top_level_only() -> None:
    ctx = {"targetingKey": "u1", "targeting_key": "u1", "x": {"targetingKey": "kept"}}
    assert flatten(ctx) == {"x.targetingKey": "kept"}


def test_first_256_sorted_keys_are_kept() -> None:
    # Insert in reverse order: the survivors must be the 256 smallest keys, not the
    # first 256 inserted.
    ctx = {f"k{i:04d}": i for i in reversed(range(300))}
    out = flatten(ctx)
    assert list(sorted(out)) == [f"k{i:04d}" for i in range(256)]
    assert out["k0255"] == 255


def test_long_strings_are_skipped_not_truncated_and_take_no_slot() -> None:
    ctx = {"a": "x" * 257, "b": "y" * 256}
    ctx.update({f"c{i:03d}": i for i in range(256)})
    out = flatten(ctx)
    assert "a" not in out  # 257 characters: skipped
    assert out["b"] == "y" * 256  # exactly 256: kept whole
    assert len(out) == 256
    # 'a' took no slot: 'b' plus the 255 smallest c-keys survive.
    assert sorted(out) == ["b"] + [f"c{i:03d}" for i in range(255)]


def test_nan_and_infinities_become_fixed_text() -> None:
    out = flatten({"n": math.nan, "p": math.inf, "m": -math.inf, "z": -0.0})
    assert out == {"n": "NaN", "p": "Infinity", "m": "-Infinity", "z": -0.0}
    assert math.copysign(1.0, out["z"]) == -1.0  # -0.0 prints apart from 0.0: kept


def test_datetimes_become_iso_text() -> None:
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    out = flatten({"naive": naive, "aware": aware, "day": dt.date(2026, 1, 2)})
    assert out == {
        "naive": "2026-01-02T03:04:05",
        "aware": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
    }


def test_other_values_become_str_text_and_none_is_dropped() -> None:
    out = flatten({"d": decimal.Decimal("1.50"), "b": b"ab", "none": None})
    assert out == {"d": "1.50", "b": "b'ab'"}


def test_objects_whose_str_raises_fall_back_to_repr_then_a_placeholder() -> None:
    class BadStr:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            return "BadStr()"

    class BadBoth:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert flatten({"a": BadStr(), "b": BadBoth()}) == {
        "a": "BadStr()",
        "b": "<unprintable BadBoth>",
    }


def test_huge_ints_are_skipped_like_long_strings() -> None:
    big_ok = 10**255  # 256 digits: printable within the limit
    assert flatten({"a": big_ok, "b": 10**256, "c": 2**5000}) == {"a": big_ok}
    assert flatten({"neg": -(10**255)}) == {}  # 257 characters with the sign


def test_lone_surrogates_are_replaced_in_keys_and_values() -> None:
    out = flatten({"k\ud800": "v\udfff"})
    assert out == {"k\ufffd": "v\ufffd"}
    json.dumps(out).encode("utf-8")  # encodable


def test_non_string_keys_are_dropped_and_never_displace_a_real_key() -> None:
    # OpenFeature attribute keys are strings: 1, None and (2, 3) are not made "1",
    # "None" and "(2, 3)", and the int 1 never takes the real key "1"'s place.
    ctx = {"1": "from-str", 1: "from-int", (2, 3): "t", None: "n", 1.5: "f", False: "b"}
    assert flatten(ctx) == {"1": "from-str"}
    assert flatten({1: "only-int"}) == {}
    assert flatten({"a": {2: "x", "b": "y"}}) == {"a.b": "y"}


def test_keys_alike_once_surrogates_are_replaced_resolve_by_their_own_text() -> None:
    # "a\ud800" and "a\udc00" both print "a\ufffd": the smaller own text wins, in
    # either insertion order.
    first = dict([("a\ud800", 1), ("a\udc00", 2)])
    second = dict([("a\udc00", 2), ("a\ud800", 1)])
    assert flatten(first) == flatten(second) == {"a\ufffd": 1}


def test_str_subclass_keys_alike_even_in_their_own_text_are_all_dropped() -> None:
    class Unequal(str):
        """A str subclass whose instances are never equal: two "plan" keys in one dict."""

        def __eq__(self, other: object) -> bool:
            return self is other

        def __hash__(self) -> int:
            return id(self)

    ctx = {Unequal("plan"): "a", Unequal("plan"): "b", "zone": "eu"}
    # No rule could pick one without looking at insertion order: neither is kept.
    assert flatten(ctx) == {"zone": "eu"}


def test_sets_flatten_in_sorted_order() -> None:
    assert flatten({"s": {"b", "c", "a"}}) == {"s[0]": "a", "s[1]": "b", "s[2]": "c"}


def test_cycles_are_skipped() -> None:
    a: dict[str, Any] = {"x": 1}
    a["self"] = a
    lst: list[Any] = [1]
    lst.append(lst)
    assert flatten({"a": a, "l": lst}) == {"a.x": 1, "l[0]": 1}


def test_depth_list_length_and_key_length_are_bounded() -> None:
    deep: dict[str, Any] = {"v": 1}
    for _ in range(20):
        deep = {"d": deep}
    out = flatten({"deep": deep, "long": list(range(100)), "k" * 300: 1})
    assert not any(k.startswith("deep") for k in out)  # deeper than MAX_DEPTH
    assert [k for k in out if k.startswith("long")] == [f"long[{i}]" for i in range(64)]
    assert "k" * 300 not in out


def test_same_context_any_insertion_order_gives_same_bytes() -> None:
    a = {"b": 1, "a": {"y": 2, "x": [1, "z"]}, "c": 1.5}
    b = OrderedDict([("c", 1.5), ("a", {"x": [1, "z"], "y": 2}), ("b", 1)])
    assert canonical(a) == canonical(b) == b'{"a.x[0]":1,"a.x[1]":"z","a.y":2,"b":1,"c":1.5}'


def test_type_tags_keep_int_float_bool_and_string_apart() -> None:
    keys = {canonical({"v": v}) for v in (1, 1.0, True, "1")}
    assert keys == {b'{"v":1}', b'{"v":1.0}', b'{"v":true}', b'{"v":"1"}'}


def test_empty_and_all_pruned_contexts_have_the_empty_key() -> None:
    assert canonical({}) == EMPTY
    assert canonical({"none": None, "long": "x" * 300}) == EMPTY


def test_str_subclass_keys_are_read_by_their_string_value() -> None:
    class Label(str):
        def __str__(self) -> str:
            return "something-else"

    assert flatten({Label("plan"): "pro"}) == {"plan": "pro"}
    assert ContextKeys().key({Label("plan"): "pro"}) == canonical({"plan": "pro"})


class Counted:
    """A value that counts every str() of it (the pruner's unit of work on set items)."""

    calls = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __str__(self) -> str:
        Counted.calls += 1
        return f"c{self.n:07d}"


def test_a_set_with_more_items_than_the_budget_is_skipped_whole_unread() -> None:
    Counted.calls = 0
    big = {Counted(i) for i in range(MAX_ENTRIES + 1)}
    assert flatten({"plan": "pro", "ids": big}) == {"plan": "pro"}
    assert Counted.calls == 0  # counted by len() before any str(): nothing sorted
    small = {Counted(i) for i in range(3)}
    assert flatten({"ids": small}) == {f"ids[{i}]": f"c000000{i}" for i in range(3)}


def test_the_budget_is_shared_by_every_reference_to_one_container() -> None:
    # 64 references to one 3,000-item set: the first in key order is read (3,000 of
    # the 4,096 entries), every later one finds too little left and is skipped.
    Counted.calls = 0
    shared = {Counted(i) for i in range(3_000)}
    out = flatten({f"ref{i:02d}": shared for i in range(64)})
    assert sorted(out) == sorted(f"ref00[{i}]" for i in range(64))
    assert out["ref00[0]"] == "c0000000"
    assert Counted.calls == 3_000 + 64  # each item once to sort, the 64 kept once as leaves


def test_a_context_with_more_attributes_than_the_budget_raises_before_reading() -> None:
    with pytest.raises(ContextTooLarge):
        flatten({f"k{i:06d}": i for i in range(MAX_ENTRIES + 1)})
    with pytest.raises(ContextTooLarge):
        canonical({f"k{i:06d}": i for i in range(200_000)})
    assert len(flatten({f"k{i:06d}": i for i in range(MAX_ENTRIES)})) == MAX_FIELDS


def test_a_wide_flat_context_keeps_the_first_256_sorted_keys() -> None:
    names = [f"attr{i:04d}" for i in range(4_000)]
    ctx = {n: i for i, n in reversed(list(enumerate(names)))}  # reverse insertion order
    assert flatten(ctx) == {n: i for i, n in enumerate(names[:256])}


def test_later_keys_that_sort_before_earlier_output_still_make_the_cut() -> None:
    # "k" is visited first (it sorts first) but its items print "k[0]".. and sort after
    # every "k0.." key; with 300 flat keys the first 256 are k000..k255 only.
    ctx: dict[str, Any] = {f"k{i:03d}": i for i in range(300)}
    ctx["k"] = ["x", "y", "z"]
    assert flatten(ctx) == {f"k{i:03d}": i for i in range(256)}
    # A nested mapping's keys interleave with its parent's siblings by text.
    ctx2: dict[str, Any] = {f"b{i:03d}": i for i in range(300)}
    ctx2["a"] = {f"z{i:03d}": i for i in range(10)}
    expected = {f"a.z{i:03d}": i for i in range(10)} | {f"b{i:03d}": i for i in range(246)}
    assert flatten(ctx2) == expected


def test_work_per_context_is_bounded_whatever_the_shape() -> None:
    """Every str() the pruner makes of a value is one unit of MAX_ENTRIES (set items)
    or MAX_NODES (leaves): counted, whatever the nesting."""
    shapes: list[dict[str, Any]] = [
        {f"s{i:02d}": {Counted(i * 1000 + j) for j in range(1000)} for i in range(64)},
        {f"l{i:02d}": [Counted(i * 100 + j) for j in range(100)] for i in range(200)},
        {"d": {f"k{i:04d}": {f"j{j:02d}": Counted(j) for j in range(40)} for i in range(200)}},
    ]
    for ctx in shapes:
        Counted.calls = 0
        flatten(ctx)
        assert 0 < Counted.calls <= MAX_ENTRIES + MAX_NODES


class TestContextKeys:
    """The fast path and the memo must give exactly what the full pruner gives."""

    CASES: list[dict[Any, Any]] = [
        {"a": 1, "b": 1.0, "c": True, "d": "1"},
        {"z": "x" * 256, "a": "y" * 100},  # > 263 bytes: memo path
        {"z": "x" * 257},
        {"n": math.nan},
        {"i": math.inf},
        {"targetingKey": "u", "a": 1},
        {"k": "v\ud800"},
        {1: "int-key", "a": 2},
        {"nested": {"a": 1}},
        {"big": 10**300},
        {"s": "null", "x": 1},
        {"neg": -0.0},
    ]

    @pytest.mark.parametrize("ctx", CASES)
    def test_agrees_with_the_full_pruner_every_time(self, ctx: dict[Any, Any]) -> None:
        keys = ContextKeys()
        expected = canonical(ctx)
        assert keys.key(ctx) == expected
        assert keys.key(dict(ctx)) == expected  # second time: memo or fast path

    def test_nan_and_infinity_never_share_a_memo_entry(self) -> None:
        keys = ContextKeys()
        assert keys.key({"v": math.nan}) == b'{"v":"NaN"}'
        assert keys.key({"v": math.inf}) == b'{"v":"Infinity"}'
        assert keys.key({"v": None}) == EMPTY

    def test_memo_is_bounded(self) -> None:
        keys = ContextKeys(memo_max=8)
        for i in range(100):
            keys.key({"long": "x" * 300, "i": i})  # never fast: always pruned
        assert len(keys._memo) <= 8

    def test_fast_path_taken_for_small_flat_contexts(self) -> None:
        keys = ContextKeys()
        keys.key({"plan": "pro", "n": 3})
        assert keys.fast_hits == 1
        assert keys.slow_runs == 0
