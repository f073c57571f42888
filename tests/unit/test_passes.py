"""The pass counter: a wait for the next whole pass skips a pass already in progress."""

from __future__ import annotations

import asyncio

from engine.passes import Passes


async def test_next_whole_waits_for_a_pass_begun_after_the_call() -> None:
    passes = Passes()
    passes.begin()  # a pass in progress: it may have read the state before the caller changed it
    waiting = asyncio.create_task(passes.next_whole())
    await asyncio.sleep(0)
    passes.end()
    await asyncio.sleep(0)
    assert not waiting.done()
    passes.begin()
    passes.end()
    await asyncio.wait_for(waiting, 1)
    assert (passes.begun, passes.finished) == (2, 2)


async def test_an_idle_loop_needs_one_pass_and_a_cancelled_wait_is_dropped() -> None:
    passes = Passes()
    cancelled = asyncio.create_task(passes.next_whole())
    waiting = asyncio.create_task(passes.next_whole())
    await asyncio.sleep(0)
    cancelled.cancel()
    passes.begin()
    passes.end()
    await asyncio.wait_for(waiting, 1)
    assert cancelled.cancelled()
