"""Every provider counter is documented in docs/ofrep.md with its own sentence, and
``stats()`` returns each under its documented key, as a copy any thread may take."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

from openfeature.evaluation_context import EvaluationContext

from flageval.ofrep import OFREPProvider
from flageval.ofrep._diagnostics import Counter, new_stats, snapshot

from .ofrep_server import OFREPTestServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ofrep.md"


def documented() -> list[tuple[str, str]]:
    lines = DOCS.read_text().splitlines()
    start = lines.index("| counter | counts |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        key, sentence = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append((re.fullmatch(r"`(\w+)`", key).group(1), sentence))  # type: ignore[union-attr]
    return rows


def test_the_counters_table_is_the_counters_own_words() -> None:
    assert documented() == [(counter.value, counter.doc) for counter in Counter]


def test_stats_has_every_documented_key_and_a_copy_is_safe_from_any_thread(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider = make_provider(server.url, change_detection="none")
    provider.initialize(EvaluationContext())
    keys = [key for key, _ in documented()]
    assert list(provider.stats()) == keys
    # Many threads copying while the loop counts: every copy whole, never an error.
    stats = new_stats()
    stop = threading.Event()
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            while not stop.is_set():
                assert list(snapshot(stats)) == keys
        except BaseException as exc:
            errors.append(exc)

    copiers = [threading.Thread(target=copy) for _ in range(4)]
    for thread in copiers:
        thread.start()
    for _ in range(20_000):
        for counter in (Counter.FETCHES, Counter.SSE_EVENTS, Counter.POLLS):
            stats[counter] += 1
    stop.set()
    for thread in copiers:
        thread.join(10)
    assert errors == []
    assert snapshot(stats)["fetches"] == 20_000
