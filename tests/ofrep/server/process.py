"""``python -m flageval.ofrep.server`` as a subprocess on 127.0.0.1, and plain HTTP to it.

The server is started with ``--port 0``; its stderr is read on a thread, and the port
is taken from its ``listening on`` line. Requests go through ``http.client`` (no
provider logic in the way): a test sees statuses, headers and bodies as sent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

KILLSWITCH = {"DD_FLAGGING_EVALUATION_COUNTS_ENABLED": "false"}
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.005)


class ServerProcess:
    def __init__(
        self,
        flags: Sequence[Path],
        *args: str,
        env: Mapping[str, str] | None = None,
        poll_interval_s: float = 0.05,
    ) -> None:
        command = [sys.executable, "-m", "flageval.ofrep.server", "--port", "0"]
        for path in flags:
            command += ["--flags", str(path)]
        command += ["--poll-interval-s", str(poll_interval_s), *args]
        full_env = {**os.environ, **KILLSWITCH, **(env or {})}
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0
        try:
            wait_until(lambda: self.port or self.proc.poll() is not None, 20.0, "the server's port")
        except AssertionError:
            self.stop()
            raise
        if not self.port:
            raise AssertionError("server exited at start:\n" + self.log())

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            found = _LISTENING.search(line)
            if found and not self.port:
                self.port = int(found.group(1))

    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then wait; the exit status (killed and failed past the deadline)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("server did not stop on SIGTERM:\n" + self.log()) from None
        self._reader.join(5)
        return self.proc.returncode

    def status(self) -> dict[str, Any]:
        return request(self.url, "GET", "/ofrep/server/status")[2]

    def status_with(self, api_key: str) -> dict[str, Any]:
        return request(self.url, "GET", "/ofrep/server/status", headers={"X-API-Key": api_key})[2]

    def bulk(self, context: Any = None, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return bulk(self.url, {} if context is None else context, **kw)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    """``(status, headers, JSON body or raw bytes or None)``."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        raw = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    if not raw:
        return response.status, found, None
    try:
        return response.status, found, json.loads(raw)
    except ValueError:
        return response.status, found, raw


def bulk(
    url: str,
    context: Any,
    etag: str | None = None,
    selector: str | None = None,
    query: str = "",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    sent = dict(headers or {})
    if etag is not None:
        sent["If-None-Match"] = etag
    if selector is not None:
        sent["Flagd-Selector"] = f"flagSetId={selector}"
    body = json.dumps({"context": context}).encode()
    return request(url, "POST", "/ofrep/v1/evaluate/flags" + query, body, sent)


def values(answer: Any) -> dict[str, Any]:
    """``{key: value}`` of a bulk body's success items (items without value left out)."""
    return {i["key"]: i["value"] for i in answer["flags"] if "value" in i}


class Stream:
    """An SSE connection read on a thread: comment lines and events as they come."""

    def __init__(
        self, url: str, path: str = "/ofrep/v1/sse", headers: Mapping[str, str] | None = None
    ) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.conn.request("GET", path, headers=dict(headers or {}))
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()
        else:
            self.body = self.response.read()
            self.ended.set()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                self.lines.append(line)
                if not line:
                    if "data" in event:
                        self.events.append({**event, "data": json.loads(event["data"])})
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    event[name] = value.removeprefix(" ")
        self.ended.set()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.sock.shutdown(2)  # type: ignore[union-attr]
        self.conn.close()


@contextlib.contextmanager
def running(flags: Sequence[Path], *args: str, **kw: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(flags, *args, **kw)
    try:
        yield server
    finally:
        server.stop()
