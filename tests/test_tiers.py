"""Tiers: bucket keys, repeats, caps, budget, consent, metadata (flageval/tiers.py).

Snapshots are built by hand in the hook's tuple layout:
(flag, variant, error_code, error_message, metadata, targeting_key, attributes, time_ns)
"""

from __future__ import annotations

from typing import Any

from openfeature.exception import ErrorCode

from flageval.prune import EMPTY
from flageval.tiers import BUCKET_OVERHEAD_BYTES, Tiers, hash_targeting_key

T0 = 1_790_000_000_000  # epoch ms, after the intake's minimum


def snap(
    flag: str = "f",
    variant: str | None = "on",
    code: Any = None,
    message: str | None = None,
    meta: dict[str, Any] | None = None,
    tk: str | None = "u1",
    attrs: dict[str, Any] | None = None,
    t_ms: int = T0,
) -> tuple[Any, ...]:
    return (flag, variant, code, message, meta or {}, tk, attrs or {}, t_ms * 1_000_000)


def tiers(**kw: Any) -> Tiers:
    args: dict[str, Any] = {
        "max_full_buckets": 1000,
        "max_buckets_per_flag": 1000,
        "max_degraded_buckets": 1000,
        "memory_budget_bytes": 1 << 30,
        "full_data_default": True,
    }
    args.update(kw)
    return Tiers(**args)


def test_repeats_count_with_min_first_and_max_last() -> None:
    t = tiers()
    t.add_batch([snap(t_ms=T0 + 5), snap(t_ms=T0 + 1), snap(t_ms=T0 + 9), snap(t_ms=T0 + 3)])
    assert list(t.full.values()) == [[4, T0 + 1, T0 + 9]]
    assert t.evaluations_held == 4
    assert t.received == 4


def test_bucket_key_is_the_visible_row() -> None:
    t = tiers()
    t.add_batch(
        [
            snap(attrs={"a": 1}),
            snap(attrs={"a": 1.0}),
            snap(attrs={"a": True}),
            snap(attrs={"a": "1"}),
            snap(attrs={"a": 1}),  # same as the first
            snap(tk="u2", attrs={"a": 1}),
            snap(variant="off", attrs={"a": 1}),
        ]
    )
    counts = sorted((k[5], k[1], k[6], v[0]) for k, v in t.full.items())
    assert counts == [
        ("u1", "off", b'{"a":1}', 1),
        ("u1", "on", b'{"a":"1"}', 1),
        ("u1", "on", b'{"a":1.0}', 1),
        ("u1", "on", b'{"a":1}', 2),
        ("u1", "on", b'{"a":true}', 1),
        ("u2", "on", b'{"a":1}', 1),
    ]


def test_no_variant_means_runtime_default_used() -> None:
    t = tiers()
    t.add_batch([snap(variant=None), snap(variant="on")])
    assert sorted(k[3] for k in t.full) == [False, True]


def test_error_message_else_error_code_name() -> None:
    t = tiers()
    t.add_batch(
        [
            snap(code=ErrorCode.FLAG_NOT_FOUND, message="Flag 'f' not found"),
            snap(code=ErrorCode.TYPE_MISMATCH, message=None),
        ]
    )
    assert sorted(k[4] for k in t.full) == ["Flag 'f' not found", "TYPE_MISMATCH"]


def test_allocation_from_each_metadata_spelling() -> None:
    t = tiers()
    t.add_batch(
        [
            snap(meta={"allocationKey": "a1"}),
            snap(meta={"allocation_key": "a2"}),
            snap(meta={"dd.allocation.key": "a3"}),
            snap(meta={"other": "x"}),
        ]
    )
    assert sorted(str(k[2]) for k in t.full) == ["None", "a1", "a2", "a3"]


def test_provider_timestamp_stamp_wins_over_the_hook_clock_when_valid() -> None:
    t = tiers()
    t.add_batch(
        [
            snap(meta={"dd.eval.timestamp_ms": T0 + 100}, t_ms=T0 + 999),
            snap(meta={"__dd_eval_timestamp_ms": T0 + 50}, t_ms=T0 + 999),
            # Invalid stamps fall back to the hook's clock:
            snap(meta={"dd.eval.timestamp_ms": "soon"}, t_ms=T0 + 7),
            snap(meta={"dd.eval.timestamp_ms": 12}, t_ms=T0 + 8),
            snap(meta={"dd.eval.timestamp_ms": True}, t_ms=T0 + 9),
        ]
    )
    assert list(t.full.values()) == [[5, T0 + 7, T0 + 100]]


def test_consent_metadata_only_boolean_true_counts() -> None:
    t = tiers(full_data_default=False)
    tk = "jane.doe@datadoghq.com"
    attrs = {"plan": "pro"}
    t.add_batch(
        [
            snap(tk=tk, attrs=attrs, meta={"observe_full_evaluation_data": True}),
            snap(tk=tk, attrs=attrs, meta={"__dd_observe_full_evaluation_data": True}),
            snap(tk=tk, attrs=attrs, meta={"observe_full_evaluation_data": "true"}),
            snap(tk=tk, attrs=attrs, meta={"observe_full_evaluation_data": 1}),
            snap(tk=tk, attrs=attrs),  # no metadata: the setting (off here)
        ]
    )
    hashed = "sha256_b4698f9b6d186781fa8dc59e533578fa2d8379a46b1cf6db85cda6aa9c99e51b"
    assert sorted((k[5], k[6], v[0]) for k, v in t.full.items()) == [
        (tk, b'{"plan":"pro"}', 2),
        (hashed, EMPTY, 3),
    ]


