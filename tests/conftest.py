"""Shared fixtures: a real intake on 127.0.0.1, a clean OpenFeature API per test; the
reliability suite's figures printed at the end of the run."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

import flageval._default as default_module
from flageval._handoff import Handoff
from tests.intake import Intake


@pytest.fixture(autouse=True)
def _clean_openfeature() -> Iterator[None]:
    yield
    api.clear_hooks()
    api.clear_providers()
    api.set_evaluation_context(EvaluationContext())


@pytest.fixture(autouse=True)
def _no_default_telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Tests never share the process-wide default pipeline.
    monkeypatch.setattr(default_module, "_default", None)
    yield
    tel = default_module._default
    if tel is not None:
        tel.shutdown(2.0)


@pytest.fixture
def intake() -> Iterator[Intake]:
    server = Intake().start()
    yield server
    server.stop()
    assert not server.schema_errors, server.schema_errors[:3]


@pytest.fixture
def make_telemetry(intake: Intake) -> Iterator[object]:
    """Build Telemetry pipelines pointed at the test intake; shut them all down after."""
    from flageval import Telemetry

    made: list[Telemetry] = []

    def make(**kwargs: object) -> Telemetry:
        kwargs.setdefault("agent_url", intake.url)
        kwargs.setdefault("service", "flageval-tests")
        kwargs.setdefault("flush_interval_s", 60.0)
        kwargs.setdefault("enabled", True)
        tel = Telemetry(**kwargs)  # type: ignore[arg-type]
        made.append(tel)
        return tel

    before = threading.active_count()
    yield make
    for tel in made:
        tel.shutdown(5.0)
    assert threading.active_count() <= before + 1  # the intake thread at most


@pytest.fixture
def drained(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handoff], threading.Event]:
    """``drained(handoff)``: an event set once a worker has taken what that hand-off
    held (an empty take included). A test that needs evaluations to wait in the hand-off
    until a flush makes them after it, with a long drain interval, instead of sleeping
    through the worker's start. Per hand-off: other pipelines alive in the process
    (another test suite's) drain theirs too."""
    events: dict[int, threading.Event] = {}
    real = Handoff.drain

    def of(handoff: Handoff) -> threading.Event:
        return events.setdefault(id(handoff), threading.Event())

    def drain(self: Handoff, limit: int) -> Any:
        taken = real(self, limit)
        of(self).set()
        return taken

    monkeypatch.setattr(Handoff, "drain", drain)
    return of


#: Figures the reliability tests measured, from their reports (whichever process ran them).
_FIGURES: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        for name, figures in report.user_properties:
            if name == "flageval_figures":
                _FIGURES.update(figures)  # type: ignore[arg-type]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("flageval reliability figures")
    for name, figures in sorted(_FIGURES.items()):
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{name}: {shown}")
