"""A Retry-After the transport cannot read (digits that are not a number) is no wait
at all: the 429 is retried after the backoff, and the flush succeeds."""

from __future__ import annotations

from typing import Any

from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval._common import parse_retry_after
from flageval._transport import RETRY_AFTER_CAP_S
from tests.intake import Behaviour, Intake


def test_retry_after_that_is_a_digit_but_not_a_number_is_unreadable() -> None:
    # str.isdigit() is true for superscripts, which float() and int() refuse.
    assert parse_retry_after("\u00b2", RETRY_AFTER_CAP_S) is None
    assert (
        parse_retry_after("\u0661\u0662", RETRY_AFTER_CAP_S) is None
    )  # Arabic-Indic "12": not HTTP
    assert parse_retry_after("12", RETRY_AFTER_CAP_S) == 12.0


def test_429_with_an_unreadable_retry_after_is_retried_not_a_failed_flush(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry(retry_backoff_s=0.01)
    api.set_provider_and_wait(
        InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})})
    )
    client = api.get_client()
    client.add_hooks([tel.hook])
    for _ in range(3):
        client.get_boolean_value("f", False)
    intake.script(Behaviour(status=429, headers={"Retry-After": "\u00b2"}))
    assert tel.flush(5.0) is True  # retried after its backoff, then accepted
    stats = tel.stats()
    assert intake.evaluations() == 3
    assert stats.evaluations_posted == 3 and stats.worker_errors == 0 and stats.conserved
