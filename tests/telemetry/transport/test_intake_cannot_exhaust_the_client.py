"""The intake cannot exhaust the client: a 1 GiB answer is not read (RSS checked in a
subprocess), and a connect that stalls (a full accept backlog; a TLS handshake that
never completes) is retried like a refused connection, never counted as a delivery
that might have happened. Every server is real, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from tests.intake import Intake

ROOT = Path(__file__).resolve().parents[3]

#: Answers every request (GET /info too) with 200 and a 1 GiB body made as it is sent;
#: writes to the file named by argv[1] how many bytes of answers went out, as they go.
BIG_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    SIZE, CHUNK = 1 << 30, b"0" * 65536
    sent = 0

    def tell():
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(sent))
        import os
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])

    async def handle(reader, writer):
        global sent
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                             b"Content-Length: %d\\r\\n\\r\\n" % SIZE)
                for i in range(SIZE // len(CHUNK)):
                    writer.write(CHUNK)
                    await writer.drain()
                    sent += len(CHUNK)
                    if i % 16 == 0:
                        tell()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            tell()
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
    """
)

#: Posts 100 evaluations to the agent at argv[1]; prints RSS before, peak after, stats.
RSS_CLIENT = textwrap.dedent(
    """
    import json, sys
    import aiohttp  # imported now, so that "before" holds what the worker imports
    from openfeature import api
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    from flageval import Telemetry

    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    tel = Telemetry(agent_url=sys.argv[1], service="rss", flush_interval_s=60,
                    request_timeout_s=20)
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    tel.start()
    for _ in range(100):
        client.get_boolean_value("f", False)
    before = kib("VmRSS")
    ok = tel.flush(30)
    st = tel.stats()
    print(json.dumps({"before_kib": before, "peak_kib": kib("VmHWM"), "ok": ok,
                      "posted": st.evaluations_posted, "dropped": dict(st.dropped)}))
    tel.shutdown(5)
    """
)


def test_a_1gib_answer_does_not_grow_the_client(tmp_path: Path) -> None:
    """An agent that answers every request with 200 and a 1 GiB body: the client reads
    the status and gives the body up; it grows by less than 64 MiB (reading the body
    whole takes a gigabyte), and far less than the gigabyte ever leaves the server."""
    (tmp_path / "server.py").write_text(BIG_SERVER)
    (tmp_path / "client.py").write_text(RSS_CLIENT)
    sent = tmp_path / "sent"
    server = subprocess.Popen(
        [sys.executable, str(tmp_path / "server.py"), str(sent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        out = subprocess.run(
            [sys.executable, str(tmp_path / "client.py"), f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
            check=False,
        )
    finally:
        server.kill()
        server.wait(10)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    growth_mib = (got["peak_kib"] - got["before_kib"]) / 1024
    assert growth_mib < 64, got
    # The status was 200: delivered, and the 1 GiB that followed was never read: the
    # server got out only what the sockets' buffers took before the client let go.
    assert got["ok"] is True and got["posted"] == 100 and got["dropped"] == {}, got
    assert int(sent.read_text()) < 256 << 20, sent.read_text()


def _client(tel: Telemetry, n: int) -> None:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(f"u{i % 4}"))


@pytest.fixture
def full_backlog() -> Iterator[tuple[socket.socket, int]]:
    """A listener with backlog 0 that never accepts, its queue filled: a new connect
    gets no answer to its SYN and stalls."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    probe = socket.socket()
    probe.settimeout(0.3)  # its timing out is the outcome: a short wait cannot flake
    with pytest.raises(TimeoutError):
        probe.connect(("127.0.0.1", port))  # the stand-in really stalls a connect
    probe.close()
    yield listener, port
    for s in [*fillers, listener]:
        s.close()


@pytest.fixture
def silent_tls() -> Iterator[int]:
    """A TCP server that accepts and never speaks: an https handshake never ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(5)
    for s in [*held, listener]:
        s.close()


STALL = {
    "service": "stall",
    "flush_interval_s": 60.0,
    # Long enough for a loaded machine's healthy post once the agent is up; each of the
    # three stalled tries waits it out.
    "request_timeout_s": 1.0,
    "max_retries": 2,
    "retry_backoff_s": 0.02,
}


def _assert_retried_not_unknown(tel: Telemetry, n: int) -> None:
    assert tel.flush(30.0) is False  # not delivered: it waits, as after a refusal
    st = tel.stats()
    assert st.post_attempts == 3, st  # the first try and max_retries=2 retries
    assert st.dropped == {} and st.pending == n and st.conserved, st


def test_a_connect_stalled_in_a_full_backlog_is_retried_then_delivered_once(
    full_backlog: tuple[socket.socket, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A connect that gets no answer is retried as a refused one (nothing can have
    reached the intake: never delivery_unknown); once the agent is up on that port, the
    waiting body goes, once."""
    caplog.set_level(logging.WARNING, logger="flageval")
    listener, port = full_backlog
    tel = Telemetry(agent_url=f"http://127.0.0.1:{port}", **STALL)  # type: ignore[arg-type]
    intake = None
    try:
        _client(tel, 40)
        _assert_retried_not_unknown(tel, 40)
        # Said for what it is: no connection was made in time (not "failed", not lost).
        said = [r.getMessage() for r in caplog.records if "will retry" in r.getMessage()]
        assert said and all("(no connection within " in line for line in said)
        # The agent comes up on that port: the waiting body goes, and only once.
        listener.close()
        intake = Intake().start(port)
        assert tel.flush(30.0) is True
        assert intake.evaluations() == 40 and len(intake.received) == 1
        tel.shutdown(2.0)
        st = tel.stats()
        assert st.dropped == {} and st.evaluations_posted == 40 and st.conserved
    finally:
        tel.shutdown(1.0)
        if intake is not None:
            intake.stop()


def test_a_tls_handshake_that_never_completes_is_retried(silent_tls: int) -> None:
    # No post is ever answered here: the tries may time out sooner.
    settings: dict[str, Any] = {**STALL, "request_timeout_s": 0.4}
    tel = Telemetry(agent_url=f"https://127.0.0.1:{silent_tls}", **settings)
    try:
        _client(tel, 25)
        _assert_retried_not_unknown(tel, 25)
        # Its final tries end on their own (0.4 s each) well before 5 s: the accounting
        # never races the deadline's margin on a loaded machine.
        tel.shutdown(5.0)
    finally:
        tel.shutdown(0.5)
    st: Any = tel.stats()
    # Nothing can have reached an intake: at the deadline it is unavailable, not unknown.
    assert st.dropped == {"intake_unavailable": 25} and st.conserved, st
