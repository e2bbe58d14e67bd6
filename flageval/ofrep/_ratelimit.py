"""The 429 gate: after a Retry-After, no request of any kind (poll, event-triggered
re-fetch, context change, stream connect) leaves before the given time.

Every code path that opens a request awaits `RateGate.wait` first, so the rule is
enforced in one place. Times are monotonic: a wall-clock jump cannot shorten the wait.
"""

from __future__ import annotations

import asyncio
import time


class RateGate:
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
