"""Switching the export: on by keyword or variable; OpenTelemetry only, never asking an
agent anything; neither export is an error; the killswitch turns both off; nothing of
OpenTelemetry imported unless the export is on; without its API, a clear error."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Settings, Telemetry
from tests.telemetry.otel.meter import install, prefix, sums

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    """A listening socket standing for the agent: any connection to it stays queued."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        server.setblocking(False)
        yield server


def _never_contacted(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):  # nothing ever connected
        server.accept()


def _evaluate(tel: Telemetry, p: str, n: int) -> None:
    api.set_provider_and_wait(InMemoryProvider({f"{p}f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    for _ in range(n):
        assert client.get_boolean_value(f"{p}f", False)


def test_opentelemetry_only_never_contacts_the_agent(agent: socket.socket) -> None:
    reader, _ = install()
    p = prefix("only")
    port = agent.getsockname()[1]
    tel = Telemetry(otel_metrics=True, datadog=False, agent_url=f"http://127.0.0.1:{port}")
    try:
        _evaluate(tel, p, 7)
        assert tel.flush(10.0)
    finally:
        tel.shutdown(5.0)
    st = tel.stats()
    assert repr(tel) == "<Telemetry stopped OpenTelemetry only>"
    assert st.exports == ("opentelemetry",) and st.evaluations_posted == st.post_attempts == 0
    assert st.otel_recorded == sum(sums(reader, p).values()) == 7 and st.conserved
    _never_contacted(agent)


def test_the_variables_turn_it_on_and_datadog_off(
    agent: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, _ = install()
    p = prefix("env")
    monkeypatch.setenv("FLAGEVAL_OTEL_METRICS", "true")
    monkeypatch.setenv("FLAGEVAL_DATADOG", "false")
    monkeypatch.setenv("DD_TRACE_AGENT_URL", f"http://127.0.0.1:{agent.getsockname()[1]}")
    tel = Telemetry()
    try:
        _evaluate(tel, p, 3)
        assert tel.flush(10.0)
    finally:
        tel.shutdown(5.0)
    assert tel.stats().exports == ("opentelemetry",)
    assert sum(sums(reader, p).values()) == 3
    _never_contacted(agent)


def test_an_unusable_agent_address_does_not_stop_an_opentelemetry_only_pipeline() -> None:
    s = Settings.from_env(
        {"FLAGEVAL_OTEL_METRICS": "1", "FLAGEVAL_DATADOG": "off", "DD_AGENT_HOST": "a b"}
    )
    assert s.enabled and s.otel_metrics and not s.datadog
    off = Settings.from_env({"DD_AGENT_HOST": "a b"})  # with Datadog's export: no default
    assert not off.enabled


def test_neither_export_is_an_error(caplog: Any) -> None:
    with pytest.raises(ValueError, match="datadog=False needs otel_metrics=True"):
        Telemetry(datadog=False)
    with caplog.at_level(logging.ERROR, logger="flageval"):
        s = Settings.from_env({"FLAGEVAL_DATADOG": "false", "FLAGEVAL_OTEL_METRICS": "false"})
    assert not s.enabled
    assert "FLAGEVAL_DATADOG='false' leaves no export" in caplog.text
    assert "evaluation telemetry is off" in caplog.text


@pytest.mark.parametrize("how", ["keyword", "variable"])
def test_the_killswitch_turns_both_off(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reader, _ = install()
    p = prefix(f"killswitch-{how}")
    monkeypatch.setenv("FLAGEVAL_OTEL_METRICS", "true")
    if how == "keyword":
        tel = Telemetry(enabled=False, otel_metrics=True, datadog=False)
    else:
        monkeypatch.setenv("DD_FLAGGING_EVALUATION_COUNTS_ENABLED", "false")
        tel = Telemetry()
    _evaluate(tel, p, 5)
    assert tel.handoff is None and not tel.enabled and tel._worker is None
    st = tel.stats()
    assert st.evaluations == st.otel_recorded == 0 and st.exports == ()
    assert tel.flush(1.0)
    assert sums(reader, p) == {}


_OFF = """
import sys
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
import flageval

api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
for kw in ({}, {"enabled": False, "otel_metrics": True}):
    tel = flageval.Telemetry(agent_url="http://127.0.0.1:9", flush_interval_s=60, **kw)
    client = api.get_client()
    client.add_hooks([tel.hook])
    client.get_boolean_value("f", False)
    tel.flush(0.5)
    tel.shutdown(0.5)
    print(tel.stats().evaluations)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def test_with_the_export_off_opentelemetry_is_never_imported() -> None:
    """A worker that drained and flushed, and a pipeline switched off that was asked
    for the export: neither imports anything of OpenTelemetry."""
    out = subprocess.run(
        [sys.executable, "-c", _OFF],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["1", "0", "[]"], out.stdout


_NO_API = """
import logging, flageval
logging.basicConfig(level=logging.ERROR)
try:
    flageval.Telemetry(otel_metrics=True)
except ValueError as exc:
    print("ValueError:", exc)
tel = flageval.Telemetry(agent_url="http://127.0.0.1:9")
tel.start()
print(tel.settings.otel_metrics, tel.stats().exports)
tel.shutdown(5)
"""


def test_without_the_api_a_keyword_raises_and_the_variable_is_logged(tmp_path: Path) -> None:
    """An ``opentelemetry`` package without ``opentelemetry.metrics`` first on the path
    stands for an environment where ``flageval[otel]`` was not installed."""
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("")
    out = subprocess.run(
        [sys.executable, "-c", _NO_API],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "FLAGEVAL_OTEL_METRICS": "true"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "ValueError: otel_metrics=True needs opentelemetry-api (pip install 'flageval[otel]')",
        "False ('datadog',)",
    ]
    assert (
        "FLAGEVAL_OTEL_METRICS=true needs opentelemetry-api (pip install 'flageval[otel]'); "
        "the OpenTelemetry export is off"
    ) in out.stderr
