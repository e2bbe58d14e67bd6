"""Keeps the bulk evaluation fresh. Everything in this module runs on the provider's loop.

State that callers of ``resolve`` see lives in `Shared`: the loop thread replaces
``entries`` with a new dict in one assignment, and the resolve path reads it without a
lock. Everything else (ETag, context, streams, timers) belongs to `Refresher`.

Fetch scheduling: every trigger (poll tick, stream connected, refetchEvaluation,
context change, inactivity resume, error retry) calls `Refresher.request_fetch`. One
task runs fetches one at a time; triggers that arrive while a fetch is queued or in
flight merge into a single follow-up request (`FetchRequest.merge`). Before each
request the task waits on the 429 gate.

Choices where OFREP leaves one (also listed in the README):
- a stored ETag belongs to one canonical context (the sorted JSON request body); any
  context change drops it, and a 200 that answers an older context is discarded;
- 400/5xx/other statuses/malformed bodies/network errors (and an unexpected exception
  inside the fetch) keep the last good evaluation and are retried after
  ``retry_min_s`` doubling to ``retry_max_s`` (with jitter); a 429 without a usable
  ``Retry-After`` waits the same backoff;
- a failed ``initialize`` that is not 401/403 keeps retrying in the background and
  emits READY on its first success; 401/403 (from the bulk endpoint or an event
  stream) stops all requests for good;
- inactivity pauses all background traffic (streams and polling); the next resolve
  answers from the cache and triggers the unconditional re-fetch;
- STALE is emitted after ``stale_after_s`` of continuously lost change detection (a
  stream the server advertised is down and no polling stands in, or the latest fetch
  failed); READY follows when it is back. Mode ``none`` never goes stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError

from flageval._common import RateLimitedLog, backoff_s

from ._config import DEFAULT_INACTIVITY_DELAY_S, OFREPConfig
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
from ._ratelimit import RateGate
from ._resolve import FlagEntry
from ._streams import StreamManager


class Shared:
    """Read by resolving threads, written by the loop (``last_used``: the reverse)."""

    __slots__ = ("entries", "idle", "last_used", "wake_requested")

    def __init__(self) -> None:
        self.entries: Mapping[str, FlagEntry] | None = None
        self.idle = False
        self.wake_requested = False
        self.last_used = time.monotonic()


class Emitter(Protocol):
    def emit_provider_ready(self, details: ProviderEventDetails) -> None: ...
    def emit_provider_configuration_changed(self, details: ProviderEventDetails) -> None: ...
    def emit_provider_error(self, details: ProviderEventDetails) -> None: ...
    def emit_provider_stale(self, details: ProviderEventDetails) -> None: ...


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
    ) -> None:
        self.config = config
        self.shared = shared
        self.stats = stats
        self.emitter = emitter
        self.log = RateLimitedLog(logger)
        self.gate = RateGate()
        self.fatal = False
        self.closed = False

        self._session: aiohttp.ClientSession | None = None
        self._streams: StreamManager | None = None
        self._context_body = b""
        self._context_gen = 0
        self._etag: str | None = None
        self._items: dict[str, Any] = {}
        self._specs: tuple[StreamSpec, ...] = ()
        self._idle = False
        self._initialized = False

        self._pending: FetchRequest | None = None
        self._runner: asyncio.Task[None] | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._error_streak = 0
        self._last_fetch_ok = True

        self._unhealthy_since: float | None = None
        self._stale_handle: asyncio.TimerHandle | None = None
        self._stale_emitted = False
        self._recovering = False  # initialize failed; the next success emits READY
        self._abandoned = False  # initialize() stopped waiting for start() and raised
        self._fatal_status = 0

        self._tasks: list[asyncio.Task[None]] = []
        self._resume = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, context: EvaluationContext) -> None:
        """The first bulk fetch; raises if it fails (OpenFeature's initialize rule)."""
        self._session = aiohttp.ClientSession()
        self._streams = StreamManager(
            session=self._session,
            config=self.config,
            gate=self.gate,
            stats=self.stats,
            log=self.log,
            on_connected=self._on_stream_connected,
            on_refetch=self._on_refetch_event,
            on_state=self._health_changed,
            on_fatal=self._stream_fatal,
        )
        self._context_body = encode_context(context)
        self.shared.last_used = time.monotonic()
        request = FetchRequest(conditional=False)
        outcome = await self._fetch(request)
        self._apply(outcome, request, self._context_gen)
        self._initialized = True
        self._start_background()
        if isinstance(outcome, Fetched | NotModified):
            if self._recovering:  # set by initialize_abandoned: initialize() raised
                self._recovering = False
                self.emitter.emit_provider_ready(ProviderEventDetails())
            return
        if isinstance(outcome, Fatal):
            raise ProviderFatalError(f"bulk evaluation answered HTTP {outcome.status}")
        self._recovering = True
        if isinstance(outcome, RateLimited):
            raise GeneralError("bulk evaluation answered 429 (rate limited)")
        assert isinstance(outcome, Failed)
        raise GeneralError(f"initial bulk evaluation failed: {outcome.detail}")

    def initialize_abandoned(self) -> None:
        """initialize() timed out waiting for `start` and raised GeneralError: whatever
        start's outcome, the application hears it as an event, as for any other failed
        initialize (READY on the first success, ERROR if fatal)."""
        self._abandoned = True
        if not self._initialized:
            self._recovering = True  # start() is still running; its outcome decides
        elif self.fatal:
            self._emit_fatal()
        elif not self._recovering:
            # start() succeeded after initialize() stopped waiting.
            self.emitter.emit_provider_ready(ProviderEventDetails())

    def _start_background(self) -> None:
        if self.fatal:
            return
        loop = asyncio.get_running_loop()
        if self.config.poll_interval_s > 0 and self.config.change_detection != "none":
            self._tasks.append(loop.create_task(self._poll_loop(), name="ofrep-poll"))
        if self.config.change_detection != "none":
            self._tasks.append(loop.create_task(self._idle_loop(), name="ofrep-inactivity"))

    async def close(self) -> None:
        self.closed = True
        self._pending = None
        for handle in (self._retry_handle, self._stale_handle):
            if handle is not None:
                handle.cancel()
        tasks = list(self._tasks)
        if self._runner is not None:
            tasks.append(self._runner)
        if self._streams is not None:
            tasks.extend(self._streams.close_all())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.shutdown_timeout_s / 2)
        self._settle_waiters(None, False)
        if self._session is not None:
            await self._session.close()

    # -- fetching --------------------------------------------------------------------

    def request_fetch(self, request: FetchRequest) -> None:
        if self.fatal or self.closed:
            return
        if self._pending is None:
            self._pending = request
        else:
            self._pending = self._pending.merge(request)
            self.stats["fetch_coalesced"] += 1
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run_pending(), name="ofrep-fetch"
            )

    async def _run_pending(self) -> None:
        while self._pending is not None and not (self.fatal or self.closed):
            await self.gate.wait()
            if self._pending is None or self.fatal or self.closed:
                return
            request, self._pending = self._pending, None
            generation = self._context_gen
            outcome = await self._fetch(request)
            self._apply(outcome, request, generation)

    async def _fetch(self, request: FetchRequest) -> Outcome:
        assert self._session is not None
        self.stats["fetches"] += 1
        try:
            return await fetch_bulk(
                self._session, self.config, self._context_body, self._etag, request
            )
        except Exception as exc:
            # A bug (not a network error: fetch_bulk maps those) must not end the fetch
            # runner: the trigger would be lost and set_context futures never settled.
            # It counts as a failed fetch, retried with the error backoff.
            logger.debug("unexpected error in the bulk fetch", exc_info=True)
            return Failed("fetch_internal_error", f"unexpected {type(exc).__name__}")

    def _apply(self, outcome: Outcome, request: FetchRequest, generation: int) -> None:
        if isinstance(outcome, Fetched | NotModified) and generation != self._context_gen:
            # Answered for a context that is no longer current; its follow-up is queued.
            self.stats["fetch_discarded_old_context"] += 1
            return
        if isinstance(outcome, Fetched):
            self._on_fetched(outcome)
        elif isinstance(outcome, NotModified):
            self.stats["fetch_not_modified"] += 1
            self._on_success()
        elif isinstance(outcome, RateLimited):
            self.stats["fetch_rate_limited"] += 1
            wait = outcome.retry_after_s
            if wait is None:
                wait = self._next_retry_delay()
            self.gate.block(wait)
            self.log.log(
                logging.WARNING,
                "fetch-429",
                "bulk evaluation rate limited: no request for %.1f s",
                wait,
            )
            self._last_fetch_ok = False
            self._health_changed()
            # The trigger is still unanswered: it goes out once the gate opens.
            self.request_fetch(request)
        elif isinstance(outcome, Fatal):
            self.stats["fetch_unauthorized"] += 1
            self._go_fatal(outcome.status)
        else:
            self.stats[outcome.stat] += 1
            self.log.log(
                logging.WARNING,
                f"fetch-{outcome.stat}",
                "bulk evaluation failed (%s); serving the last good evaluation",
                outcome.detail,
            )
            self._last_fetch_ok = False
            self._health_changed()
            self._settle_waiters(generation, False)
            self._schedule_retry(request)

    def _on_fetched(self, outcome: Fetched) -> None:
        self.stats["fetch_ok"] += 1
        self.stats["items_invalid"] += outcome.invalid_items
        self.stats["stream_entries_invalid"] += outcome.invalid_streams
        had_snapshot = self.shared.entries is not None
        changed = changed_keys(self._items, outcome.items) if had_snapshot else []
        self._items = outcome.items
        self._etag = outcome.etag
        self.shared.entries = outcome.entries
        self._specs = outcome.streams
        if self.config.change_detection == "sse" and not self._idle and self._streams:
            self._streams.update(self._specs)
        self._on_success()
        if changed:
            self.stats["config_changes"] += 1
            self.emitter.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=changed)
            )

    def _on_success(self) -> None:
        self._error_streak = 0
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        self._last_fetch_ok = True
        self._settle_waiters(self._context_gen, True)
        if self._recovering and self._initialized:
            self._recovering = False
            self.emitter.emit_provider_ready(ProviderEventDetails())
        self._health_changed()

    def _next_retry_delay(self) -> float:
        self._error_streak += 1
        config = self.config
        return backoff_s(self._error_streak - 1, config.retry_min_s, config.retry_max_s, 0.5)

    def _schedule_retry(self, request: FetchRequest) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self._retry_handle = asyncio.get_running_loop().call_later(
            self._next_retry_delay(), self.request_fetch, request
        )

    def _stream_fatal(self, status: int) -> None:
        self._go_fatal(status, "an event stream")

    def _go_fatal(self, status: int, source: str = "bulk evaluation") -> None:
        self.fatal = True
        self._fatal_status = status
        self._pending = None
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        for task in self._tasks:
            task.cancel()
        if self._streams is not None:
            self._streams.close_all()
        self._settle_waiters(None, False)
        logger.error(
            "%s answered HTTP %d: credentials rejected; the provider stops all requests (fatal)",
            source,
            status,
        )
        if self._initialized or self._abandoned:
            self._emit_fatal()

    def _emit_fatal(self) -> None:
        self.emitter.emit_provider_error(
            ProviderEventDetails(
                message=f"OFREP server answered HTTP {self._fatal_status}",
                error_code=ErrorCode.PROVIDER_FATAL,
            )
        )

    # -- triggers --------------------------------------------------------------------

    def _on_stream_connected(self) -> None:
        # ADR-0008: re-fetch after every (re)connect; changes made while the stream was
        # down (or before it first came up) would otherwise be missed.
        self.request_fetch(FetchRequest(conditional=True))

    def _on_refetch_event(self, etag: str | None, last_modified: str | None) -> None:
        self.request_fetch(
            FetchRequest(
                conditional=True, flag_config_etag=etag, flag_config_last_modified=last_modified
            )
        )

    def set_context(self, context: EvaluationContext) -> asyncio.Future[bool]:
        """Switch to a new context; the future tells whether its evaluation arrived."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        body = encode_context(context)
        if body == self._context_body:
            future.set_result(not self.fatal and self.shared.entries is not None)
            return future
        if self.fatal or self.closed:
            future.set_result(False)
            return future
        self.stats["context_changes"] += 1
        self._context_body = body
        self._context_gen += 1
        self._etag = None  # the ETag belonged to the previous context
        self._settle_waiters(None, False)  # older requests are superseded
        self._waiters.append((self._context_gen, future))
        self.request_fetch(FetchRequest(conditional=False))
        return future

    def _settle_waiters(self, generation: int | None, result: bool) -> None:
        keep: list[tuple[int, asyncio.Future[bool]]] = []
        for gen, future in self._waiters:
            if generation is None or gen == generation:
                if not future.done():
                    future.set_result(result)
            else:
                keep.append((gen, future))
        self._waiters = keep

    # -- polling ---------------------------------------------------------------------

    def _polling_active(self) -> bool:
        if self._idle or self.fatal:
            return False
        if self.config.change_detection == "polling":
            return True
        # sse: poll while the streams cannot be held (or the server offers none).
        streams = self._streams
        return streams is None or streams.count == 0 or not streams.all_connected

    async def _poll_loop(self) -> None:
        interval = self.config.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            if self._polling_active():
                self.stats["polls"] += 1
                self.request_fetch(FetchRequest(conditional=True))

    # -- inactivity ------------------------------------------------------------------

    def inactivity_delay_s(self) -> float:
        if self.config.inactivity_delay_s is not None:
            return self.config.inactivity_delay_s
        server = [s.inactivity_delay_s for s in self._specs if s.inactivity_delay_s]
        return min(server) if server else DEFAULT_INACTIVITY_DELAY_S

    def _has_background_traffic(self) -> bool:
        if self.config.change_detection == "polling":
            return True
        return bool(self._specs) or self.config.poll_interval_s > 0

    async def _idle_loop(self) -> None:
        while True:
            delay = self.inactivity_delay_s()
            idle_for = time.monotonic() - self.shared.last_used
            if idle_for < delay:
                await asyncio.sleep(delay - idle_for)
                continue
            if not self._has_background_traffic() or self.fatal:
                await asyncio.sleep(delay)
                continue
            self._go_idle()
            self._resume.clear()
            await self._resume.wait()

    def _go_idle(self) -> None:
        self._idle = True
        self.shared.wake_requested = False
        self.shared.idle = True
        self.stats["inactivity_closes"] += 1
        if self._streams is not None:
            self._streams.close_all()
        logger.debug("no flag resolved for %.1f s: event streams closed", self.inactivity_delay_s())
        self._health_changed()

    def resume(self) -> None:
        """Called (via the loop) by the first resolve after an idle period."""
        self.shared.wake_requested = False
        if not self._idle or self.fatal or self.closed:
            return
        self._idle = False
        self.shared.idle = False
        self.stats["inactivity_resumes"] += 1
        # Unknown time has passed: no If-None-Match, no flagConfig* parameters.
        self.request_fetch(FetchRequest(conditional=False))
        if self.config.change_detection == "sse" and self._streams is not None:
            self._streams.update(self._specs)
        self._resume.set()

    # -- staleness -------------------------------------------------------------------

    def _healthy(self) -> bool:
        mode = self.config.change_detection
        if self.fatal or self.closed or self._idle or mode == "none":
            return True
        if not self._last_fetch_ok:
            return False
        if mode == "polling" or self.config.poll_interval_s > 0:
            return True
        streams = self._streams
        return streams is None or streams.all_connected

    def _health_changed(self) -> None:
        if self._healthy():
            self._unhealthy_since = None
            if self._stale_handle is not None:
                self._stale_handle.cancel()
                self._stale_handle = None
            if self._stale_emitted and not (self.fatal or self.closed):
                self._stale_emitted = False
                self.emitter.emit_provider_ready(ProviderEventDetails())
            return
        if self._unhealthy_since is None:
            self._unhealthy_since = time.monotonic()
            self._stale_handle = asyncio.get_running_loop().call_later(
                self.config.stale_after_s, self._check_stale
            )

    def _check_stale(self) -> None:
        self._stale_handle = None
        if self._healthy() or self._stale_emitted or self.fatal or self.closed:
            return
        self._stale_emitted = True
        logger.warning(
            "change detection lost for %.0f s: flag values may be stale",
            self.config.stale_after_s,
        )
        self.emitter.emit_provider_stale(
            ProviderEventDetails(message="change detection lost; serving cached evaluations")
        )
