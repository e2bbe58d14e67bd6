"""Reliability suite: every test here carries ``@pytest.mark.reliability`` (set per
module with ``pytestmark``); this file prints the figures the tests measured."""

from __future__ import annotations

from typing import Any

from tests.telemetry.reliability.helpers import FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("flageval reliability figures")
    for name, figures in sorted(FIGURES.items()):
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{name}: {shown}")
