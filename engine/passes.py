"""A pass counter for a polling loop: how many passes it began and finished, and a wait for the next whole one.

A loop that looks at the database over and over (the engine's dispatch, the outbox sender's drain, the live
progress cards) counts each pass here: two integer increments per pass, and a future only while someone waits.
``next_whole`` returns once a pass that began after the call has finished, so the caller knows the loop has
looked at everything committed before it, whether or not the loop acted on it. Tests use it to show that
something did *not* happen without sleeping and hoping the loop had its chance.
"""

from __future__ import annotations

import asyncio


class Passes:
    def __init__(self) -> None:
        self.begun = 0
        self.finished = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (pass number, resolved when it finishes)

    def begin(self) -> None:
        self.begun += 1

    def end(self) -> None:
        self.finished += 1
        waiting = []
        for number, waiter in self._waiters:
            if number > self.finished:
                waiting.append((number, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._waiters = waiting

    async def next_whole(self) -> None:
        """Wait until a pass that begins after this call has finished. The loop has to run one: wake it or let
        it tick (a pass in progress now does not count: it may have read the state before the caller changed
        it)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.begun + 1, waiter))
        await waiter
