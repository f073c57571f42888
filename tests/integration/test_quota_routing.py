"""Quota-aware routing on the real engine (real SQLite, the real runner, the real pulse) on the test's clock.

The subscription backend is a fake of the CLI boundary that reports its usage windows the way the Claude CLI
backend hands them over (``BackendResult.windows``, as parsed from the real CLI's ``rate_limit_event``: see
tests/unit/test_quota.py); the pay-per-token fallback is the simulated backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine.backends.base import BackendRequest, BackendResult, ProgressCallback, Usage
from engine.backends.sim import SimBackend
from engine.clock import FakeClock
from engine.failures import Failure, FailureClass
from engine.models import Job, JobState, NewJob, Priority
from engine.pulse import Pulse
from engine.quota import HOUR_S, JobSize, QuotaWindow, WindowReport, WindowStatus
from engine.settings import BackendConfig, QuotaSettings, Settings
from engine.store import Store
from engine.windows import WindowTracker
from tests.conftest import instant

Eventually = Callable[..., Awaitable[Any]]
W = WindowStatus
PAID = instant([BackendConfig(name="paid", kind="sim", family="openai", tier=2, price_in_per_mtok=1.0,
                              price_out_per_mtok=2.0)])[0]


class SubscriptionWorker:
    """A subscription CLI worker: answers (or fails with ``failure``) and reports ``windows`` on every run."""

    def __init__(self, windows: list[WindowReport] | None = None, failure: Failure | None = None) -> None:
        self.config = BackendConfig(name="max", kind="claude_cli", model="opus", family="anthropic", tier=2,
                                    subscription=True)
        self.windows = windows or []
        self.failure = failure
        self.jobs: list[int] = []

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.jobs.append(request.job_id)
        usage = Usage(input_tokens=20_000, output_tokens=5_000)
        return BackendResult(model="opus", text="done", usage=usage, windows=self.windows, failure=self.failure)

    async def check_credentials(self) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def warning(clock: FakeClock, share: float = 0.85) -> WindowReport:
    return WindowReport(kind="five_hour", status=W.WARNING, resets_at=clock.now() + 2 * HOUR_S, utilization=share)


def job(priority: Priority, prompt: str = "compare the two designs") -> NewJob:
    return NewJob(type="analysis", prompt=prompt, priority=priority, tier=2, max_attempts=3, max_revisions=0,
                  review_required=False)


async def until_state(store: Store, job_id: int, *states: JobState) -> Job | None:
    found = await store.get_job(job_id)
    return found if found is not None and found.state in states else None


async def windows_of(store: Store) -> dict[str, QuotaWindow]:
    return {w.kind: w for w in await store.quota_windows()}


async def test_background_work_moves_off_a_window_in_warning_and_the_operators_keeps_it(
    make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Callable[..., Any],
    eventually: Eventually,
) -> None:
    worker = SubscriptionWorker([warning(clock)])
    settings = make_settings(backends=[worker.config, PAID], routing={"analysis": ["max", "paid"]})
    engine = await make_engine(settings, store, clock, backends={"max": worker, "paid": SimBackend(PAID, clock=clock)})

    first, _ = await engine.submit(job(Priority.NORMAL))  # nothing known yet: the subscription first
    await eventually(lambda: until_state(store, first.id, JobState.DONE))
    window = (await windows_of(store))["five_hour"]
    assert (window.status, window.utilization, window.used_tokens, window.runs) == (W.WARNING, 0.85, 25_000, 1)

    background, _ = await engine.submit(job(Priority.LOW))
    operator, _ = await engine.submit(job(Priority.OPERATOR))
    done_bg = await eventually(lambda: until_state(store, background.id, JobState.DONE))
    await eventually(lambda: until_state(store, operator.id, JobState.DONE))

    assert worker.jobs == [first.id, operator.id]  # the operator's job kept the subscription
    assert done_bg.maker_backend == "paid"  # the background job moved to the pay-per-token fallback
    events = await store.job_events(background.id)
    assert any("its usage window is kept for operator work (five_hour allowed_warning" in e.reason for e in events)
    window = (await windows_of(store))["five_hour"]
    assert (window.moved, window.deferred, window.runs) == (1, 0, 2)
    # A typical run of the type, from its successful runs (on any backend): what a window must still hold.
    assert await store.typical_run("analysis") == JobSize(tokens=25_000, duration_s=0.0)
    assert await store.typical_run("coding") == JobSize()
    digest = (await Pulse(settings, store, clock, {}).build_digest()).text
    lines = digest.splitlines()
    assert lines[lines.index("Subscription windows:") + 1] == (
        f"- max: five-hour: WARNING, 85% used, resets {_day_hm(window.resets_at)}, "
        "Switchboard used 50k tokens in 2 run(s), 1 moved, 0 deferred"
    )


async def test_deferred_work_resumes_at_the_reset_with_one_notice_for_the_batch(
    make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Callable[..., Any],
    eventually: Eventually,
) -> None:
    worker = SubscriptionWorker([warning(clock)])
    settings = make_settings(backends=[worker.config], routing={"analysis": ["max"]})
    engine = await make_engine(settings, store, clock, backends={"max": worker})
    first, _ = await engine.submit(job(Priority.NORMAL))
    await eventually(lambda: until_state(store, first.id, JobState.DONE))
    reset = (await windows_of(store))["five_hour"].resets_at
    assert reset is not None

    waiting = [(await engine.submit(job(Priority.LOW, f"tidy folder {n}")))[0] for n in range(3)]
    for queued in waiting:
        snoozed = await eventually(lambda queued=queued: until_state(store, queued.id, JobState.SNOOZED))
        assert snoozed.run_after == reset and snoozed.attempt == 0
    assert (await windows_of(store))["five_hour"].deferred == 3
    assert worker.jobs == [first.id]

    worker.windows = []  # the fresh window: nothing reported yet
    pulse = Pulse(settings, store, clock, {}, wake=engine.wake)
    await pulse.advance_to(reset + 1)
    for queued in waiting:
        await eventually(lambda queued=queued: until_state(store, queued.id, JobState.DONE))
    notices = [m for m in await store.outbox_all() if m.dedupe_key.startswith("quota:resumed:")]
    assert [m.text for m in notices] == [
        "The five-hour usage window of max reopened at "
        f"{_hm(reset)}: 3 deferred job(s) start now."
    ]
    assert sorted(worker.jobs[1:]) == sorted(j.id for j in waiting)
    window = (await windows_of(store))["five_hour"]
    assert (window.deferred, window.runs, window.status) == (0, 3, W.UNKNOWN)


async def test_one_warning_when_a_window_enters_warning_while_operator_work_is_queued(
    settings: Settings, store: Store, clock: FakeClock
) -> None:
    max_config = BackendConfig(name="max", kind="claude_cli", family="anthropic", subscription=True)
    settings = settings.model_copy(update={"backends": [max_config]})
    tracker = WindowTracker(settings, store, clock)
    allowed = WindowReport(kind="five_hour", status=W.ALLOWED, resets_at=clock.now() + HOUR_S, utilization=0.5)
    await tracker.after_call(max_config, BackendResult(text="x", windows=[allowed]))
    await tracker.after_call(max_config, BackendResult(text="x", windows=[warning(clock)]))
    assert not [m for m in await store.outbox_all() if "quota:warning" in m.dedupe_key]  # no operator work queued

    await store.enqueue(job(Priority.OPERATOR))
    await tracker.after_call(max_config, BackendResult(text="x", windows=[allowed]))
    for _ in range(3):  # enters warning once, stays there
        await tracker.after_call(max_config, BackendResult(text="x", windows=[warning(clock, 0.9)]))
    warned = [m for m in await store.outbox_all() if "quota:warning" in m.dedupe_key]
    assert len(warned) == 1
    assert "five-hour usage window of max is in warning (90% used)" in warned[0].text
    assert "background work moves to other backends or waits for the reset" in warned[0].text

    # With quota-aware routing off the warning says so, rather than promise what will not happen.
    off = WindowTracker(settings.model_copy(update={"quota": QuotaSettings(enabled=False)}), store, clock)
    later = WindowReport(kind="five_hour", status=W.WARNING, resets_at=clock.now() + 4 * HOUR_S, utilization=0.8)
    await off.after_call(max_config, BackendResult(text="x", windows=[later]))
    told = [m.text for m in await store.outbox_all() if "quota:warning" in m.dedupe_key]
    assert len(told) == 2 and "Quota-aware routing is off" in told[1]


async def test_no_window_information_is_treated_as_before_and_learns_from_running_out(
    settings: Settings, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    codex = BackendConfig(name="codex", kind="codex_cli", family="openai", subscription=True)
    settings = settings.model_copy(update={"backends": [codex]})
    tracker = WindowTracker(settings, store, clock)
    ran = BackendResult(text="x", usage=Usage(input_tokens=400_000, output_tokens=100_000))
    await tracker.after_call(codex, ran)
    own = (await windows_of(store))["five_hour"]
    assert (own.status, own.resets_at, own.used_tokens, own.runs) == (W.UNKNOWN, None, 500_000, 1)

    burst = Failure(failure_class=FailureClass.RATE_LIMITED, message="slow down", resume_at=clock.now() + 60)
    await tracker.after_call(codex, BackendResult(failure=burst))  # a burst limit, not the window
    assert (await windows_of(store))["five_hour"].status is W.UNKNOWN
    limited = Failure(failure_class=FailureClass.RATE_LIMITED, message="usage limit", resume_at=clock.now() + HOUR_S)
    await tracker.after_call(codex, BackendResult(failure=limited))
    out = (await windows_of(store))["five_hour"]
    assert (out.status, out.resets_at, out.exhaustions) == (W.REJECTED, clock.now() + HOUR_S, [500_000])

    with caplog.at_level(logging.WARNING, logger="engine.windows"):
        years = WindowReport(kind="seven_day", status=W.ALLOWED, resets_at=clock.now() + 3 * 365 * 86_400)
        for _ in range(3):
            await tracker.after_call(codex, BackendResult(text="x", windows=[years]))
    weekly = (await windows_of(store))["seven_day"]
    assert weekly.resets_at == clock.now() + 7 * 86_400
    assert len([r for r in caplog.records if "too far ahead" in r.getMessage()]) == 1


async def test_windows_survive_a_restart(settings: Settings, store: Store, clock: FakeClock) -> None:
    max_config = BackendConfig(name="max", kind="claude_cli", family="anthropic", subscription=True)
    settings = settings.model_copy(update={"backends": [max_config]})
    tracker = WindowTracker(settings, store, clock)
    await tracker.after_call(max_config, BackendResult(text="x", windows=[warning(clock)]))
    before = await store.quota_windows()
    reopened = await Store.open(settings.db_path, clock)
    try:
        assert await reopened.quota_windows() == before
    finally:
        await reopened.close()


def _day_hm(ts: float | None) -> str:
    return time.strftime("%a %H:%M UTC", time.gmtime(ts or 0))


def _hm(ts: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ts))


async def test_warm_windows_starts_a_fresh_window_at_warm_at_once_a_day(
    make_settings: Callable[..., Settings], store: Store, clock: FakeClock
) -> None:
    worker = SubscriptionWorker()
    settings = make_settings(backends=[worker.config, PAID], quota={"warm_windows": True, "warm_at": "07:00"})
    pulse = Pulse(settings, store, clock, {"max": worker, "paid": SimBackend(PAID, clock=clock)})
    day = clock.now()  # 2026-01-01 00:00 UTC
    await pulse.advance_to(day + 6 * HOUR_S)
    assert worker.jobs == []
    worker.windows = [WindowReport(kind="five_hour", status=W.ALLOWED, resets_at=day + 12 * HOUR_S, utilization=0.0)]
    await pulse.advance_to(day + 9 * HOUR_S)
    assert worker.jobs == [0]  # once, at 07:00, whatever the ticks after it
    assert (await windows_of(store))["five_hour"].resets_at == day + 12 * HOUR_S

    # The next morning a window is still running from the night: warming would not start a fresh one.
    await pulse.advance_to(day + 29 * HOUR_S)  # 05:00, the day after
    worker.windows = [WindowReport(kind="five_hour", status=W.ALLOWED, resets_at=day + 33 * HOUR_S)]
    await WindowTracker(settings, store, clock).after_call(worker.config, BackendResult(text="x",
                                                                                        windows=worker.windows))
    await pulse.advance_to(day + 32 * HOUR_S)
    assert worker.jobs == [0]
    await pulse.advance_to(day + 2 * 24 * HOUR_S + 8 * HOUR_S)  # the day after: warmed again
    assert worker.jobs == [0, 0]


async def test_backends_of_one_plan_share_its_windows(settings: Settings, store: Store, clock: FakeClock) -> None:
    opus, sonnet = (BackendConfig(name=n, kind="claude_cli", model=n, family="anthropic", subscription=True)
                    for n in ("opus", "sonnet"))
    codex = BackendConfig(name="codex", kind="codex_cli", family="openai", subscription=True)
    settings = settings.model_copy(update={"backends": [opus, sonnet, codex, PAID]})
    tracker = WindowTracker(settings, store, clock)
    await store.enqueue(job(Priority.OPERATOR))
    await tracker.after_call(sonnet, BackendResult(text="x", usage=Usage(input_tokens=1000), windows=[warning(clock)]))
    await tracker.after_call(opus, BackendResult(text="x", usage=Usage(input_tokens=500)))

    shared = await tracker.by_backend(["opus", "sonnet", "codex", "paid"])
    assert set(shared) == {"opus", "sonnet"} and shared["opus"] == shared["sonnet"]  # codex: nothing yet
    window = shared["opus"][0]
    assert (window.plan, window.status, window.used_tokens, window.runs) == ("claude_cli:anthropic", W.WARNING, 1500, 2)
    warned = [m.text for m in await store.outbox_all() if "quota:warning" in m.dedupe_key]
    assert len(warned) == 1 and "usage window of opus, sonnet is in warning" in warned[0]
