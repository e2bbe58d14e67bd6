"""What a request asks for: its body and context within limits, its selector, its ETag.

Everything a client sends is checked here, before any evaluation: a body past the byte
limit is refused unread (413); a body that is not a JSON object with a ``context``
object, a context nested too deep or holding too many values, or a ``targetingKey``
that is not a string, is answered 400 with an ``errorCode``. The canonical context (its
JSON with every object's keys sorted, as msgspec writes it) is what the ETag and the
body cache are keyed on: the same context in any key order is the same context.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web
from openfeature.evaluation_context import EvaluationContext

from ._views import MAX_SET_ID_CHARS

_decode = msgspec.json.Decoder()
_canonical = msgspec.json.Encoder(order="sorted")
#: The longest flag key the single-flag endpoint looks up (longer: not found, unread).
MAX_KEY_CHARS = 1024


class BadRequest(Exception):
    """An answer other than 200: status, OFREP ``errorCode`` and a safe message."""

    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole request body, however it arrives (one read may return only the first
    segment); refused (413) past ``limit`` bytes, without reading the rest, and (408)
    when it has not all come within ``timeout_s`` (a client trickling it holds a
    connection, not the server)."""
    length = request.content_length
    if length is not None and length > limit:
        raise BadRequest(413, "PARSE_ERROR", f"request body over {limit} bytes")
    if request.content.is_eof():  # all of it came with the headers: no wait, no timer
        return await _read(request, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(request, limit)
    except TimeoutError:
        raise BadRequest(408, "PARSE_ERROR", "request body not received in time") from None


async def _read(request: web.Request, limit: int) -> bytes:
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, "PARSE_ERROR", f"request body over {limit} bytes")
    return bytes(body)


def parse_context(raw: bytes, max_depth: int, max_values: int) -> tuple[bytes, EvaluationContext]:
    """``(canonical context, EvaluationContext)`` from a request body, or BadRequest."""
    try:
        body = _decode.decode(raw)
    except RecursionError:
        raise BadRequest(400, "INVALID_CONTEXT", "context nested too deep") from None
    except msgspec.DecodeError:
        raise BadRequest(400, "PARSE_ERROR", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "PARSE_ERROR", "request body must be a JSON object")
    context = body.get("context")
    if not isinstance(context, dict):
        raise BadRequest(400, "INVALID_CONTEXT", "request body must carry a 'context' object")
    _check_shape(context, max_depth, max_values)
    targeting_key = context.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise BadRequest(400, "INVALID_CONTEXT", "targetingKey must be a string")
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    return _canonical.encode(context), EvaluationContext(targeting_key, attributes)


def _check_shape(context: Mapping[str, Any], max_depth: int, max_values: int) -> None:
    """Depth and value count, iteratively (no recursion a context could exhaust)."""
    seen = 0
    stack: list[tuple[Any, int]] = [(context, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(400, "INVALID_CONTEXT", f"context nested deeper than {max_depth}")
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            seen += 1
            if seen > max_values:
                raise BadRequest(
                    400, "INVALID_CONTEXT", f"context holds more than {max_values} values"
                )
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


def selected_set(header: str | None) -> str | None:
    """The flag set of a ``Flagd-Selector`` header (``flagSetId=ID``); None: every flag."""
    if header is None or not header.strip():
        return None
    name, sep, value = header.strip().partition("=")
    if not sep or name.strip() != "flagSetId":
        raise BadRequest(400, "INVALID_CONTEXT", "Flagd-Selector: only flagSetId=<id> is supported")
    return set_id(value.strip())


def set_id(value: str) -> str:
    if not value or len(value) > MAX_SET_ID_CHARS or not value.isprintable():
        raise BadRequest(400, "INVALID_CONTEXT", "flagSetId: 1 to 256 printable characters")
    return value


def etag_of(fingerprint: str, advert: str, canonical: bytes) -> str:
    """A bulk answer's ETag: the flag set's fingerprint, what the server advertises with
    it (stream settings) and the canonical context; a strong, quoted entity tag."""
    h = hashlib.blake2b(digest_size=16)
    h.update(fingerprint.encode())
    h.update(b"\n")
    h.update(advert.encode())
    h.update(b"\n")
    h.update(canonical)
    return '"' + h.hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: ``*``, or a list of tags compared weakly (W/ ignored)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    for listed in if_none_match.split(","):
        tag = listed.strip()
        if tag.removeprefix("W/") == etag:
            return True
    return False
