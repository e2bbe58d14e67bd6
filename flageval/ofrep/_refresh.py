"""Keeps the bulk evaluation fresh: the coordinator. Everything here runs on the loop.

`Refresher` makes the decisions; the mechanisms are small units of their own:
`_status.Lifecycle` (the status, its transition table and events), `_queue.FetchQueue`
(when fetches run: one at a time, triggers merged, error backoff, 429 gate),
`_staleness.StaleClock` (how long change detection has been lost), `_inactivity`
(idle or active), `_context.CurrentContext` (the context, its generation and ETag) and
`_streams.StreamManager` (the event streams). Every trigger (poll tick, stream connected,
refetchEvaluation, context change, inactivity resume, error retry) becomes a
`FetchRequest` handed to the queue.

Three facts are kept apart because they vary independently: the status; idleness (a
READY and an ERROR provider can both idle); and whether change detection works, which is
derived, not stored (`_detection_lost`: the latest fetch failed, or an advertised stream
is down and no polling stands in). A loss runs the stale clock only while the status is
READY or STALE, the two statuses it moves between.

Choices where OFREP leaves one (also listed in the README):
- a stored ETag belongs to one canonical context (the sorted JSON request body); any
  context change drops it, and a 200 that answers an older context is discarded;
- 400/5xx/other statuses/malformed bodies/network errors (and an unexpected exception
  inside the fetch) keep the last good evaluation and are retried after ``retry_min_s``
  doubling to ``retry_max_s`` (with jitter); a 429 without a usable ``Retry-After``
  waits the same backoff;
- a failed ``initialize`` that is not 401/403 keeps retrying in the background and emits
  READY on its first success; 401/403 (from the bulk endpoint or an event stream) stops
  all requests for good;
- inactivity pauses all background traffic (streams and polling); the next resolve
  answers from the cache and triggers the unconditional re-fetch;
- STALE is emitted after ``stale_after_s`` of continuously lost change detection; READY
  follows when it is back. Mode ``none`` never goes stale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError

from flageval._common import RateLimitedLog

from ._config import DEFAULT_INACTIVITY_DELAY_S, OFREPConfig
from ._context import CurrentContext
from ._diagnostics import logger
from ._fetch import (
    Failed,
    Fatal,
    Fetched,
    FetchRequest,
    NotModified,
    Outcome,
    RateLimited,
    StreamSpec,
    encode_context,
    fetch_bulk,
)
from ._inactivity import Inactivity
from ._queue import FetchQueue
from ._ratelimit import RateGate
from ._shared import Shared
from ._staleness import StaleClock
from ._status import Emitter, Lifecycle, Status
from ._streams import StreamManager

#: How one bulk request is made (`fetch_bulk`; tests script outcomes through it).
BulkFetch = Callable[
    [aiohttp.ClientSession, OFREPConfig, bytes, str | None, FetchRequest], Awaitable[Outcome]
]


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    return sorted(keys)


class Refresher:
    def __init__(
        self,
        config: OFREPConfig,
        shared: Shared,
        stats: dict[str, int],
        emitter: Emitter,
        fetch: BulkFetch = fetch_bulk,
    ) -> None:
        self._config = config
        self._shared = shared
        self._stats = stats
        self._emitter = emitter
        self._fetch_bulk = fetch
        self._log = RateLimitedLog(logger)
        self._gate = RateGate()
        self._lifecycle = Lifecycle(emitter)
        self._queue = FetchQueue(
            self._fetch_and_apply, self._gate, stats, config.retry_min_s, config.retry_max_s
        )
        self._clock = StaleClock(config.stale_after_s, self._on_stale)
        self._inactivity = Inactivity(
            shared,
            stats,
            delay_s=self._inactivity_delay_s,
            may_idle=self._has_background_traffic,
            on_idle=self._on_idle,
            on_resume=self._on_resume,
        )

        self._session: aiohttp.ClientSession | None = None
        self._streams: StreamManager | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._context = CurrentContext()
        self._items: dict[str, Any] = {}
        self._specs: tuple[StreamSpec, ...] = ()
        self._fatal_status = 0

    @property
    def status(self) -> Status:
        return self._lifecycle.status

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, context: EvaluationContext) -> None:
        """The first bulk fetch; raises if it fails (OpenFeature's initialize rule)."""
        self._session = aiohttp.ClientSession()
        self._streams = StreamManager(
            session=self._session,
            config=self._config,
            gate=self._gate,
            stats=self._stats,
            log=self._log,
            on_connected=self._on_stream_connected,
            on_refetch=self._on_refetch_event,
            on_state=self._health_changed,
            on_fatal=self._stream_fatal,
        )
        self._context.body = encode_context(context)
        self._shared.last_used = time.monotonic()
        request = FetchRequest(conditional=False)
        outcome = await self._fetch(request)
        # The current generation: a set_context() racing this fetch does not discard it.
        self._apply(outcome, request, self._context.generation)
        status = self._lifecycle.status
        if status is Status.FATAL:
            raise ProviderFatalError(f"bulk evaluation answered HTTP {self._fatal_status}")
        if status is Status.CLOSED:
            raise GeneralError("the provider was shut down during initialize")
        self._start_background()
        if isinstance(outcome, Fetched | NotModified):
            # From NOT_READY, silent: initialize() returns. After initialize_abandoned the
            # success already moved ERROR to READY, and this is refused.
            self._lifecycle.move(Status.READY)
            self._health_changed()
            return
        self._lifecycle.move(Status.ERROR)
        if isinstance(outcome, RateLimited):
            raise GeneralError("bulk evaluation answered 429 (rate limited)")
        assert isinstance(outcome, Failed)
        raise GeneralError(f"initial bulk evaluation failed: {outcome.detail}")

    def initialize_abandoned(self) -> None:
        """initialize() stopped waiting for `start` and raised GeneralError: from now on
        start's outcome is reported by events, as after any failed initialize."""
        self._lifecycle.initialize_raised()

    def _start_background(self) -> None:
        if self._config.change_detection == "none":
            return
        if self._config.poll_interval_s > 0:
            loop = asyncio.get_running_loop()
            self._poll_task = loop.create_task(self._poll_loop(), name="ofrep-poll")
        self._inactivity.start()

    def _stop_background(self) -> list[asyncio.Task[None]]:
        """Streams, polling and inactivity stop; the queue refuses new requests. Returns
        the tasks; the fetch runner is last, not cancelled here."""
        tasks = [t for t in (self._poll_task, self._inactivity.stop()) if t is not None]
        for task in tasks:
            task.cancel()
        if self._streams is not None:
            tasks.extend(self._streams.close_all())
        self._clock.cancel()
        runner = self._queue.stop()
        if runner is not None:
            tasks.append(runner)
        return tasks

    async def close(self) -> None:
        self._lifecycle.move(Status.CLOSED)
        tasks = self._stop_background()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._config.shutdown_timeout_s / 2)
        self._context.settle(None, False)
        if self._session is not None:
            await self._session.close()

    # -- fetching --------------------------------------------------------------------

    async def _fetch_and_apply(self, request: FetchRequest) -> None:
        generation = self._context.generation
        outcome = await self._fetch(request)
        self._apply(outcome, request, generation)

    async def _fetch(self, request: FetchRequest) -> Outcome:
        assert self._session is not None
        self._stats["fetches"] += 1
        context = self._context
        try:
            return await self._fetch_bulk(
                self._session, self._config, context.body, context.etag, request
            )
        except Exception as exc:
            # A bug, not a network error (fetch_bulk maps those): a failed fetch, retried.
            logger.debug("unexpected error in the bulk fetch", exc_info=True)
            return Failed("fetch_internal_error", f"unexpected {type(exc).__name__}")

    def _apply(self, outcome: Outcome, request: FetchRequest, generation: int) -> None:
        stats = self._stats
        if isinstance(outcome, Fetched | NotModified) and generation != self._context.generation:
            # Answered for a context that is no longer current; its follow-up is queued.
            stats["fetch_discarded_old_context"] += 1
            return
        stats[outcome.stat] += 1
        if isinstance(outcome, Fetched):
            stats["items_invalid"] += outcome.invalid_items
            stats["stream_entries_invalid"] += outcome.invalid_streams
        if not self._lifecycle.status.live:
            return  # an answer that was in flight when the provider went fatal or closed

        if isinstance(outcome, Fetched):
            self._on_fetched(outcome)
        elif isinstance(outcome, NotModified):
            self._on_success()
        elif isinstance(outcome, RateLimited):
            # The trigger is still unanswered: it goes out once the gate opens.
            wait = self._queue.rate_limited(request, outcome.retry_after_s)
            self._log.warning(
                "fetch-429", "bulk evaluation rate limited: no request for %.1f s", wait
            )
            self._health_changed()
        elif isinstance(outcome, Fatal):
            self._go_fatal(outcome.status)
        else:
            self._log.warning(
                f"fetch-{outcome.stat}",
                "bulk evaluation failed (%s); serving the last good evaluation",
                outcome.detail,
            )
            self._queue.failed(request)
            self._health_changed()
            self._context.settle(generation, False)

    def _on_fetched(self, outcome: Fetched) -> None:
        had_snapshot = self._shared.entries is not None
        changed = changed_keys(self._items, outcome.items) if had_snapshot else []
        self._items = outcome.items
        self._context.etag = outcome.etag
        self._shared.entries = outcome.entries
        self._specs = outcome.streams
        if self._config.change_detection == "sse" and not self._inactivity.idle and self._streams:
            self._streams.update(self._specs)
        self._on_success()
        if changed:
            self._stats["config_changes"] += 1
            self._emitter.emit(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                ProviderEventDetails(flags_changed=changed),
            )

    def _on_success(self) -> None:
        self._queue.succeeded()
        self._context.settle(self._context.generation, True)
        if self._lifecycle.status is Status.ERROR:  # NOT_READY is left by start() alone
            self._lifecycle.move(Status.READY)
        self._health_changed()

    def _stream_fatal(self, status: int) -> None:
        self._go_fatal(status, "an event stream")

    def _go_fatal(self, status: int, source: str = "bulk evaluation") -> None:
        details = ProviderEventDetails(
            message=f"OFREP server answered HTTP {status}", error_code=ErrorCode.PROVIDER_FATAL
        )
        if not self._lifecycle.move(Status.FATAL, details):
            return  # already fatal, or closed
        self._fatal_status = status
        self._stop_background()
        self._context.settle(None, False)
        logger.error(
            "%s answered HTTP %d: credentials rejected; the provider stops all requests (fatal)",
            source,
            status,
        )

    # -- triggers --------------------------------------------------------------------

    def _on_stream_connected(self) -> None:
        # ADR-0008: changes made while the stream was down (or not yet up) are fetched now.
        self._queue.request(FetchRequest(conditional=True))

    def _on_refetch_event(self, etag: str | None, last_modified: str | None) -> None:
        self._queue.request(
            FetchRequest(
                conditional=True, flag_config_etag=etag, flag_config_last_modified=last_modified
            )
        )

    def set_context(self, context: EvaluationContext) -> asyncio.Future[bool]:
        """Switch to a new context; the future tells whether its evaluation arrived."""
        body = encode_context(context)
        same = body == self._context.body
        status = self._lifecycle.status
        if not same and status.live:
            self._stats["context_changes"] += 1
            future = self._context.switch(body)
            self._queue.request(FetchRequest(conditional=False))
            return future
        # The same context is answered at once; so is a switch refused (fatal or closed).
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(same and status is not Status.FATAL and self._shared.entries is not None)
        return done

    # -- polling ---------------------------------------------------------------------

    def _polling_active(self) -> bool:
        if self._inactivity.idle:
            return False
        if self._config.change_detection == "polling":
            return True
        # sse: poll while the streams cannot be held (or the server offers none).
        streams = self._streams
        return streams is None or streams.count == 0 or not streams.all_connected

    async def _poll_loop(self) -> None:
        interval = self._config.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            if self._polling_active():
                self._stats["polls"] += 1
                self._queue.request(FetchRequest(conditional=True))

    # -- inactivity ------------------------------------------------------------------

    def _inactivity_delay_s(self) -> float:
        if self._config.inactivity_delay_s is not None:
            return self._config.inactivity_delay_s
        server = [s.inactivity_delay_s for s in self._specs if s.inactivity_delay_s]
        return min(server) if server else DEFAULT_INACTIVITY_DELAY_S

    def _has_background_traffic(self) -> bool:
        if self._config.change_detection == "polling":
            return True
        return bool(self._specs) or self._config.poll_interval_s > 0

    def _on_idle(self) -> None:
        if self._streams is not None:
            self._streams.close_all()
        logger.debug(
            "no flag resolved for %.1f s: event streams closed", self._inactivity_delay_s()
        )
        self._health_changed()

    def resume(self) -> None:
        """Called (via the loop) by the first resolve after an idle period."""
        self._inactivity.resume()

    def _on_resume(self) -> None:
        # Unknown time has passed: no If-None-Match, no flagConfig* parameters.
        self._queue.request(FetchRequest(conditional=False))
        if self._config.change_detection == "sse" and self._streams is not None:
            self._streams.update(self._specs)

    # -- staleness -------------------------------------------------------------------

    def _detection_lost(self) -> bool:
        """Whether a change made on the server could now go unseen."""
        mode = self._config.change_detection
        if mode == "none" or self._inactivity.idle:
            return False
        if self._queue.failing:
            return True
        if mode == "polling" or self._config.poll_interval_s > 0:
            return False
        streams = self._streams
        return streams is not None and not streams.all_connected

    def _health_changed(self) -> None:
        lost = self._detection_lost()
        status = self._lifecycle.status
        if status is Status.STALE and not lost:
            self._lifecycle.move(Status.READY)
            status = Status.READY
        self._clock.update(lost and status in (Status.READY, Status.STALE))

    def _on_stale(self) -> None:
        stale = ProviderEventDetails(message="change detection lost; serving cached evaluations")
        if self._detection_lost() and self._lifecycle.move(Status.STALE, stale):
            logger.warning(
                "change detection lost for %.0f s: flag values may be stale",
                self._config.stale_after_s,
            )
