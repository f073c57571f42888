"""Running a drill: the real engine, store, pulse and outbox on a virtual clock, fed the scenario's arrivals.

The driver is one loop: let everything that can run settle, submit what arrives now, run the pulse when it is
due, wake the engine at its tick, then jump the clock to the next moment anything waits for (a worker's
latency, a heartbeat, the sweep, an arrival, the pulse, the tick). Arrivals stop at the end of the scenario's
hours; the engine then has ``drain_hours`` to finish what is open (it stops sooner once nothing is). The facts
are read from the store before the engine stops, and the data folder (a temporary one) is removed.

Python's global ``random`` (the retry jitter) is seeded for the drill and restored afterwards.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.control import Control
from engine.drill.clock import VirtualClock, settle
from engine.drill.report import DrillFacts, build_report
from engine.drill.scenario import Scenario
from engine.drill.twins import Window, as_subscriptions, build_twins, drill_settings, resolve_incidents
from engine.drill.workload import Arrival, plan_arrivals
from engine.job_factory import new_job
from engine.loop import Engine
from engine.models import TERMINAL_STATES, JobState, Source
from engine.pulse import Pulse
from engine.settings import Settings
from engine.store import Store
from engine.store.db import Database

T = TypeVar("T")

DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the simulated day starts at midnight UTC (the budget's day)
# What the engine's tick is for: jobs that wait for a moment (a snooze, a retry, a pause's end) or for a slot. With
# none, a tick would find nothing to claim: the drill skips it (a day of ticks is most of a quiet day's cost).
_WAITING = [JobState.QUEUED, JobState.SNOOZED, JobState.RETRY_WAIT]
# Waiting for an operator or the gate is not open work the drain could finish.
_SETTLED = TERMINAL_STATES | {JobState.NEEDS_HUMAN, JobState.NEEDS_INPUT}


async def run_drill(settings: Settings, scenario: Scenario, *, seed: int | None = None,
                    without: list[str] | None = None) -> dict[str, Any]:
    """Run ``scenario`` against twins of ``settings``' backends; the report as a dict (``engine.drill.report``)."""
    started = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    without = list(without or [])
    saved = random.getstate()
    random.seed(seed)
    try:
        with tempfile.TemporaryDirectory(prefix="switchboard-drill-") as folder:
            drill = drill_settings(settings, Path(folder) / "home", without)
            windows = resolve_incidents(scenario, settings, drill, DAY0)
            drill = as_subscriptions(drill, windows)
            arrivals = plan_arrivals(scenario, sorted(drill.job_types), seed)
            facts = await _simulate(drill, scenario, windows, arrivals, seed, settings.engine.tick_s)
    finally:
        random.setstate(saved)
    facts.without = without
    return build_report(facts, wall_s=time.perf_counter() - started)


class _InlineDatabase(Database):
    """The store's connection with every call on the event loop, the heavy reads too (a listing, the stats): the
    drill's clock may only move once nothing can run, and a read waiting in the store's thread would be work the
    event loop cannot see. One process, no other writer: the connection is always free."""

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = True) -> T:
        return await super().call(fn, inline=True)


@contextlib.asynccontextmanager
async def _system(drill: Settings, scenario: Scenario, windows: list[Window], clock: VirtualClock,
                  seed: int) -> AsyncIterator[tuple[Store, Engine, Pulse, Control]]:
    twins = build_twins(drill, scenario, windows, clock, seed)
    database = _InlineDatabase(drill.db_path)
    await database.open()
    store = Store(database, clock)
    try:
        engine = Engine(drill, store, dict(twins), clock)
        checked = {name: engine.redactor.backend(twin) for name, twin in twins.items()}
        pulse = Pulse(drill, store, clock, dict(checked))  # no wake: the driver wakes the engine after a tick
        await engine.start()
        try:
            yield store, engine, pulse, Control(drill, store, clock, engine)
        finally:
            await engine.stop(grace_s=0)
    finally:
        await store.close()


async def _simulate(drill: Settings, scenario: Scenario, windows: list[Window], arrivals: list[Arrival],
                    seed: int, tick_s: float) -> DrillFacts:
    clock = VirtualClock(DAY0)
    arrivals_end = DAY0 + scenario.span_s
    deadline = arrivals_end + scenario.drain_hours * 3600.0
    chat_id = drill.telegram.operator_ids[0] if drill.telegram.operator_ids else 1
    async with _system(drill, scenario, windows, clock, seed) as (store, engine, pulse, control):
        pending = list(reversed(arrivals))
        pulse_due, next_tick, pulse_runs = DAY0, DAY0, 0
        workload_ids: list[int] = []
        while True:
            await settle()
            now = clock.now()
            acted = False
            while pending and DAY0 + pending[-1].at_s <= now:
                workload_ids += await _submit(pending.pop(), drill, engine, control, chat_id)
                acted = True
            if pulse_due <= now:
                if acted:
                    await settle()  # the pulse looks at a quiet system: nothing runs beside it
                await pulse.tick()
                pulse_runs += 1
                engine.wake()
                pulse_due = max(await pulse.next_due_at(), now + 1.0)
                acted = True
            if next_tick <= now:
                next_tick = now + tick_s
                if await store.list_jobs(states=_WAITING, limit=1):  # as the engine's safety tick would
                    engine.wake()
                    acted = True
                elif now >= arrivals_end and await _all_settled(store):
                    break
            if acted:
                continue  # what arrived, ticked or woke acts at this moment before the clock moves on
            upcoming = [t for t in (clock.next_deadline(), pulse_due, next_tick) if t is not None]
            if pending:
                upcoming.append(DAY0 + pending[-1].at_s)
            moment = min(upcoming)
            if moment > deadline:
                break
            clock.advance_to(moment)
        await settle()
        return await DrillFacts.gather(store, drill, scenario, windows, seed, DAY0, clock.now(), workload_ids,
                                       pulse_runs)


async def _submit(arrival: Arrival, drill: Settings, engine: Engine, control: Control, chat_id: int) -> list[int]:
    if arrival.kind == "message":
        await control.chat(chat_id, arrival.text)
        return []
    job, _ = await engine.submit(
        new_job(drill, type=arrival.job_type, prompt=f"{arrival.text}: a {arrival.job_type} task of the drill",
                title=f"drill {arrival.job_type} #{arrival.number}", priority=arrival.priority,
                source=Source.SCHEDULE, idempotency_key=f"drill:{arrival.number}")
    )
    return [job.id]


async def _all_settled(store: Store) -> bool:
    counts = await store.counts_by_state()
    return all(JobState(state) in _SETTLED for state, n in counts.items() if n)
