"""What a bulk evaluation answer means: the outcomes of one request, and a 200's body.

`parse_bulk` turns a 200 into `Fetched` (or `Failed` when it cannot be used) within a
budget: a body of valid JSON under the byte cap can still decode into tens of millions
of objects (11 million empty arrays fit in 32 MiB and took 1.6 GB), so it is counted
first (`MAX_JSON_ELEMENTS`) and refused past the budget, without being decoded.
``eventStreams`` entries become `StreamSpec`s, their ``url`` kept byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from yarl import URL

from ._diagnostics import Counter
from ._resolve import FlagEntry, entry_from_item

# Each stream holds one of the session's 100 connections for good: more would starve the
# bulk fetches. Servers list one or two; entries past this count as invalid.
MAX_EVENT_STREAMS = 8
# Each '[', '{' and ',' of a body counts (so at least every container and every value
# after the first of each; the same bytes inside strings count too, which only errs on
# the safe side). 20,000 flags with variant, reason and metadata come to ~160,000; at
# most this many, the decoded answer costs about what its 32 MiB body cap does.
MAX_JSON_ELEMENTS = 500_000

_json_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class StreamSpec:
    url: URL
    inactivity_delay_s: float | None


@dataclass(frozen=True, slots=True)
class Fetched:
    stat: ClassVar[Counter] = Counter.FETCH_OK
    etag: str | None
    items: dict[str, Any]  # raw decoded items, for change detection
    entries: dict[str, FlagEntry]
    streams: tuple[StreamSpec, ...]
    invalid_items: int
    invalid_streams: int
    etag_dropped: bool = False  # the server's ETag could not be sent back: not kept


@dataclass(frozen=True, slots=True)
class NotModified:
    stat: ClassVar[Counter] = Counter.FETCH_NOT_MODIFIED


@dataclass(frozen=True, slots=True)
class RateLimited:
    stat: ClassVar[Counter] = Counter.FETCH_RATE_LIMITED
    retry_after_s: float | None  # None: header missing or unreadable


@dataclass(frozen=True, slots=True)
class Rejected:
    """401/403 (credentials rejected) or 400 (the request itself is wrong): what
    ADR-0009 calls configuration errors. ``error_code`` is a 400 body's ``errorCode``."""

    status: int
    error_code: str | None = None
    detail: str = ""

    @property
    def stat(self) -> Counter:
        return Counter.FETCH_STATUS_400 if self.status == 400 else Counter.FETCH_UNAUTHORIZED


@dataclass(frozen=True, slots=True)
class Failed:
    stat: Counter  # the counter this failure increments
    detail: str  # safe to log: no URL query, no header value


#: What one bulk request came to; ``stat`` is the counter it increments.
Outcome = Fetched | NotModified | RateLimited | Rejected | Failed


def _uri_text(text: str) -> bool:
    # Sent as given, so it must already be a URI: visible ASCII, no space.
    return bool(text) and text.isascii() and text.isprintable() and " " not in text


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def same_origin(a: URL, b: URL) -> bool:
    return _origin(a) == _origin(b)


def _stream_spec(raw: Any, base_url: URL) -> StreamSpec | bool | None:
    """A spec, None for an entry of unknown type (ignored silently, for forward
    compatibility), or False for a broken entry (counted)."""
    if not isinstance(raw, dict):
        return False
    if raw.get("type") != "sse":
        return None if isinstance(raw.get("type"), str) else False
    url_field = raw.get("url")
    endpoint = raw.get("endpoint")
    if (url_field is None) == (endpoint is None):
        return False  # exactly one of url / endpoint
    try:
        if url_field is not None:
            if not isinstance(url_field, str) or not _uri_text(url_field):
                return False
            url = URL(url_field, encoded=True)  # ADR-0008: used as given, byte for byte
        else:
            if not isinstance(endpoint, dict):
                return False
            request_uri = endpoint.get("requestUri")
            origin = endpoint.get("origin")
            if not isinstance(request_uri, str) or not _uri_text(request_uri):
                return False
            if origin is None:
                # Only the origin of the base URL: its path is not a prefix here.
                origin_url = base_url.origin()
            elif isinstance(origin, str):
                origin_url = URL(origin)
                if not origin_url.absolute or origin_url.path not in ("", "/"):
                    return False
                origin_url = origin_url.origin()
            else:
                return False
            if not request_uri.startswith("/"):
                request_uri = "/" + request_uri
            url = URL(str(origin_url).rstrip("/") + request_uri, encoded=True)
    except (TypeError, ValueError):
        return False
    if url.scheme not in ("http", "https") or not url.host:
        return False
    delay = raw.get("inactivityDelaySec")
    inactivity: float | None = None
    if isinstance(delay, int) and not isinstance(delay, bool) and delay >= 1:
        inactivity = float(delay)
    return StreamSpec(url=url, inactivity_delay_s=inactivity)


def parse_bulk(
    body: bytes, etag: str | None, base_url: URL, etag_dropped: bool = False
) -> Fetched | Failed:
    if body.count(b"[") + body.count(b"{") + body.count(b",") > MAX_JSON_ELEMENTS:
        return Failed(
            Counter.FETCH_TOO_COMPLEX, f"200 body has over {MAX_JSON_ELEMENTS} JSON elements"
        )
    try:
        doc = _json_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        # msgspec raises RecursionError, not DecodeError, past ~1,000 levels of nesting.
        return Failed(Counter.FETCH_MALFORMED, "200 body is not JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), list):
        return Failed(Counter.FETCH_MALFORMED, "200 body has no 'flags' array")
    items: dict[str, Any] = {}
    entries: dict[str, FlagEntry] = {}
    invalid_items = 0
    for item in doc["flags"]:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            invalid_items += 1
            continue
        items[item["key"]] = item
        entries[item["key"]] = entry_from_item(item)
    streams: list[StreamSpec] = []
    invalid_streams = 0
    raw_streams = doc.get("eventStreams")
    if isinstance(raw_streams, list):
        seen: set[str] = set()
        for raw in raw_streams:
            spec = _stream_spec(raw, base_url)
            if spec is False:
                invalid_streams += 1
            elif isinstance(spec, StreamSpec) and str(spec.url) not in seen:
                if len(streams) == MAX_EVENT_STREAMS:
                    invalid_streams += 1
                    continue
                seen.add(str(spec.url))
                streams.append(spec)
    elif raw_streams is not None:
        invalid_streams += 1
    return Fetched(
        etag=etag,
        items=items,
        entries=entries,
        streams=tuple(streams),
        invalid_items=invalid_items,
        invalid_streams=invalid_streams,
        etag_dropped=etag_dropped,
    )
