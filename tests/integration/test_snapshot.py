"""The persona's live snapshot (engine.snapshot), built from a real store on a real SQLite file."""

from __future__ import annotations

from engine.clock import FakeClock
from engine.job_factory import new_job
from engine.models import Job, JobState, NewAttempt
from engine.settings import Settings
from engine.snapshot import build_snapshot, gather, render
from engine.store import Completion, Store


async def _job(store: Store, settings: Settings, title: str, job_type: str = "analysis") -> Job:
    job, _ = await store.enqueue(new_job(settings, type=job_type, prompt=f"do: {title}", title=title))
    return job


async def _run(store: Store) -> Job:
    [job] = await store.claim("w", free_slots=1, background_limit=1, lease_s=600)
    return job


async def _finish(store: Store, job: Job, clock: FakeClock, state: JobState, **fields: object) -> None:
    attempt = NewAttempt(backend="sim-kimi", started_at=clock.now(), finished_at=clock.now(), outcome="success",
                         cost_usd=0.0)
    await store.complete(Completion(job_id=job.id, owner="w", to_state=state, reason="test", attempts=[attempt],
                                    fields=fields))


async def test_every_section_newest_first(store: Store, settings: Settings, clock: FakeClock) -> None:
    done = await _job(store, settings, "Summarise the quarterly report")
    await _run(store)
    await _finish(store, done, clock, JobState.DONE, result_summary="Revenue up 4%, costs flat.",
                  maker_backend="sim-kimi")
    clock.advance(60)
    failed = await _job(store, settings, "Fetch the exchange rates")
    await _run(store)
    await _finish(store, failed, clock, JobState.FAILED, last_failure_class="timeout", last_error="no answer in 300 s")
    clock.advance(60)
    asking = await _job(store, settings, "Book the venue")
    await _run(store)
    await _finish(store, asking, clock, JobState.NEEDS_INPUT, progress="Question for the operator: which date?")
    clock.advance(60)
    running = await _job(store, settings, "Migrate the billing database")
    await _run(store)
    clock.advance(120)
    older = await _job(store, settings, "Older queued job")
    clock.advance(1)
    newer = await _job(store, settings, "Newer queued job")
    await store.pause_backend("sim-opus", clock.now() + 3600, "rate_limited")
    await store.add_project("website", "Relaunch the website")
    await _job(store, settings, "the persona's own turn", job_type="chat")

    text = await build_snapshot(store, settings, clock.now())
    lines = text.splitlines()
    assert lines[0].startswith("Live state of Switchboard at 2026-01-01")
    assert "Spend today: $0.00 of the $10.00 daily cap." in text
    assert f"- #{asking.id} needs_input · analysis · Book the venue · asks: which date?" in text
    assert f"- #{running.id} running · analysis · Migrate the billing database · 2 min" in text
    assert text.index(f"#{newer.id} queued") < text.index(f"#{older.id} queued") < text.index(f"#{running.id} running")
    assert f"- #{failed.id} failed" in text and "timeout: no answer in 300 s" in text
    assert f"- #{done.id} done" in text and "Revenue up 4%, costs flat." in text
    assert "- sim-opus paused until" in text and "(rate_limited)" in text
    assert "- website: Relaunch the website" in text
    assert "persona's own turn" not in text  # chat turns are the persona itself
    headings = [line for line in lines if line.endswith(":") and not line.startswith("-")]
    assert headings == ["Waiting for the operator:", "Running and queued:", "Recently failed:", "Recently finished:",
                        "Backends paused or disabled:", "Active projects:"]


async def test_the_budget_bounds_it_and_counts_what_it_left_out(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    for n in range(20):
        await _job(store, settings, f"Queued job number {n} with a longish title to take up room")
        clock.advance(1)
    facts = await gather(store, settings, clock.now())
    for budget in (100, 200, 400):
        text = render(facts, budget)
        assert len(text) <= budget * 4
        assert "Running and queued" in text
    small = render(facts, 100)
    assert "more not shown" in small and "number 19" in small and "number 0 " not in small  # newest first
    whole = render(facts, 5000)
    assert "not shown" not in whole and "number 0 " in whole
    assert await build_snapshot(store, settings, clock.now()) == render(facts, settings.chat.snapshot_tokens)


async def test_an_empty_system_still_says_the_spend(store: Store, settings: Settings, clock: FakeClock) -> None:
    text = await build_snapshot(store, settings, clock.now(), budget_tokens=100)
    assert text.splitlines()[1] == "Spend today: $0.00 of the $10.00 daily cap."
    assert len(text.splitlines()) == 2
