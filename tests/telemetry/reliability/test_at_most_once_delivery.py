"""At-most-once delivery: no count is ever posted twice, whatever the intake does.

A body is sent again only when the intake said it did not take it (5xx, 429) or the
connection could not be made. When the intake may have taken it (the response was lost,
timed out, or was garbage) it is never resent: its evaluations are counted under
``delivery_unknown``. Every evaluation here has its own targeting key, so each one is
traceable to exactly one row.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext

from tests.intake import Behaviour, Intake
from tests.telemetry.reliability.helpers import (
    FLAG,
    assert_conserved,
    assert_rows_unique,
    client_with,
    record,
)

pytestmark = pytest.mark.reliability


def _evaluate(client: Any, tag: str, n: int) -> list[str]:
    keys = [f"{tag}-{i}" for i in range(n)]
    for key in keys:
        client.get_boolean_value(FLAG, False, EvaluationContext(key, {"t": tag}))
    return keys


def _keys_in(records: Any) -> Counter[str]:
    return Counter(row["targeting_key"] for r in records for row in r.json()["flagEvaluations"])


def test_lost_response_is_counted_unknown_present_once_never_resent(
    make_telemetry: Any, intake: Intake
) -> None:
    """What happens when the intake accepted a body but the response was lost.

    The intake reads the whole body (and would count it), then the connection drops
    before any status is sent. The client cannot tell whether the body was taken, so,
    at-most-once: it counts the body's evaluations under ``delivery_unknown`` and never
    sends them again. Result: the intake holds those counts exactly once; the client's
    books say "unknown" for them, not "delivered" and not "lost"; later flushes carry
    only later evaluations.
    """
    tel = make_telemetry(max_retries=3, retry_backoff_s=0.01)
    client = client_with(tel)
    lost = _evaluate(client, "lost", 40)
    intake.script(Behaviour(action="reset"))  # body read, connection cut, no answer
    assert tel.flush(10.0) is True  # done with it: nothing waits for a retry
    st = tel.stats()
    assert st.dropped == {"delivery_unknown": 40}
    assert st.pending == 0 and st.evaluations_posted == 0

    later = _evaluate(client, "later", 30)
    assert tel.flush(10.0) is True
    tel.shutdown(10.0)

    assert len(intake.received) == 2  # one request per flush: no resend
    first, second = intake.received
    assert first.complete and not first.answered
    assert sorted(_keys_in([first])) == sorted(lost)  # present once at the intake
    assert sorted(_keys_in([second])) == sorted(later)
    st = assert_conserved(tel, intake, 70)  # 70 == 30 accepted + 40 unknown
    assert st.dropped == {"delivery_unknown": 40}


def test_no_count_is_posted_twice_across_retries_and_ambiguous_failures(
    make_telemetry: Any, intake: Intake
) -> None:
    """Eight flushes, each meeting a different fault first; each evaluation is its own
    row. Retries resend identical bytes only after a refusal; no targeting key is ever
    in two bodies the intake could have counted."""
    # Answers come within the request timeout however loaded the machine, except the
    # one delayed past it on purpose.
    tel = make_telemetry(max_retries=2, retry_backoff_s=0.01, request_timeout_s=2.0)
    client = client_with(tel)
    faults = [
        [Behaviour(status=500)],  # refused once, then accepted
        [Behaviour(action="reset")],  # lost response: unknown
        [Behaviour(status=503), Behaviour(status=502)],  # refused twice, then accepted
        [Behaviour(action="garbage")],  # unknown
        [Behaviour(status=429, headers={"Retry-After": "0"})],  # refused, then accepted
        [Behaviour(delay_s=30.0)],  # answered after the client gave up: unknown
        [Behaviour(action="reset_mid_body")],  # the intake never had it: unknown too
        [],  # healthy
    ]
    made: list[str] = []
    for round_no, behaviours in enumerate(faults):
        intake.script(*behaviours)
        made += _evaluate(client, f"r{round_no}", 25)
        tel.flush(10.0)
    tel.shutdown(10.0)
    assert intake.wait_for(lambda: len(intake.received) == 12)

    # What the intake could have counted: whole bodies it took with a 2xx status,
    # answered or not. No key is in two of them, nor twice in one.
    counted = [r for r in intake.received if r.complete and 200 <= r.status < 300]
    per_key = _keys_in(counted)
    assert max(per_key.values()) == 1
    # Resends happened only after a refusal, with the very same bytes.
    by_body = Counter(r.body for r in intake.received if r.complete)
    for body, n in by_body.items():
        if n > 1:
            statuses = [r.status for r in intake.received if r.body == body]
            assert statuses[:-1] and all(s >= 429 for s in statuses[:-1]), statuses
            assert statuses[-1] == 200
    assert_rows_unique(intake)
    st = assert_conserved(tel, intake, len(made))
    # Rounds 1, 3, 5 and 6 (lost response, garbage, late answer, cut body) are unknown.
    assert st.dropped == {"delivery_unknown": 4 * 25}
    accepted_keys = set(_keys_in(intake.accepted()))
    assert accepted_keys == {k for k in made if k.split("-")[0] in {"r0", "r2", "r4", "r7"}}
    record(
        "at_most_once_mixed",
        made=len(made),
        delivered=len(accepted_keys),
        dropped=dict(st.dropped),
        requests=len(intake.received),
    )
