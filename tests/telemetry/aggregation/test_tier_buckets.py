"""Tiers: bucket keys, repeats, caps, budget, consent, metadata (flageval/_tiers.py).

Snapshots are built by hand in the hook's tuple layout:
(flag, variant, error_code, error_message, metadata, targeting_key, attributes, time_ns,
reason)
"""

from __future__ import annotations

import sys
from typing import Any

from openfeature.exception import ErrorCode

from flageval._prune import EMPTY
from flageval._tiers import BUCKET_OVERHEAD_BYTES, TEXT_OVERHEAD_BYTES, Tiers, hash_targeting_key

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
    return (flag, variant, code, message, meta or {}, tk, attrs or {}, t_ms * 1_000_000, None)


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


CONSENT = {"observe_full_evaluation_data": True}


def test_error_message_only_with_stated_consent_else_the_code() -> None:
    t = tiers()  # full_data_default=True: the setting alone never sends a message
    t.add_batch(
        [
            snap(tk="a", code=ErrorCode.FLAG_NOT_FOUND, message="Flag 'f' not found", meta=CONSENT),
            snap(tk="b", code=ErrorCode.TYPE_MISMATCH, message=None, meta=CONSENT),
            snap(tk="c", code=ErrorCode.PARSE_ERROR, message="bad rule", meta={"x": 1}),
            snap(tk="d", code=None, message="no code given", meta={"x": 1}),
            snap(tk="e", code="MY_OWN_CODE", message="custom", meta={"x": 1}),  # type: ignore[arg-type]
            snap(tk="f", code="TYPE_MISMATCH", message="as text", meta={"x": 1}),  # type: ignore[arg-type]
        ]
    )
    assert sorted((k[5], k[4]) for k in t.full) == [
        ("a", "Flag 'f' not found"),
        ("b", "TYPE_MISMATCH"),
        ("c", "PARSE_ERROR"),
        ("d", "GENERAL"),  # a message with no code: only the fact of an error
        ("e", "GENERAL"),  # not one of OpenFeature's codes: free text, not sent
        ("f", "TYPE_MISMATCH"),
    ]


def test_an_error_without_metadata_is_sent_protected_whatever_the_default() -> None:
    """The SDK builds such details itself (client-side TYPE_MISMATCH, a provider that
    raised, PROVIDER_NOT_READY): nothing says what the flag's consent is, and its own
    success path may be protected, so the row is the protected one."""
    t = tiers(full_data_default=True)
    t.add_batch(
        [
            snap(code=ErrorCode.GENERAL, message="boom for alice@example.com", attrs={"a": 1}),
            snap(attrs={"a": 1}),  # the same flag's success with no metadata: the setting
        ]
    )
    keys = sorted(t.full, key=lambda k: str(k[4]))
    assert [(k[4], k[5], k[6]) for k in keys] == [
        ("GENERAL", hash_targeting_key("u1"), EMPTY),
        (None, "u1", b'{"a":1}'),
    ]


def test_allocation_from_each_metadata_spelling() -> None:
    t = tiers()
    t.add_batch(
        [
            snap(tk="1", meta={"allocationKey": "a1"}),
            snap(tk="2", meta={"allocation_key": "a2"}),
            snap(tk="3", meta={"dd.allocation.key": "a3"}),
            snap(tk="4", meta={"other": "x"}),
            snap(tk="5", meta={"allocationKey": "first", "allocation_key": "second"}),
            # Empty or non-string: identifies nothing, the next spelling is read.
            snap(tk="6", meta={"allocationKey": "", "allocation_key": "a6"}),
            snap(tk="7", meta={"allocation_key": ""}),
            snap(tk="8", meta={"allocation_key": 7, "dd.allocation.key": True}),
        ]
    )
    assert sorted((k[5], k[2]) for k in t.full) == [
        ("1", "a1"),
        ("2", "a2"),
        ("3", "a3"),
        ("4", None),
        ("5", "second"),  # allocation_key is read first
        ("6", "a6"),
        ("7", None),
        ("8", None),
    ]


