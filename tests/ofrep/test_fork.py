"""Fork safety, with a real os.fork() and with gunicorn --preload.

After fork the child serves the inherited evaluation at once, starts its own loop,
streams and polling on first use, and never uses the parent's connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from flageval.ofrep import OFREPProvider

from .helpers import start_with_stream
from .ofrep_server import OFREPTestServer, refetch, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _child(provider: OFREPProvider, report: int) -> None:
    """Runs in the forked child; writes one JSON line to ``report`` and exits."""
    result: dict[str, object] = {}
    try:
        _child_run(provider, report, result)
    except BaseException as exc:  # reported, never raised out of the child
        result["error"] = repr(exc)
    finally:
        try:
            os.write(report, (json.dumps(result) + "\n").encode())
        finally:
            os._exit(0)  # never back into pytest


def _child_run(provider: OFREPProvider, report: int, result: dict[str, object]) -> None:
    result["inherited"] = provider.resolve_integer_details("f", -1).value  # the first use
    # The parent changes the flag and pushes an event once we report we are up.
    os.write(report, b'{"up": true}\n')
    deadline = time.monotonic() + 5
    while provider.resolve_integer_details("f", -1).value != 2:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    result["changed"] = provider.resolve_integer_details("f", -1).value
    result["stats"] = provider.stats()
    provider.shutdown()


def _read_line(fd: int, timeout_s: float) -> dict[str, object]:
    buf = b""
    deadline = time.monotonic() + timeout_s
    while not buf.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the child did not report in time"
        chunk = os.read(fd, 65536)
        assert chunk, "the child closed its pipe"
        buf += chunk
    return json.loads(buf.split(b"\n")[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_serves_the_snapshot_and_restarts_its_own_streams(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider, _ = start_with_stream(server, make_provider)
    parent_streams = len(server.sse_requests())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child(provider, write_fd)
    os.close(write_fd)
    try:
        assert _read_line(read_fd, 10) == {"up": True}
        # The child's own stream: a second connection, on a port of its own.
        wait_until(lambda: len(server.sse_requests()) == parent_streams + 1, what="child stream")
        wait_until(lambda: server.sse_connected == 2, what="both streams open")
        server.set_flag("f", 2)
        server.push(refetch(etag="v2"))
        report = _read_line(read_fd, 10)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "error" not in report, report
    assert report["inherited"] == 1  # served at once, before any request of its own
    assert report["changed"] == 2  # its own stream and fetch saw the change
    stats = report["stats"]
    assert isinstance(stats, dict) and stats["fork_restarts"] == 1
    # The parent goes on untouched: its stream stays open and it sees the change too.
    wait_until(lambda: provider.resolve_integer_details("f", -1).value == 2, what="parent")
    assert provider.stats()["fork_restarts"] == 0
    peers = {r.headers.get("Host") for r in server.sse_requests()}
    assert peers == {f"127.0.0.1:{server._server.port}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def test_gunicorn_preload_workers_follow_changes_on_their_own(server: OFREPTestServer) -> None:
    pytest.importorskip("gunicorn")
    server.set_flag("f", 1)
    server.event_streams = [server.sse_here()]
    port = _free_port()
    env = {**os.environ, "OFREP_ENDPOINT": server.url, "PYTHONPATH": str(ROOT)}
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "-w",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "2",
            "tests.ofrep.gunicorn_app:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/"

        def answers() -> list[dict[str, object]]:
            seen = []
            for _ in range(6):
                with contextlib.suppress(OSError):
                    seen.append(_get(url))
            return seen

        wait_until(lambda: len({a["pid"] for a in answers()}) == 2, timeout_s=15, what="2 workers")
        assert {a["value"] for a in answers()} == {1}
        # The master's stream, then one per worker (each on its first request).
        wait_until(lambda: server.sse_connected >= 3, what="worker streams")
        server.set_flag("f", 2)
        server.push(refetch(etag="v2"))
        values: dict[object, object] = {}

        def both_changed() -> bool:
            for a in answers():
                values[a["pid"]] = a["value"]
            return len(values) == 2 and set(values.values()) == {2}

        wait_until(both_changed, timeout_s=10, what=f"both workers see the change {values}")
        assert all(a["restarts"] == 1 for a in answers())
    finally:
        master.terminate()
        try:
            master.wait(10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(5)
