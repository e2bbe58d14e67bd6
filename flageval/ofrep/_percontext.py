"""Per-context evaluation: each evaluation answered for the context the SDK hands over.

`PerContext` answers a resolve (any thread) from the `ContextCache` entry of its own
canonical context; the loop side makes the requests behind it:

- a miss starts one bulk fetch for its key (single flight: every evaluation of that
  context meanwhile joins it); a sync evaluation waits at most ``context_wait_s`` for
  it, an async one awaits as long; past that the code default with reason ERROR and
  PROVIDER_NOT_READY (counted ``context_wait_timeouts``); the fetch goes on and serves
  the next evaluation. A first sight the admission rule (`_contexts`) finds not worth a
  bulk fetch is answered by the single-flag endpoint, under the same wait;
- change detection stays the server's (streams, polling: the coordinator's). Each of
  its fetch triggers calls `refetched`: every entry goes stale (one epoch more); those used in
  the last ``context_recent_s`` are revalidated (``If-None-Match`` with their own ETag,
  the event's ``flagConfigEtag``) by at most ``context_max_requests`` workers, in
  rounds at most ``event_fetch_interval_s`` apart (later triggers join the next round,
  an entry in flight is not asked twice: coalesced); others on their next use. A
  stale entry is served while it is revalidated; a failed request keeps every answer,
  and no revalidation goes out before the error backoff has passed; every request
  waits on the 429 gate, and a 429 closes it for all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import aiohttp
import msgspec
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from flageval._common import backoff_s
from flageval._loop import LoopThread

from ._bulk import Failed, Fetched, NotModified, Outcome, RateLimited
from ._config import OFREPConfig
from ._contexts import BYTES_PER_ANSWER_BYTE, ContextCache, ContextEncodingError, Entry, context_key
from ._diagnostics import Counter, Stats, logger
from ._fetch import FetchRequest, fetch_bulk
from ._queue import RateGate
from ._resolve import ContextError, FlagEntry, TypeRule, resolve
from ._single import fetch_single
from ._snapshot import Anchor, Shared

T = TypeVar("T")
_monotonic = time.monotonic
_encoder = msgspec.json.Encoder()
# Requests begun and not answered: past this, a miss answers at once (counted busy).
MAX_WAITING = 1_000


class Server(Protocol):
    """What the coordinator lends: its session and its 429 gate."""

    @property
    def session(self) -> aiohttp.ClientSession | None: ...

    @property
    def gate(self) -> RateGate: ...


class Failure:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _error(default: T, code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default, reason=Reason.ERROR, error_code=code, error_message=message
    )


class PerContext:
    def __init__(self, config: OFREPConfig, stats: Stats, shared: Shared) -> None:
        self._config = config
        self._shared = shared
        self._stats = stats
        self.cache = ContextCache(config.context_max_entries, config.context_max_bytes, stats)
        self._attributes = config.context_key_attributes
        self._single_ok = config.context_single_flag == "auto"
        self._thread: LoopThread | None = None
        self._server: Server | None = None
        self._sem: asyncio.Semaphore | None = None
        self._waiting = 0  # loop only; read by resolves (one int)
        self._streak = 0
        self._quiet_until = 0.0  # after a failure: no revalidation before this
        self._request = FetchRequest(conditional=True)  # the latest change's metadata
        self._queue: deque[tuple[Entry, int]] = deque()
        self._workers = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._round_timer: asyncio.TimerHandle | None = None
        self._round_at = -float("inf")
        self._singles: set[concurrent.futures.Future[Any]] = set()  # single-flag, unanswered

    def bind(self, thread: LoopThread, server: Server) -> None:
        self._thread, self._server = thread, server
        self._sem = None  # made on the loop, at first use

    # -- resolving threads -------------------------------------------------------------

    def answer(
        self, context: EvaluationContext, flag_key: str, default: T, rule: TypeRule, anchor: Anchor
    ) -> FlagResolutionDetails[T]:
        found = self._find(context, flag_key, default, rule, anchor)
        if isinstance(found, FlagResolutionDetails):
            return found
        thread = self._thread
        if thread is not None and thread.in_loop_thread():
            return self._late(default)  # on our own loop: waiting would stall the fetch
        try:
            result = found.result(timeout=self._config.context_wait_s)
        except concurrent.futures.TimeoutError:
            return self._late(default)
        return self._from(result, flag_key, default, rule)

    async def answer_async(
        self, context: EvaluationContext, flag_key: str, default: T, rule: TypeRule, anchor: Anchor
    ) -> FlagResolutionDetails[T]:
        found = self._find(context, flag_key, default, rule, anchor)
        if isinstance(found, FlagResolutionDetails):
            return found
        waited = asyncio.shield(asyncio.wrap_future(found))  # others share the fetch
        try:
            result = await asyncio.wait_for(waited, self._config.context_wait_s)
        except TimeoutError:
            return self._late(default)
        return self._from(result, flag_key, default, rule)

    def _find(
        self, context: EvaluationContext, flag_key: str, default: T, rule: TypeRule, anchor: Anchor
    ) -> FlagResolutionDetails[T] | concurrent.futures.Future[Any]:
        """``anchor``: the provider's own context's answer as the resolve found it (read
        before an idle provider was woken)."""
        try:
            key = context_key(context, self._attributes)
        except ContextEncodingError as exc:
            return resolve(ContextError(str(exc)), flag_key, default, rule)
        if anchor is not None and anchor[0] == key:
            return resolve(anchor[1], flag_key, default, rule)
        cache = self.cache
        entry = cache.lookup(key)
        if entry is not None:
            if entry.epoch != cache.epoch and not entry.in_flight:
                self._revalidate_soon(entry)
            return resolve(entry.entries, flag_key, default, rule)
        thread = self._thread
        if thread is None:
            return _error(default, ErrorCode.PROVIDER_NOT_READY, "the provider is not started")
        if self._waiting >= MAX_WAITING:
            cache.count(Counter.CONTEXT_BUSY)
            return _error(default, ErrorCode.GENERAL, "too many context fetches in flight")
        begun = cache.begin(key, self._single_ok)
        if begun is None:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            thread.call_soon(self._spawn, self._single(key, flag_key, future))
            self._singles.add(future)
            future.add_done_callback(self._singles.discard)
            return future
        future, first = begun
        if first:
            thread.call_soon(self._spawn, self._first_fetch(key))
        return future

    def _revalidate_soon(self, entry: Entry) -> None:
        if _monotonic() < self._quiet_until or self._thread is None:
            return
        entry.in_flight = True  # a race lets two threads both schedule: the loop dedups
        self._thread.call_soon(self._revalidate_used, entry)

    def _late(self, default: T) -> FlagResolutionDetails[T]:
        self.cache.count(Counter.CONTEXT_WAIT_TIMEOUTS)
        return _error(
            default,
            ErrorCode.PROVIDER_NOT_READY,
            f"no answer for this context within context_wait_s ({self._config.context_wait_s:g} s)",
        )

    @staticmethod
    def _from(result: Any, flag_key: str, default: T, rule: TypeRule) -> FlagResolutionDetails[T]:
        if isinstance(result, Failure):
            return _error(default, ErrorCode.GENERAL, result.message)
        if isinstance(result, FlagEntry):
            return resolve({flag_key: result}, flag_key, default, rule)
        entries: Mapping[str, FlagEntry] = result
        return resolve(entries, flag_key, default, rule)

    # -- the loop ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        self._waiting += 1
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._waiting -= 1

    async def _ask(self, call: Callable[[aiohttp.ClientSession], Any]) -> Any:
        """One request, within the 429 gate and the concurrency bound; never raises."""
        server = self._server
        if server is None or server.session is None or server.session.closed:
            return Failed(Counter.FETCH_INTERNAL_ERROR, "the provider is closed")
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._config.context_max_requests)
        async with self._sem:
            await server.gate.wait()
            self._stats[Counter.CONTEXT_FETCHES] += 1
            try:
                outcome = await call(server.session)
            except Exception as exc:  # a bug, or a session closed meanwhile
                logger.debug("unexpected error in a context request: %r", type(exc))
                outcome = Failed(Counter.FETCH_INTERNAL_ERROR, f"unexpected {type(exc).__name__}")
        if isinstance(outcome, RateLimited):
            self._stats[Counter.CONTEXT_RATE_LIMITED] += 1
            self._failed()
            wait = max(outcome.retry_after_s or 0.0, self._quiet_until - _monotonic())
            server.gate.block(wait)
        elif isinstance(outcome, Failed):
            self._stats[Counter.CONTEXT_FETCH_FAILED] += 1
            self._failed()
        elif not isinstance(outcome, Fetched | NotModified | FlagEntry):
            self._stats[Counter.CONTEXT_FETCH_FAILED] += 1  # 400/401/403: this context's
            self._failed()
        else:
            self._streak = 0
        return outcome

    def _failed(self) -> None:
        delay = backoff_s(self._streak, self._config.retry_min_s, self._config.retry_max_s, 0.5)
        self._streak += 1
        self._quiet_until = _monotonic() + delay

    def _size(self, outcome: Fetched) -> int:
        return len(_encoder.encode(outcome.items)) * BYTES_PER_ANSWER_BYTE

    async def _first_fetch(self, key: bytes) -> None:
        epoch = self.cache.epoch
        config = self._config
        request = FetchRequest(conditional=False)
        outcome = await self._ask(lambda s: fetch_bulk(s, config, key, None, request))
        result: Any
        if isinstance(outcome, Fetched):
            self._stats[Counter.CONTEXT_FETCH_OK] += 1
            self.cache.store(key, outcome.entries, outcome.etag, self._size(outcome), epoch)
            result = outcome.entries
        else:
            result = Failure(f"could not fetch the evaluation for this context: {_why(outcome)}")
        future = self.cache.finish(key)
        if future is not None and not future.done():
            future.set_result(result)

    async def _single(
        self, key: bytes, flag_key: str, future: concurrent.futures.Future[Any]
    ) -> None:
        self._stats[Counter.CONTEXT_SINGLE_FLAG] += 1
        config = self._config
        outcome = await self._ask(lambda s: fetch_single(s, config, key, flag_key))
        if isinstance(outcome, FlagEntry):
            self._stats[Counter.CONTEXT_FETCH_OK] += 1
        result = outcome if isinstance(outcome, FlagEntry) else Failure(_why(outcome))
        if not future.done():
            future.set_result(result)

    def refetched(self, request: FetchRequest) -> None:
        """A change-detection trigger: every entry stale; recent ones revalidated in a
        round, at most one round per ``event_fetch_interval_s`` (later triggers join
        the next)."""
        self.cache.epoch += 1
        self._request = FetchRequest(
            conditional=True,
            flag_config_etag=request.flag_config_etag,
            flag_config_last_modified=request.flag_config_last_modified,
        )
        if self._round_timer is not None:
            self._stats[Counter.CONTEXT_REVALIDATIONS_COALESCED] += 1
            return
        wait = self._round_at + self._config.event_fetch_interval_s - _monotonic()
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._round_timer = loop.call_later(wait, self._round)
            return
        self._round()

    def _round(self) -> None:
        self._round_timer = None
        now = self._round_at = _monotonic()
        if now < self._quiet_until:
            return  # failing: each entry waits for its next use after the backoff
        epoch = self.cache.epoch
        for entry in reversed(self.cache.recent(now - self._config.context_recent_s)):
            if entry.in_flight:
                self._stats[Counter.CONTEXT_REVALIDATIONS_COALESCED] += 1
                continue
            entry.in_flight = True
            self._queue.append((entry, epoch))
        self._start_workers()

    def _revalidate_used(self, entry: Entry) -> None:
        self._queue.appendleft((entry, self.cache.epoch))  # in use: before the round's
        self._start_workers()

    def _start_workers(self) -> None:
        while self._queue and self._workers < self._config.context_max_requests:
            self._workers += 1
            task = asyncio.get_running_loop().create_task(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _work(self) -> None:
        try:
            while self._queue:
                entry, epoch = self._queue.popleft()
                if _monotonic() < self._quiet_until:
                    entry.in_flight = False  # failing: left stale for its next use
                    continue
                try:
                    await self._revalidate(entry, epoch)
                finally:
                    entry.in_flight = False
        finally:
            self._workers -= 1

    async def _revalidate(self, entry: Entry, epoch: int) -> None:
        if entry.epoch >= epoch or not self.cache.current(entry):
            return  # done meanwhile, or evicted: its next use fetches afresh
        config, key, etag, request = self._config, entry.key, entry.etag, self._request
        self._stats[Counter.CONTEXT_REVALIDATIONS] += 1
        outcome = await self._ask(lambda s: fetch_bulk(s, config, key, etag, request))
        if isinstance(outcome, NotModified):
            self._stats[Counter.CONTEXT_NOT_MODIFIED] += 1
            self.cache.revalidated(entry, epoch)
        elif isinstance(outcome, Fetched):
            self._stats[Counter.CONTEXT_FETCH_OK] += 1
            if self.cache.current(entry):
                self.cache.store(key, outcome.entries, outcome.etag, self._size(outcome), epoch)

    async def close(self) -> None:
        self._thread = None  # a miss from now on answers at once, with no request
        self._queue.clear()
        if self._round_timer is not None:
            self._round_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for future in [*self.cache.drain_inflight(), *list(self._singles)]:
            if not future.done():
                future.set_result(Failure("the provider was shut down"))

    def after_fork(self) -> None:
        self._thread = self._server = None
        self._sem = None
        self._queue = deque()
        self._workers = self._waiting = 0
        self._tasks = set()
        self._round_timer = None
        self.cache.after_fork()


def _why(outcome: Outcome | FlagEntry | Any) -> str:
    if isinstance(outcome, RateLimited):
        return "rate limited (429)"
    detail = getattr(outcome, "detail", "")
    return str(detail) or type(outcome).__name__