def test_an_empty_variant_names_no_variant() -> None:
    t = tiers()
    t.add_batch([snap(variant=""), snap(variant=None)])
    assert list(t.full.items()) == [(("f", None, None, True, None, "u1", EMPTY), [2, T0, T0])]


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
    a, b = "observe_full_evaluation_data", "__dd_observe_full_evaluation_data"
    t.add_batch(
        [
            snap(tk=tk, attrs=attrs, meta={a: True}),
            snap(tk=tk, attrs=attrs, meta={b: True}),
            snap(tk=tk, attrs=attrs, meta={a: True, b: True}),
            snap(tk=tk, attrs=attrs, meta={a: "true"}),
            snap(tk=tk, attrs=attrs, meta={a: 1}),
            # Spellings that disagree: an explicit no in either wins (fails closed).
            snap(tk=tk, attrs=attrs, meta={a: True, b: False}),
            snap(tk=tk, attrs=attrs, meta={a: False, b: True}),
            snap(tk=tk, attrs=attrs, meta={a: True, b: "true"}),
            snap(tk=tk, attrs=attrs),  # no metadata: the setting (off here)
        ]
    )
    hashed = "sha256_b4698f9b6d186781fa8dc59e533578fa2d8379a46b1cf6db85cda6aa9c99e51b"
    assert sorted((k[5], k[6], v[0]) for k, v in t.full.items()) == [
        (tk, b'{"plan":"pro"}', 3),
        (hashed, EMPTY, 6),
    ]


def test_an_empty_targeting_key_is_sent_as_it_is_without_consent() -> None:
    t = tiers(full_data_default=False)
    t.add_batch([snap(tk=""), snap(tk=None)])
    assert sorted(str(k[5]) for k in t.full) == ["", "None"]


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
    one = BUCKET_OVERHEAD_BYTES + attrs_cost + sys.getsizeof("u0")
    # The flag key and variant every bucket shares are charged once.
    texts = sys.getsizeof("f") + sys.getsizeof("on") + 2 * TEXT_OVERHEAD_BYTES
    t = tiers(memory_budget_bytes=texts + 2 * one + one // 2)
    t.add_batch([snap(tk=f"u{i}", attrs={"a": "x" * 200}) for i in range(4)])
    assert len(t.full) == 2
    assert t.ledger.degraded == {"memory_budget": 2}
    assert t.bytes_held == texts + 2 * one


def test_every_text_a_bucket_keeps_is_charged_and_kept_once() -> None:
    """Flag key, variant, allocation and error text are charged like the context: each
    distinct text once per flush interval, and every bucket holds that one copy (a
    text over 1,024 characters is not sliced into a new string per bucket)."""
    flag, variant, alloc = "F" * 3000, "V" * 1500, "A" * 1200
    meta = {"allocation_key": alloc, **CONSENT}
    t = tiers()
    t.add_batch(
        [
            snap(flag=flag, variant=variant, meta=dict(meta), tk=f"u{i}", code=code, message=msg)
            for i in range(3)
            for code, msg in ((None, None), (ErrorCode.GENERAL, "E" * 2000))
        ]
    )
    assert len(t.full) == 6
    first, *others = list(t.full)
    for key in others:
        for i in (0, 1, 2):
            assert key[i] is first[i]  # one copy of the cut text, shared
    assert len(first[0]) == len(first[1]) == len(first[2]) == 1024
    cut = sys.getsizeof("F" * 1024) + TEXT_OVERHEAD_BYTES  # each cut text: 1,024 ASCII chars
    texts = 4 * cut  # flag, variant, allocation, error: once each
    buckets = sum(BUCKET_OVERHEAD_BYTES + sys.getsizeof(f"u{i}") for i in range(3)) * 2
    assert t.bytes_held == texts + buckets
    t.take()
    assert t.bytes_held == 0


def test_targeting_keys_are_charged_at_their_real_size() -> None:
    # 1,000 characters of a 4-byte code point take ~4,000 bytes, not 1,000.
    wide = "\U0001f600" * 1000
    t = tiers()
    t.add_batch([snap(tk=wide)])
    texts = sys.getsizeof("f") + sys.getsizeof("on") + 2 * TEXT_OVERHEAD_BYTES
    assert t.bytes_held == texts + BUCKET_OVERHEAD_BYTES + sys.getsizeof(wide)
    assert sys.getsizeof(wide) > 4000


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
                meta={"allocationKey": "a" * 5000, **CONSENT},
                tk=long_tk,
            )
        ]
    )
    ((_flag, variant, allocation, _, error, tk, _),) = t.full
    assert (len(variant), len(allocation), len(error)) == (1024, 1024, 1024)
    assert error == "e" * 1024
    assert tk == long_tk
