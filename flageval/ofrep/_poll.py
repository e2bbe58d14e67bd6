"""Polling: a tick every ``interval_s`` while ``active()`` says so. Loop only.

What a tick fetches, and when polling is active (always in ``polling`` mode, only while
no stream can be held in ``sse`` mode, never while idle), are the coordinator's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Poller:
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
