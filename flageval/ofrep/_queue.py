"""When bulk fetches run. Everything here runs on the provider's loop.

`FetchQueue` owns:

- the pending trigger: what the next fetch is for. A trigger that arrives while one is
  pending, or while a fetch is in flight, merges into it (`FetchRequest.merge`: an
  unconditional trigger wins, the newest event metadata is kept) and counts as
  ``fetch_coalesced``;
- the runner: one task that waits on the 429 gate and the ceiling, takes the pending
  trigger and awaits ``run`` with it, until nothing is pending; so fetches never overlap;
- the ceiling: whatever triggers them (polls, refetch events, stream (re)connects, a
  stream's failed token, resumes, retries), fetches leave in a burst of at most
  `CEILING_BURST`, then `CEILING_PER_S` a second (a token bucket). A trigger held back
  merges into the next fetch (counted ``fetch_ceiling_delayed``, said once in the log).
  Only an ``urgent`` trigger (a context change: the application asked for it) passes at
  once, and takes its token if there is one;
- the error backoff: a failed fetch's trigger is queued again after ``retry_min_s``
  doubling to ``retry_max_s`` (drawn from the upper half of each step), and every
  trigger that was queued behind it or arrives meanwhile (poll, event, reconnect,
  resume) merges into that retry instead of going out at once; only an ``urgent`` one
  (a context change: the application asked for it) ends the wait. Any success resets
  the backoff;
- the 429 floor: a 429 closes the gate for its Retry-After but never for less than the
  next backoff step, so ``Retry-After: 0`` or a date in the past cannot make a storm;
  `RateGate` is that gate: after a Retry-After, no request of any kind (poll,
  event-triggered re-fetch, context change, stream connect) leaves before the given
  time; every code path that opens a request awaits `RateGate.wait` first, and a later,
  shorter Retry-After never shortens an earlier, longer one;
- ``failing``: whether the latest answered fetch failed, which staleness reads.

What a fetch sends and what its answer means belong to ``run`` (the coordinator).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from flageval._common import backoff_s

from ._diagnostics import Counter, Stats, logger
from ._fetch import FetchRequest

# Jittered over the upper half: a retry never comes much sooner than the backoff says.
_SPREAD = 0.5
#: The ceiling: a burst of this many fetches (one change announced twice, a reconnect
#: and its events) goes out at once...
CEILING_BURST = 4
#: ...and then no more than this many a second, sustained: a server whose answers
#: trigger the next fetch (a new stream URL in every 200) costs one request a second.
CEILING_PER_S = 1.0


class RateGate:
    """The 429 gate. Times are monotonic: a wall-clock jump cannot shorten the wait."""

    def __init__(self) -> None:
        self._until = 0.0

    def block(self, seconds: float) -> None:
        # A later Retry-After never shortens an earlier, longer one.
        self._until = max(self._until, time.monotonic() + max(0.0, seconds))

    async def wait(self) -> None:
        # Re-check after each sleep: another 429 may have pushed the time further out.
        while True:
            remaining = self._until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)


class FetchQueue:
    def __init__(
        self,
        run: Callable[[FetchRequest], Awaitable[None]],
        gate: RateGate,
        stats: Stats,
        retry_min_s: float,
        retry_max_s: float,
    ) -> None:
        self._run = run
        self._gate = gate
        self._stats = stats
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._pending: FetchRequest | None = None
        self._runner: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_request: FetchRequest | None = None  # what the scheduled retry fetches
        self._streak = 0  # consecutive failures: the backoff's exponent
        self._stopped = False
        self.failing = False
        self._urgent = False  # the pending trigger may pass the ceiling
        self._in_flight_urgent = False
        self._burst = float(CEILING_BURST)
        self._per_s = CEILING_PER_S
        self._tokens = self._burst
        self._refilled_at = time.monotonic()
        self._wake = asyncio.Event()  # an urgent trigger ends a wait for the ceiling
        self._said = False

    def request(self, request: FetchRequest, urgent: bool = False) -> None:
        """Ask for a fetch: the next one the runner makes covers ``request``. During the
        error backoff it waits for the retry, unless ``urgent``."""
        if self._stopped:
            return
        if self._retry is not None and self._retry_request is not None:
            merged = self._retry_request.merge(request)
            self._stats[Counter.FETCH_COALESCED] += 1
            if not urgent:
                self._retry_request = merged
                return
            self._cancel_retry()
            request = merged
        if self._pending is None:
            self._pending = request
        else:
            self._pending = self._pending.merge(request)
            self._stats[Counter.FETCH_COALESCED] += 1
        if urgent:
            self._urgent = True
            self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._drain(), name="ofrep-fetch")

    async def _drain(self) -> None:
        while self._pending is not None and not self._stopped:
            await self._within_limits()
            if self._pending is None or self._stopped:
                return
            request, self._pending = self._pending, None
            self._in_flight_urgent, self._urgent = self._urgent, False
            self._take_token()
            await self._run(request)

    async def _within_limits(self) -> None:
        """Wait until the 429 gate is open and, unless the pending trigger is urgent, a
        token of the ceiling is there (re-checking the gate: a 429 may come meanwhile)."""
        held = False
        while True:
            await self._gate.wait()
            delay = 0.0 if self._urgent else self._ceiling_delay_s()
            if delay <= 0 or self._stopped:
                return
            if not held:
                held = True
                self._stats[Counter.FETCH_CEILING_DELAYED] += 1
                if not self._said:
                    self._said = True
                    logger.warning(
                        "bulk fetches are asked for faster than about one a second (the "
                        "server's stream URLs or events, or polling, trigger them): later "
                        "triggers are merged and fetched at that rate"
                    )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._per_s)
        self._refilled_at = now

    def _ceiling_delay_s(self) -> float:
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self._per_s

    def _take_token(self) -> None:
        self._refill()
        self._tokens = max(0.0, self._tokens - 1.0)

    def succeeded(self) -> None:
        self._streak = 0
        self.failing = False
        self._cancel_retry()

    def failed(self, request: FetchRequest) -> float:
        """Queue ``request`` again after the next backoff step; returns that delay. What
        was queued behind the failed fetch (unless urgent) waits for that retry too."""
        self.failing = True
        delay = self._next_backoff_s()
        if self._retry_request is not None:
            request = self._retry_request.merge(request)
        if self._pending is not None and not self._urgent:
            request = request.merge(self._pending)
            self._pending = None
            self._stats[Counter.FETCH_COALESCED] += 1
        self._cancel_retry()
        self._retry_request = request
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)
        return delay

    def _retry_now(self) -> None:
        request = self._retry_request
        self._retry = self._retry_request = None
        if request is not None:
            self.request(request)

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._retry = self._retry_request = None

    def rate_limited(self, request: FetchRequest, retry_after_s: float | None) -> float:
        """Close the gate for ``retry_after_s``, but at least the next backoff step (the
        whole wait when the server gave none), and queue ``request`` for when it opens;
        returns the wait."""
        self.failing = True
        floor = self._next_backoff_s()
        wait = floor if retry_after_s is None else max(retry_after_s, floor)
        self._gate.block(wait)
        self.request(request, urgent=self._in_flight_urgent)
        return wait

    def _next_backoff_s(self) -> float:
        self._streak += 1
        return backoff_s(self._streak - 1, self._retry_min_s, self._retry_max_s, _SPREAD)

    def pause(self) -> None:
        """Idle: what is pending (unless urgent) and a scheduled retry are dropped, counted
        as joining the unconditional fetch the resume makes; nothing goes out meanwhile."""
        dropped = (self._pending is not None and not self._urgent) + (self._retry is not None)
        if self._pending is not None and not self._urgent:
            self._pending = None
        self._cancel_retry()
        self._stats[Counter.FETCH_COALESCED] += dropped

    def stop(self) -> asyncio.Task[None] | None:
        """Drop what is pending and any scheduled retry; refuse later requests. Returns the
        runner, whose fetch in flight (if any) still completes unless the caller cancels it."""
        self._stopped = True
        self._pending = None
        self._cancel_retry()
        self._wake.set()
        return self._runner
