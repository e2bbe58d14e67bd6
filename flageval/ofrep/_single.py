"""One single-flag evaluation request: ``POST /ofrep/v1/evaluate/flags/{key}``, OFREP's
server-side route, for a context not worth a bulk fetch.

Like ``fetch_bulk`` it never raises for anything the server or the network does: a 200
or an OFREP error answer (400, 404 with ``errorCode``) becomes a `FlagEntry`; 429 is
`RateLimited`; everything else is `Failed`.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from flageval._common import parse_retry_after

from ._bulk import Failed, RateLimited
from ._config import OFREPConfig
from ._diagnostics import Counter
from ._fetch import MAX_RETRY_AFTER_S, post
from ._resolve import FlagEntry, entry_from_item

# One flag's answer: a megabyte is far past any real one.
MAX_SINGLE_BYTES = 1024 * 1024

_decoder = msgspec.json.Decoder()


def single_url(config: OFREPConfig, flag_key: str) -> URL:
    return URL(str(config.bulk_url) + "/" + quote(flag_key, safe=""), encoded=True)


async def fetch_single(
    session: aiohttp.ClientSession, config: OFREPConfig, context_body: bytes, flag_key: str
) -> FlagEntry | RateLimited | Failed:
    try:
        async with post(session, config, single_url(config, flag_key), context_body) as response:
            status = response.status
            if status == 429:
                retry_after = response.headers.get("Retry-After")
                return RateLimited(parse_retry_after(retry_after, MAX_RETRY_AFTER_S))
            if status not in (200, 400, 404):
                stat = Counter.FETCH_STATUS_5XX if status >= 500 else Counter.FETCH_STATUS_OTHER
                return Failed(stat, f"HTTP {status}")
            raw = await response.content.read(MAX_SINGLE_BYTES + 1)
    except TimeoutError:
        return Failed(Counter.FETCH_TIMEOUT, f"no answer within {config.timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Failed(Counter.FETCH_NETWORK_ERROR, type(exc).__name__)
    try:
        doc = _decoder.decode(raw) if len(raw) <= MAX_SINGLE_BYTES else None
    except (msgspec.DecodeError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or (status != 200 and "errorCode" not in doc):
        return Failed(Counter.FETCH_MALFORMED, f"HTTP {status} without an OFREP answer")
    return entry_from_item(doc)
