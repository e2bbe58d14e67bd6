"""One bulk evaluation request and what its answer means.

``fetch_bulk`` never raises for anything the server or the network does: it returns
one of `Fetched` (200), `NotModified` (304), `RateLimited` (429), `Fatal` (401/403) or
`Failed` (everything else: 400, 5xx, other 4xx such as fast-feature's 422, malformed
bodies, timeouts, connection errors). The caller decides what to keep and when to
retry. Also here: the request body for a context, ``Retry-After`` in its three forms,
and the ``eventStreams`` entries of a 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import msgspec
from openfeature.evaluation_context import EvaluationContext
from yarl import URL

from flageval._common import parse_retry_after

from ._config import OFREPConfig
from ._resolve import FlagEntry, entry_from_item

# A bulk answer beyond this is refused rather than buffered: memory stays bounded.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Each stream holds one of the session's 100 connections for good: more would starve the
# bulk fetches. Servers list one or two; entries past this count as invalid.
MAX_EVENT_STREAMS = 8
# A typo or a skewed server clock in Retry-After must not silence the provider for days.
MAX_RETRY_AFTER_S = 3600.0

_json_decoder = msgspec.json.Decoder()


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return list(obj)
    # Anything the SDK's types do not cover reaches the server as its string form.
    return str(obj)


_json_encoder = msgspec.json.Encoder(enc_hook=_enc_hook, order="sorted")


def encode_context(context: EvaluationContext) -> bytes:
    """The request body. Keys are sorted, so equal contexts give equal bytes: the body
    doubles as the canonical form that an ETag is tied to."""
    fields: dict[str, Any] = dict(context.attributes)
    if context.targeting_key is not None:
        fields["targetingKey"] = context.targeting_key
    return _json_encoder.encode({"context": fields})


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """Why a fetch is wanted. ``conditional`` sends the stored ETag as If-None-Match;
    the flagConfig* values come verbatim from the latest refetchEvaluation event."""

    conditional: bool = True
    flag_config_etag: str | None = None
    flag_config_last_modified: str | None = None

    def merge(self, newer: FetchRequest) -> FetchRequest:
        """Two triggers, one fetch: unconditional wins (it refreshes everything), and
        the newest event metadata is carried."""
        if not (self.conditional and newer.conditional):
            return FetchRequest(conditional=False)
        if newer.flag_config_etag is not None or newer.flag_config_last_modified is not None:
            return newer
        return self


@dataclass(frozen=True, slots=True)
class StreamSpec:
    url: URL
    inactivity_delay_s: float | None


@dataclass(frozen=True, slots=True)
class Fetched:
    stat: ClassVar[str] = "fetch_ok"
    etag: str | None
    items: dict[str, Any]  # raw decoded items, for change detection
    entries: dict[str, FlagEntry]
    streams: tuple[StreamSpec, ...]
    invalid_items: int
    invalid_streams: int


@dataclass(frozen=True, slots=True)
class NotModified:
    stat: ClassVar[str] = "fetch_not_modified"


@dataclass(frozen=True, slots=True)
class RateLimited:
    stat: ClassVar[str] = "fetch_rate_limited"
    retry_after_s: float | None  # None: header missing or unreadable


@dataclass(frozen=True, slots=True)
class Fatal:
    stat: ClassVar[str] = "fetch_unauthorized"
    status: int


@dataclass(frozen=True, slots=True)
class Failed:
    stat: str  # the counter this failure increments
    detail: str  # safe to log: no URL query, no header value


#: What one bulk request came to; ``stat`` names the counter it increments.
Outcome = Fetched | NotModified | RateLimited | Fatal | Failed


def bulk_url(config: OFREPConfig, request: FetchRequest) -> URL:
    params: list[str] = []
    # Every reserved character encoded: the server decodes exactly what the event carried.
    if request.flag_config_etag is not None:
        params.append("flagConfigEtag=" + quote(request.flag_config_etag, safe=""))
    if request.flag_config_last_modified is not None:
        params.append("flagConfigLastModified=" + quote(request.flag_config_last_modified, safe=""))
    base = config.bulk_url
    if not params:
        return base
    return URL(str(base) + "?" + "&".join(params), encoded=True)


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def same_origin(a: URL, b: URL) -> bool:
    return _origin(a) == _origin(b)


def _uri_text(text: str) -> bool:
    # Sent as given, so it must already be a URI: visible ASCII, no space.
    return bool(text) and text.isascii() and text.isprintable() and " " not in text


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


def parse_bulk(body: bytes, etag: str | None, base_url: URL) -> Fetched | Failed:
    try:
        doc = _json_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        # msgspec raises RecursionError, not DecodeError, past ~1,000 levels of nesting.
        return Failed("fetch_malformed", "200 body is not JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), list):
        return Failed("fetch_malformed", "200 body has no 'flags' array")
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
    )


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes | None:
    if response.content_length is not None and response.content_length > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_bulk(
    session: aiohttp.ClientSession,
    config: OFREPConfig,
    context_body: bytes,
    etag: str | None,
    request: FetchRequest,
) -> Outcome:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(config.headers)
    if request.conditional and etag is not None:
        headers["If-None-Match"] = etag
    try:
        async with session.post(
            bulk_url(config, request),
            data=context_body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            # aiohttp drops only Authorization across origins: with configured headers
            # (X-API-Key...), a redirect is a failed fetch rather than a leaked credential.
            allow_redirects=not config.headers,
        ) as response:
            status = response.status
            if status == 200:
                body = await _read_bounded(response)
                if body is None:
                    return Failed("fetch_malformed", "200 body larger than the limit")
                return parse_bulk(body, response.headers.get("ETag"), config.base_url)
            if status == 304:
                return NotModified()
            if status == 429:
                retry_after = response.headers.get("Retry-After")
                return RateLimited(parse_retry_after(retry_after, MAX_RETRY_AFTER_S))
            if status in (401, 403):
                return Fatal(status)
            if status == 400:
                return Failed("fetch_status_400", await _error_detail(response))
            if status >= 500:
                return Failed("fetch_status_5xx", await _error_detail(response))
            return Failed("fetch_status_other", await _error_detail(response))
    except TimeoutError:
        return Failed("fetch_timeout", f"no answer within {config.timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Failed("fetch_network_error", type(exc).__name__)


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    """Status plus the server's own words, when it gave any in a form OFREP or a common
    framework uses (errorCode/errorDetails, FastAPI's detail). Bounded in length."""
    detail = f"HTTP {response.status}"
    try:
        raw = await asyncio.wait_for(response.content.read(16 * 1024), timeout=1.0)
        doc = _json_decoder.decode(raw)
    except (
        TimeoutError,
        aiohttp.ClientError,
        OSError,
        msgspec.DecodeError,
        ValueError,
        RecursionError,  # msgspec, on deeply nested JSON
    ):
        return detail
    if isinstance(doc, dict):
        words = [str(doc[k])[:200] for k in ("errorCode", "errorDetails", "detail") if k in doc]
        if words:
            detail += ": " + "; ".join(words)
    return detail
