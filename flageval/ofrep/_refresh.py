"""Keeps the bulk evaluation fresh: the coordinator. Everything here runs on the loop.

`Refresher` makes the decisions; the mechanisms are units of their own: `_status`
(the status and its events), `_queue` (one fetch at a time, merged triggers, error
backoff, 429 gate), `_coalesce` (refetch events -> fetches: dedup, debounce, ceiling),
`_cache` (the persisted entry, ADR-0009), `_snapshot` (what is served), `_detection`
(streams, polling, inactivity, staleness) and `_context`. Every trigger becomes a
`FetchRequest` handed to the queue (refetch events through the coalescer).

Choices where OFREP leaves one (also listed in the README):
- a stored ETag belongs to one canonical context (the sorted JSON request body); any
  context change drops it, and a 200 that answers an older context is discarded;
- 5xx/other statuses/malformed or over-budget bodies/network errors (and an unexpected
  exception inside the fetch) keep the last good evaluation and are retried after
  ``retry_min_s`` doubling to ``retry_max_s``; a 429 waits its Retry-After, never less
  than that backoff; a 400 once live values are served is retried the same way (it
  answers a request, not the credentials);
- before any evaluation is served, 400/401/403 are fatal (ADR-0009's configuration
  errors); while the persisted entry is served they are REJECTED (PROVIDER_ERROR, the
  entry kept for the session, no request again); after a live answer 401/403 (from the
  bulk endpoint, or a stream that was sent our credentials) stay fatal;
- a failed ``initialize`` that is not fatal keeps retrying and emits READY on its first
  success; inactivity pauses all background traffic; STALE after ``stale_after_s`` of
  continuously lost change detection, READY when it is back.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError

from flageval._common import RateLimitedLog

from ._bulk import Failed, Fetched, NotModified, Outcome, RateLimited, Rejected, StreamSpec
from ._cache import Cached, EvaluationCache
from ._coalesce import EventCoalescer
from ._config import OFREPConfig
from ._context import ContextEncodingError, CurrentContext
from ._detection import Detection
from ._diagnostics import Counter, Stats, logger
from ._fetch import FetchRequest, fetch_bulk, scrubber
from ._queue import FetchQueue, RateGate
from ._snapshot import Shared, Snapshot
from ._status import Emitter, Lifecycle, Status

#: How one bulk request is made (`fetch_bulk`; tests script outcomes through it).
BulkFetch = Callable[
    [aiohttp.ClientSession, OFREPConfig, bytes, str | None, FetchRequest], Awaitable[Outcome]
]

_ERROR_CODES = {code.value: code for code in ErrorCode}


@dataclass(frozen=True, slots=True)
class Handover:
    """What a forked child's new coordinator takes over from the parent's."""

    status: Status
    body: bytes
    usable: bool
    etag: str | None
    items: dict[str, Any]
    specs: tuple[StreamSpec, ...]
    from_cache: bool


class Refresher:
    def __init__(
        self,
        config: OFREPConfig,
        shared: Shared,
        stats: Stats,
        emitter: Emitter,
        fetch: BulkFetch = fetch_bulk,
    ) -> None:
        self._config = config
        self._shared = shared
        self._stats = stats
        self._emitter = emitter
        self._fetch_bulk = fetch
        self._scrub = scrubber(config)
        self._log = RateLimitedLog(logger)
        self._gate = RateGate()
        self._lifecycle = Lifecycle(emitter)
        self._queue = FetchQueue(
            self._fetch_and_apply, self._gate, stats, config.retry_min_s, config.retry_max_s
        )
        self._events = EventCoalescer(
            self._queue.request, stats, config.event_debounce_s, config.event_fetch_interval_s
        )
        self._cache = EvaluationCache(config, stats, self._log)
        self._snapshot = Snapshot(shared)
        self._detection = Detection(
            config,
            shared,
            stats,
            self._lifecycle,
            self._queue,
            self._events,
            specs=lambda: self._snapshot.specs,
            on_fatal=self._go_fatal,
        )
        self._session: aiohttp.ClientSession | None = None
        self._context = CurrentContext()
        self._fatal_message = ""

    @property
    def status(self) -> Status:
        return self._lifecycle.status

    # -- lifecycle -------------------------------------------------------------------

    def _open(self) -> None:
        self._session = aiohttp.ClientSession()
        self._detection.open(self._session, self._gate, self._log)
        self._shared.last_used = time.monotonic()

    async def start(self, body: bytes | ContextEncodingError) -> None:
        """The first evaluation: the persisted entry (``local-cache-first``) or the
        first bulk fetch; raises as OpenFeature's initialize must when it fails."""
        self._open()
        if isinstance(body, ContextEncodingError):
            self._context_unusable(str(body))
            self._lifecycle.move(Status.ERROR)
            self._start_background()
            raise GeneralError(str(body))
        self._context.body = body
        cached = await self._cache.load(body)
        if cached is not None and self._cache.mode == "local-cache-first":
            self._serve_cached(cached)
            self._queue.request(FetchRequest(conditional=cached.etag is not None))
            return
        request = FetchRequest(conditional=False)
        outcome = await self._fetch(request)
        # The current generation: a set_context() racing this fetch does not discard it.
        self._apply(outcome, request, self._context.generation)
        status = self._lifecycle.status
        if status is Status.FATAL:
            raise ProviderFatalError(self._fatal_message)
        if status is Status.CLOSED:
            raise GeneralError("the provider was shut down during initialize")
        if isinstance(outcome, Fetched | NotModified):
            self._start_background()
            # From NOT_READY, silent: initialize() returns. After initialize_abandoned the
            # success already moved ERROR to READY, and this is refused.
            self._lifecycle.move(Status.READY)
            self._health_changed()
            return
        if cached is not None and status is Status.NOT_READY:
            self._serve_cached(cached)  # network-first: a transient failure falls back
            return
        self._start_background()
        self._lifecycle.move(Status.ERROR)
        if isinstance(outcome, RateLimited):
            raise GeneralError("bulk evaluation answered 429 (rate limited)")
        assert isinstance(outcome, Failed | Rejected)
        raise GeneralError(f"initial bulk evaluation failed: {outcome.detail}")

    def _serve_cached(self, cached: Cached) -> None:
        """READY on the persisted entry (silent: initialize() returns); the refresh that
        replaces or confirms it is the queue's."""
        self._snapshot.load_cached(cached.fetched)
        self._context.etag = cached.etag
        logger.info("serving the persisted evaluation (reason CACHED) until the server answers")
        self._start_background()
        self._lifecycle.move(Status.READY)
        self._health_changed()

    def initialize_abandoned(self) -> None:
        """initialize() stopped waiting for `start` and raised GeneralError: from now on
        start's outcome is reported by events, as after any failed initialize."""
        self._lifecycle.initialize_raised()

    def handover(self) -> Handover:
        """For a forked child: the state to go on from (plain data, no I/O)."""
        snap = self._snapshot
        ctx = self._context
        return Handover(
            self.status, ctx.body, ctx.usable, ctx.etag, snap.items, snap.specs, snap.from_cache
        )

    async def adopt(self, parent: Handover) -> None:
        """In a forked child: go on from the parent's evaluation (still in ``Shared``),
        with connections of our own; a conditional re-fetch revalidates it."""
        self._open()
        self._context.body, self._context.etag = parent.body, parent.etag
        if not parent.usable:
            self._context.unusable()
        self._snapshot.adopt(parent.items, parent.specs, parent.from_cache)
        served = parent.status in (Status.READY, Status.STALE)
        self._lifecycle.move(Status.READY if served else Status.ERROR)  # silent
        self._start_background()
        self._queue.request(FetchRequest(conditional=True))
        self._detection.follow()  # streams of our own (each connect re-fetches too)
        self._health_changed()

    def _start_background(self) -> None:
        self._detection.start()

    def resume(self) -> None:
        """Called (via the loop) by the first resolve after an idle period."""
        self._detection.resume()

    def _health_changed(self) -> None:
        self._detection.health_changed()

    def _stop_background(self) -> list[asyncio.Task[None]]:
        """Streams, polling and inactivity stop; the queue refuses new requests. Returns
        the tasks; the fetch runner is last, not cancelled here."""
        tasks = self._detection.stop()
        runner = self._queue.stop()
        if runner is not None:
            tasks.append(runner)
        return tasks

    async def close(self) -> None:
        self._lifecycle.move(Status.CLOSED)
        tasks = self._stop_background()
        for task in tasks:
            task.cancel()
        budget = self._config.shutdown_timeout_s / 2
        if tasks:
            await asyncio.wait(tasks, timeout=budget / 2)
        await self._cache.close(budget / 2)
        self._context.settle(None, False)
        if self._session is not None:
            await self._session.close()

    # -- fetching --------------------------------------------------------------------

    async def _fetch_and_apply(self, request: FetchRequest) -> None:
        if not self._context.usable:
            return  # nothing can be asked for a context that cannot be sent
        if not request.conditional:
            self._events.cancel()  # it fetches everything: a held event adds nothing
        generation = self._context.generation
        outcome = await self._fetch(request)
        self._apply(outcome, request, generation)

    async def _fetch(self, request: FetchRequest) -> Outcome:
        assert self._session is not None
        self._stats[Counter.FETCHES] += 1
        context = self._context
        try:
            return await self._fetch_bulk(
                self._session, self._config, context.body, context.etag, request
            )
        except Exception as exc:
            # A bug, not a network error (fetch_bulk maps those): a failed fetch, retried.
            # Its text may quote a request header: scrubbed.
            trace = "".join(traceback.format_exception(exc))
            logger.debug("unexpected error in the bulk fetch: %s", self._scrub(trace))
            return Failed(Counter.FETCH_INTERNAL_ERROR, f"unexpected {type(exc).__name__}")

    def _apply(self, outcome: Outcome, request: FetchRequest, generation: int) -> None:
        stats = self._stats
        current = generation == self._context.generation
        if isinstance(outcome, Fetched | NotModified) and not current:
            # Answered for a context that is no longer current; its follow-up is queued.
            stats[Counter.FETCH_DISCARDED_OLD_CONTEXT] += 1
            return
        stats[outcome.stat] += 1
        if isinstance(outcome, Fetched):
            stats[Counter.ITEMS_INVALID] += outcome.invalid_items
            stats[Counter.STREAM_ENTRIES_INVALID] += outcome.invalid_streams
            stats[Counter.ETAG_UNSENDABLE] += outcome.etag_dropped
        if not self._lifecycle.status.live:
            return  # an answer that was in flight when the provider went fatal or closed

        if isinstance(outcome, Fetched):
            self._on_fetched(outcome)
        elif isinstance(outcome, NotModified):
            self._on_not_modified()
        elif isinstance(outcome, RateLimited):
            # The trigger is still unanswered: it goes out once the gate opens.
            wait = self._queue.rate_limited(request, outcome.retry_after_s)
            self._log.warning(
                "fetch-429", "bulk evaluation rate limited: no request for %.1f s", wait
            )
            self._health_changed()
        elif isinstance(outcome, Rejected) and (outcome.status != 400 or not self._live_values):
            if self._snapshot.from_cache:
                self._go_rejected(outcome)
            else:
                self._go_fatal(f"bulk evaluation answered {outcome.detail or outcome.status}")
        else:
            if isinstance(outcome, Rejected) and not current:
                return  # a 400 for a context that is no longer current: nothing to retry
            self._log.warning(
                f"fetch-{outcome.stat.value}",
                "bulk evaluation failed (%s); serving the last good evaluation",
                outcome.detail,
            )
            self._queue.failed(request)
            self._health_changed()
            self._context.settle(generation, False)

    @property
    def _live_values(self) -> bool:
        return self._snapshot.served and not self._snapshot.from_cache

    def _on_fetched(self, outcome: Fetched) -> None:
        changed = self._snapshot.replace(outcome)
        self._context.etag = outcome.etag
        self._detection.follow()
        self._persist()
        self._on_success(changed)

    def _on_not_modified(self) -> None:
        changed = self._snapshot.confirm()
        if changed:  # the persisted entry, confirmed by the server
            self._detection.follow()
            self._persist()
        self._on_success(changed)

    def _persist(self) -> None:
        generation = self._context.generation
        self._cache.save(
            self._context.body,
            self._context.etag,
            self._snapshot.items,
            self._snapshot.specs,
            lambda: generation == self._context.generation,
        )

    def _on_success(self, changed: list[str]) -> None:
        self._queue.succeeded()
        self._context.settle(self._context.generation, True)
        if self._lifecycle.status is Status.ERROR:  # NOT_READY is left by start() alone
            self._lifecycle.move(Status.READY)
        self._health_changed()
        if changed:
            self._stats[Counter.CONFIG_CHANGES] += 1
            self._emitter.emit(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                ProviderEventDetails(flags_changed=changed),
            )

    def _go_fatal(self, message: str) -> None:
        details = ProviderEventDetails(message=message, error_code=ErrorCode.PROVIDER_FATAL)
        if not self._lifecycle.move(Status.FATAL, details):
            return  # already fatal, or closed
        self._fatal_message = message
        self._stop_background()
        self._context.settle(None, False)
        logger.error("%s: configuration rejected; the provider stops all requests (fatal)", message)

    def _go_rejected(self, outcome: Rejected) -> None:
        # ADR-0009: log, PROVIDER_ERROR, and the persisted entry is served for the session.
        code = _ERROR_CODES.get(outcome.error_code or "", ErrorCode.GENERAL)
        message = f"bulk evaluation answered {outcome.detail or outcome.status}"
        details = ProviderEventDetails(message=message, error_code=code)
        if self._lifecycle.move(Status.REJECTED, details):
            self._stop_background()
            self._context.settle(None, False)
            logger.error("%s: serving the persisted evaluation; no request again", message)

    # -- context --------------------------------------------------------------------

    def set_context(self, body: bytes) -> asyncio.Future[bool]:
        """Switch to a new context; the future tells whether its evaluation arrived."""
        same = body == self._context.body and self._context.usable
        status = self._lifecycle.status
        if not same and status.live:
            self._stats[Counter.CONTEXT_CHANGES] += 1
            future = self._context.switch(body)
            self._queue.request(FetchRequest(conditional=False), urgent=True)
            return future
        # The same context is answered at once; so is a switch refused (fatal or closed).
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(same and status is not Status.FATAL and self._snapshot.served)
        return done

    def context_unusable(self, problem: str) -> None:
        """The application's new context cannot be encoded: INVALID_CONTEXT on every
        resolve and an error event, until a context that can be sent replaces it."""
        if not self._lifecycle.status.live:
            return
        self._stats[Counter.CONTEXT_CHANGES] += 1
        self._context_unusable(problem)
        details = ProviderEventDetails(message=problem, error_code=ErrorCode.INVALID_CONTEXT)
        if not self._lifecycle.move(Status.ERROR, details):
            self._lifecycle.report(ProviderEvent.PROVIDER_ERROR, details)
        self._health_changed()

    def _context_unusable(self, problem: str) -> None:
        self._stats[Counter.CONTEXT_UNUSABLE] += 1
        self._context.unusable()
        self._snapshot.unusable(problem)
        self._log.warning("context", "%s: every flag resolves to INVALID_CONTEXT", problem)
