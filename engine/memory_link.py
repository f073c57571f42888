"""Memory in the engine's life: context for each job, one episode from each finished job, and consolidation.

Episodes follow the store's event log (``catch_up``): every job that reaches a final state (done, including done
after review and approved by the operator; failed; cancelled) gets one, however it got there (its own run, its
reviewer's verdict, a slash command, the CLI in another process). The log is read after each run and at each
maintenance slot, from a cursor kept in the store, so none is missed and none is written twice.

Consolidation runs as an ordinary job ("the scheduler only enqueues"): ``maintain`` (called by the pulse)
enqueues one ``maintenance`` job whose prompt is memory's consolidation prompt over the pending episode
clusters, and ``job_finished`` feeds that job's answer back into memory. The prompt carries the cluster
labels and episode ids itself, so an answer arriving after a restart is applied all the same.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

import prompts
from engine.job_factory import new_job
from engine.models import Job, JobState, NewJob, Priority, Source
from engine.pulse import MEMORY_MAINTENANCE_EVERY_S
from engine.runner import JobContext
from engine.settings import Settings
from engine.store import Store
from memory.context import build_context
from memory.core import CoreMemory
from memory.episodes import (
    Episode,
    apply_consolidation,
    consolidation_request,
    prune_episodes,
    record_episode,
)
from memory.semantic import SemanticMemory

log = logging.getLogger(__name__)

CONSOLIDATION_JOB_TYPE = "maintenance"
EPISODE_TITLE_CHARS = 120
CONSOLIDATION_KEY_PREFIX = "memory-consolidation:"
EPISODE_CURSOR_KEY = "memory:episode_cursor"  # the id of the last event whose episode was written
FINAL_STATES = frozenset({JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value})
_NO_EPISODE_TYPES = frozenset({"chat", "review"})  # the persona's own turns; reviews are part of their job's
_FIRST_LOOK_BACK_S = 86_400.0  # with no cursor yet (a new or upgraded store): the last day's work, not all history
_EVENT_PAGE = 500

Enqueue = Callable[[NewJob], Awaitable[tuple[Job, bool]]]


def is_consolidation_job(job: Job) -> bool:
    return job.type == CONSOLIDATION_JOB_TYPE and (job.idempotency_key or "").startswith(CONSOLIDATION_KEY_PREFIX)


class MemoryHooks:
    """``settings``, ``enqueue`` (``Engine.submit``) and ``store`` are set by the composition root; without the
    first two the pulse's upkeep still prunes and optimizes but queues no consolidation job; without a store only
    the job handed to ``job_finished`` itself gets its episode."""

    def __init__(
        self, core: CoreMemory, semantic: SemanticMemory, budget_bytes: int, *,
        settings: Settings | None = None, enqueue: Enqueue | None = None, store: Store | None = None,
    ) -> None:
        self._core = core
        self._semantic = semantic
        self._budget = budget_bytes
        self.settings = settings
        self.enqueue = enqueue
        self.store = store
        self._catching_up = asyncio.Lock()  # runs finish concurrently; the log is read by one at a time

    @property
    def core(self) -> CoreMemory:
        return self._core

    @property
    def semantic(self) -> SemanticMemory:
        return self._semantic

    async def context_for(self, job: Job) -> JobContext:
        if job.type == "review":  # authorship hidden, judgement fresh: the reviewer gets no memories
            return JobContext()
        if is_consolidation_job(job):  # its prompt is memory itself; a search would only inflate access counts
            return JobContext(core=self._core.read())
        try:
            context = await build_context(self._core, self._semantic, job.prompt[:2000], job.project, self._budget)
        except Exception:  # memory must never stop work from running
            log.exception("job %s: memory context unavailable", job.id)
            return JobContext(core=self._core.read())
        # Memories were made from earlier jobs' results: data for the prompt, never instructions.
        memories = prompts.untrusted("relevant memories", context.relevant) if context.relevant.strip() else ""
        return JobContext(core=context.core, memories=memories)

    async def maintain(self) -> str:
        """The pulse's memory upkeep: prune old, never-read, unimportant episodes, optimize the table (and
        build the vector index once it is large), then enqueue one consolidation job for this maintenance
        slot. No model is called here."""
        recorded = await self.catch_up()
        pruned = await prune_episodes(self._semantic)
        await self._semantic.optimize()
        parts = [f"{recorded} new episode(s); pruned {pruned} old episode(s); memory table optimized"]
        if await self._semantic.ensure_vector_index():
            parts.append("vector index built")
        parts.append(await self._enqueue_consolidation())
        return "; ".join(parts)

    async def _enqueue_consolidation(self) -> str:
        if self.enqueue is None or self.settings is None:
            return "no consolidation job (no engine to run it)"
        request = await consolidation_request(self._semantic)
        if request is None:
            return "no episode clusters to consolidate"
        slot = math.floor(self._semantic.now() / MEMORY_MAINTENANCE_EVERY_S)
        job, created = await self.enqueue(
            new_job(
                self.settings,
                type=CONSOLIDATION_JOB_TYPE,
                prompt=request.prompt,
                title=f"Consolidate {len(request.episode_ids)} episode(s) into memory",
                priority=Priority.LOW,
                source=Source.PULSE,
                idempotency_key=f"{CONSOLIDATION_KEY_PREFIX}{slot}",
            )
        )
        verb = "queued" if created else "already queued as"
        return f"consolidation of {len(request.clusters)} cluster(s) {verb} #{job.id}"

    async def job_finished(self, job: Job) -> None:
        if is_consolidation_job(job):  # memory's own upkeep: learn from its answer, record no episode of it
            await self._consolidation_finished(job)
        if self.store is not None:
            await self.catch_up()
        elif job.state.value in FINAL_STATES and _wants_episode(job):
            await self._record(job, None)

    async def catch_up(self) -> int:
        """Write the episodes of the jobs that reached a final state since the cursor; how many were written."""
        store = self.store
        if store is None:
            return 0
        async with self._catching_up:
            try:
                return await self._catch_up(store)
            except Exception:  # memory must never break the engine's finish path; the cursor says where to resume
                log.exception("episodes not recorded; the next pass resumes from the cursor")
                return 0

    async def _catch_up(self, store: Store) -> int:
        cursor = await store.kv_get(EPISODE_CURSOR_KEY)
        after = int(cursor) if cursor else 0
        since = self._semantic.now() - _FIRST_LOOK_BACK_S if cursor is None else None
        written = 0
        while events := await store.events_since(after, limit=_EVENT_PAGE):
            for event in events:
                if event.to_state in FINAL_STATES and event.job_id is not None and (since is None or event.at >= since):
                    job = await store.get_job(event.job_id)
                    if job is not None and _wants_episode(job):
                        reviews = await store.job_reviews(job.id)
                        written += await self._record(job, reviews[-1].score if reviews else None)
                after = event.id
            await store.kv_put(EPISODE_CURSOR_KEY, str(after))
        return written

    async def _record(self, job: Job, score: float | None) -> int:
        try:
            await record_episode(self._semantic, episode_of(job, score))
        except Exception:
            log.exception("job %s: episode not recorded", job.id)
            return 0
        return 1

    async def _consolidation_finished(self, job: Job) -> None:
        if job.state != JobState.DONE:  # its episodes stay pending for the next slot's job
            log.info("job %s: memory consolidation ended %s; episodes left for the next pass", job.id, job.state)
            return
        try:
            report = await apply_consolidation(self._semantic, job.prompt, job.result_text or "")
        except Exception:  # memory must never break the engine's finish path
            log.exception("job %s: consolidation answer not applied", job.id)
            return
        log.info(
            "job %s: consolidation added %d memory(ies), consolidated %d episode(s), pruned %d",
            job.id, len(report.memories_created), report.episodes_consolidated, report.episodes_pruned,
        )


def _wants_episode(job: Job) -> bool:
    return job.type not in _NO_EPISODE_TYPES and not is_consolidation_job(job)


def episode_of(job: Job, review_score: float | None = None) -> Episode:
    """The facts of a finished job as an episode: type, title, outcome, backend, duration, cost, review score,
    failure class and a neutral summary. Never the prompt or the result text (see ``memory.episodes.Episode``):
    an episode can never carry the results, or the episodes, of earlier jobs nested inside it."""
    duration = (job.finished_at or job.updated_at) - (job.started_at or job.created_at)
    return Episode(
        job_id=str(job.id),
        job_type=job.type,
        goal=" ".join((job.title or f"untitled {job.type} job").split())[:EPISODE_TITLE_CHARS],
        outcome=job.state.value,
        backend=job.maker_backend or "",
        duration_s=max(0.0, duration),
        cost_usd=job.cost_usd,
        key_result=_neutral_summary(job),
        failure_class=job.last_failure_class,
        project=job.project,
        operator_correction=job.operator_approved,
        review_score=review_score,
    )


def _neutral_summary(job: Job) -> str:
    parts = [f"result of {len(job.result_text)} characters" if job.result_text else "no result"]
    if job.revision:
        parts.append(f"{job.revision} revision(s) after review")
    if job.operator_approved:
        parts.append("approved by the operator")
    return ", ".join(parts)
