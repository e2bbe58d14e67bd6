"""What of an HTTP exchange the sender looks at: whether the request left, and at most a
small bounded part of the answer's body.

Whether the request left: aiohttp raises a plain ``TimeoutError`` for a connect or TLS
handshake that stalls as for an answer that never came; its ``on_request_headers_sent``
trace signal tells the two apart (before it, no byte of the request reached the intake).

The answer: only its status and headers matter. Reading a body whole let an intake's
1 GiB answer take the client from 37 MB to 2.09 GB; now at most ``SNIPPET_BYTES`` are
read (an error text for the log) and the connection of a longer body is closed.
"""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import aiohttp

from ._losses import Dropped

#: The most of an answer's body ever read: enough for an error text in the log.
SNIPPET_BYTES = 1024
#: The most of that text that reaches a log line.
SNIPPET_CHARS = 200


class Retryable(Exception):
    """Nothing reached the intake. ``now``: False when trying again within this flush
    cannot help (an untrusted certificate): the body waits for the next one."""

    def __init__(
        self, why: str, said: str, wait_s: float | None = None, *, now: bool = True
    ) -> None:
        super().__init__(why)
        self.why = why
        self.said = said  # what happened, in words, for the log
        self.wait_s = wait_s
        self.now = now


class Rejected(Exception):
    """Not sent again: the intake refused the body (a 4xx other than 429) or may have
    counted it (no answer came)."""

    def __init__(self, reason: Dropped, status: int | None, text: str = "", *, said: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.text = text
        self.said = said  # what happened, in words, for the log


async def _on_headers_sent(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    attempt = ctx.trace_request_ctx  # None for a request that does not ask (GET /info)
    if attempt is not None:
        attempt.sent = True  # from here the intake may get the body


def trace_config() -> aiohttp.TraceConfig:
    """Marks ``trace_request_ctx.sent`` once the request starts going out."""
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_on_headers_sent)
    return config


def discard(resp: aiohttp.ClientResponse) -> None:
    """Take what already arrived of a body nobody reads (bounded); a longer one closes
    the connection instead of being read."""
    try:
        resp.content.read_nowait(SNIPPET_BYTES)
        done = resp.content.at_eof()
    except Exception:  # the body broke off after the status: the status still stands
        done = False
    if not done:
        resp.close()


async def snippet(resp: aiohttp.ClientResponse, wait_s: float, secret: str | None) -> str:
    """At most SNIPPET_BYTES of an error answer, as one printable line (may be empty),
    never with ``secret`` (our API key, should an intake echo it) in it."""
    data = b""
    if not resp.headers.get("Content-Encoding"):
        try:
            data = await asyncio.wait_for(resp.content.read(SNIPPET_BYTES), wait_s)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            data = b""
    if not resp.content.at_eof():
        resp.close()
    text = data.decode("utf-8", "replace")
    if secret:
        text = text.replace(secret, "<redacted>")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:SNIPPET_CHARS]


def not_connected(exc: aiohttp.ClientConnectorError) -> str:
    """Why no connection was made, in words (for the log)."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    cause = exc.os_error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host name not found"
    if isinstance(cause, FileNotFoundError):
        return "no socket at that path"
    return "could not connect"


def no_answer(exc: BaseException, timeout_s: float) -> str:
    """Why a body that may have reached the intake got no usable answer, in words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:.3g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before an answer"
    if isinstance(exc, aiohttp.ClientOSError):
        return "the connection was reset"
    return "an answer that could not be read"


def not_sent(exc: BaseException, timeout_s: float) -> tuple[str, str]:
    """(reason key, words) for a connect or TLS handshake that failed or stalled before
    any byte of the request left."""
    if isinstance(exc, TimeoutError):
        return "connect_timeout", f"no connection within {timeout_s:.3g} s"
    return "connect_error", "the connection failed before the request was sent"


def refused(status: int) -> str:
    """An answer that refuses the body for good, in words."""
    redirect = ", a redirect (not followed)" if 300 <= status < 400 else ""
    return f"it answered {status}{redirect}, not retried"
