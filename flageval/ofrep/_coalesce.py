"""refetchEvaluation events and stream (re)connects -> bulk fetches (ADR-0008 provider
rule 7: coalesce).

`EventCoalescer` sits between the event streams and the fetch queue. A stream that
(re)connects asks for a fetch (changes made while it was down) through it as an event
without metadata would: so eight streams connecting at once, or a connect and the
event right behind it, are one fetch. Its rule:

- an event whose ``etag`` equals the latest one seen (held here, queued, in flight or
  fetched) adds nothing: one change announced on two streams, or repeated, is one fetch;
- other events are held and merged (the newest metadata wins); the held request goes to
  the queue ``debounce_s`` after the latest event of the burst (a trailing window), but
  no later than ``max(debounce_s, interval_s)`` after the burst's first event, so a
  flood cannot postpone it for ever;
- and never sooner than ``interval_s`` after the previous one went: the ceiling on
  event-triggered fetches, ``1 / interval_s`` a second whatever the event rate.

The queue then adds in-flight deduplication (a request arriving during a fetch merges
into one follow-up), the error backoff, the ceiling on every trigger and the 429 gate.
Loop only. One event costs a comparison and an assignment; the timer is re-armed only
when it fires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ._diagnostics import Counter, Stats
from ._fetch import FetchRequest


class EventCoalescer:
    def __init__(
        self,
        submit: Callable[[FetchRequest], None],
        stats: Stats,
        debounce_s: float,
        interval_s: float,
    ) -> None:
        self._submit = submit
        self._stats = stats
        self._debounce_s = debounce_s
        self._interval_s = interval_s
        self._max_wait_s = max(debounce_s, interval_s)
        self._held: FetchRequest | None = None
        self._first = 0.0  # when the held burst began
        self._latest = 0.0  # its latest event
        self._sent = -float("inf")  # when the previous request went to the queue
        self._seen_etag: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def event(self, etag: str | None, last_modified: str | None) -> None:
        if etag is not None:
            if etag == self._seen_etag:
                self._stats[Counter.SSE_EVENTS_COALESCED] += 1
                return
            self._seen_etag = etag
        request = FetchRequest(
            conditional=True, flag_config_etag=etag, flag_config_last_modified=last_modified
        )
        self._hold(request, Counter.SSE_EVENTS_COALESCED)

    def connected(self) -> None:
        """A stream (re)connected: a conditional fetch, without flagConfig* parameters."""
        self._hold(FetchRequest(conditional=True), Counter.FETCH_COALESCED)

    def _hold(self, request: FetchRequest, merged: Counter) -> None:
        now = time.monotonic()
        self._latest = now
        if self._held is None:
            self._held = request
            self._first = now
        else:
            self._held = self._held.merge(request)
            self._stats[merged] += 1
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(self._due(), self._fire)

    def _due(self) -> float:
        # loop.call_at uses the loop's clock, which is time.monotonic() in asyncio.
        trailing = min(self._latest + self._debounce_s, self._first + self._max_wait_s)
        return max(trailing, self._sent + self._interval_s)

    def _fire(self) -> None:
        self._timer = None
        if self._held is None:
            return
        due = self._due()
        loop = asyncio.get_running_loop()
        if due > loop.time():
            self._timer = loop.call_at(due, self._fire)  # the burst went on meanwhile
            return
        request, self._held = self._held, None
        self._sent = loop.time()
        self._submit(request)

    def cancel(self) -> None:
        """Drop what is held (the provider stops, or idles: the resume re-fetches all)."""
        self._held = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
