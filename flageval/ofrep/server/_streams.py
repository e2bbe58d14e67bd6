"""ADR-0008 event streams: one SSE channel per flag set, a refetch event per change.

Each connected client holds one slot: the newest event not yet written to it. A change
overwrites the slot and wakes the client's own handler, which writes it; so a client
that reads slowly costs one pending event, never a queue, and an event it missed is
superseded by a newer one that says the same (re-fetch). Between events, a comment
line every ``keepalive_s`` keeps proxies and the client's read timeout from closing an
idle stream, and a client gone is noticed within 5 s. A write that does not complete
within ``stream_write_timeout_s`` closes that stream. Connections past ``max_streams``
are refused with 503 and Retry-After. At shutdown every stream is told to end, and its
handler finishes the response.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import msgspec
from aiohttp import web

from ._views import View

log = logging.getLogger("flageval.ofrep.server")

_encode = msgspec.json.encode
_KEEPALIVE = b": keep-alive\n\n"
#: How often a quiet stream checks that its client is still there (a closed connection
#: is otherwise seen at the next write): a slot comes back within this long.
_LIVENESS_S = 5.0
#: How long a refused client should wait before trying again.
_BUSY_RETRY_AFTER_S = 5


class _Client:
    __slots__ = ("pending", "wake")

    def __init__(self) -> None:
        self.pending: bytes | None = None
        self.wake = asyncio.Event()


class Hub:
    """Connected streams by flag set (None: the channel of every flag)."""

    def __init__(self, max_streams: int, keepalive_s: float, write_timeout_s: float) -> None:
        self._max = max_streams
        self._keepalive_s = keepalive_s
        self._write_timeout_s = write_timeout_s
        self._channels: dict[str | None, set[_Client]] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._handlers: set[asyncio.Task[object]] = set()
        self.counts = {"connected": 0, "refused": 0, "events": 0, "write_timeouts": 0}

    @property
    def open(self) -> int:
        return sum(len(c) for c in self._channels.values())

    def publish(self, views: list[View]) -> None:
        """Tell every client of each of ``views`` to re-fetch (on the loop; never blocks)."""
        for view in views:
            clients = self._channels.get(view.set_id)
            if not clients:
                continue
            data = _encode(
                {
                    "type": "refetchEvaluation",
                    "etag": view.fingerprint,
                    "lastModified": view.last_modified_s,
                }
            )
            frame = b"id: %d\nevent: message\ndata: %s\n\n" % (next(self._ids), data)
            for client in clients:
                client.pending = frame
                client.wake.set()

    async def serve(self, request: web.Request, set_id: str | None) -> web.StreamResponse:
        if self._closing or self.open >= self._max:
            self.counts["refused"] += 1
            raise web.HTTPServiceUnavailable(
                headers={"Retry-After": str(_BUSY_RETRY_AFTER_S)},
                text='{"errorDetails": "too many event streams"}',
                content_type="application/json",
            )
        loop = asyncio.get_running_loop()
        client = _Client()
        self._channels.setdefault(set_id, set()).add(client)
        self.counts["connected"] += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass events through at once
            }
        )
        try:
            await response.prepare(request)
            # A first comment, so the client sees the stream open before any event.
            await self._write(response, b": connected\n\n")
            quiet_since = loop.time()
            while not self._closing:
                try:
                    await asyncio.wait_for(client.wake.wait(), min(self._keepalive_s, _LIVENESS_S))
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client went away
                    if loop.time() - quiet_since < self._keepalive_s:
                        continue
                    frame = _KEEPALIVE
                else:
                    client.wake.clear()
                    if self._closing:
                        break
                    frame, client.pending = client.pending or _KEEPALIVE, None
                await self._write(response, frame)
                quiet_since = loop.time()
        except TimeoutError:
            self.counts["write_timeouts"] += 1
        except (ConnectionError, RuntimeError):
            pass  # the client went away (aiohttp raises either on a closed transport)
        finally:
            self._forget(set_id, client)
            if task is not None:
                self._handlers.discard(task)
        return response  # aiohttp ends the chunked body (write_eof) after the handler

    async def _write(self, response: web.StreamResponse, frame: bytes) -> None:
        async with asyncio.timeout(self._write_timeout_s):
            await response.write(frame)
        if frame is not _KEEPALIVE and not frame.startswith(b":"):
            self.counts["events"] += 1

    def _forget(self, set_id: str | None, client: _Client) -> None:
        clients = self._channels.get(set_id)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._channels[set_id]

    async def close(self, timeout_s: float) -> None:
        """End every stream, and wait (at most ``timeout_s``) for their handlers."""
        self._closing = True
        for clients in self._channels.values():
            for client in clients:
                client.wake.set()
        handlers = [t for t in self._handlers if not t.done()]
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=timeout_s)
            if late:
                log.warning("%d event streams did not end in time; cancelled", len(late))
                for task in late:
                    task.cancel()
