"""Log lines read once: no "flageval:" inside a record of the "flageval" logger, and
what happened to a body said in words, not as an exception's class name."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from tests.intake import Behaviour, Intake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _one_evaluation_flushed(tel: Any) -> None:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client("log-wording")
    client.add_hooks([tel.hook])
    client.get_boolean_value("f", False)
    tel.flush(10.0)


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (Behaviour(status=500), "unavailable (it answered 500); will retry"),
        (
            Behaviour(status=400),
            ": it answered 400, not retried; 1 evaluations counted as intake_rejected",
        ),
        (
            Behaviour(status=307, headers={"Location": "http://127.0.0.1:1/"}),
            ": it answered 307, a redirect (not followed), not retried;",
        ),
        (
            Behaviour(action="hang"),
            ": no answer within 0.3 s; 1 evaluations counted as delivery_unknown",
        ),
        (
            Behaviour(action="reset"),
            ": the connection closed before an answer; 1 evaluations counted as delivery_unknown",
        ),
    ],
    ids=["500", "400", "307", "hang", "reset"],
)
def test_intake_warnings_say_what_happened_in_words(
    make_telemetry: Any,
    intake: Intake,
    caplog: pytest.LogCaptureFixture,
    behaviour: Behaviour,
    expected: str,
) -> None:
    intake.script(behaviour)
    # Only the hanging intake is meant to run out of time; every other answer gets a
    # timeout a loaded machine cannot reach.
    timeout = 0.3 if behaviour.action == "hang" else 10.0
    tel = make_telemetry(request_timeout_s=timeout, max_retries=0)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        _one_evaluation_flushed(tel)
    messages = [r.getMessage() for r in caplog.records if r.name == "flageval"]
    assert any(expected in m and m.startswith("intake http://127.0.0.1:") for m in messages), (
        messages
    )
    assert not [m for m in messages if "flageval:" in m or "status " in m or "Error" in m]


def test_refused_connection_reads_as_connection_refused(
    make_telemetry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tel = make_telemetry(agent_url=f"http://127.0.0.1:{_free_port()}", max_retries=0)
    with caplog.at_level(logging.WARNING, logger="flageval"):
        _one_evaluation_flushed(tel)
        tel.shutdown(5.0)
    messages = [r.getMessage() for r in caplog.records if r.name == "flageval"]
    assert any(m.endswith("unavailable (connection refused); will retry") for m in messages), (
        messages
    )
    assert any(
        m.startswith("shutdown could not deliver 1 evaluations to http://") for m in messages
    )
    assert not [m for m in messages if "flageval:" in m or "connect_error" in m]
    assert tel.stats().dropped == {"intake_unavailable": 1}
