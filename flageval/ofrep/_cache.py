"""ADR-0009 for one provider: the persisted entry that matches a context, and writing
the latest evaluation. File I/O runs in a worker thread, never on the loop itself.

What each ``cache_mode`` does with it is the coordinator's; here: an entry matches when
it was written for this provider's identity (base URL, every configured header value,
``cache_key_prefix``: another tenant's entry is never served), its ``cacheKeyHash`` is
the current targeting key's (a context without a targeting key matches only the very
same context), and it is younger than ``cache_ttl_s``; other attributes of a keyed
context may differ (the refresh corrects them). Its evaluations are served with reason
CACHED; its ETag is offered for revalidation only for the very same context and when
the answer listed no event stream (stream URLs are never written, and a 304 carries no
``eventStreams``: the refresh must then be a 200). Writes are serialized, the newest
waiting one wins, and a write whose context was replaced meanwhile is discarded.

Every failure is counted and logged (rate-limited), and the provider goes on: a read
that fails in any way (a file nested past the decoder's depth, a FIFO at the path, a
read still hung at `READ_DEADLINE_S`) is a miss, so initialize() asks the network
within its own timeout; a failed write leaves the old entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from yarl import URL

from flageval._common import RateLimitedLog

from ._bulk import Failed, Fetched, StreamSpec, parse_bulk
from ._config import OFREPConfig
from ._diagnostics import Counter, Stats
from ._persist import (
    MAX_ENTRY_BYTES,
    Entry,
    Store,
    context_hash,
    file_name,
    identity_hash,
    key_hash,
)
from ._resolve import cached

# An entry written this far in the future (a clock set back since) is not trusted.
_CLOCK_SKEW_S = 300.0
#: A read of the entry (a few MB at most, from a local disk) still running after this
#: is given up, and initialize() goes to the network: a hung network home directory
#: must not eat the timeout the first fetch needs.
READ_DEADLINE_S = 2.0

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode

T = TypeVar("T")


async def _off_loop(fn: Callable[[], T]) -> T:
    """Run blocking file I/O on a daemon thread of its own: unlike the loop's executor,
    it leaves no thread behind and never holds up the interpreter's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = fn(), None
        except Exception as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="flageval-ofrep-cache", daemon=True).start()
    return await future


@dataclass(frozen=True, slots=True)
class Cached:
    """A matching entry: ``fetched.entries`` have reason CACHED; ``etag`` is the one to
    revalidate with (None: refresh unconditionally)."""

    fetched: Fetched
    etag: str | None


def _key_hash(prefix: str | None, body: bytes) -> str | None:
    """The entry's key for a request body: its targeting key's hash, or None without one."""
    key = _decode(body).get("context", {}).get("targetingKey")
    return key_hash(prefix, key) if isinstance(key, str) else None


class EvaluationCache:
    def __init__(self, config: OFREPConfig, stats: Stats, log: RateLimitedLog) -> None:
        self.mode = config.cache_mode
        self._prefix = config.cache_key_prefix
        self._ttl_s = config.cache_ttl_s
        self._base_url: URL = config.base_url
        self._stats = stats
        self._log = log
        self._identity = identity_hash(str(config.base_url), config.headers, self._prefix)
        self._store: Store | None = None
        if self.mode != "disabled" and config.cache_dir is not None:
            self._store = Store(config.cache_dir, file_name(self._identity))
        self._waiting: tuple[bytes, Callable[[], bool]] | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def load(self, body: bytes) -> Cached | None:
        try:
            return await self._load(body)
        except Exception as exc:  # any failure at all is a miss: the provider goes on
            self._stats[Counter.CACHE_READ_FAILED] += 1
            self._log.warning("cache-read", "persisted evaluation not used: %s", _why(exc))
            return None

    async def _load(self, body: bytes) -> Cached | None:
        store = self._store
        if store is None:
            return None
        try:
            entry = await asyncio.wait_for(_off_loop(store.read), READ_DEADLINE_S)
        except TimeoutError:
            raise OSError("reading the persisted evaluation did not finish in time") from None
        now = time.time()
        same = entry is not None and entry.context_hash == context_hash(self._prefix, body)
        key = _key_hash(self._prefix, body)
        if (
            entry is None
            or entry.identity != self._identity
            or entry.key_hash != key
            or (key is None and not same)
        ):
            self._stats[Counter.CACHE_MISSES] += 1
            return None
        if not (now - self._ttl_s <= entry.written_at <= now + _CLOCK_SKEW_S):
            self._stats[Counter.CACHE_EXPIRED] += 1
            return None
        parsed = parse_bulk(_encode(entry.payload), entry.etag, self._base_url)
        if isinstance(parsed, Failed):
            raise ValueError(parsed.detail)
        self._stats[Counter.CACHE_HITS] += 1
        fetched = Fetched(
            etag=parsed.etag,
            items=parsed.items,
            entries={key: cached(e) for key, e in parsed.entries.items()},
            streams=(),
            invalid_items=0,
            invalid_streams=0,
        )
        return Cached(fetched, entry.etag if same and not entry.streams_withheld else None)

    def save(
        self,
        body: bytes,
        etag: str | None,
        items: Mapping[str, Any],
        specs: tuple[StreamSpec, ...],
        is_current: Callable[[], bool],
    ) -> None:
        """Persist this evaluation of ``body`` unless ``is_current()`` is False by the
        time its turn to be written comes."""
        store = self._store
        if store is None:
            return
        entry = Entry(
            identity=self._identity,
            key_hash=_key_hash(self._prefix, body),
            context_hash=context_hash(self._prefix, body),
            etag=etag,
            written_at=time.time(),
            payload={"flags": list(items.values())},
            streams_withheld=bool(specs),
        )
        data = store.encode(entry)
        if len(data) > MAX_ENTRY_BYTES:
            self._stats[Counter.CACHE_WRITE_TOO_LARGE] += 1
            self._log.warning(
                "cache-size",
                "evaluation not persisted: %d bytes is over the %d-byte limit",
                len(data),
                MAX_ENTRY_BYTES,
            )
            return
        if self._waiting is not None:
            self._stats[Counter.CACHE_WRITE_DISCARDED] += 1  # superseded before its turn
        self._waiting = (data, is_current)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(store))

    async def _drain(self, store: Store) -> None:
        while self._waiting is not None:
            data, is_current = self._waiting
            self._waiting = None
            if not is_current():
                self._stats[Counter.CACHE_WRITE_DISCARDED] += 1
                continue
            try:
                await _off_loop(functools.partial(store.write, data))
            except Exception as exc:
                self._stats[Counter.CACHE_WRITE_FAILED] += 1
                self._log.warning(
                    "cache-write", "evaluation not persisted (%s); going on in memory", _why(exc)
                )
            else:
                self._stats[Counter.CACHE_WRITES] += 1

    async def close(self, timeout_s: float) -> None:
        """Let a write under way finish (within ``timeout_s``); drop one still waiting."""
        self._waiting = None
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait([writer], timeout=timeout_s)


def _why(exc: BaseException) -> str:
    # An OSError's text names the path (the user's home): its kind and errno say enough.
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} [errno {exc.errno}]"
    if isinstance(exc, OSError | ValueError) and type(exc) is not UnicodeDecodeError:
        return str(exc)  # ours (CacheUnusable, the deadline, a bad entry): no path
    return type(exc).__name__
