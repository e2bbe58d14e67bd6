"""The tiers where a value cannot be read or a bound is reached: a targeting key that
cannot be made text, a context past the entry budget or unreadable, interrupts raised by
values, repeats of degraded buckets, the budget's text charge, hashing without consent,
and what take() hands over. Snapshots in the hook's layout (see
tests/telemetry/aggregation/test_tier_buckets.py); expected values by hand from
flageval/_tiers.py's docstring, flageval/_losses.py and docs/wire-format.md."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from flageval._fields import MIN_EPOCH_MS, error_text, hash_targeting_key, text
from flageval._losses import Ledger
from flageval._prune import MAX_ENTRIES
from flageval._tiers import BUCKET_OVERHEAD_BYTES, TEXT_OVERHEAD_BYTES, Tiers, merge_bucket
from tests.telemetry.aggregation.test_tier_buckets import T0, snap, tiers


class BadKey:
    """A targeting key whose str() raises ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __str__(self) -> str:
        raise self.exc


class BadItems(Mapping[str, Any]):
    """A context whose items cannot be read."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key: str) -> Any:
        raise LookupError(key)

    def __iter__(self) -> Iterator[str]:
        raise OSError("unreadable")


def _degraded(t: Tiers) -> dict[tuple[Any, ...], list[int]]:
    return dict(t.degraded)


def test_an_unprintable_targeting_key_is_degraded_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    t = tiers(ledger=ledger)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        t.add_batch(
            [
                snap(tk=BadKey(ValueError("x")), t_ms=T0 + 5),  # type: ignore[arg-type]
                snap(variant=None, tk=BadKey(ValueError("x")), t_ms=T0 + 7),  # type: ignore[arg-type]
                snap(tk=BadKey(ValueError("y")), t_ms=T0 + 2),  # type: ignore[arg-type]
                snap(tk="later"),  # the batch goes on after them
            ]
        )
    # The degraded key: flag, variant, allocation, runtime_default_used, error.
    assert _degraded(t) == {
        ("f", "on", None, False, None): [2, T0 + 2, T0 + 5],
        ("f", None, None, True, None): [1, T0 + 7, T0 + 7],
    }
    assert [k[5] for k in t.full] == ["later"]
    assert ledger.degraded == {"targeting_key_error": 3} and not ledger.dropped
    assert t.take()[2] == 4  # every evaluation is held
    assert caplog.messages[0] == (
        "a targeting key could not be made text (ValueError); the evaluation is posted "
        "without targeting key and context (targeting_key_error)"
    )


def test_a_context_past_the_entry_budget_is_degraded_as_context_budget() -> None:
    ledger = Ledger()
    t = tiers(ledger=ledger)
    wide = {f"k{i:05d}": i for i in range(MAX_ENTRIES + 1)}
    exact = {f"k{i:05d}": i for i in range(MAX_ENTRIES)}
    t.add_batch(
        [
            snap(attrs=wide, t_ms=T0 + 4),
            snap(variant=None, attrs=wide, t_ms=T0 + 1),
            snap(attrs=wide, t_ms=T0 + 9),
            snap(attrs=exact),  # exactly the budget: pruned, kept in the full tier
        ]
    )
    assert _degraded(t) == {
        ("f", "on", None, False, None): [2, T0 + 4, T0 + 9],
        ("f", None, None, True, None): [1, T0 + 1, T0 + 1],
    }
    ((key, bucket),) = t.full.items()
    assert key[5] == "u1" and key[6].startswith(b'{"k00000":0,') and bucket == [1, T0, T0]
    assert ledger.degraded == {"context_budget": 3}
    assert t.take()[2] == 4


def test_an_unreadable_context_is_degraded_and_counted_as_a_context_error() -> None:
    ledger = Ledger()
    t = tiers(ledger=ledger)
    t.add_batch(
        [
            snap(attrs=BadItems(), t_ms=T0 + 3),  # type: ignore[arg-type]
            snap(attrs=BadItems(), t_ms=T0 + 1),  # type: ignore[arg-type]
            snap(variant=None, attrs=BadItems(), t_ms=T0 + 2),  # type: ignore[arg-type]
            snap(tk="later"),
        ]
    )
    assert _degraded(t) == {
        ("f", "on", None, False, None): [2, T0 + 1, T0 + 3],
        ("f", None, None, True, None): [1, T0 + 2, T0 + 2],
    }
    assert t.context_errors == 3
    assert ledger.degraded == {"context_error": 3}
    assert [k[5] for k in t.full] == ["later"]
    assert t.take()[2] == 4


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_raised_by_a_targeting_key_is_kept_for_the_worker(
    exc_type: type[BaseException],
) -> None:
    t = tiers()
    first, second = exc_type(), exc_type()
    t.add_batch([snap(tk=BadKey(first)), snap(tk=BadKey(second))])  # type: ignore[arg-type]
    assert t.interrupt is first  # the first one, not overwritten by the next
    t2 = tiers()
    t2.add_batch([snap(tk=BadKey(ValueError()))])  # type: ignore[arg-type]
    assert t2.interrupt is None  # an ordinary error is no interrupt


def test_an_unreadable_flag_is_dropped_and_logged_with_its_error_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BadFlag:
        def __str__(self) -> str:
            raise KeyboardInterrupt

    ledger = Ledger()
    t = tiers(ledger=ledger)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        t.add_batch([snap(flag=BadFlag()), snap()])  # type: ignore[arg-type]
    assert ledger.dropped == {"unreadable_value": 1}
    assert isinstance(t.interrupt, KeyboardInterrupt)
    assert caplog.messages == [
        "an evaluation's flag key, variant, error or metadata could not be read "
        "(KeyboardInterrupt); it is counted as unreadable_value"
    ]
    assert t.received == 2 and t.take()[2] == 1


def test_an_interrupt_raised_by_a_context_is_kept_for_the_worker() -> None:
    class Interrupting(BadItems):
        def __iter__(self) -> Iterator[str]:
            raise KeyboardInterrupt

    t = tiers()
    t.add_batch([snap(attrs=Interrupting())])  # type: ignore[arg-type]
    assert isinstance(t.interrupt, KeyboardInterrupt) and t.context_errors == 1


def test_merging_a_whole_bucket_adds_counts_and_keeps_min_first_max_last() -> None:
    tier: dict[Any, list[int]] = {}
    key = ("f", "on", None, False, None)
    merge_bucket(tier, key, 2, T0 + 5, T0 + 9)
    merge_bucket(tier, key, 3, T0 + 1, T0 + 3)  # earlier first, earlier last
    merge_bucket(tier, key, 1, T0 + 6, T0 + 12)  # later first, later last
    assert tier == {key: [6, T0 + 1, T0 + 12]}


def test_received_adds_up_over_batches() -> None:
    t = tiers()
    t.add_batch([snap(), snap()])
    t.add_batch([snap(tk="u2")])
    assert t.received == 3


def test_times_are_whole_milliseconds_and_repeats_keep_min_and_max() -> None:
    t = tiers()
    ns = T0 * 1_000_000
    t.add_batch(
        [
            (*snap()[:7], ns + 999_999, None),  # 0.999999 ms past T0: still T0
            (*snap()[:7], ns + 5_000_000, None),
            (*snap()[:7], ns + 5_000_000, None),  # equal to the last: nothing moves
            (*snap()[:7], ns, None),
        ]
    )
    ((bucket),) = t.full.values()
    assert bucket == [4, T0, T0 + 5] and all(type(v) is int for v in bucket)


def test_a_degraded_bucket_keeps_min_first_and_max_last() -> None:
    t = tiers(max_full_buckets=0)  # every evaluation degrades (cardinality_cap)
    # T0 + 3, between first and last, moves neither.
    times = [T0 + 5, T0 + 1, T0 + 9, T0 + 9, T0 + 1, T0 + 3]
    t.add_batch([snap(tk=f"u{i}", t_ms=ms) for i, ms in enumerate(times)])
    assert _degraded(t) == {("f", "on", None, False, None): [6, T0 + 1, T0 + 9]}


def test_surrogates_in_flag_variant_and_targeting_key_are_replaced() -> None:
    t = tiers()
    t.add_batch([snap(flag="f\ud800", variant="v\udc00", tk="u\ud800")])
    ((key),) = t.full
    assert key[:2] == ("f\ufffd", "v\ufffd") and key[5] == "u\ufffd"


def test_a_missing_flag_key_prints_as_an_empty_one() -> None:
    t = tiers()
    t.add_batch([snap(flag=None)])  # type: ignore[arg-type]
    assert [k[0] for k in t.full] == [""]


def test_without_consent_the_targeting_key_is_hashed_every_time() -> None:
    t = tiers(full_data_default=False)
    long_key = "k" * 300  # over the hash cache's 256 characters: hashed again
    t.add_batch([snap(tk="jane"), snap(tk="jane"), snap(tk=long_key), snap(tk=long_key)])
    counts = {k[5]: v[0] for k, v in t.full.items()}
    assert counts == {hash_targeting_key("jane"): 2, hash_targeting_key(long_key): 2}
    # The test vector of docs/wire-format.md, through the tiers.
    t.add_batch([snap(tk="jane.doe@datadoghq.com")])
    assert "sha256_b4698f9b6d186781fa8dc59e533578fa2d8379a46b1cf6db85cda6aa9c99e51b" in {
        k[5] for k in t.full
    }


def test_the_budget_charges_each_new_text_once_and_refuses_past_it() -> None:
    # flag "f", variant "enabled", allocation "a1": charged once each when first kept
    # (texts of different lengths, so no one of them can stand for another).
    texts = sum(sys.getsizeof(s) + TEXT_OVERHEAD_BYTES for s in ("f", "enabled", "a1"))
    tk_cost = sys.getsizeof("u1")
    one = BUCKET_OVERHEAD_BYTES + tk_cost + texts
    meta = {"allocationKey": "a1"}
    t = tiers(memory_budget_bytes=one)  # exactly one bucket with its texts
    t.add_batch([snap(variant="enabled", meta=meta), snap(variant="enabled", meta=meta, tk="u2")])
    assert t.bytes_held == one
    assert [k[5] for k in t.full] == ["u1"]
    assert t.ledger.degraded == {"memory_budget": 1}
    # A byte less and not even the first fits.
    t2 = tiers(memory_budget_bytes=one - 1)
    t2.add_batch([snap(variant="enabled", meta=meta)])
    assert not t2.full and t2.ledger.degraded == {"memory_budget": 1}
    # No targeting key: nothing charged for it (not even a byte).
    t3 = tiers(memory_budget_bytes=one - tk_cost)
    t3.add_batch([snap(variant="enabled", meta=meta, tk=None, attrs={"a": 1})])
    assert len(t3.full) == 0  # the context's 7 bytes do not fit
    t4 = tiers(memory_budget_bytes=one - tk_cost + len(b'{"a":1}'))
    t4.add_batch([snap(variant="enabled", meta=meta, tk=None, attrs={"a": 1})])
    assert len(t4.full) == 1 and t4.bytes_held == one - tk_cost + 7


def test_take_moves_keyless_contextless_full_buckets_and_resets_everything() -> None:
    t = tiers(full_data_default=True)
    t.add_batch([snap(tk=None), snap(tk=None, attrs={"a": 1}), snap(tk="u1")])
    full, degraded, held = t.take()
    # Only the row with neither targeting key nor context prints like a degraded row.
    assert degraded == {("f", "on", None, False, None): [1, T0, T0]}
    assert {(k[5], k[6]) for k in full} == {(None, b'{"a":1}'), ("u1", b"")}
    assert held == 3
    assert (t.full, t.degraded, t.bytes_held, t.evaluations_held) == ({}, {}, 0, 0)
    # The next interval starts clean: per-flag counts and the kept texts too.
    t.add_batch([snap(tk="u9")])
    assert len(t.full) == 1 and t.bytes_held > 0


# -- fields.py: row texts, stamps, errors, the hash ---------------------------------------


class Shout(str):
    def __str__(self) -> str:
        return "not-this"


class GivesSubclass:
    def __str__(self) -> str:
        return Shout("odd")


def test_row_texts_are_plain_str_whatever_the_value_gave() -> None:
    for value, expected in ((Shout("x"), "x"), (GivesSubclass(), "odd"), (7, "7")):
        out = text(value)
        assert out == expected and type(out) is str
    assert text("a\ud800b") == "a\ufffdb"


def test_provider_stamps_are_used_from_the_minimum_to_the_year_3000_inclusive() -> None:
    year_3000 = 32_503_680_000_000  # 3000-01-01T00:00:00Z in ms
    for stamp, used in (
        (MIN_EPOCH_MS, True),  # the intake's schema: first_evaluation >= 1759276800000
        (MIN_EPOCH_MS - 1, False),
        (year_3000, True),
        (year_3000 + 1, False),
    ):
        t = tiers()
        t.add_batch([snap(meta={"dd.eval.timestamp_ms": stamp})])
        ((bucket),) = t.full.values()
        assert bucket[1] == (stamp if used else T0), stamp


def test_a_consented_message_is_sent_as_its_own_text_even_empty() -> None:
    class Blank:
        def __str__(self) -> str:
            return ""

    assert error_text("GENERAL", Blank(), consented=True) == ""
    assert error_text("GENERAL", "boom", consented=True) == "boom"


def test_the_hash_of_a_key_with_a_lone_surrogate_hashes_its_code_point_bytes() -> None:
    # U+D800 passed through as UTF-8 bytes ED A0 80 (never an error: a key is a key).
    expected = "sha256_" + hashlib.sha256(b"a\xed\xa0\x80").hexdigest()
    assert hash_targeting_key("a\ud800") == expected
