"""A flush that fails to pack its rows keeps the books: the tiers were already taken,
so their evaluations are counted as worker_error, and the worker goes on."""

from __future__ import annotations

from typing import Any

import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval._worker as worker_module
from tests.intake import Intake


def test_a_pack_failure_counts_the_flush_as_worker_error(
    make_telemetry: Any, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    tel = make_telemetry()
    api.set_provider_and_wait(
        InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})})
    )
    client = api.get_client()
    client.add_hooks([tel.hook])
    for _ in range(6):
        client.get_boolean_value("f", False)
    real_pack = worker_module.pack

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError  # stands for any failure while encoding rows

    monkeypatch.setattr(worker_module, "pack", broken)
    tel.flush(5.0)
    stats = tel.stats()
    assert stats.dropped == {"worker_error": 6} and stats.pending == 0, stats
    assert stats.conserved and stats.worker_errors == 1
    monkeypatch.setattr(worker_module, "pack", real_pack)
    for _ in range(2):
        client.get_boolean_value("f", False)  # later evaluations still flow
    assert tel.flush(5.0) is True
    assert intake.evaluations() == 2
