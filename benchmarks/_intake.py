"""A minimal agent stand-in for benchmarks, run in its own process.

Why a separate process: the intake's own work (parsing requests, answering) must not
take the benchmark process's GIL, or it would be charged to whichever variant happened
to be running when a flush arrived. It answers ``GET /info`` (ddtrace asks once) and
accepts every ``POST`` with 200; it counts bodies and bytes, nothing else.

Run: ``python benchmarks/_intake.py``; it prints its port on the first line of stdout,
then serves until stdin closes (so it never outlives the benchmark process). With
``--record PATH`` it also appends one JSON line per POST to PATH: when it arrived (epoch
ms), the evaluations it carried, its rows' flush times and their oldest evaluation
(benchmark 11 reads them).
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from typing import IO

_INFO = json.dumps(
    {"version": "7.99.0", "endpoints": ["/v0.4/traces", "/evp_proxy/v2/", "/evp_proxy/v4/"]}
).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real agent
    bodies = 0
    body_bytes = 0
    record: IO[str] | None = None
    record_lock = threading.Lock()

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/info":
            self._answer(200, _INFO)
        else:
            self._answer(404, b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        _Handler.bodies += 1
        _Handler.body_bytes += len(data)
        if _Handler.record is not None:
            line = json.dumps(_summary(data)) + "\n"
            with _Handler.record_lock:
                _Handler.record.write(line)
                _Handler.record.flush()
        self._answer(200, b"{}")

    def log_message(self, format: str, *args: object) -> None:
        return None


def _summary(data: bytes) -> dict[str, object]:
    at_ms = time.time_ns() // 1_000_000
    rows = json.loads(data)["flagEvaluations"]
    return {
        "at_ms": at_ms,
        "evaluations": sum(r["evaluation_count"] for r in rows),
        "flushes": sorted({r["timestamp"] for r in rows}),
        "oldest_ms": min(r["first_evaluation"] for r in rows),
    }


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client closing a kept-alive connection is no news


def main() -> None:
    if sys.argv[1:2] == ["--record"]:
        _Handler.record = open(sys.argv[2], "a", encoding="utf-8")  # noqa: SIM115
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # returns when the parent closes our stdin (or exits)
    server.shutdown()
    print(f"bodies={_Handler.bodies} bytes={_Handler.body_bytes}", file=sys.stderr)


if __name__ == "__main__":
    main()
