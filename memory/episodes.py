"""Episodic memory: one episode per finished job, and the consolidation pass that learns from them.

The engine calls ``record_episode`` when a job reaches done, failed, rejected or cancelled. Consolidation
comes in two shapes that share the clustering:

- ``consolidate(memory, summarize)``: one call per cluster through an awaitable model function;
- ``consolidation_request(memory)`` builds one prompt over all pending clusters without calling a model (the
  engine runs it as an ordinary job), and ``apply_consolidation(memory, prompt, answer)`` folds the model's
  answer back in. The prompt itself carries the cluster labels and episode ids, so the answer can be applied
  after a restart with nothing else remembered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from string import Template

import numpy as np
from pydantic import BaseModel, Field

import prompts
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
# What marks episodes a model judged to hold no lesson (they are not offered again).
NO_LESSON = "none"
_LESSON_MAX_CHARS = 600
# Lines of the batch prompt that carry its structure; episode lines are single-line by construction.
_CLUSTER_HEADER = re.compile(r"^## (C\d+)\b", re.MULTILINE)
_EPISODE_LINE = re.compile(r"^- \[episode ([^;\]\s]+);", re.MULTILINE)
# "C1: lesson", tolerating list markers, bold and other separators a model may add.
_ANSWER_LINE = re.compile(
    r"^\s*(?:(?:[-*•]|\d+[.)])\s*)?[*_`]*\s*(C\d+)\s*[*_`]*\s*[:.)=\-–—]+\s*(.*?)\s*$", re.IGNORECASE
)


class Episode(BaseModel):
    """Facts about one finished job, never its instructions or its result text.

    A job's prompt and result came from the operator, a model or the outside world; stored verbatim they
    would come back under "Relevant memories" in later, unrelated jobs (an injected "ignore previous
    instructions" included). So ``goal`` is the job's short title and ``key_result`` a neutral summary the
    engine writes from the job's record (size of the result, revisions, the operator's approval).
    """

    job_id: str
    job_type: str
    goal: str = Field(description="the job's title, short")
    outcome: str = Field(description="done | failed | rejected | cancelled | needs_human | ...")
    backend: str | None = None
    duration_s: float | None = None
    cost_usd: float | None = None
    key_result: str | None = Field(None, description="a neutral summary written by the engine, not the result")
    failure_class: str | None = None
    project: str | None = None
    operator_correction: bool = False
    review_score: float | None = None


class ConsolidationReport(BaseModel):
    episodes_seen: int = 0
    clusters: int = 0
    memories_created: list[str] = Field(default_factory=list)
    summaries_skipped: int = 0
    summaries_failed: int = 0
    episodes_pruned: int = 0
    episodes_consolidated: int = 0


class ConsolidationCluster(BaseModel):
    label: str
    episode_ids: list[str]


class ConsolidationRequest(BaseModel):
    """One prompt over the pending episode clusters, and what it covers. No model has been called."""

    prompt: str
    clusters: list[ConsolidationCluster]

    @property
    def episode_ids(self) -> list[str]:
        return [episode_id for c in self.clusters for episode_id in c.episode_ids]


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
    if episode.cost_usd:
        parts[0] += f" for ${episode.cost_usd:.4f}"
    parts.append(f"goal: {_clip(episode.goal, 240)}")
    if episode.review_score is not None:
        parts.append(f"review score {episode.review_score:.1f}/10")
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
    return Template(template).substitute(episodes=prompts.untrusted("episodes", lines))


async def pending_clusters(
    memory: SemanticMemory, *, cluster_threshold: float | None = None
) -> tuple[int, list[tuple[str | None, list[MemoryRecord]]]]:
    """(episodes seen, the qualifying clusters of unconsolidated episodes as (project, episodes)).

    A cluster qualifies when it has at least ``consolidation_min_cluster`` episodes, or holds one important
    enough on its own (an operator correction).
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
    found: list[tuple[str | None, list[MemoryRecord]]] = []
    for project, items in _by_project(rows).items():
        vectors = np.stack([v for _, v in items]) if items else np.zeros((0, memory.embedder.dim))
        for members in cluster(vectors, threshold):
            episodes = [items[i][0] for i in members]
            if len(episodes) < settings.consolidation_min_cluster and max(
                e.importance for e in episodes
            ) < _CORRECTION_IMPORTANCE:
                continue
            found.append((project, episodes))
    return len(rows), found


async def consolidate(
    memory: SemanticMemory,
    summarize: Callable[[str], Awaitable[str]],
    *,
    cluster_threshold: float | None = None,
) -> ConsolidationReport:
    """Fold clusters of unconsolidated episodes into semantic memories, then prune and optimize.

    ``summarize`` gets the prompt of prompts/consolidate.md and returns the memory text, or ``NONE``. A
    failing ``summarize`` leaves its episodes for the next pass.
    """
    seen, clusters = await pending_clusters(memory, cluster_threshold=cluster_threshold)
    report = ConsolidationReport(episodes_seen=seen)
    for project, episodes in clusters:
        report.clusters += 1
        await _consolidate_cluster(memory, summarize, episodes, project, report)
    report.episodes_pruned = await prune_episodes(memory)
    await memory.optimize()
    return report


async def prune_episodes(memory: SemanticMemory) -> int:
    """Delete old, never-read, unimportant episodes (``episode_keep_days``, ``prune_max_importance``)."""
    settings = memory.settings
    cutoff = memory.now() - settings.episode_keep_days * _DAY_S
    return await memory.prune(kind=EPISODIC, created_before=cutoff, max_importance=settings.prune_max_importance)


