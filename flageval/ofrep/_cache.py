"""ADR-0009 for one provider: the persisted entry that matches a context, and writing
the latest evaluation. File I/O runs in a worker thread, never on the loop itself.

What each ``cache_mode`` does with it is the coordinator's; here: an entry matches when
its ``cacheKeyHash`` is the current targeting key's and it is younger than
``cache_ttl_s`` (other attributes may differ: the refresh corrects them). Its
evaluations are served with reason CACHED; its ETag is offered for revalidation only
for the very same context and when no stream URL was withheld (a 304 carries no
``eventStreams``: with withheld URLs the refresh must be a 200). Writes are serialized,
the newest waiting one wins, and a write whose context was replaced meanwhile is
discarded. Every failure is counted and logged (rate-limited); the provider goes on
from memory and the old entry stays.
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

from flageval._common import RateLimitedLog, redact_url

from ._bulk import Failed, Fetched, StreamSpec, parse_bulk
from ._config import OFREPConfig
from ._diagnostics import Counter, Stats
from ._persist import (
    MAX_ENTRY_BYTES,
    CacheUnusable,
    Entry,
    Store,
    context_hash,
    file_name,
    key_hash,
)
from ._resolve import cached

# An entry written this far in the future (a clock set back since) is not trusted.
_CLOCK_SKEW_S = 300.0

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


def _targeting_key(body: bytes) -> str:
    key = _decode(body).get("context", {}).get("targetingKey")
    return key if isinstance(key, str) else ""


def _persistable(specs: tuple[StreamSpec, ...]) -> tuple[list[dict[str, Any]], bool]:
    """The stream entries that may be written (no query, no userinfo: a token may hide
    there), and whether any was withheld."""
    kept: list[dict[str, Any]] = []
    for spec in specs:
        url = spec.url
        if url.raw_query_string or url.raw_user or url.raw_password or url.raw_fragment:
            continue
        item: dict[str, Any] = {"type": "sse", "url": str(url)}
        if spec.inactivity_delay_s is not None:
            item["inactivityDelaySec"] = int(spec.inactivity_delay_s)
        kept.append(item)
    return kept, len(kept) != len(specs)


class EvaluationCache:
    def __init__(self, config: OFREPConfig, stats: Stats, log: RateLimitedLog) -> None:
        self.mode = config.cache_mode
        self._prefix = config.cache_key_prefix
        self._ttl_s = config.cache_ttl_s
        self._base_url: URL = config.base_url
        self._stats = stats
        self._log = log
        self._store: Store | None = None
        if self.mode != "disabled" and config.cache_dir is not None:
            name = file_name(redact_url(config.bulk_url), self._prefix)
            self._store = Store(config.cache_dir, name)
        self._waiting: tuple[bytes, Callable[[], bool]] | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def load(self, body: bytes) -> Cached | None:
        store = self._store
        if store is None:
            return None
        try:
            entry = await _off_loop(store.read)
        except (OSError, ValueError) as exc:
            self._stats[Counter.CACHE_READ_FAILED] += 1
            self._log.warning("cache-read", "persisted evaluation not used: %s", _why(exc))
            return None
        now = time.time()
        if entry is None or entry.key_hash != key_hash(self._prefix, _targeting_key(body)):
            self._stats[Counter.CACHE_MISSES] += 1
            return None
        if not (now - self._ttl_s <= entry.written_at <= now + _CLOCK_SKEW_S):
            self._stats[Counter.CACHE_EXPIRED] += 1
            return None
        parsed = parse_bulk(_encode(entry.payload), entry.etag, self._base_url)
        if isinstance(parsed, Failed):
            self._stats[Counter.CACHE_READ_FAILED] += 1
            self._log.warning("cache-read", "persisted evaluation not used: %s", parsed.detail)
            return None
        self._stats[Counter.CACHE_HITS] += 1
        same = entry.context_hash == context_hash(self._prefix, body)
        fetched = Fetched(
            etag=parsed.etag,
            items=parsed.items,
            entries={key: cached(e) for key, e in parsed.entries.items()},
            streams=parsed.streams,
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
        streams, withheld = _persistable(specs)
        entry = Entry(
            key_hash=key_hash(self._prefix, _targeting_key(body)),
            context_hash=context_hash(self._prefix, body),
            etag=etag,
            written_at=time.time(),
            payload={"flags": list(items.values()), "eventStreams": streams},
            streams_withheld=withheld,
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
            except (OSError, ValueError) as exc:
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
    if isinstance(exc, CacheUnusable | ValueError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} [errno {exc.errno}]"
    return type(exc).__name__
