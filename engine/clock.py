"""Time, injected. Everything that reads the time or waits takes a ``Clock``.

``SystemClock`` is the real one; ``FakeClock`` lets tests and the simulator run hours of schedule in
seconds: ``sleep`` returns as soon as the fake time is advanced past the deadline.

asyncio is imported where a clock waits: a CLI command on the store reads the time but never waits, and runs
without an event loop (``bot.cli_common.on_store``), so it does not pay for loading asyncio.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told. ``sleep`` waits until ``advance`` passes its deadline."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        import asyncio

        self._now = start
        self._changed = asyncio.Event()
        self.sleepers = 0  # sleeps whose deadline is set: an `advance` from now on counts towards them

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        self._now = max(self._now, when)
        self._changed.set()

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep(self, seconds: float) -> None:
        import asyncio

        deadline = self._now + max(0.0, seconds)
        self.sleepers += 1
        try:
            while self._now < deadline:
                self._changed.clear()
                await self._changed.wait()
        finally:
            self.sleepers -= 1
        await asyncio.sleep(0)


def iso(ts: float | None) -> str | None:
    """Render epoch seconds as an ISO-8601 UTC string (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
