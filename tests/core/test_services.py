"""The one periodic-service loop (postwatch.services): step, back-off on StoreUnavailable,
wake, stop."""

from __future__ import annotations

import asyncio
import itertools
import time

from postwatch.services import Backoff, PeriodicService, run_periodic, wait_stop
from postwatch.store import StoreUnavailable


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(first=0.5, cap=3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


async def test_steps_again_at_once_while_there_is_more_then_waits() -> None:
    stop = asyncio.Event()
    calls: list[float] = []

    def step() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 5:
            stop.set()
        return len(calls) < 3  # three busy rounds, then idle

    task = asyncio.create_task(run_periodic("t", step, stop, every=0.2))
    await asyncio.wait_for(task, 30)
    assert len(calls) == 5
    assert calls[2] - calls[0] < 0.5  # busy: no wait between steps
    assert calls[4] - calls[3] >= 0.15  # idle: waits `every`


async def test_store_unavailable_backs_off_and_recovers() -> None:
    stop = asyncio.Event()
    calls: list[float] = []

    def step() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise StoreUnavailable("down")
        stop.set()

    await asyncio.wait_for(
        run_periodic("t", step, stop, every=60, backoff=Backoff(first=0.05, cap=0.2)), 30
    )
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 4 and gaps[0] >= 0.04 and gaps[1] >= 0.09  # 0.05, 0.1, 0.2


async def test_stop_and_wake_end_the_wait_at_once() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    def step() -> None:
        calls.append(1)

    task = asyncio.create_task(run_periodic("t", step, stop, every=3600, wake=wake))
    while not calls:
        await asyncio.sleep(0.01)
    wake.set()
    for _ in range(500):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(calls) == 2
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 30)
    assert time.monotonic() - started < 5
    assert await wait_stop(stop, 3600) is True


async def test_periodic_service_base() -> None:
    class Counter(PeriodicService):
        name = "counter"
        every = 0.01

        def __init__(self, stop: asyncio.Event) -> None:
            self.n = 0
            self.stop = stop

        def step(self) -> None:
            self.n += 1
            if self.n == 3:
                self.stop.set()

    stop = asyncio.Event()
    svc = Counter(stop)
    await asyncio.wait_for(svc.run(stop), 30)
    assert svc.n == 3
