"""A harness for end-to-end resilience scenarios: the real engine, the real HTTP backends, the fake model APIs.

The engine's time is a ``FakeClock``; the HTTP calls are real (127.0.0.1) and take milliseconds. A scenario
builds backend configs pointing at fake servers, opens a ``Harness`` on a data folder, submits jobs, moves the
clock and waits (real time, bounded) for the jobs to reach a state. ``restart()`` stops the engine, closes the
store and the backends' clients, and opens new ones on the same database file, as a process restart would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from engine.backends.base import Backend
from engine.backends.registry import build_backend
from engine.clock import FakeClock
from engine.job_factory import new_job
from engine.loop import Engine
from engine.models import Attempt, Job, JobState, OutboxMessage
from engine.settings import BackendConfig, EngineSettings, Settings
from engine.store import Store
from tests.fakes.scripted_http import ScriptedServer

JOB_TYPE = "analysis"  # tier 2, no review: one maker call per job keeps the routing history easy to read


def http_backend(name: str, kind: str, fake: ScriptedServer, family: str, **fields: Any) -> BackendConfig:
    """A config for an ``openai`` or ``anthropic`` backend pointed at ``fake``."""
    return BackendConfig(name=name, kind=kind, model=f"{name}-model", family=family, tier=2,  # type: ignore[arg-type]
                         base_url=f"{fake.url}/v1", max_concurrency=50, timeout_s=30.0, **fields)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` (real time, every 10 ms) until it returns something truthy. The limit is generous (a busy
    machine is slow); a check that holds returns at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s (last: {result!r})")
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, home: Path, clock: FakeClock, backends: list[BackendConfig], *,
                 engine: EngineSettings | None = None, chain: list[str] | None = None) -> None:
        self.clock = clock
        self.settings = Settings(
            home=home,
            backends=backends,
            routing={JOB_TYPE: chain or [b.name for b in backends]},
            engine=engine or EngineSettings(),
        )
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.backends: dict[str, Backend] = {}

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> Harness:
        self.store = await Store.open(self.settings.db_path, self.clock)
        self.backends = {c.name: build_backend(c, clock=self.clock) for c in self.settings.backends}
        self.engine = Engine(self.settings, self.store, self.backends, self.clock)
        await self.engine.start()
        return self

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop(grace_s=0)
            self.engine = None
        for backend in self.backends.values():
            await backend.aclose()
        self.backends = {}
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def db(self) -> Store:
        assert self.store is not None, "harness not started"
        return self.store

    # ---- driving --------------------------------------------------------------------------------------

    async def submit(self, text: str) -> int:
        assert self.engine is not None
        job, _ = await self.engine.submit(new_job(self.settings, type=JOB_TYPE, prompt=text))
        return job.id

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wake()

    def set_time(self, when: float) -> None:
        self.clock.set(when)
        self.wake()

    def wake(self) -> None:
        if self.engine is not None:
            self.engine.wake()

    async def job(self, job_id: int) -> Job:
        job = await self.db.get_job(job_id)
        assert job is not None
        return job

    async def wait_state(self, ids: Iterable[int], state: JobState, timeout_s: float = 30.0) -> list[Job]:
        wanted = list(ids)

        async def check() -> list[Job] | None:
            jobs = [await self.job(i) for i in wanted]
            return jobs if all(j.state == state for j in jobs) else None

        return await wait_for(check, timeout_s, f"jobs {wanted} {state.value}")  # type: ignore[no-any-return]

    async def run_job(self, text: str) -> Job:
        """Submit one job and wait until it is done."""
        return (await self.wait_state([await self.submit(text)], JobState.DONE))[0]

    # ---- reading back ---------------------------------------------------------------------------------

    async def history(self, job_id: int) -> list[tuple[str, str]]:
        """The routing history of a job: (backend, outcome) of each attempt, in order."""
        return [(a.backend, a.outcome or "") for a in await self.db.job_attempts(job_id)]

    async def attempts(self, job_ids: Iterable[int]) -> list[Attempt]:
        return [a for i in job_ids for a in await self.db.job_attempts(i)]

    async def outbox(self, kind: str | None = None, mentioning: str | None = None) -> list[OutboxMessage]:
        return [m for m in await self.db.outbox_all()
                if (kind is None or m.kind == kind) and (mentioning is None or mentioning in m.text)]
