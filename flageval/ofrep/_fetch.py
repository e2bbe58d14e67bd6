"""One bulk evaluation request.

``fetch_bulk`` never raises for anything the server or the network does: it returns
one of `Fetched` (200), `NotModified` (304), `RateLimited` (429), `Rejected` (400, 401,
403) or `Failed` (everything else: 5xx, other 4xx such as fast-feature's 422, malformed
or over-budget bodies, timeouts, connection errors). The caller decides what to keep
and when to retry. Also here: the query for a refetch event and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from flageval._common import parse_retry_after

from ._bulk import Failed, NotModified, Outcome, RateLimited, Rejected, parse_bulk
from ._config import OFREPConfig
from ._diagnostics import Counter
from ._headers import Scrubber, sendable

# A bulk answer beyond this is refused rather than buffered: memory stays bounded.
MAX_BODY_BYTES = 32 * 1024 * 1024
# A typo or a skewed server clock in Retry-After must not silence the provider for days.
MAX_RETRY_AFTER_S = 3600.0

_json_decoder = msgspec.json.Decoder()


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


def post(
    session: aiohttp.ClientSession,
    config: OFREPConfig,
    url: URL,
    context_body: bytes,
    etag: str | None = None,
) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
    """An evaluation request (bulk or single flag) with the configured headers."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(config.headers)
    if etag is not None:
        headers["If-None-Match"] = etag
    return session.post(
        url,
        data=context_body,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=config.timeout_s),
        # aiohttp drops only Authorization across origins: with configured headers
        # (X-API-Key...), a redirect is a failed fetch rather than a leaked credential.
        allow_redirects=not config.headers,
    )


async def fetch_bulk(
    session: aiohttp.ClientSession,
    config: OFREPConfig,
    context_body: bytes,
    etag: str | None,
    request: FetchRequest,
) -> Outcome:
    sent = etag if request.conditional else None
    try:
        async with post(session, config, bulk_url(config, request), context_body, sent) as response:
            status = response.status
            if status == 200:
                body = await _read_bounded(response)
                if body is None:
                    return Failed(Counter.FETCH_MALFORMED, "200 body larger than the limit")
                etag = response.headers.get("ETag")
                if etag is not None and not sendable(etag):
                    # Kept, it would make every later request fail before it leaves.
                    return parse_bulk(body, None, config.base_url, etag_dropped=True)
                return parse_bulk(body, etag, config.base_url)
            if status == 304:
                return NotModified()
            if status == 429:
                retry_after = response.headers.get("Retry-After")
                return RateLimited(parse_retry_after(retry_after, MAX_RETRY_AFTER_S))
            if status in (401, 403):
                return Rejected(status, None, f"HTTP {status}")
            if status == 400:
                code, detail = await _error_words(response, config)
                return Rejected(400, code, detail)
            stat = Counter.FETCH_STATUS_5XX if status >= 500 else Counter.FETCH_STATUS_OTHER
            return Failed(stat, (await _error_words(response, config))[1])
    except TimeoutError:
        return Failed(Counter.FETCH_TIMEOUT, f"no answer within {config.timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Failed(Counter.FETCH_NETWORK_ERROR, type(exc).__name__)


def scrubber(config: OFREPConfig) -> Scrubber:
    """What hides our credentials in what a server says: every configured header value
    and the base URL's userinfo."""
    url = config.base_url
    return Scrubber([*config.headers.values(), url.user or "", url.password or ""])


async def _error_words(
    response: aiohttp.ClientResponse, config: OFREPConfig
) -> tuple[str | None, str]:
    """(the body's ``errorCode`` if a string, the detail text): the status plus the
    server's own words, when it gave any in a form OFREP or a common framework uses
    (errorCode/errorDetails, FastAPI's detail), our credentials scrubbed out of them
    before they are cut to a bounded length."""
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
        return None, detail
    if not isinstance(doc, dict):
        return None, detail
    scrub = scrubber(config)
    words = [scrub(str(doc[k]))[:200] for k in ("errorCode", "errorDetails", "detail") if k in doc]
    if words:
        detail += ": " + "; ".join(words)
    code = doc.get("errorCode")
    return (scrub(code)[:200] if isinstance(code, str) else None), detail
