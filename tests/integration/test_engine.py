"""The engine loop on real SQLite files: slots and the reserved operator slot, backpressure, cross-process
pickup, graceful shutdown, end to end on the sim backends, and the failure actions (429 pauses, snoozes,
auth, circuit breaker) with a scripted test backend."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot import render
from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, Usage
from engine.clock import Clock, FakeClock, SystemClock
from engine.failures import Failure, FailureClass
from engine.job_factory import new_job
from engine.loop import Engine
from engine.models import Job, JobState, Priority
from engine.settings import BackendConfig, Settings, default_sim_backends
from engine.store import Store
from tests.conftest import instant

REPO = Path(__file__).resolve().parents[2]
S = JobState
Eventually = Callable[..., Awaitable[Any]]
MakeEngine = Callable[..., Awaitable[Engine]]
LONG_MS = 3_600_000.0  # an hour of fake time: a job that stays running until the clock is advanced


class ScriptedBackend:
    """A fake of the outside boundary: answers from a script of outcomes, then ``default``.

    An outcome is "ok" or a ``Failure``, or a callable (clock) -> Failure for resets relative to now.
    """

    def __init__(self, name: str, family: str, clock: Clock, *, tier: int = 2, default: object = "ok") -> None:
        self.config = BackendConfig(name=name, kind="openai", model=name, family=family, tier=tier, max_concurrency=50)
        self.clock = clock
        self.script: list[object] = []
        self.default = default
        self.calls: list[tuple[int, float]] = []  # (job id, fake time)
        self.cancelled = 0
        self.hold: asyncio.Event | None = None

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.calls.append((request.job_id, self.clock.now()))
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        outcome = self.script.pop(0) if self.script else self.default
        if callable(outcome):
            outcome = outcome(self.clock)
        if isinstance(outcome, Failure):
            return BackendResult(model=self.config.model, failure=outcome)
        return BackendResult(text=f"{self.config.name} did it", model=self.config.model, usage=Usage(output_tokens=5))

    async def check_credentials(self) -> CredentialStatus:
        return CredentialStatus(ok=True)

    async def aclose(self) -> None:
        return None


def rate_limited(after_s: float) -> Callable[[Clock], Failure]:
    return lambda clock: Failure(
        failure_class=FailureClass.RATE_LIMITED, http_status=429, message="429", resume_at=clock.now() + after_s
    )


AUTH = Failure(failure_class=FailureClass.AUTH, http_status=401, message="invalid x-api-key")
SERVER = Failure(failure_class=FailureClass.SERVER_ERROR, http_status=500, message="internal error")


def scripted_settings(make_settings: Callable[..., Settings], *backends: ScriptedBackend, **kw: Any) -> Settings:
    return make_settings(
        backends=[b.config for b in backends], routing={"analysis": [b.config.name for b in backends]}, **kw
    )


def analysis(settings: Settings, text: str = "count the things", **kw: Any) -> Any:
    return new_job(settings, type="analysis", prompt=text, **kw)


async def state_of(store: Store, job_id: int) -> JobState:
    job = await store.get_job(job_id)
    assert job is not None
    return job.state


async def all_in(store: Store, ids: list[int], state: JobState) -> bool:
    return all([await state_of(store, i) == state for i in ids])


async def looked_again(engine: Engine) -> None:
    """Wake the loop and wait until a whole dispatch pass begun after now has finished: whatever it did not
    claim then, it would not claim."""
    engine.wake()
    await asyncio.wait_for(engine.passes.next_whole(), 30)


# ---- slots ------------------------------------------------------------------------------------------------


async def test_reserved_operator_slot(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    settings = make_settings(backends=instant(default_sim_backends(), latency_ms=LONG_MS), engine={"max_slots": 20})
    engine = await make_engine(settings, store, clock)
    background = [(await engine.submit(analysis(settings, f"bg {i}")))[0].id for i in range(19)]
    await eventually(lambda: all_in(store, background, S.RUNNING))
    assert engine.running_counts() == (0, 19)

    twentieth, _ = await engine.submit(analysis(settings, "one too many"))
    operator, _ = await engine.submit(analysis(settings, "mine, now", priority=Priority.OPERATOR))
    await eventually(lambda: all_in(store, [operator.id], S.RUNNING))
    assert engine.running_counts() == (1, 19)
    await looked_again(engine)  # the loop had its chance: the 20th background job still waits
    assert await state_of(store, twentieth.id) == S.QUEUED
    assert engine.running == 20


# ---- backpressure -----------------------------------------------------------------------------------------


async def test_backpressure_on_then_off_told_once_each(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    settings = make_settings(engine={"backpressure_queue_depth": 3})
    normal = [(await store.enqueue(analysis(settings, f"normal {i}")))[0].id for i in range(5)]
    low, _ = await store.enqueue(analysis(settings, "low", priority=Priority.LOW))
    high, _ = await store.enqueue(analysis(settings, "high", priority=Priority.HIGH))
    operator, _ = await store.enqueue(analysis(settings, "mine", priority=Priority.OPERATOR))

    engine = await make_engine(settings, store, clock)  # depth 8 > 3: backpressure
    await eventually(lambda: all_in(store, [high.id, operator.id], S.DONE))

    # Background work still drains (at a trickle of max(1, 19 // 4) = 4 slots while backpressure lasts), and
    # only after the operator's and the high-priority job were claimed.
    await eventually(lambda: all_in(store, [*normal, low.id], S.DONE))
    assert not engine.backpressure
    first_claims = await _claim_times(store, [high.id, operator.id])
    later_claims = await _claim_times(store, [*normal, low.id])
    assert max(first_claims) <= min(later_claims)
    notices = [m.text.split(":")[0] for m in await store.outbox_all() if m.dedupe_key.startswith("backpressure")]
    assert notices == ["Backpressure on", "Backpressure off"]
    assert await store.kv_get("backpressure") == "off"


async def test_backpressure_lets_background_work_trickle(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    """Under backpressure background work is not stalled forever: it runs on a quarter of the slots."""
    settings = make_settings(
        backends=instant(default_sim_backends(), latency_ms=LONG_MS), engine={"backpressure_queue_depth": 3}
    )
    ids = [(await store.enqueue(analysis(settings, f"normal {i}")))[0].id for i in range(12)]
    engine = await make_engine(settings, store, clock)
    await eventually(lambda: _count_in(store, ids, S.RUNNING, 4))
    await looked_again(engine)  # the loop had its chance: still only the trickle runs
    assert engine.backpressure
    assert engine.running_counts() == (0, 4)


async def _count_in(store: Store, ids: list[int], state: S, count: int) -> bool:
    jobs = [await store.get_job(i) for i in ids]
    return sum(1 for j in jobs if j is not None and j.state == state) == count


# ---- cross-process pickup ---------------------------------------------------------------------------------

_CLI_ENQUEUE = """
import asyncio, sys
from pathlib import Path
from engine.clock import SystemClock
from engine.models import NewJob
from engine.store import Store

