"""Memory in the engine's life: context for each job, one episode from each finished job, and consolidation.

Consolidation runs as an ordinary job ("the scheduler only enqueues"): ``maintain`` (called by the pulse)
enqueues one ``maintenance`` job whose prompt is memory's consolidation prompt over the pending episode
clusters, and ``job_finished`` feeds that job's answer back into memory. The prompt carries the cluster
labels and episode ids itself, so an answer arriving after a restart is applied all the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import prompts
from engine.job_factory import new_job
from engine.models import Job, JobState, NewJob, Priority, Source
from engine.pulse import MEMORY_MAINTENANCE_EVERY_S
from engine.runner import JobContext
from engine.settings import Settings
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

Enqueue = Callable[[NewJob], Awaitable[tuple[Job, bool]]]


def is_consolidation_job(job: Job) -> bool:
    return job.type == CONSOLIDATION_JOB_TYPE and (job.idempotency_key or "").startswith(CONSOLIDATION_KEY_PREFIX)


class MemoryHooks:
    """``settings`` and ``enqueue`` (``Engine.submit``) are set by the composition root; without them the
    pulse's upkeep still prunes and optimizes but queues no consolidation job."""

    def __init__(
        self, core: CoreMemory, semantic: SemanticMemory, budget_bytes: int, *,
        settings: Settings | None = None, enqueue: Enqueue | None = None,
    ) -> None:
        self._core = core
        self._semantic = semantic
        self._budget = budget_bytes
        self.settings = settings
        self.enqueue = enqueue

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
        pruned = await prune_episodes(self._semantic)
        await self._semantic.optimize()
        parts = [f"pruned {pruned} old episode(s); memory table optimized"]
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
            return
        if job.type in ("review", "chat"):
            return
        try:
            await record_episode(self._semantic, episode_of(job))
        except Exception:
            log.exception("job %s: episode not recorded", job.id)

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


def episode_of(job: Job) -> Episode:
    """The facts of a finished job as an episode: type, title, outcome, backend, duration, cost, failure class
    and a neutral summary. Never the prompt or the result text (see ``memory.episodes.Episode``)."""
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
    )


def _neutral_summary(job: Job) -> str:
    parts = [f"result of {len(job.result_text)} characters" if job.result_text else "no result"]
    if job.revision:
        parts.append(f"{job.revision} revision(s) after review")
    if job.operator_approved:
        parts.append("approved by the operator")
    return ", ".join(parts)
