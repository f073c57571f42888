"""The runner on the real engine (real SQLite, real workspace folders): memory is asked for a job's context
once per run, however many CLI workers the run tries, and that one context reaches both the request and each
worker's CLAUDE.md. Every search bumps the access counts of what it finds, so a second ask would inflate the
frequency part of the memory score."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from engine.backends.base import BackendRequest, BackendResult, ProgressCallback
from engine.clock import FakeClock
from engine.failures import Failure, FailureClass
from engine.models import Job, JobState, NewJob
from engine.runner import JobContext
from engine.settings import BackendConfig, Settings
from engine.store import Store

Eventually = Callable[..., Awaitable[Any]]


class CountingMemory:
    """The engine's memory hooks, counting how often the engine asks for a job's context."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.finished: list[int] = []

    async def context_for(self, job: Job) -> JobContext:
        self.asked.append(job.id)
        return JobContext(core="CORE-MARKER", memories="MEMORY-MARKER")

    async def job_finished(self, job: Job) -> None:
        self.finished.append(job.id)


class CliWorker:
    """A fake of the CLI boundary: a ``claude_cli`` backend that fails with ``failure`` or answers, and keeps
    each request (with the CLAUDE.md the engine wrote for it)."""

    def __init__(self, name: str, family: str, failure: Failure | None = None) -> None:
        self.config = BackendConfig(name=name, kind="claude_cli", model=name, family=family, tier=2)
        self.failure = failure
        self.seen: list[tuple[BackendRequest, str]] = []

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        claude_md = (request.workspace / "CLAUDE.md").read_text() if request.workspace else ""
        self.seen.append((request, claude_md))
        if self.failure is not None:
            return BackendResult(model=self.config.model, failure=self.failure)
        return BackendResult(model=self.config.model, text="compared: the second design is simpler")


async def test_memory_is_asked_once_per_run_of_a_cli_job(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: Callable[..., Awaitable[Any]],
    eventually: Eventually,
) -> None:
    overloaded = Failure(failure_class=FailureClass.OVERLOADED, message="529 overloaded", http_status=529)
    first, second = CliWorker("cli-a", "anthropic", overloaded), CliWorker("cli-b", "openai")
    settings = make_settings(backends=[first.config, second.config], routing={"analysis": ["cli-a", "cli-b"]})
    memory = CountingMemory()
    engine = await make_engine(settings, store, clock, backends={"cli-a": first, "cli-b": second}, hooks=memory)

    new = NewJob(type="analysis", prompt="compare the two designs", tier=2, max_attempts=3, max_revisions=0,
                 review_required=False)
    job, _ = await engine.submit(new)
    done = await eventually(lambda: _finished(store, job.id))
    await eventually(lambda: _told(memory))  # the finished job goes to memory after its completion is written

    assert done.state is JobState.DONE
    assert memory.asked == [job.id]  # once for the run: not for the request and again for each CLI worker
    assert memory.finished == [job.id]
    calls = first.seen + second.seen
    assert len(calls) == 2  # the first worker failed, the run fell through to the second
    for request, claude_md in calls:
        assert request.workspace is not None
        assert "MEMORY-MARKER" in request.prompt and "CORE-MARKER" in request.system
        assert "MEMORY-MARKER" in claude_md and "CORE-MARKER" in claude_md


async def _finished(store: Store, job_id: int) -> Job | None:
    job = await store.get_job(job_id)
    return job if job is not None and job.state is JobState.DONE else None


async def _told(memory: CountingMemory) -> bool:
    return bool(memory.finished)


class SubscriptionWorker(CliWorker):
    """A subscription CLI: each run costs nothing and reports its list price (what the CLI says it would cost)."""

    def __init__(self, name: str, family: str) -> None:
        super().__init__(name, family)
        self.config = self.config.model_copy(update={"subscription": True})

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        result = await super().run(request, progress)
        return result.model_copy(update={"list_price_usd": 0.125})


async def test_subscription_runs_add_up_to_what_they_saved_this_month(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: Callable[..., Awaitable[Any]],
    eventually: Eventually,
) -> None:
    from bot.commands import cost_text
    from engine.control import Control

    worker = SubscriptionWorker("max", "anthropic")
    settings = make_settings(backends=[worker.config], routing={"analysis": ["max"]})
    engine = await make_engine(settings, store, clock, backends={"max": worker})
    for i in range(2):
        job, _ = await engine.submit(NewJob(type="analysis", prompt=f"compare {i}", tier=2, max_attempts=3,
                                            max_revisions=0, review_required=False))
        assert (await eventually(lambda: _finished(store, job.id))).cost_usd == 0  # noqa: B023
    text = await cost_text(Control(settings, store, clock))
    assert "Spend today $0.00" in text
    assert "Subscriptions this month: $0.25 at list prices, saved (not spent)" in text