def test_consent_false_overrides_a_full_data_default() -> None:
    t = tiers(full_data_default=True)
    t.add_batch(
        [
            snap(
                code=ErrorCode.FLAG_NOT_FOUND,
                message="secret message about jane",
                meta={"observe_full_evaluation_data": False},
                attrs={"email": "jane@x"},
            )
        ]
    )
    (key,) = t.full
    assert key[4] == "FLAG_NOT_FOUND"  # the code, not the message
    assert key[5] == hash_targeting_key("u1")
    assert key[6] == EMPTY


def test_per_flag_cap_degrades_only_that_flags_new_buckets() -> None:
    t = tiers(max_buckets_per_flag=2)
    t.add_batch([snap(tk=f"u{i}") for i in range(5)] + [snap(flag="g", tk="u9")])
    t.add_batch([snap(tk="u0")])  # an existing bucket still counts in full
    assert sorted((k[0], k[5], v[0]) for k, v in t.full.items()) == [
        ("f", "u0", 2),
        ("f", "u1", 1),
        ("g", "u9", 1),
    ]
    assert t.degraded == {("f", "on", None, False, None): [3, T0, T0]}
    assert t.ledger.degraded == {"cardinality_cap": 3}
    assert t.evaluations_held == 7


def test_total_full_cap_then_degraded_cap_then_counted_drop() -> None:
    t = tiers(max_full_buckets=2, max_degraded_buckets=1)
    t.add_batch(
        [snap(tk=f"u{i}") for i in range(4)]  # 2 full, 2 degraded into one bucket
        + [snap(variant="off", tk="u9")]  # new degraded bucket past the cap: dropped
    )
    assert len(t.full) == 2
    assert t.degraded == {("f", "on", None, False, None): [2, T0, T0]}
    assert t.ledger.dropped == {"degraded_cap": 1}
    assert t.evaluations_held == 4
    assert t.received == 5


def test_memory_budget_degrades_new_full_buckets() -> None:
    attrs_cost = len(b'{"a":"' + b"x" * 200 + b'"}')
    one = BUCKET_OVERHEAD_BYTES + attrs_cost + len("u0") + 49
    t = tiers(memory_budget_bytes=2 * one + one // 2)
    t.add_batch([snap(tk=f"u{i}", attrs={"a": "x" * 200}) for i in range(4)])
    assert len(t.full) == 2
    assert t.ledger.degraded == {"memory_budget": 2}
    assert t.bytes_held == 2 * one


def test_take_swaps_out_and_merges_rows_that_would_print_the_same() -> None:
    t = tiers(max_buckets_per_flag=1)
    t.add_batch(
        [
            snap(tk="u1", attrs={"a": 1}, t_ms=T0),  # full
            snap(tk="u2", t_ms=T0 + 5),  # degraded by the per-flag cap
            snap(tk=None, t_ms=T0 + 9, flag="g"),  # full, but prints like a degraded row
            snap(tk="u3", t_ms=T0 + 2, flag="g"),  # degraded (g's cap), same row as above
        ]
    )
    full, degraded, held = t.take()
    assert held == 4
    assert list(full.values()) == [[1, T0, T0]]
    assert degraded == {
        ("f", "on", None, False, None): [1, T0 + 5, T0 + 5],
        ("g", "on", None, False, None): [2, T0 + 2, T0 + 9],
    }
    assert t.full == {} and t.degraded == {} and t.evaluations_held == 0


def test_bad_snapshot_fields_are_stringified_not_fatal() -> None:
    t = tiers()
    t.add_batch([snap(flag=123, variant=4.5, tk=99)])  # type: ignore[arg-type]
    (key,) = t.full
    assert key[:2] == ("123", "4.5")
    assert key[5] == "99"


def test_unreadable_context_is_counted_and_degraded() -> None:
    class Exploding(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("boom")

        def __bool__(self) -> bool:
            return True

    t = tiers()
    t.add_batch([snap(attrs=Exploding(a=1))])
    assert t.context_errors == 1
    assert t.ledger.degraded == {"context_error": 1}
    assert t.evaluations_held == 1


def test_long_error_variant_and_allocation_text_is_cut_but_targeting_keys_are_not() -> None:
    """The degraded tier has no byte budget, so the text in its keys is bounded."""
    t = tiers()
    long_tk = "u" * 5000 + "é"
    t.add_batch(
        [
            snap(
                message="e" * 100_000,
                code=ErrorCode.GENERAL,
                variant="v" * 5000,
                meta={"allocationKey": "a" * 5000},
                tk=long_tk,
            )
        ]
    )
    ((_flag, variant, allocation, _, error, tk, _),) = t.full
    assert (len(variant), len(allocation), len(error)) == (1024, 1024, 1024)
    assert error == "e" * 1024
    assert tk == long_tk
