"""The engine lease on a real SQLite file: a second engine on the same data folder refuses to start while the
first lives (no lock file is involved at this level), takes over only a lease that expired or whose holder is
gone, and the engine that lost it starts nothing more; the crash handler never fails a job it no longer holds."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from engine import process
from engine.backends.sim import SimBackend
from engine.clock import FakeClock
from engine.job_factory import new_job
from engine.loop import Engine
from engine.models import Job, JobState
from engine.runner import JobContext
from engine.settings import Settings
from engine.store import EngineRunning, Store

TTL_S = 90.0


@pytest.fixture
async def second_store(settings: Settings, clock: FakeClock) -> AsyncIterator[Store]:
    """Another connection to the same file, as a second engine process would have."""
    opened = await Store.open(settings.db_path, clock)
    yield opened
    await opened.close()


def slow_backends(settings: Settings, clock: FakeClock) -> dict[str, SimBackend]:
    return {c.name: SimBackend(c.model_copy(update={"sim": c.sim.model_copy(update={"latency_ms": 60_000.0})}),
                               clock=clock) for c in settings.backends}


async def test_second_engine_refuses_while_the_first_runs_its_jobs(
    settings: Settings, store: Store, second_store: Store, clock: FakeClock, make_engine: object, eventually: object
) -> None:
    jobs = await store.enqueue_many([new_job(settings, type="analysis", prompt=f"job {i}") for i in range(6)])
    first = await make_engine(settings, store, clock, backends=slow_backends(settings, clock))  # type: ignore[operator]

    async def all_running() -> bool:
        return (await store.counts_by_state()).get("running") == 6

    await eventually(all_running)  # type: ignore[operator]
    second = Engine(settings, second_store, slow_backends(settings, clock), clock)
    with pytest.raises(EngineRunning, match=r"another engine is running on .*: stop it first"):
        await second.start()
    for job in jobs:
        now = await store.get_job(job.id)
        assert now is not None and now.state == JobState.RUNNING and now.lease_owner == first.owner
        assert now.attempt == 0
        assert "orphan sweep" not in {e.reason for e in await store.job_events(job.id)}
    lease = await store.engine_lease()
    assert lease is not None and lease.owner == first.owner


async def test_lease_of_a_dead_holder_is_taken_at_once(store: Store, clock: FakeClock) -> None:
    me = process.current()
    dead = dataclasses.replace(me, pid=2**22 + 7)  # above pid_max: certainly no process
    assert await store.engine_lease_acquire("dead-engine", dead, TTL_S, gone=process.is_gone) is None
    assert await store.engine_lease_acquire("new-engine", me, TTL_S, gone=process.is_gone) is None
    assert (await store.engine_lease()).owner == "new-engine"  # type: ignore[union-attr]
    assert await store.engine_lease_renew("dead-engine", TTL_S) is False


async def test_lease_on_another_host_waits_for_its_expiry(store: Store, clock: FakeClock) -> None:
    elsewhere = dataclasses.replace(process.current(), host="another-host")
    assert await store.engine_lease_acquire("remote", elsewhere, TTL_S, gone=process.is_gone) is None
    clock.advance(TTL_S - 1)
    holder = await store.engine_lease_acquire("local", process.current(), TTL_S, gone=process.is_gone)
    assert holder is not None and holder.owner == "remote" and holder.host == "another-host"
    clock.advance(2)
    assert await store.engine_lease_acquire("local", process.current(), TTL_S, gone=process.is_gone) is None
    assert await store.engine_lease_renew("remote", TTL_S) is False
    assert await store.engine_lease_renew("local", TTL_S) is True


async def test_engine_that_lost_its_lease_starts_nothing_more(
    settings: Settings, store: Store, clock: FakeClock, make_engine: object, eventually: object
) -> None:
    engine = await make_engine(settings, store, clock)  # type: ignore[operator]
    other = dataclasses.replace(process.current(), host="another-host")
    # Another engine judged this one gone (it stalled past its lease) and took the data folder over.
    assert await store.engine_lease_acquire("other", other, TTL_S, gone=lambda _: True) is None
    clock.advance(settings.engine.sweep_interval_s)  # this engine's next heartbeat finds the lease gone

    async def noticed() -> bool:
        return engine._lease_lost

    await eventually(noticed)  # type: ignore[operator]
    job, _ = await store.enqueue(new_job(settings, type="analysis", prompt="not for the stalled engine"))
    engine.wake()
    await asyncio.wait_for(engine.passes.next_whole(), 30)  # a whole dispatch pass: it claimed nothing
    assert (await store.get_job(job.id)).state == JobState.QUEUED  # type: ignore[union-attr]
    await engine.stop(grace_s=0)
    assert (await store.engine_lease()).owner == "other"  # type: ignore[union-attr]  # stop releases only its own


class _CrashingHooks:
    """Crashes the runner (a bug outside any backend) after, optionally, another engine swept and re-claimed
    the job, as a second engine's start-up sweep would."""

    def __init__(self, other: Store | None) -> None:
        self.other = other

    async def context_for(self, job: Job) -> JobContext:
        if self.other is not None:
            await self.other.sweep_orphans(everything_running=True)
            await self.other.claim("other-engine", free_slots=10, background_limit=10, lease_s=60)
        raise RuntimeError("a bug in the runner")

    async def job_finished(self, job: Job) -> None:
        return None


@pytest.mark.parametrize("taken_over", [False, True])
async def test_crash_handler_fails_only_a_job_it_still_holds(
    settings: Settings, store: Store, second_store: Store, clock: FakeClock, eventually: object, taken_over: bool
) -> None:
    hooks = _CrashingHooks(second_store if taken_over else None)
    engine = Engine(settings, store, slow_backends(settings, clock), clock, hooks=hooks)  # type: ignore[arg-type]
    await engine.start()
    try:
        job, _ = await store.enqueue(new_job(settings, type="analysis", prompt="crash me"))
        engine.wake()

        async def settled() -> Job | None:
            now = await store.get_job(job.id)
            done = now is not None and not engine._tasks and now.attempt == (1 if taken_over else 0)
            return now if done and (taken_over or now.state == JobState.FAILED) else None

        final = await eventually(settled)  # type: ignore[operator]
    finally:
        await engine.stop(grace_s=0)
    if taken_over:
        assert final.state == JobState.RUNNING and final.lease_owner == "other-engine"
        assert "internal error: RuntimeError" not in {e.reason for e in await store.job_events(job.id)}
    else:
        assert final.state == JobState.FAILED and final.last_error == "a bug in the runner"
