"""A persisted file that cannot be read never stops the provider: any read failure, of
any kind, is counted and is a miss; only a regular file is opened (a FIFO would block
the open); a read that hangs is given up at its deadline; initialize() falls back to
the network within its timeout and leaves no thread behind."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import Reason

from flageval.ofrep import OFREPProvider

from .helpers import entry_file
from .ofrep_server import OFREPTestServer, wait_until

ANN = EvaluationContext("ann")
CACHE_THREAD = "flageval-ofrep-cache"


def cache_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == CACHE_THREAD and t.is_alive()]


def first_life(server: OFREPTestServer, make: Callable[..., OFREPProvider], path: Path) -> Path:
    provider = make(server.url, cache_dir=path, change_detection="none", context=ANN)
    provider.initialize(ANN)
    wait_until(lambda: provider.stats()["cache_writes"] == 1, what="entry written")
    provider.shutdown()
    return entry_file(path)


def restart(
    server: OFREPTestServer, make: Callable[..., OFREPProvider], path: Path
) -> OFREPProvider:
    """A new life with a 1 s request timeout: initialize() waits at most 6 s."""
    provider = make(
        server.url, cache_dir=path, change_detection="none", context=ANN, timeout_ms=1000
    )
    provider.initialize(ANN)
    return provider


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_deeply_nested_file_is_a_counted_miss_and_is_replaced(
    depth: int,
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.set_flag("f", 1)
    path = first_life(server, make_provider, tmp_path)
    doc = json.loads(path.read_text())
    doc["payload"]["flags"] = [{"key": "f", "value": "HERE"}]
    deep = "[" * depth + "1" + "]" * depth  # valid JSON, nested ``depth`` levels
    path.write_text(json.dumps(doc).replace('"HERE"', deep))
    server.set_flag("f", 2)
    provider = restart(server, make_provider, tmp_path)  # no exception: the network's
    assert provider.resolve_integer_details("f", 0).value == 2
    assert provider.stats()["cache_read_failed"] == 1
    wait_until(lambda: provider.stats()["cache_writes"] == 1, what="entry replaced")
    provider.shutdown()
    server.hold_fetches()  # the refresh waits: what is served is the entry
    again = restart(server, make_provider, tmp_path)
    details = again.resolve_integer_details("f", 0)
    assert (details.value, details.reason) == (2, Reason.CACHED)  # readable again
    server.release_fetches()


@pytest.fixture
def unblock_fifo(tmp_path: Path) -> Iterator[list[Path]]:
    """FIFOs made by a test; any reader still blocked on one is let go at the end."""
    fifos: list[Path] = []
    yield fifos
    for fifo in fifos:
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO when no reader waits
            os.close(fd)


def test_a_fifo_at_the_cache_path_is_not_opened_and_initialize_uses_the_network(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    unblock_fifo: list[Path],
) -> None:
    server.set_flag("f", 1)
    path = first_life(server, make_provider, tmp_path)
    path.unlink()
    os.mkfifo(path, 0o600)
    unblock_fifo.append(path)
    provider = restart(server, make_provider, tmp_path)
    assert provider.resolve_integer_details("f", 0).value == 1
    assert provider.stats()["cache_read_failed"] == 1
    wait_until(lambda: cache_threads() == [], what="no cache thread left")


def test_a_read_that_hangs_is_given_up_at_its_deadline(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A hung network home directory cannot be made here: the read itself is held.
    from flageval.ofrep._persist import Store

    server.set_flag("f", 1)
    first_life(server, make_provider, tmp_path)
    released = threading.Event()

    def hung_read(self: Store) -> None:
        released.wait(30)

    monkeypatch.setattr(Store, "read", hung_read)
    try:
        provider = restart(server, make_provider, tmp_path)
        assert provider.resolve_integer_details("f", 0).value == 1
        assert provider.stats()["cache_read_failed"] == 1
    finally:
        released.set()
    wait_until(lambda: cache_threads() == [], what="the held read's thread ended")
