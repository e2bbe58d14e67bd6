"""The stale clock: how long change detection has been lost without a break.

`StaleClock` owns when the current loss began and the one timer that calls ``on_stale``
once ``delay_s`` of continuous loss have passed. Whether detection is lost, and what
going STALE means, are the coordinator's: it reports the former through ``update``.
Loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StaleClock:
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
