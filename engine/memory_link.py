"""Memory in the engine's life: context for each job, and one episode from each finished job."""

from __future__ import annotations

import logging

from engine.models import Job
from engine.runner import JobContext
from memory import CoreMemory, SemanticMemory
from memory.context import build_context
from memory.episodes import EPISODIC, Episode, record_episode

log = logging.getLogger(__name__)


class MemoryHooks:
    def __init__(self, core: CoreMemory, semantic: SemanticMemory, budget_bytes: int) -> None:
        self._core = core
        self._semantic = semantic
        self._budget = budget_bytes

    @property
    def core(self) -> CoreMemory:
        return self._core

    @property
    def semantic(self) -> SemanticMemory:
        return self._semantic

    async def context_for(self, job: Job) -> JobContext:
        if job.type == "review":  # authorship hidden, judgement fresh: the reviewer gets no memories
            return JobContext()
        try:
            context = await build_context(self._core, self._semantic, job.prompt[:2000], job.project, self._budget)
        except Exception:  # memory must never stop work from running
            log.exception("job %s: memory context unavailable", job.id)
            return JobContext(core=self._core.read())
        return JobContext(core=context.core, memories=context.relevant)

    async def maintain(self) -> str:
        """The pulse's memory upkeep, with no model call: prune old, never-read, unimportant episodes and
        optimize the table. (Folding episodes into lessons, ``memory.episodes.consolidate``, needs a model
        and is not run from here: the scheduler only enqueues.)"""
        settings = self._semantic.settings
        cutoff = self._semantic.now() - settings.episode_keep_days * 86_400
        pruned = await self._semantic.prune(
            kind=EPISODIC, created_before=cutoff, max_importance=settings.prune_max_importance
        )
        await self._semantic.optimize()
        return f"pruned {pruned} old episode(s); memory table optimized"

    async def job_finished(self, job: Job) -> None:
        if job.type in ("review", "chat"):
            return
        duration = (job.finished_at or job.updated_at) - (job.started_at or job.created_at)
        episode = Episode(
            job_id=str(job.id),
            job_type=job.type,
            goal=job.title or job.prompt[:200],
            outcome=job.state.value,
            backend=job.maker_backend or "",
            duration_s=max(0.0, duration),
            key_result=job.result_summary or "",
            failure_class=job.last_failure_class,
            project=job.project,
            operator_correction=job.operator_approved,
        )
        try:
            await record_episode(self._semantic, episode)
        except Exception:
            log.exception("job %s: episode not recorded", job.id)