async def main(db):
    store = await Store.open(Path(db), SystemClock())
    job, _ = await store.enqueue(NewJob(type="analysis", prompt="from the CLI", tier=2, max_attempts=3,
                                        max_revisions=2, review_required=False))
    await store.close()
    print(job.id, job.created_at, flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_cross_process_pickup_within_a_second(
    make_settings: Callable[..., Settings], make_engine: MakeEngine, eventually: Eventually
) -> None:
    settings = make_settings()
    clock = SystemClock()
    store = await Store.open(settings.db_path, clock)
    engine = await make_engine(settings, store, clock)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CLI_ENQUEUE,
            str(settings.db_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
        job_id, committed_at = int(out.split()[0]), float(out.split()[1])

        async def started() -> Job | None:
            job = await store.get_job(job_id)
            return job if job is not None and job.started_at is not None else None

        job = await eventually(started, timeout_s=2.0)
        assert job.started_at - committed_at < 1.0
        await eventually(lambda: all_in(store, [job_id], S.DONE))
    finally:
        await engine.stop(grace_s=0)
        await store.close()


# ---- graceful shutdown ------------------------------------------------------------------------------------


async def test_stop_returns_running_jobs_to_the_queue(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    slow = ScriptedBackend("slow", "openai", clock)
    slow.hold = asyncio.Event()  # never set: the call runs until it is cancelled
    settings = scripted_settings(make_settings, slow)
    engine = await make_engine(settings, store, clock, {"slow": slow})
    job, _ = await engine.submit(analysis(settings))
    await eventually(lambda: all_in(store, [job.id], S.RUNNING))
    await eventually(lambda: asyncio.sleep(0, bool(slow.calls)))

    await engine.stop(grace_s=0.05)

    back = await store.get_job(job.id)
    assert back is not None
    assert back.state == S.QUEUED and back.attempt == 0 and back.lease_owner is None
    assert (await store.job_events(job.id))[-1].reason == "shutdown: returned to the queue"
    assert slow.cancelled == 1  # the backend call itself was stopped, not left running
    assert await store.job_attempts(job.id) == []


async def test_stop_lets_quick_jobs_finish_within_grace(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    quick = ScriptedBackend("quick", "openai", clock)
    quick.hold = asyncio.Event()
    settings = scripted_settings(make_settings, quick)
    engine = await make_engine(settings, store, clock, {"quick": quick})
    job, _ = await engine.submit(analysis(settings))
    await eventually(lambda: asyncio.sleep(0, bool(quick.calls)))
    asyncio.get_running_loop().call_later(0.02, quick.hold.set)
    await engine.stop(grace_s=5)
    assert await state_of(store, job.id) == S.DONE


# ---- end to end on the sim backends -------------------------------------------------------------------------


async def test_jobs_run_to_done_on_sim(
    settings: Settings, store: Store, clock: FakeClock, make_engine: MakeEngine, eventually: Eventually
) -> None:
    engine = await make_engine(settings, store, clock)
    ids = [(await engine.submit(analysis(settings, f"job {i}")))[0].id for i in range(40)]
    await eventually(lambda: all_in(store, ids, S.DONE))
    done_rows = [m for m in await store.outbox_all() if m.kind == "job_done"]
    assert sorted(m.job_id for m in done_rows) == ids
    job = await store.get_job(ids[0])
    assert job is not None and job.result_text and "[simulated by" in job.result_text
    assert job.tokens_in > 0 and job.maker_backend == "sim-sonnet"
    attempts = await store.job_attempts(ids[0])
    assert [(a.backend, a.outcome, a.purpose) for a in attempts] == [("sim-sonnet", "success", "make")]
    assert [e.to_state for e in await store.job_events(ids[0]) if e.kind == "transition"] == [S.RUNNING, S.DONE]


# ---- failure actions through the engine ---------------------------------------------------------------------


async def test_429_pauses_backend_until_resume_at(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    primary = ScriptedBackend("primary", "anthropic", clock)
    fallback = ScriptedBackend("fallback", "openai", clock)
    primary.script = [rate_limited(600)]
    settings = scripted_settings(make_settings, primary, fallback)
    engine = await make_engine(settings, store, clock, {"primary": primary, "fallback": fallback})
    start = clock.now()

    first, _ = await engine.submit(analysis(settings, "first"))
    await eventually(lambda: all_in(store, [first.id], S.DONE))
    state = (await store.backend_states())["primary"]
    assert state.paused_until == start + 600 and state.pause_reason == "rate_limited"
    assert [a.outcome for a in await store.job_attempts(first.id)] == ["rate_limited", "success"]

    more = [(await engine.submit(analysis(settings, f"more {i}")))[0].id for i in range(5)]
    await eventually(lambda: all_in(store, more, S.DONE))
    assert len(primary.calls) == 1  # nothing reaches a paused backend
    assert len(fallback.calls) == 6

    # A later, shorter pause never shortens the earlier one.
    await store.pause_backend("primary", clock.now() + 10, "rate_limited")
    assert (await store.backend_states())["primary"].paused_until == start + 600

    clock.advance(599)
    almost, _ = await engine.submit(analysis(settings, "still paused"))
    await eventually(lambda: all_in(store, [almost.id], S.DONE))
    assert len(primary.calls) == 1
    clock.advance(2)
    after, _ = await engine.submit(analysis(settings, "after reset"))
    await eventually(lambda: all_in(store, [after.id], S.DONE))
    assert [job_id for job_id, _ in primary.calls] == [first.id, after.id]
    assert primary.calls[1][1] >= start + 600


async def test_all_backends_paused_snoozes_until_earliest_reset(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    a = ScriptedBackend("a", "anthropic", clock)
    b = ScriptedBackend("b", "openai", clock)
    a.script = [rate_limited(300)]
    b.script = [rate_limited(120)]
    settings = scripted_settings(make_settings, a, b)
    engine = await make_engine(settings, store, clock, {"a": a, "b": b})
    start = clock.now()
    job, _ = await engine.submit(analysis(settings))
    await eventually(lambda: all_in(store, [job.id], S.SNOOZED))
    snoozed = await store.get_job(job.id)
    assert snoozed is not None
    assert snoozed.attempt == 0 and snoozed.run_after == start + 120
    assert snoozed.last_failure_class == "rate_limited"

    clock.advance(119)
    await looked_again(engine)  # a dispatch pass at 119 s: not due yet
    assert await state_of(store, job.id) == S.SNOOZED
    clock.advance(1)
    engine.wake()
    await eventually(lambda: all_in(store, [job.id], S.DONE))
    assert (len(a.calls), len(b.calls)) == (1, 2)  # a is still paused; b took it after its reset
    assert b.calls[1][1] == start + 120
    done = await store.get_job(job.id)
    assert done is not None and done.attempt == 0 and done.maker_backend == "b"


async def test_auth_failure_disables_backend_with_one_alert(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    broken = ScriptedBackend("broken", "anthropic", clock, default=AUTH)
    good = ScriptedBackend("good", "openai", clock)
    settings = scripted_settings(make_settings, broken, good)
    engine = await make_engine(settings, store, clock, {"broken": broken, "good": good})
    ids = [(await engine.submit(analysis(settings, f"job {i}")))[0].id for i in range(6)]
    await eventually(lambda: all_in(store, ids, S.DONE))
    later = [(await engine.submit(analysis(settings, f"later {i}")))[0].id for i in range(3)]
    await eventually(lambda: all_in(store, later, S.DONE))

    state = (await store.backend_states())["broken"]
    assert state.disabled and state.pause_reason == "auth"
    alerts = [m for m in await store.outbox_all() if m.kind == "alert"]
    assert len(alerts) == 1 and alerts[0].urgent and "broken" in alerts[0].text
    assert not {job_id for job_id, _ in broken.calls} & set(later)  # disabled: never called again


async def test_repeated_server_errors_open_the_circuit(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    flaky = ScriptedBackend("flaky", "anthropic", clock, default=SERVER)
    good = ScriptedBackend("good", "openai", clock)
    settings = scripted_settings(make_settings, flaky, good, engine={"circuit_breaker_failures": 3})
    engine = await make_engine(settings, store, clock, {"flaky": flaky, "good": good})
    for i in range(3):  # one at a time, so the count is exact
        job, _ = await engine.submit(analysis(settings, f"job {i}"))
        await eventually(lambda job=job: all_in(store, [job.id], S.DONE))
    state = (await store.backend_states())["flaky"]
    assert state.pause_reason == "circuit_open" and state.consecutive_failures == 3
    assert state.paused_until == clock.now() + settings.engine.circuit_breaker_cooldown_s

    more = [(await engine.submit(analysis(settings, f"more {i}")))[0].id for i in range(4)]
    await eventually(lambda: all_in(store, more, S.DONE))
    assert len(flaky.calls) == 3  # the open circuit keeps calls away
    alerts = [m for m in await store.outbox_all() if m.kind == "alert"]
    assert len(alerts) == 1 and "circuit open" in alerts[0].text


async def _claim_times(store: Store, ids: list[int]) -> list[int]:
    """The event ids of each job's first claim (events are ordered)."""
    return [next(e.id for e in await store.job_events(i) if e.to_state == S.RUNNING) for i in ids]


async def test_retry_on_another_backend_skips_the_one_that_made_it(
    settings: Settings, store: Store, clock: FakeClock, make_engine: MakeEngine, eventually: Eventually
) -> None:
    from engine.control import Control
    from engine.store import Completion, NewAttempt

    job, _ = await store.enqueue(analysis(settings, "try elsewhere"))
    [claimed] = await store.claim("old", free_slots=1, background_limit=1, lease_s=60)
    now = clock.now()
    await store.complete(
        Completion(
            job_id=claimed.id,
            owner="old",
            to_state=JobState.FAILED,
            reason="test",
            attempts=[
                NewAttempt(
                    backend="sim-sonnet", family="anthropic", started_at=now, finished_at=now, outcome="server_error"
                )
            ],
        )
    )
    control = Control(settings, store, clock)
    rerouted = await control.reroute(job.id)
    assert rerouted.state == JobState.QUEUED and rerouted.avoid_backend == "sim-sonnet"

    await make_engine(settings, store, clock)
    await eventually(lambda: all_in(store, [job.id], S.DONE))
    done = await store.get_job(job.id)
    assert done is not None and done.maker_backend not in (None, "sim-sonnet")
    assert [a.backend for a in await store.job_attempts(job.id)] == ["sim-sonnet", done.maker_backend]


async def test_job_budget_stops_the_chain_and_asks_the_operator(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    """A job type's budget_usd counts every attempt of the job; once spent, no further backend is called."""

    class Costly(ScriptedBackend):
        async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
            self.calls.append((request.job_id, self.clock.now()))
            return BackendResult(text="", model=self.config.model, cost_usd=0.12)  # paid, but empty

    first = Costly("first", "anthropic", clock)
    second = ScriptedBackend("second", "openai", clock)
    settings = make_settings(
        backends=[first.config, second.config],
        routing={"analysis": ["first", "second"]},
        job_types={"analysis": {"tier": 2, "budget_usd": 0.10}},
    )
    engine = await make_engine(settings, store, clock, backends={"first": first, "second": second})
    job, _ = await engine.submit(analysis(settings, "expensive"))
    await eventually(lambda: all_in(store, [job.id], S.NEEDS_HUMAN))
    assert len(first.calls) == 1 and second.calls == []
    stopped = await store.get_job(job.id)
    assert stopped is not None and stopped.last_failure_class == "budget_exceeded"
    assert stopped.cost_usd == pytest.approx(0.12)
    [ask] = [m for m in await store.outbox_all() if m.kind == "needs_human"]
    assert "budget" in ask.text


async def test_status_knows_whether_an_engine_is_alive(
    settings: Settings, store: Store, clock: FakeClock, make_engine: MakeEngine, eventually: Eventually
) -> None:
    from engine.control import Control

    control = Control(settings, store, clock)
    assert (await control.status())["engine"]["alive"] is False
    engine = await make_engine(settings, store, clock)

    async def alive() -> bool:
        return bool((await control.status())["engine"]["alive"])

    await eventually(alive)
    await engine.stop(grace_s=0)
    # A clean stop clears the mark at once: no waiting out three sweep intervals (issue 12: ~90 s of "running").
    engine_status = (await control.status())["engine"]
    assert engine_status["alive"] is False and engine_status["stopped"] is True
    assert render.status_text(await control.status()).startswith("Engine: stopped cleanly (last seen")
    clock.advance(3 * settings.engine.sweep_interval_s + 1)  # no renewal after the engine stopped
    assert (await control.status())["engine"]["alive"] is False


async def test_cancel_stops_a_running_worker_at_once(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    make_engine: MakeEngine,
    eventually: Eventually,
) -> None:
    from engine.control import Control

    slow = ScriptedBackend("slow", "anthropic", clock)
    slow.hold = asyncio.Event()  # never released: the call only ends by being cancelled
    settings = make_settings(backends=[slow.config], routing={"analysis": ["slow"]})
    engine = await make_engine(settings, store, clock, backends={"slow": slow})
    job, _ = await engine.submit(analysis(settings, "long work"))
    await eventually(lambda: all_in(store, [job.id], S.RUNNING))
    await eventually(lambda: _called(slow))
    await Control(settings, store, clock, engine).cancel(job.id)
    await eventually(lambda: _cancelled(slow))  # no heartbeat interval passed: the clock never moved
    assert (await store.get_job(job.id)).state == S.CANCELLED  # type: ignore[union-attr]
    await eventually(lambda: _idle(engine))


async def _idle(engine: Engine) -> bool:
    return engine.running == 0


async def _called(backend: ScriptedBackend) -> bool:
    return bool(backend.calls)


async def _cancelled(backend: ScriptedBackend) -> bool:
    return backend.cancelled == 1
