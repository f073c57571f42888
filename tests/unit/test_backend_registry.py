"""build_backend maps each kind to its class and hands the transport to the HTTP backends."""

from __future__ import annotations

import httpx
import pytest

from engine.backends.anthropic_api import AnthropicApiBackend
from engine.backends.base import BackendRequest, Usage, price_usage
from engine.backends.claude_cli import ClaudeCliBackend
from engine.backends.codex_cli import CodexCliBackend
from engine.backends.openai_compat import OpenAICompatBackend
from engine.backends.registry import build_backend
from engine.clock import FakeClock
from engine.settings import BackendConfig


@pytest.mark.parametrize(("kind", "cls"), [
    ("claude_cli", ClaudeCliBackend), ("codex_cli", CodexCliBackend), ("openai", OpenAICompatBackend),
    ("anthropic", AnthropicApiBackend),
])
async def test_kinds(kind, cls):
    backend = build_backend(BackendConfig(name="b", kind=kind, family="f"), clock=FakeClock())
    assert isinstance(backend, cls)
    await backend.aclose()


def test_sim_kind():
    backend = build_backend(BackendConfig(name="s", kind="sim", family="f"), clock=FakeClock())
    assert type(backend).__name__ == "SimBackend"


async def test_transport_reaches_http_backend(monkeypatch):
    monkeypatch.setenv("SB_REGISTRY_KEY", "k-0123456789")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": "hi"},
                                                                    "finish_reason": "stop"}]})

    config = BackendConfig(name="o", kind="openai", family="f", model="m", base_url="http://mock/v1",
                           api_key_env="SB_REGISTRY_KEY")
    backend = build_backend(config, clock=FakeClock(), transport=httpx.MockTransport(handler))
    result = await backend.run(BackendRequest(job_id=1, job_type="chat", prompt="hello"))
    await backend.aclose()
    assert result.ok and result.text == "hi"
    assert seen == ["http://mock/v1/chat/completions"]


def test_price_usage():
    config = BackendConfig(name="p", kind="openai", family="f", price_in_per_mtok=2.0, price_out_per_mtok=8.0,
                           price_cache_read_per_mtok=0.5)
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cache_read_tokens=2_000_000,
                  cache_write_tokens=1_000_000)
    # cache writes have no price configured: charged as input
    assert price_usage(config, usage) == pytest.approx(2.0 + 4.0 + 1.0 + 2.0)
    assert price_usage(config.model_copy(update={"subscription": True}), usage) == 0.0
