"""Event-stream connections: one task per ``sse`` entry of the latest 200.

Each connection reconnects by itself with exponential backoff (jittered over the upper
half of each step), sends ``Last-Event-ID`` when it has one, and reports four things to
its owner: it connected (the owner re-fetches at once, closing the gap while it was
down), a ``refetchEvaluation`` event arrived (with its etag/lastModified, verbatim), its
state changed (the owner recomputes polling fallback and staleness), it was answered
401/403 with our credentials (the owner goes fatal), or 401/403 without them (the
stream's own token failed: the owner re-fetches the bulk evaluation for fresh URLs).

Choices where ADR-0008 leaves one:
- a URL that differs from a held stream's only in its query (or userinfo) is that
  stream with a new token, which a server may hand out in every answer: the held
  connection takes it for its next connect, with no reconnect and so no re-fetch;
- a stream is named in logs and task names by its origin only: a token may sit in
  its path as well as its query;
- the configured headers (credentials) go to a stream only when its origin (scheme,
  host, port) equals the base URL's origin, and such a stream does not follow
  redirects, which could carry them elsewhere;
- events are routed on the JSON ``type`` in ``data`` whatever the SSE ``event:`` name;
  unknown types and data that is not a JSON object are ignored and counted;
- ``retry:`` raises the first reconnect delay but never lowers it below
  ``reconnect_min_s``; the backoff restarts only after a connection stayed open for
  at least ``reconnect_max_s`` (30 s by default), the longest delay: a server or
  proxy that accepts, sends a keep-alive and drops is not hammered with reconnects
  (each followed by a bulk re-fetch);
- a stream answering 401/403 is fatal, as the bulk endpoint, only when it was sent the
  configured headers (our origin, headers configured): the server rejected our
  credentials. Otherwise the token in its URL failed (expired, say): the connection
  keeps its reconnect backoff and the owner re-fetches the bulk evaluation, whose
  answer carries fresh stream URLs; so those re-fetches are as rare as the reconnects;
- an ``id:`` that cannot be sent back in ``Last-Event-ID`` (a control character, or
  over 1,024 characters) is dropped and counted: kept, it would fail every reconnect;
- a stream that brings ``max_events_per_s`` events within one second is flooding: the
  connection is dropped and reconnects with its backoff (which a short-lived
  connection never resets), and the reconnect's re-fetch covers what was not read; so
  a flood costs the loop about that many events per connection attempt;
- a connection is dead after ``sse_read_timeout_s`` without a byte (keep-alive
  comments count as bytes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from flageval._common import RateLimitedLog, backoff_s, parse_retry_after, redact_url

from ._bulk import StreamSpec, same_origin
from ._config import OFREPConfig
from ._diagnostics import Counter, Stats
from ._fetch import MAX_RETRY_AFTER_S, scrubber
from ._headers import MAX_ECHOED_VALUE_CHARS, sendable
from ._queue import RateGate
from ._sse import SSEEvent, SSEFlood, SSEParser, pump

_decoder = msgspec.json.Decoder()

OnRefetch = Callable[[str | None, str | None], None]


def origin_text(url: URL) -> str:
    """How a stream is named in logs and task names: its origin only. A token may sit in
    its path as well as in its query."""
    return redact_url(url.origin()) if url.absolute else "?"


def _stream(url: URL) -> tuple[str, str | None, int | None, str]:
    """What makes two stream URLs the same stream: all but query, userinfo, fragment."""
    return (url.scheme, url.host, url.port, url.raw_path)


def _last_modified(raw: Any) -> str | None:
    # Unix seconds (the ADR's recommendation) or a date string; sent on verbatim.
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, str):
        return raw
    return None


def _query_value(value: str | None, stats: Stats) -> str | None:
    # A value this long makes a URL servers refuse (414): the fetch goes without it.
    if value is not None and len(value) > MAX_ECHOED_VALUE_CHARS:
        stats[Counter.SSE_FIELD_DROPPED] += 1
        return None
    return value


class _Connection:
    def __init__(self, owner: StreamManager, spec: StreamSpec) -> None:
        self.owner = owner
        self.spec = spec
        self.connected = False
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"ofrep-sse {origin_text(self.spec.url)}"
        )

    def _backoff_s(self, attempt: int) -> float:
        config = self.owner.config
        base = config.reconnect_min_s
        if self.retry_ms is not None:
            base = max(base, self.retry_ms / 1000.0)
        # Jittered over the upper half: spreads a fleet reconnecting after an outage.
        return backoff_s(attempt, base, config.reconnect_max_s, spread=0.5)

    async def _run(self) -> None:
        owner = self.owner
        config = owner.config
        attempt = 0
        while True:
            await owner.gate.wait()
            # Read at each attempt: a new token for this stream replaces its URL.
            url = self.spec.url
            auth = same_origin(url, config.base_url)
            # Only a stream sent our credentials can have them rejected.
            credentials_sent = auth and bool(config.headers)
            where = origin_text(url)
            connected_at: float | None = None
            headers: dict[str, str] = dict(config.headers) if auth else {}
            headers["Accept"] = "text/event-stream"
            headers["Cache-Control"] = "no-cache"
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            parser = SSEParser(last_event_id=self.last_event_id)
            try:
                async with owner.session.get(
                    url,
                    headers=headers,
                    allow_redirects=not (auth and config.headers),
                    timeout=aiohttp.ClientTimeout(
                        total=None, connect=config.timeout_s, sock_read=None
                    ),
                ) as response:
                    if response.status == 429:
                        owner.stats[Counter.SSE_CONNECT_FAILURES] += 1
                        owner.stats[Counter.FETCH_RATE_LIMITED] += 1
                        retry_after = response.headers.get("Retry-After")
                        wait = parse_retry_after(retry_after, MAX_RETRY_AFTER_S)
                        floor = self._backoff_s(attempt)  # Retry-After: 0 is no licence to storm
                        owner.gate.block(floor if wait is None else max(wait, floor))
                        owner.log.log(
                            logging.WARNING, "sse-429", "event stream at %s answered 429", where
                        )
                    elif response.status in (401, 403) and credentials_sent:
                        # Credentials rejected: fatal, as for the bulk endpoint.
                        owner.stats[Counter.SSE_CONNECT_FAILURES] += 1
                        owner.on_fatal(response.status)
                        return
                    elif response.status in (401, 403):
                        owner.stats[Counter.SSE_CONNECT_FAILURES] += 1
                        owner.stats[Counter.SSE_TOKEN_REJECTED] += 1
                        owner.log.log(
                            logging.WARNING,
                            "sse-token",
                            "event stream at %s answered HTTP %d: its URL's token was "
                            "refused; re-fetching the bulk evaluation for fresh stream URLs",
                            where,
                            response.status,
                        )
                        owner.on_token_rejected()
                    elif response.status != 200 or response.content_type != "text/event-stream":
                        # W3C: any other type fails the connection (else a catch-all page
                        # would pass for a stream that ends at once, and be re-fetched).
                        owner.stats[Counter.SSE_CONNECT_FAILURES] += 1
                        owner.log.log(
                            logging.WARNING,
                            "sse-status",
                            "event stream at %s answered HTTP %d (%s); retrying with backoff",
                            where,
                            response.status,
                            owner.scrub(response.content_type)[:100],
                        )
                    else:
                        self.connected = True
                        connected_at = time.monotonic()
                        owner.stats[Counter.SSE_CONNECTS] += 1
                        owner.on_state()
                        owner.on_connected()
                        await pump(
                            response.content,
                            parser,
                            config.sse_read_timeout_s,
                            self._on_event,
                            max_events_per_s=owner.max_events_per_s,
                        )
            except Exception as exc:
                # Expected (network, read timeout, reader limits) or not: nothing else
                # would ever reconnect this stream.
                if isinstance(exc, SSEFlood):
                    owner.stats[Counter.SSE_FLOOD_CLOSES] += 1
                if not self.connected:
                    owner.stats[Counter.SSE_CONNECT_FAILURES] += 1
                owner.log.log(
                    logging.WARNING,
                    "sse-error",
                    "event stream at %s failed (%s); retrying with backoff",
                    where,
                    type(exc).__name__,
                )
            finally:
                self.last_event_id = parser.last_event_id
                if self.last_event_id and not sendable(self.last_event_id):
                    owner.stats[Counter.SSE_ID_UNSENDABLE] += 1
                    self.last_event_id = ""
                if parser.retry_ms is not None:
                    self.retry_ms = parser.retry_ms
                if self.connected:
                    self.connected = False
                    owner.stats[Counter.SSE_DISCONNECTS] += 1
                    owner.on_state()
            if (
                connected_at is not None
                and time.monotonic() - connected_at >= config.reconnect_max_s
            ):
                attempt = 0
            delay = self._backoff_s(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _on_event(self, event: SSEEvent) -> None:
        stats = self.owner.stats
        stats[Counter.SSE_EVENTS] += 1
        try:
            payload = _decoder.decode(event.data)
        except (msgspec.DecodeError, RecursionError):  # deep nesting: RecursionError
            stats[Counter.SSE_MALFORMED_EVENTS] += 1
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            stats[Counter.SSE_MALFORMED_EVENTS] += 1
            return
        if payload["type"] != "refetchEvaluation":
            stats[Counter.SSE_IGNORED_EVENTS] += 1
            return
        stats[Counter.SSE_REFETCH_EVENTS] += 1
        etag = payload.get("etag")
        self.owner.on_refetch(
            _query_value(etag if isinstance(etag, str) else None, stats),
            _query_value(_last_modified(payload.get("lastModified")), stats),
        )


class StreamManager:
    """The set of live connections; it follows the stream list of the latest 200."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        config: OFREPConfig,
        gate: RateGate,
        stats: Stats,
        log: RateLimitedLog,
        on_connected: Callable[[], None],
        on_refetch: OnRefetch,
        on_state: Callable[[], None],
        on_fatal: Callable[[int], None],
        on_token_rejected: Callable[[], None],
        max_events_per_s: int,
    ) -> None:
        self.session = session
        self.config = config
        self.gate = gate
        self.stats = stats
        self.log = log
        self.on_connected = on_connected
        self.on_refetch = on_refetch
        self.on_state = on_state
        self.on_fatal = on_fatal
        self.on_token_rejected = on_token_rejected
        self.max_events_per_s = max_events_per_s
        self.scrub = scrubber(config)
        self._connections: dict[str, _Connection] = {}

    @property
    def count(self) -> int:
        return len(self._connections)

    @property
    def all_connected(self) -> bool:
        return all(c.connected for c in self._connections.values())

    def update(self, specs: tuple[StreamSpec, ...]) -> None:
        """Same URL: kept as is. A URL that differs from a held one only in its query
        (or userinfo, or fragment) is that stream with a new token: the held connection
        takes it for its next connect, with no reconnect now and so no fetch (several
        such streams on one path pair up in order). Gone: closed. New: connected."""
        wanted = {str(spec.url): spec for spec in specs}
        held = dict(self._connections)
        kept: dict[str, _Connection] = {}
        for key in [k for k in wanted if k in held]:
            kept[key] = held.pop(key)
            kept[key].spec = wanted.pop(key)
        for key, spec in list(wanted.items()):
            same = next(
                (k for k, c in held.items() if _stream(c.spec.url) == _stream(spec.url)), None
            )
            if same is not None:
                kept[key] = held.pop(same)
                kept[key].spec = wanted.pop(key)
                self.stats[Counter.SSE_TOKEN_REPLACED] += 1
        for connection in held.values():
            self._stop(connection)
        self._connections = kept
        for key, spec in wanted.items():
            connection = _Connection(self, spec)
            self._connections[key] = connection
            connection.start()
        self.on_state()

    def _close(self, key: str) -> asyncio.Task[None] | None:
        return self._stop(self._connections.pop(key))

    def _stop(self, connection: _Connection) -> asyncio.Task[None] | None:
        if connection.task is not None:
            connection.task.cancel()
        if connection.connected:
            connection.connected = False
            self.stats[Counter.SSE_DISCONNECTS] += 1
        return connection.task

    def close_all(self) -> list[asyncio.Task[None]]:
        tasks = [t for t in (self._close(k) for k in list(self._connections)) if t is not None]
        self.on_state()
        return tasks
