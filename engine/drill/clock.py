"""Virtual time for a drill: the clock jumps to the next moment something waits for, once nothing else can run.

``VirtualClock`` is an ``engine.clock.Clock`` whose ``sleep`` parks the caller on a heap of deadlines. The drill's
driver calls ``settle()`` until the event loop has nothing ready to run (every worker, heartbeat and sweep is
waiting on this clock, the engine's loop on its wake-up), then ``advance_to`` the next deadline, which wakes the
sleepers due then, in deadline order. A day of work takes as long as the work itself costs the CPU, not 24 hours.

Determinism: the drill's store runs every transaction and read inline on the event loop (``runner.py``'s
``_InlineDatabase``), so "nothing ready" means nothing can move until the clock does: no work hides in a thread.
The pulse's one thread hop (the disk check) runs only when the driver calls it on a settled loop. The order in
which sleepers wake is fixed by (deadline, order of sleeping).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from typing import Any


class VirtualClock:
    def __init__(self, start: float) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        await waiter  # a cancelled sleeper's future is cancelled with it and skipped by next_deadline

    def next_deadline(self) -> float | None:
        """When the earliest live sleeper is due (None: nobody sleeps)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def advance_to(self, when: float) -> int:
        """Move to ``when`` (never back) and wake every sleeper due by then. Returns how many woke."""
        self._now = max(self._now, when)
        woken = 0
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
                woken += 1
        return woken


async def settle(max_rounds: int = 1_000_000) -> None:
    """Return once the event loop has nothing ready to run but this task: everything else waits (on the virtual
    clock, on an event, on a future). Reads the loop's ready queue, which asyncio keeps as ``_ready``."""
    loop = asyncio.get_running_loop()
    ready: deque[Any] = loop._ready  # type: ignore[attr-defined]
    quiet = 0
    for _ in range(max_rounds):
        await asyncio.sleep(0)
        quiet = quiet + 1 if not ready else 0
        if quiet >= 2:
            return
    raise RuntimeError("the drill's event loop never settled")
