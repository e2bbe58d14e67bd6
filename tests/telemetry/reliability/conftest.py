"""Reliability suite: every test here carries ``@pytest.mark.reliability`` (set per
module with ``pytestmark``). The figures a test measured (``helpers.record``) travel
with its report, so that tests/conftest.py prints them at the end of the run, also
when the tests ran in other processes (pytest-xdist)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.telemetry.reliability.helpers import FIGURES


@pytest.fixture(autouse=True)
def _figures_travel_with_the_report(request: pytest.FixtureRequest) -> Iterator[None]:
    FIGURES.clear()
    yield
    if FIGURES:
        request.node.user_properties.append(("flageval_figures", dict(FIGURES)))
        FIGURES.clear()