async def consolidation_request(
    memory: SemanticMemory, *, cluster_threshold: float | None = None, max_chars: int = 60_000,
) -> ConsolidationRequest | None:
    """One prompt (prompts/consolidate_batch.md) over the pending clusters, or None when there are none.

    Clusters are labelled C1, C2, ... and each episode line carries its id, so ``apply_consolidation`` needs
    only this prompt and the model's answer. Clusters that would push the prompt past ``max_chars`` wait
    for the next pass. Calls no model.
    """
    _, clusters = await pending_clusters(memory, cluster_threshold=cluster_threshold)
    blocks: list[str] = []
    covered: list[ConsolidationCluster] = []
    used = len(prompts.load("consolidate_batch"))
    for project, episodes in clusters:
        label = f"C{len(covered) + 1}"
        scope = f" (project {project})" if project else ""
        lines = "\n".join(f"- [episode {e.id}; importance {e.importance}] {_clip(e.text, 600)}" for e in episodes)
        block = f"## {label}{scope}\n{lines}\n"
        if used + len(block) > max_chars and covered:
            break
        used += len(block)
        blocks.append(block)
        covered.append(ConsolidationCluster(label=label, episode_ids=[e.id for e in episodes]))
    if not covered:
        return None
    as_data = prompts.untrusted("episode clusters", "\n".join(blocks).rstrip("\n"))
    prompt = prompts.render("consolidate_batch", clusters=as_data)
    return ConsolidationRequest(prompt=prompt, clusters=covered)


def clusters_from_prompt(prompt: str) -> list[ConsolidationCluster]:
    """The clusters a ``consolidation_request`` prompt covers, read back from the prompt's own text."""
    headers = list(_CLUSTER_HEADER.finditer(prompt))
    found: list[ConsolidationCluster] = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(prompt)
        ids = _EPISODE_LINE.findall(prompt, header.end(), end)
        if ids:
            found.append(ConsolidationCluster(label=header.group(1), episode_ids=ids))
    return found


def parse_consolidation_answer(answer: str, labels: set[str]) -> dict[str, str]:
    """Label -> lesson (or ``NONE``) for each well-formed answer line naming a known cluster.

    Tolerant by design: text around the lines, list markers and bold are ignored; a placeholder such as
    ``<the memory for cluster C1>`` (a model or a simulator echoing the instructions) is not a lesson; the
    first answer for a label wins.
    """
    found: dict[str, str] = {}
    for line in answer.splitlines():
        match = _ANSWER_LINE.match(line)
        if match is None:
            continue
        label, text = match.group(1).upper(), match.group(2).strip().strip("*_`\"'").strip()
        if label not in labels or label in found or not text:
            continue
        if text.startswith("<") and text.endswith(">"):
            continue
        found[label] = "NONE" if _is_none(text) else text
    return found


def _is_none(text: str) -> bool:
    return text.upper().rstrip(".!") == "NONE"


async def apply_consolidation(memory: SemanticMemory, prompt: str, answer: str) -> ConsolidationReport:
    """Fold a model's answer to a ``consolidation_request`` prompt into memory, then prune old episodes.

    Each answered cluster becomes one semantic memory (or, for ``NONE``, its episodes are marked as holding
    no lesson); its episodes are marked consolidated. Clusters without an answer stay pending. An answer
    with no usable line at all changes nothing and is logged. Episodes consolidated meanwhile (an earlier
    job over the same episodes) or pruned are skipped, so applying an answer twice adds nothing twice.
    """
    clusters = clusters_from_prompt(prompt)
    report = ConsolidationReport(clusters=len(clusters))
    answers = parse_consolidation_answer(answer, {c.label for c in clusters})
    if not answers:
        log.warning(
            "consolidation answer has no usable lesson for %d cluster(s); episodes left for the next pass: %r",
            len(clusters), _clip(answer, 200),
        )
        report.summaries_failed = len(clusters)
        return report
    for item in clusters:
        text = answers.get(item.label)
        if text is None:
            report.summaries_failed += 1
            continue
        episodes = [e for e in await memory.get_many(item.episode_ids) if e.consolidated_into is None]
        report.episodes_seen += len(episodes)
        if not episodes:
            continue
        ids = [e.id for e in episodes]
        if text == "NONE":
            report.summaries_skipped += 1
            await memory.mark_consolidated(ids, NO_LESSON)
        else:
            outcome = await memory.add(
                _clip(text, _LESSON_MAX_CHARS), kind="semantic", importance=max(e.importance for e in episodes),
                project=episodes[0].project, source_job=CONSOLIDATION_SOURCE,
            )
            report.memories_created.append(outcome.id)
            await memory.mark_consolidated(ids, outcome.id)
        report.episodes_consolidated += len(ids)
    report.episodes_pruned = await prune_episodes(memory)
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
    if not answer or _is_none(answer):
        report.summaries_skipped += 1
        await memory.mark_consolidated([e.id for e in episodes], NO_LESSON)
        return
    outcome = await memory.add(
        _clip(answer, _LESSON_MAX_CHARS), kind="semantic", importance=max(e.importance for e in episodes),
        project=project, source_job=CONSOLIDATION_SOURCE,
    )
    report.memories_created.append(outcome.id)
    await memory.mark_consolidated([e.id for e in episodes], outcome.id)
