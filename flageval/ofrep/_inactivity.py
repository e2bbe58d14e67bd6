"""Idleness: no flag resolved for the inactivity delay (ADR-0008).

`Inactivity` owns the task that watches ``Shared.last_used``, the idle flag the resolve
path reads (``Shared.idle``), and the wake-up handshake: the first resolve of an idle
provider sets ``Shared.wake_requested`` (so a burst of resolves asks once) and schedules
`resume` on the loop. Idleness is orthogonal to the status: a READY provider and one
retrying in ERROR can both idle. What idling means (streams closed, polling paused, an
unconditional re-fetch on resume) is the coordinator's, told through ``on_idle`` and
``on_resume``. Loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ._diagnostics import Counter, Stats
from ._snapshot import Shared


class Inactivity:
    def __init__(
        self,
        shared: Shared,
        stats: Stats,
        *,
        delay_s: Callable[[], float],
        may_idle: Callable[[], bool],
        on_idle: Callable[[], None],
        on_resume: Callable[[], None],
    ) -> None:
        self._shared = shared
        self._stats = stats
        self._delay_s = delay_s
        self._may_idle = may_idle
        self._on_idle = on_idle
        self._on_resume = on_resume
        self._resumed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return self._shared.idle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="ofrep-inactivity")

    async def _watch(self) -> None:
        shared = self._shared
        while True:
            delay = self._delay_s()
            idle_for = time.monotonic() - shared.last_used
            if idle_for < delay:
                await asyncio.sleep(delay - idle_for)
                continue
            if not self._may_idle():
                await asyncio.sleep(delay)
                continue
            shared.wake_requested = False
            shared.idle = True
            self._stats[Counter.INACTIVITY_CLOSES] += 1
            self._on_idle()
            self._resumed.clear()
            await self._resumed.wait()

    def resume(self) -> None:
        """A resolve found the provider idle (scheduled on the loop by that resolve)."""
        shared = self._shared
        shared.wake_requested = False
        if not shared.idle:
            return
        shared.idle = False
        self._stats[Counter.INACTIVITY_RESUMES] += 1
        self._on_resume()
        self._resumed.set()

    def stop(self) -> asyncio.Task[None] | None:
        """Stop watching and stay active for good; returns the cancelled task."""
        self._shared.idle = False
        self._shared.wake_requested = False
        if self._task is not None:
            self._task.cancel()
        return self._task
