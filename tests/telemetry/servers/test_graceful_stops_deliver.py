"""Real servers' graceful stops deliver every count: uvicorn (one process and
``--workers 2``, SIGTERM and SIGINT), gunicorn's sync workers and gunicorn with
uvicorn workers, each a subprocess on 127.0.0.1 running the apps next to this file,
the hook added at import as README says, against the real intake. N evaluations from
sync and async endpoints (nothing flushed yet: a 60 s interval), the signal, then the
intake must hold exactly N, key by key. Requests still in flight when the signal
comes: delivered under gunicorn's uvicorn workers and with flageval.asgi under
uvicorn; without it under uvicorn, exactly the evaluations made after the signal are
lost (the window README states), and a warning said so at start."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.intake import Intake
from tests.telemetry.reliability.helpers import free_port

REPO = Path(__file__).resolve().parents[3]
ASGI = "tests.telemetry.servers.asgi_app:app"
WSGI = "tests.telemetry.servers.wsgi_app:app"
REQUESTS, PER_REQUEST = 8, 40  # per endpoint kind: 320 sync + 320 async evaluations


def command(server: str, port: int) -> list[str]:
    py = sys.executable
    bind = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    gunicorn = [py, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2"]
    gunicorn += ["--no-control-socket", "--graceful-timeout", "20", "--log-level", "warning"]
    return {
        "uvicorn": [py, "-m", "uvicorn", ASGI, *bind],
        "uvicorn-workers": [py, "-m", "uvicorn", ASGI, *bind, "--workers", "2"],
        "gunicorn-sync": [*gunicorn, WSGI],
        # Threads, the app imported in the master, workers replaced every 3 requests.
        "gunicorn-gthread-preload": [
            *gunicorn,
            *("-k", "gthread", "--threads", "2", "--preload", "--max-requests", "3"),
            WSGI,
        ],
        "gunicorn-uvicorn": [*gunicorn, "-k", "uvicorn_worker.UvicornWorker", ASGI],
    }[server]


class Server:
    """A server subprocess: started, probed until it answers, stopped by a signal,
    killed if anything goes wrong (every wait bounded)."""

    def __init__(self, server: str, intake: Intake, middleware: bool = False) -> None:
        self.server = server
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="flageval-servers-"))
        self.mark = self.workdir / "hold.mark"
        self.release = self.workdir / "hold.release"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
        env.update(
            DD_TRACE_AGENT_URL=intake.url,
            DD_SERVICE=f"srv-{server}",
            FLAGEVAL_FLUSH_INTERVAL_S="60",
            PYTHONPATH=str(REPO),
            HOLD_MARK=str(self.mark),
            HOLD_RELEASE=str(self.release),
        )
        if middleware:
            env["FLAGEVAL_TEST_MIDDLEWARE"] = "1"
        self.log = (self.workdir / "server.log").open("w+")
        self.proc = subprocess.Popen(
            command(server, self.port), cwd=REPO, env=env, stdout=self.log, stderr=self.log
        )

    def __enter__(self) -> Server:
        end = time.monotonic() + 40.0
        while True:
            try:
                self.get("/health", timeout_s=2.0)
                break
            except OSError:
                assert self.proc.poll() is None, self.output()
                assert time.monotonic() < end, "the server never answered"
                time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10.0)
        self.log.close()

    def get(self, path: str, timeout_s: float = 20.0) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body[:200])
            result: dict[str, Any] = json.loads(body)
            return result
        finally:
            conn.close()

    def evaluate(self, sync: bool = True, asynchronous: bool = True) -> Counter[str]:
        """Evaluations from both kinds of endpoint; the targeting keys expected."""
        expected: Counter[str] = Counter()
        for r in range(REQUESTS):
            for path, wanted in (("/eval_sync", sync), ("/eval", asynchronous)):
                if wanted:
                    tag = f"{path[1:]}{r}"
                    self.get(f"{path}?n={PER_REQUEST}&tag={tag}")
                    expected.update(f"{tag}-{i}" for i in range(PER_REQUEST))
        return expected

    def hold(self, path: str, tag: str, k: int, m: int) -> tuple[threading.Thread, list[Any]]:
        """A request that evaluates k times, is in flight when this returns, and
        evaluates m more times once released (:meth:`stop`)."""
        self.mark.unlink(missing_ok=True)
        result: list[Any] = []
        query = f"{path}?k={k}&m={m}&tag={tag}&hold_s=60"

        def call() -> None:
            try:
                result.append(self.get(query))
            except Exception as exc:  # reported by the test
                result.append(exc)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        end = time.monotonic() + 30.0
        while not self.mark.exists():
            assert time.monotonic() < end and thread.is_alive(), self.output()
            time.sleep(0.01)
        return thread, result

    def stop(self, sig: int, release_when: Callable[[], bool] | None = None) -> int:
        """Send ``sig``, then release the held requests (once ``release_when()`` holds,
        when given), and wait for the server to end."""
        self.proc.send_signal(sig)
        if release_when is not None:
            end = time.monotonic() + 30.0
            while not release_when():
                assert time.monotonic() < end, "not before the release: " + self.output()
                time.sleep(0.01)
        self.release.touch()
        try:
            return self.proc.wait(30.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10.0)
            raise AssertionError("the server did not stop: " + self.output()) from None

    def finish(self, held: list[tuple[threading.Thread, list[Any]]]) -> str:
        """The held requests' answers (each must have been answered), then the log."""
        for thread, result in held:
            thread.join(30.0)
            assert result and not isinstance(result[0], Exception), (result, self.output())
        return self.output()

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / "server.log").read_text()[-3000:]


