"""Episodic memory: one episode per finished job, and the consolidation pass that learns from them.

The engine calls ``record_episode`` when a job reaches done, failed, rejected or cancelled, and the pulse
calls ``consolidate`` periodically with a summarising function backed by a Grunt or Worker tier model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from string import Template

import numpy as np
from pydantic import BaseModel, Field

from memory.semantic import AddOutcome, MemoryRecord, SemanticMemory

log = logging.getLogger(__name__)

EPISODIC = "episodic"
CONSOLIDATION_SOURCE = "consolidation"
_DAY_S = 86_400.0

# What a job's outcome teaches, relative to a routine success. Failures and rejections are where the next
# job can do better, so they outrank it; an operator correction outranks everything.
_OUTCOME_IMPORTANCE: dict[str, int] = {
    "done": 3, "failed": 6, "rejected": 6, "needs_human": 6, "cancelled": 2,
}
_CORRECTION_IMPORTANCE = 8


class Episode(BaseModel):
    job_id: str
    job_type: str
    goal: str
    outcome: str = Field(description="done | failed | rejected | cancelled | needs_human | ...")
    backend: str | None = None
    duration_s: float | None = None
    key_result: str | None = None
    failure_class: str | None = None
    project: str | None = None
    operator_correction: bool = False


class ConsolidationReport(BaseModel):
    episodes_seen: int = 0
    clusters: int = 0
    memories_created: list[str] = Field(default_factory=list)
    summaries_skipped: int = 0
    summaries_failed: int = 0
    episodes_pruned: int = 0


def episode_importance(episode: Episode) -> int:
    if episode.operator_correction:
        return _CORRECTION_IMPORTANCE
    base = _OUTCOME_IMPORTANCE.get(episode.outcome, 4)
    # A failure without a class is still a failure; a classified one names something to avoid.
    return min(10, base + (1 if episode.failure_class and episode.outcome != "done" else 0))


def episode_text(episode: Episode, max_chars: int = 600) -> str:
    """One line a later job (and the consolidating model) can read without the job store."""
    parts = [f"{episode.job_type} job {episode.job_id} {episode.outcome}"]
    if episode.backend:
        parts[0] += f" on {episode.backend}"
    if episode.duration_s is not None:
        parts[0] += f" after {episode.duration_s:.0f}s"
    parts.append(f"goal: {_clip(episode.goal, 240)}")
    if episode.failure_class:
        parts.append(f"failure: {episode.failure_class}")
    if episode.key_result:
        parts.append(f"result: {_clip(episode.key_result, 240)}")
    if episode.operator_correction:
        parts.append("the operator corrected this")
    return _clip("; ".join(parts), max_chars)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def record_episode(memory: SemanticMemory, episode: Episode) -> AddOutcome:
    """Store the episode as an ``episodic`` memory. Never deduplicated: each job is its own event."""
    return await memory.add(
        episode_text(episode), kind=EPISODIC, importance=episode_importance(episode),
        project=episode.project, source_job=episode.job_id, dedup=False,
    )


def cluster(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Greedy single-pass clustering on cosine to each cluster's running centroid.

    Episodes arrive oldest first and number in the hundreds, so an O(n * clusters) pass is plenty.
    """
    clusters: list[list[int]] = []
    centroids: list[np.ndarray] = []
    for i, vector in enumerate(vectors):
        best, best_cos = -1, threshold
        for c, centroid in enumerate(centroids):
            cos = float(vector @ centroid / max(np.linalg.norm(centroid), 1e-12))
            if cos >= best_cos:
                best, best_cos = c, cos
        if best < 0:
            clusters.append([i])
            centroids.append(vector.astype(np.float32).copy())
        else:
            clusters[best].append(i)
            centroids[best] = centroids[best] + vector
    return clusters


def consolidation_prompt(episodes: list[MemoryRecord]) -> str:
    template = resources.files("prompts").joinpath("consolidate.md").read_text(encoding="utf-8")
    lines = "\n".join(f"- [importance {e.importance}] {e.text}" for e in episodes)
    return Template(template).substitute(episodes=lines)


async def consolidate(
    memory: SemanticMemory,
    summarize: Callable[[str], Awaitable[str]],
    *,
    cluster_threshold: float | None = None,
) -> ConsolidationReport:
    """Fold clusters of unconsolidated episodes into semantic memories, then prune and optimize.

    A cluster qualifies when it has at least ``consolidation_min_cluster`` episodes, or holds one important
    enough on its own (an operator correction). ``summarize`` gets the prompt of prompts/consolidate.md and
    returns the memory text, or ``NONE``. A failing ``summarize`` leaves its episodes for the next pass.
    """
    settings = memory.settings
    calibration = memory.embedder.calibration
    # Episodes of one kind of work sit between "relevant" and "near duplicate" on the embedder's scale.
    threshold = cluster_threshold if cluster_threshold is not None else (
        (calibration.similarity_high + calibration.near_duplicate_threshold) / 2
    )
    rows = await memory.records_with_vectors(
        kind=EPISODIC, unconsolidated=True, limit=settings.consolidation_max_episodes
    )
    report = ConsolidationReport(episodes_seen=len(rows))
    groups = _by_project(rows)
    for project, items in groups.items():
        vectors = np.stack([v for _, v in items]) if items else np.zeros((0, memory.embedder.dim))
        for members in cluster(vectors, threshold):
            episodes = [items[i][0] for i in members]
            if len(episodes) < settings.consolidation_min_cluster and max(
                e.importance for e in episodes
            ) < _CORRECTION_IMPORTANCE:
                continue
            report.clusters += 1
            await _consolidate_cluster(memory, summarize, episodes, project, report)
    cutoff = memory.now() - settings.episode_keep_days * _DAY_S
    report.episodes_pruned = await memory.prune(
        kind=EPISODIC, created_before=cutoff, max_importance=settings.prune_max_importance
    )
    await memory.optimize()
    return report


def _by_project(
    rows: list[tuple[MemoryRecord, np.ndarray]],
) -> dict[str | None, list[tuple[MemoryRecord, np.ndarray]]]:
    # Lessons stay inside their project: two projects' deploy failures are different facts.
    groups: dict[str | None, list[tuple[MemoryRecord, np.ndarray]]] = {}
    for record, vector in rows:
        groups.setdefault(record.project, []).append((record, vector))
    return groups


async def _consolidate_cluster(
    memory: SemanticMemory, summarize: Callable[[str], Awaitable[str]], episodes: list[MemoryRecord],
    project: str | None, report: ConsolidationReport,
) -> None:
    try:
        answer = (await summarize(consolidation_prompt(episodes))).strip()
    except Exception as exc:  # the model tier's own failure must not stop the other clusters
        log.warning("consolidation summary failed for %d episodes: %s", len(episodes), exc)
        report.summaries_failed += 1
        return
    if not answer or answer.upper().rstrip(".") == "NONE":
        report.summaries_skipped += 1
        await memory.mark_consolidated([e.id for e in episodes], "none")
        return
    outcome = await memory.add(
        _clip(answer, 600), kind="semantic", importance=max(e.importance for e in episodes),
        project=project, source_job=CONSOLIDATION_SOURCE,
    )
    report.memories_created.append(outcome.id)
    await memory.mark_consolidated([e.id for e in episodes], outcome.id)
