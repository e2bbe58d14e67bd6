"""Change detection: the event streams, polling, inactivity and the stale clock.

`Detection` owns the `StreamManager`, the `Poller`, the `Inactivity` watch and the
`StaleClock`, and answers one question: can a change made on the server be seen now?
It is lost when the latest fetch failed, or when an advertised stream is down and no
polling stands in; never in mode ``none`` or while idle. A loss that lasts
``stale_after_s`` moves READY to STALE (PROVIDER_STALE); READY follows when it ends.

What it asks of the coordinator goes through the objects it is given: fetch requests
through the queue (refetch events through the coalescer), the stream list of the
latest evaluation through ``specs``, a stream's rejected credentials through
``on_fatal``. Loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from openfeature.event import ProviderEventDetails

from flageval._common import RateLimitedLog

from ._bulk import StreamSpec
from ._coalesce import EventCoalescer
from ._config import DEFAULT_INACTIVITY_DELAY_S, OFREPConfig
from ._diagnostics import Counter, Stats, logger
from ._fetch import FetchRequest
from ._inactivity import Inactivity
from ._queue import FetchQueue, RateGate
from ._snapshot import Shared
from ._sse import DEFAULT_MAX_EVENTS_PER_S
from ._status import Lifecycle, Status
from ._streams import StreamManager


class Poller:
    """A tick every ``interval_s`` while ``active()`` says so."""

    def __init__(
        self, interval_s: float, active: Callable[[], bool], tick: Callable[[], None]
    ) -> None:
        self._interval_s = interval_s
        self._active = active
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ofrep-poll")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            if self._active():
                self._tick()

    def stop(self) -> asyncio.Task[None] | None:
        """Cancel the task; returns it (None if polling never started)."""
        if self._task is not None:
            self._task.cancel()
        return self._task


class StaleClock:
    """When the current loss of change detection began, and the one timer that calls
    ``on_stale`` once ``delay_s`` of continuous loss have passed. Whether detection is
    lost is reported through ``update``."""

    def __init__(self, delay_s: float, on_stale: Callable[[], None]) -> None:
        self._delay_s = delay_s
        self._on_stale = on_stale
        self._timer: asyncio.TimerHandle | None = None
        self._losing = False

    def update(self, lost: bool) -> None:
        """Start the clock when a loss begins, stop it when it ends; a loss that goes on
        keeps its start time, so ``on_stale`` is called at most once per loss."""
        if not lost:
            self.cancel()
        elif not self._losing:
            self._losing = True
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._on_stale()

    def cancel(self) -> None:
        self._losing = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Detection:
    def __init__(
        self,
        config: OFREPConfig,
        shared: Shared,
        stats: Stats,
        lifecycle: Lifecycle,
        queue: FetchQueue,
        events: EventCoalescer,
        specs: Callable[[], tuple[StreamSpec, ...]],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._config = config
        self._stats = stats
        self._lifecycle = lifecycle
        self._queue = queue
        self._events = events
        self._specs = specs
        self._on_fatal = on_fatal
        self._clock = StaleClock(config.stale_after_s, self._on_stale)
        self._poller = Poller(config.poll_interval_s, self._polling_active, self._poll)
        self._inactivity = Inactivity(
            shared,
            stats,
            delay_s=self._inactivity_delay_s,
            may_idle=self._has_background_traffic,
            on_idle=self._on_idle,
            on_resume=self._on_resume,
        )
        self._streams: StreamManager | None = None

    def open(self, session: aiohttp.ClientSession, gate: RateGate, log: RateLimitedLog) -> None:
        self._streams = StreamManager(
            session=session,
            config=self._config,
            gate=gate,
            stats=self._stats,
            log=log,
            on_connected=self._on_stream_connected,
            on_refetch=self._events.event,
            on_state=self.health_changed,
            on_fatal=self._stream_fatal,
            on_token_rejected=self._on_stream_token_rejected,
            max_events_per_s=DEFAULT_MAX_EVENTS_PER_S,
        )

    def start(self) -> None:
        if self._config.change_detection == "none":
            return
        self._poller.start()
        self._inactivity.start()

    def stop(self) -> list[asyncio.Task[None]]:
        """Everything stops; returns the tasks that were running (cancelled)."""
        tasks = [t for t in (self._poller.stop(), self._inactivity.stop()) if t is not None]
        for task in tasks:
            task.cancel()
        if self._streams is not None:
            tasks.extend(self._streams.close_all())
        self._clock.cancel()
        self._events.cancel()
        return tasks

    def follow(self) -> None:
        """Hold the streams the latest evaluation lists (not while idle)."""
        if self._config.change_detection == "sse" and not self._inactivity.idle and self._streams:
            self._streams.update(self._specs())

    # -- streams ---------------------------------------------------------------------

    def _on_stream_connected(self) -> None:
        # ADR-0008: changes made while the stream was down (or not yet up) are fetched,
        # coalesced and limited as refetch events are.
        self._events.connected()

    def _on_stream_token_rejected(self) -> None:
        # A 304 carries no eventStreams: only a 200 brings the fresh URLs.
        self._queue.request(FetchRequest(conditional=False))

    def _stream_fatal(self, status: int) -> None:
        self._on_fatal(f"an event stream answered HTTP {status}")

    # -- polling and inactivity ------------------------------------------------------

    def _polling_active(self) -> bool:
        if self._inactivity.idle:
            return False
        if self._config.change_detection == "polling":
            return True
        # sse: poll while the streams cannot be held (or the server offers none).
        streams = self._streams
        return streams is None or streams.count == 0 or not streams.all_connected

    def _poll(self) -> None:
        self._stats[Counter.POLLS] += 1
        self._queue.request(FetchRequest(conditional=True))

    def _inactivity_delay_s(self) -> float:
        if self._config.inactivity_delay_s is not None:
            return self._config.inactivity_delay_s
        server = [s.inactivity_delay_s for s in self._specs() if s.inactivity_delay_s]
        return min(server) if server else DEFAULT_INACTIVITY_DELAY_S

    def _has_background_traffic(self) -> bool:
        if self._config.change_detection == "polling":
            return True
        return bool(self._specs()) or self._config.poll_interval_s > 0

    def _on_idle(self) -> None:
        if self._streams is not None:
            self._streams.close_all()
        # Held events, a poll waiting for the ceiling, a scheduled retry: the resume
        # fetches everything anyway.
        self._events.cancel()
        self._queue.pause()
        logger.debug(
            "no flag resolved for %.1f s: event streams closed", self._inactivity_delay_s()
        )
        self.health_changed()

    def resume(self) -> None:
        """Called (via the loop) by the first resolve after an idle period."""
        self._inactivity.resume()

    def _on_resume(self) -> None:
        # Unknown time has passed: no If-None-Match, no flagConfig* parameters.
        self._queue.request(FetchRequest(conditional=False))
        if self._config.change_detection == "sse" and self._streams is not None:
            self._streams.update(self._specs())

    # -- staleness -------------------------------------------------------------------

    def _lost(self) -> bool:
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

    def health_changed(self) -> None:
        """Recompute after anything that may change `_lost` (a fetch, a stream state)."""
        lost = self._lost()
        status = self._lifecycle.status
        if status is Status.STALE and not lost:
            self._lifecycle.move(Status.READY)
            status = Status.READY
        self._clock.update(lost and status in (Status.READY, Status.STALE))

    def _on_stale(self) -> None:
        details = ProviderEventDetails(message="change detection lost; serving cached evaluations")
        if self._lost() and self._lifecycle.move(Status.STALE, details):
            logger.warning(
                "change detection lost for %.0f s: flag values may be stale",
                self._config.stale_after_s,
            )
