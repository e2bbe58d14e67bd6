"""A small Server-Sent Events reader (WHATWG HTML, "Server-sent events", parsing rules).

`SSEParser` is pure (bytes in, events out) so every rule is unit-testable; `pump` drives
it from aiohttp's response stream with a read timeout. Rules implemented:

- a stream may start with one UTF-8 BOM, which is dropped;
- lines end with CRLF, LF or CR (a CR at the end of one chunk and an LF at the start of
  the next are one line end);
- an empty line dispatches the event; a line starting with ``:`` is a comment;
- ``field:value`` splits at the first colon and drops one leading space of the value;
  a line without a colon is a field with an empty value;
- ``data`` lines are joined with LF; ``event`` sets the type (default ``message``);
- ``id`` sets the last event id unless it contains NUL, and the id persists across
  events (it is what ``Last-Event-ID`` carries on reconnect); ``id`` with an empty value
  clears it;
- ``retry`` sets the reconnection delay in ms when the value is all ASCII digits;
- an event with no ``data`` is not dispatched; an unfinished event at end of stream is
  dropped; unknown fields are ignored.

Lines are split on bytes before decoding: UTF-8 continuation bytes never equal CR or
LF, so this is safe, and invalid UTF-8 becomes U+FFFD as the standard says.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"

# A hostile or broken stream must not grow memory without bound: one line or one
# event's data above this closes the connection.
DEFAULT_MAX_EVENT_BYTES = 1 << 20
# Far above any real change rate (the coalescer turns them into at most 4 fetches a
# second anyway): past it a stream is flooding, and its connection is dropped.
DEFAULT_MAX_EVENTS_PER_S = 1000


class SSEProtocolError(Exception):
    """The stream broke a limit of the reader (for example an over-long line)."""


class SSEFlood(SSEProtocolError):
    """More events in one second than the reader takes from one stream."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    type: str
    data: str
    last_event_id: str


class SSEParser:
    """Incremental parser: feed it chunks in order, get the events they complete."""

    __slots__ = (
        "_bom_checked",
        "_buf",
        "_data",
        "_data_bytes",
        "_event_type",
        "_has_data",
        "_max_bytes",
        "_skip_lf",
        "last_event_id",
        "retry_ms",
    )

    def __init__(self, last_event_id: str = "", max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self._buf = bytearray()
        self._bom_checked = False
        self._skip_lf = False
        self._data: list[str] = []
        self._data_bytes = 0
        self._has_data = False
        self._event_type = ""
        self._max_bytes = max_event_bytes
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        self._buf += chunk
        if not self._bom_checked:
            if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
                return []
            if self._buf.startswith(_BOM):
                del self._buf[: len(_BOM)]
            self._bom_checked = True

        events: list[SSEEvent] = []
        buf = self._buf
        pos = 0
        for match in _LINE_END.finditer(buf):
            line = bytes(buf[pos : match.start()])
            pos = match.end()
            if pos == len(buf) and match.group() == b"\r":
                # The LF of a CRLF may be the first byte of the next chunk.
                self._skip_lf = True
            event = self._line(line)
            if event is not None:
                events.append(event)
        if pos:
            del buf[:pos]
        if len(buf) > self._max_bytes:
            raise SSEProtocolError("line longer than the reader's limit")
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            return None
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw)
            if self._data_bytes > self._max_bytes:
                raise SSEProtocolError("event data longer than the reader's limit")
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # int() refuses over 4,300 digits; such a delay is "as long as allowed".
            digits = value.lstrip("0") or "0"
            self.retry_ms = int(digits) if len(digits) <= 15 else 10**15
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._event_type = ""
            return None
        event = SSEEvent(
            type=self._event_type or "message",
            data="\n".join(self._data),
            last_event_id=self.last_event_id,
        )
        self._data = []
        self._data_bytes = 0
        self._has_data = False
        self._event_type = ""
        return event


class ByteSource(Protocol):
    """What `pump` needs from aiohttp's ``StreamReader``."""

    async def readany(self) -> bytes: ...


async def pump(
    source: ByteSource,
    parser: SSEParser,
    read_timeout_s: float,
    on_event: Callable[[SSEEvent], None],
    max_events_per_s: int = DEFAULT_MAX_EVENTS_PER_S,
) -> None:
    """Read until end of stream. Raises ``TimeoutError`` when no byte (not even a
    keep-alive comment) arrives for ``read_timeout_s``: the peer is gone; `SSEFlood`
    once one second has brought ``max_events_per_s`` events: the caller drops the
    connection, so a flood costs the loop that many events (plus one chunk) per
    connection, not a share of a core for as long as it lasts."""
    window_start = time.monotonic()
    seen = 0
    while True:
        async with asyncio.timeout(read_timeout_s):
            chunk = await source.readany()
        if not chunk:
            return
        events = parser.feed(chunk)
        for event in events:
            on_event(event)
        now = time.monotonic()
        if now - window_start >= 1.0:
            window_start, seen = now, 0
        seen += len(events)
        if seen >= max_events_per_s:
            raise SSEFlood(f"over {max_events_per_s} events in one second")
