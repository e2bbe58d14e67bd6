"""The stale clock and the inactivity watch, on a real loop with short delays."""

from __future__ import annotations

import asyncio
import time

from flageval.ofrep._detection import StaleClock
from flageval.ofrep._diagnostics import Counter, new_stats
from flageval.ofrep._inactivity import Inactivity
from flageval.ofrep._snapshot import Shared


async def test_the_clock_fires_once_after_a_continuous_loss_and_keeps_its_start() -> None:
    fired: list[float] = []
    clock = StaleClock(0.1, lambda: fired.append(time.monotonic()))
    began = time.monotonic()
    clock.update(True)
    await asyncio.sleep(0.05)
    clock.update(True)  # the same loss: restarting here would move the firing to 0.15 s
    await asyncio.sleep(0.07)  # timers run in deadline order: one due at 0.1 s has run
    assert len(fired) == 1
    assert fired[0] - began >= 0.1 - 0.005
    await asyncio.sleep(0.15)
    clock.update(True)
    await asyncio.sleep(0.15)
    assert len(fired) == 1  # once per loss


async def test_a_loss_shorter_than_the_delay_never_fires_and_the_next_starts_afresh() -> None:
    fired: list[float] = []
    clock = StaleClock(0.25, lambda: fired.append(time.monotonic()))
    clock.update(True)
    await asyncio.sleep(0.02)
    clock.update(False)
    began = time.monotonic()
    clock.update(True)
    await asyncio.sleep(0.02)
    assert fired == []
    await asyncio.sleep(0.3)
    assert len(fired) == 1 and fired[0] - began >= 0.25 - 0.005
    clock.update(True)  # still the same loss
    clock.cancel()
    assert len(fired) == 1
    clock.update(True)  # after cancel a loss starts its own clock
    await asyncio.sleep(0.3)
    assert len(fired) == 2


class Watch:
    def __init__(self, delay_s: float, may_idle: bool = True) -> None:
        self.shared = Shared()
        self.stats = new_stats()
        self.idled = 0
        self.resumed = 0
        self.may_idle = may_idle
        self.unit = Inactivity(
            self.shared,
            self.stats,
            delay_s=lambda: delay_s,
            may_idle=lambda: self.may_idle,
            on_idle=self._idle,
            on_resume=self._resume,
        )

    def _idle(self) -> None:
        self.idled += 1

    def _resume(self) -> None:
        self.resumed += 1


async def test_inactivity_idles_once_after_the_delay_and_one_resume_wakes_it() -> None:
    watch = Watch(0.05)
    watch.shared.last_used = time.monotonic()
    watch.unit.start()
    await asyncio.sleep(0.15)
    assert (watch.idled, watch.unit.idle, watch.shared.idle) == (1, True, True)
    assert watch.stats[Counter.INACTIVITY_CLOSES] == 1
    watch.shared.wake_requested = True  # as a resolve does before scheduling resume
    watch.shared.last_used = time.monotonic()
    watch.unit.resume()
    watch.unit.resume()  # a second wake-up finds it active: nothing happens
    assert (watch.resumed, watch.unit.idle, watch.shared.wake_requested) == (1, False, False)
    assert watch.stats[Counter.INACTIVITY_RESUMES] == 1
    task = watch.unit.stop()
    assert task is not None
    await asyncio.sleep(0)
    assert task.cancelled()


async def test_inactivity_waits_while_idling_is_not_wanted_and_stop_ends_an_idle_period() -> None:
    watch = Watch(0.03, may_idle=False)
    watch.shared.last_used = time.monotonic() - 1.0
    watch.unit.start()
    await asyncio.sleep(0.1)
    assert watch.idled == 0 and not watch.unit.idle
    watch.may_idle = True
    await asyncio.sleep(0.1)
    assert watch.idled == 1 and watch.shared.idle
    watch.unit.stop()
    assert not watch.shared.idle and not watch.shared.wake_requested
    watch.unit.resume()  # a wake-up scheduled before the stop
    assert watch.resumed == 0
