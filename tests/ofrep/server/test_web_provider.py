"""The reference OFREP web provider (npm: @openfeature/ofrep-web-provider) under node, as
an outside client: it evaluates, follows a change through the event stream it opens
from the advertised URL alone (EventSource sends no headers: the stream token), and
gets the new context's values after a context change.

node (>= 20) and npm must be on PATH; the packages in js/package-lock.json are installed
into js/node_modules (git-ignored) on first use with ``npm ci``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import static, write_flags
from .process import ServerProcess, wait_until

JS = Path(__file__).parent / "js"
NPM_CI_TIMEOUT_S = 300
Start = Callable[..., ServerProcess]


def node_ready() -> str:
    """The node executable, with js/node_modules matching js/package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the reference JS client test needs node (>= 20) and npm on PATH "
            "(Debian: apt-get install nodejs npm); neither may be skipped"
        )
    version = subprocess.run(
        [node, "--version"], check=False, capture_output=True, text=True, timeout=30
    )
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"the reference JS client needs node >= 20, found {version.stdout.strip()}")
    lock = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()
    stamp = JS / "node_modules" / ".flageval-lock-sha256"
    if not stamp.exists() or stamp.read_text() != lock:
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                check=False,
                cwd=JS,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {JS} took over {NPM_CI_TIMEOUT_S} s")
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        stamp.write_text(lock)
    return node


class Client:
    def __init__(self, node: str, url: str, api_key: str) -> None:
        self.proc = subprocess.Popen(
            [node, "client.mjs", url, api_key],
            cwd=JS,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(
            target=lambda: self.errors.extend(self.proc.stderr or []), daemon=True
        ).start()

    def _read(self) -> None:
        for line in self.proc.stdout or []:
            self.lines.put(json.loads(line))

    def next(self, what: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The next snapshot of kind ``what`` (others before it are passed over)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(
                    f"no {what!r} line from node; stderr:\n{''.join(self.errors)}"
                ) from None
            if line["what"] == what:
                return line

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def close(self) -> int:
        with contextlib.suppress(Exception):
            self.send({"quit": True})
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -1


def beta(domain: str) -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, domain]}, "on", "off"]},
    }


def test_reference_web_provider_evaluates_follows_streams_and_contexts(
    tmp_path: Path, start_server: Start
) -> None:
    node = node_ready()
    flags = write_flags(
        tmp_path / "f.json", {"color": static("red"), "beta": beta("@macrosoft.com")}
    )
    server = start_server([flags], env={"FLAGEVAL_OFREP_SERVER_API_KEYS": "js-key"})
    client = Client(node, server.url, "js-key")
    try:
        ready = client.next("ready")
        assert (ready["color"], ready["beta"], ready["reason"]) == ("red", True, "TARGETING_MATCH")
        # its EventSource opened the advertised URL, token and all, with no header
        wait_until(lambda: server.status_with("js-key")["streams"]["open"] == 1, what="its stream")
        write_flags(flags, {"color": static("blue"), "beta": beta("@macrosoft.com")})
        changed = client.next("changed")
        assert (changed["color"], changed["beta"]) == ("blue", True)
        client.send({"context": {"targetingKey": "user-2", "email": "bob@example.org"}})
        other = client.next("context")
        assert (other["color"], other["beta"]) == ("blue", False)
    finally:
        assert client.close() == 0, "".join(client.errors)
    counts = server.status_with("js-key")["counts"]
    assert counts["unauthorized"] == 0 and counts["forbidden"] == 0
