"""The stale clock and the inactivity watch, on a real loop with short delays: what is
awaited is a condition, what is ordered in time is shown by asyncio's timer order."""

from __future__ import annotations

import asyncio
import time

from flageval.ofrep._detection import StaleClock
from flageval.ofrep._diagnostics import Counter, new_stats
from flageval.ofrep._inactivity import Inactivity
from flageval.ofrep._snapshot import Shared

from .test_fetch_queue import until


class Order:
    """What fired, in order: the clock's ``on_stale`` and marker timers set by the test.
    asyncio runs timers by deadline, so the order proves when the clock was due without
    measuring any time (a loaded machine only runs them all later)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Event()

    def stale(self) -> None:
        self.mark("stale")

    def mark(self, what: str) -> None:
        self.seen.append(what)
        self._changed.set()

    def at(self, when: float, what: str) -> None:
        asyncio.get_running_loop().call_at(when, self.mark, what)

    async def until(self, count: int) -> list[str]:
        async with asyncio.timeout(5.0):
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.seen


async def test_the_clock_fires_once_after_a_continuous_loss_and_keeps_its_start() -> None:
    loop = asyncio.get_running_loop()
    order = Order()
    clock = StaleClock(0.1, order.stale)
    clock.update(True)  # due 0.1 s from here
    began = loop.time()
    order.at(began + 0.125, "after 0.125 s")
    await asyncio.sleep(0.05)
    clock.update(True)  # the same loss: restarted here, it would be due after 0.15 s
    assert await order.until(2) == ["stale", "after 0.125 s"]
    clock.update(True)  # still the same loss: no second firing
    order.at(loop.time() + 0.15, "after 0.15 s more")
    assert await order.until(3) == ["stale", "after 0.125 s", "after 0.15 s more"]


async def test_a_loss_shorter_than_the_delay_never_fires_and_the_next_starts_afresh() -> None:
    loop = asyncio.get_running_loop()
    order = Order()
    clock = StaleClock(0.25, order.stale)
    clock.update(True)
    await asyncio.sleep(0.02)
    clock.update(False)  # ended before the delay
    clock.update(True)  # a new loss: due 0.25 s from here (the first would be 0.23 s)
    began = loop.time()
    order.at(began + 0.24, "after 0.24 s")
    assert await order.until(2) == ["after 0.24 s", "stale"]
    clock.update(True)  # still the same loss
    clock.cancel()
    clock.update(True)  # after cancel a loss starts its own clock
    assert await order.until(3) == ["after 0.24 s", "stale", "stale"]


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
    await until(lambda: watch.idled == 1)
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
    await asyncio.sleep(0.1)  # a window for what must not happen: three delays
    assert watch.idled == 0 and not watch.unit.idle
    watch.may_idle = True
    await until(lambda: watch.idled == 1)
    assert watch.shared.idle
    watch.unit.stop()
    assert not watch.shared.idle and not watch.shared.wake_requested
    watch.unit.resume()  # a wake-up scheduled before the stop
    assert watch.resumed == 0