def delivered(intake: Intake) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in intake.rows():
        counts[row["targeting_key"]] += row["evaluation_count"]
    return counts


@pytest.fixture
def server_intake() -> Iterator[Intake]:
    intake = Intake().start()
    yield intake
    intake.stop()
    assert not intake.schema_errors, intake.schema_errors[:3]


@pytest.mark.parametrize(
    ("server", "sig"),
    [
        ("uvicorn", signal.SIGTERM),
        ("uvicorn", signal.SIGINT),
        ("uvicorn-workers", signal.SIGTERM),
        ("uvicorn-workers", signal.SIGINT),
        ("gunicorn-sync", signal.SIGTERM),
        ("gunicorn-gthread-preload", signal.SIGTERM),
        ("gunicorn-uvicorn", signal.SIGTERM),
    ],
)
def test_a_graceful_stop_delivers_every_count(
    server_intake: Intake, server: str, sig: signal.Signals
) -> None:
    with Server(server, server_intake) as srv:
        expected = srv.evaluate(asynchronous="uvicorn" in server)  # WSGI: sync only
        if "preload" not in server:  # (its workers end, and deliver, every 3 requests)
            assert server_intake.received == []  # nothing sent yet: the 60 s interval
        srv.stop(sig)
        assert server_intake.wait_for(lambda: delivered(server_intake) == expected), (
            sum(delivered(server_intake).values()),
            sum(expected.values()),
            srv.output(),
        )


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn-uvicorn"])
def test_in_flight_requests_are_delivered_with_no_code(server_intake: Intake, server: str) -> None:
    """These import the app before uvicorn takes the signals: our handler is the one
    uvicorn restores and re-raises into after its graceful shutdown, so the final
    shutdown runs after the requests in flight have ended."""
    with Server(server, server_intake) as srv:
        expected = srv.evaluate()
        held = [srv.hold("/hold", "held-async", k=30, m=40)]
        held.append(srv.hold("/hold_sync", "held-sync", k=20, m=25))
        srv.stop(signal.SIGTERM)
        log = srv.finish(held)
    expected.update(HELD)
    assert server_intake.wait_for(lambda: delivered(server_intake) == expected), (
        sum(delivered(server_intake).values()),
        log,
    )
    assert "running under uvicorn" not in log


def test_uvicorn_workers_without_the_middleware_lose_exactly_what_in_flight_requests_evaluate_after_the_signal(  # noqa: E501
    server_intake: Intake,
) -> None:
    """--workers children import the app after uvicorn took the signals, and end with
    the default action re-raised: our handler runs at the signal, flushes, and nothing
    of ours runs after. The window of loss is exactly what requests still in flight
    evaluate after the signal; a warning said so at start."""
    with Server("uvicorn-workers", server_intake) as srv:
        expected = srv.evaluate()
        held = [srv.hold("/hold", "held", k=50, m=70)]
        made_before = [f"held-k{i}" for i in range(50)]
        # The held request goes on only once the signal's flush has delivered what it
        # made before: its last 70 evaluations come after our handler ran.
        srv.stop(
            signal.SIGTERM,
            release_when=lambda: all(delivered(server_intake)[k] for k in made_before),
        )
        log = srv.finish(held)
    expected.update(made_before)  # made before the signal: flushed
    assert server_intake.wait_for(lambda: delivered(server_intake) == expected), (
        sum(delivered(server_intake).values()),
        log,
    )
    assert 1 <= log.count("running under uvicorn") <= 2, log  # once per worker


@pytest.mark.parametrize("server", ["uvicorn-workers", "uvicorn"])
def test_in_flight_requests_are_delivered_with_the_middleware(
    server_intake: Intake, server: str
) -> None:
    with Server(server, server_intake, middleware=True) as srv:
        expected = srv.evaluate()
        held = [srv.hold("/hold", "held-async", k=30, m=40)]
        held.append(srv.hold("/hold_sync", "held-sync", k=20, m=25))
        srv.stop(signal.SIGTERM)
        log = srv.finish(held)
    expected.update(HELD)
    assert server_intake.wait_for(lambda: delivered(server_intake) == expected), (
        sum(delivered(server_intake).values()),
        sum(expected.values()),
        log,
    )
    assert "running under uvicorn" not in log


HELD = [
    f"{tag}-{part}{i}"
    for tag, k, m in (("held-async", 30, 40), ("held-sync", 20, 25))
    for part, n in (("k", k), ("m", m))
    for i in range(n)
]
