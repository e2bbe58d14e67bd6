"""What each answer of the intake means to the transport: which statuses are success,
which honour Retry-After (429 and 503 only), what is logged for a retry and for a
rejection, and the words for failures that never reached the intake or got no answer
(flageval/_http.py). Expected values by hand from flageval/_transport.py's docstring
and docs/wire-format.md, through the real intake of tests/intake.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from flageval._http import no_answer, not_sent
from tests.intake import Behaviour, Intake

MakeTelemetry = Callable[..., Telemetry]


def _client(tel: Telemetry) -> OpenFeatureClient:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def _evaluate(tel: Telemetry, n: int) -> None:
    client = _client(tel)
    for _ in range(n):
        client.get_boolean_value("f", False)


def test_the_words_for_failures_before_and_after_the_request_left() -> None:
    assert not_sent(TimeoutError(), 2.0) == ("connect_timeout", "no connection within 2 s")
    assert not_sent(OSError(), 2.0) == (
        "connect_error",
        "the connection failed before the request was sent",
    )
    assert no_answer(TimeoutError(), 0.25) == "no answer within 0.25 s"
    assert no_answer(aiohttp.ServerDisconnectedError(), 1.0) == (
        "the connection closed before an answer"
    )
    assert no_answer(aiohttp.ClientOSError(), 1.0) == "the connection was reset"
    assert no_answer(aiohttp.ClientPayloadError(), 1.0) == "an answer that could not be read"


@pytest.mark.parametrize("status", [201, 204, 299])
def test_every_2xx_is_delivered_once(
    make_telemetry: MakeTelemetry, intake: Intake, status: int
) -> None:
    intake.script(Behaviour(status=status))
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 6)
    assert tel.flush(5.0) is True
    st = tel.stats()
    assert [r.status for r in intake.received] == [status]
    assert st.evaluations_posted == 6 and st.post_attempts == 1 and st.dropped == {}


def test_a_300_is_a_rejection_not_a_success(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    intake.script(Behaviour(status=300, text="moved"))
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 4)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        assert tel.flush(5.0) is True  # done with it: rejected is final
    st = tel.stats()
    assert st.dropped == {"intake_rejected": 4} and st.evaluations_posted == 0
    assert st.post_attempts == 1
    (message,) = [m for m in caplog.messages if "intake_rejected" in m]
    assert message == (
        f"intake {tel.settings.endpoint().display}: it answered 300, a redirect (not "
        "followed), not retried; 4 evaluations counted as intake_rejected (it said: moved)"
    )


@pytest.mark.parametrize("status", [500, 502, 504])
def test_retry_after_is_not_honoured_on_other_5xx(
    make_telemetry: MakeTelemetry, intake: Intake, status: int
) -> None:
    """Retry-After is read on 429 and 503 only. A 500 saying "wait 120 s" is retried
    after the backoff (<= 10 ms here) within this 5 s flush: honouring it would not fit
    in the flush, and the body would still be waiting."""
    intake.script(Behaviour(status, {"Retry-After": "120"}))
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 5)
    assert tel.flush(5.0) is True
    first, second = intake.received[0], intake.received[1]
    assert (first.status, second.status) == (status, 200)
    assert tel.stats().evaluations_posted == 5


def test_a_retry_is_logged_with_what_the_intake_said(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    intake.script(Behaviour(status=503))
    tel = make_telemetry(retry_backoff_s=0.01)
    _evaluate(tel, 3)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        assert tel.flush(5.0) is True
    display = tel.settings.endpoint().display
    assert caplog.messages == [f"intake {display} unavailable (it answered 503); will retry"]


def test_a_rejection_snippet_never_carries_the_api_key(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    key = "k" * 32
    intake.script(Behaviour(status=403, text=f"bad key {key}!"))
    tel = make_telemetry(
        agentless=True, intake_url=intake.url + "/api/v2/flagevaluation", api_key=key
    )
    _evaluate(tel, 2)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        assert tel.flush(5.0) is True
    assert key not in caplog.text
    assert "(it said: bad key <redacted>!)" in caplog.text
    assert tel.stats().dropped == {"intake_rejected": 2}
