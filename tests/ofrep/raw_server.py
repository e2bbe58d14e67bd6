"""A raw HTTP/1.1 server on 127.0.0.1 for answers aiohttp's server refuses to send
(a control character in a header), on a thread of its own.

``answer(request) -> bytes`` builds each whole response; every request is recorded with
its request line and headers as received. One request per connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class RawRequest:
    line: str  # "POST /ofrep/v1/evaluate/flags HTTP/1.1"
    headers: dict[str, str]  # names lower-cased
    body: bytes


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A complete response; header values are written as given (latin-1), unchecked."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawServer:
    def __init__(self, answer: Callable[[RawRequest], bytes]) -> None:
        self.answer = answer
        self.requests: list[RawRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def recorded(self) -> list[RawRequest]:
        with self._lock:
            return list(self.requests)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            line, *rest = head.decode("latin-1").split("\r\n")
            headers = {}
            for item in rest:
                name, sep, value = item.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
            request = RawRequest(line, headers, body)
            with self._lock:
                self.requests.append(request)
            writer.write(self.answer(request))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
