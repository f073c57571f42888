"""Build the backend a ``BackendConfig`` describes. The one place that maps ``kind`` to a class."""

from __future__ import annotations

import httpx

from engine.backends.anthropic_api import AnthropicApiBackend
from engine.backends.base import Backend
from engine.backends.claude_cli import ClaudeCliBackend
from engine.backends.codex_cli import CodexCliBackend
from engine.backends.openai_compat import OpenAICompatBackend
from engine.clock import Clock
from engine.sandbox import Sandbox
from engine.settings import BackendConfig


def build_backend(config: BackendConfig, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                  env: dict[str, str] | None = None, sandbox: Sandbox | None = None) -> Backend:
    """``transport`` reaches the HTTP backends (tests hand in a MockTransport); ``env`` stands for the
    environment the CLI backends' workers take their allow-listed variables from (default: this process's);
    ``sandbox`` is the boundary they run in (default: bubblewrap when it works here)."""
    if config.kind == "claude_cli":
        return ClaudeCliBackend(config, clock=clock, env=env, sandbox=sandbox)
    if config.kind == "codex_cli":
        return CodexCliBackend(config, clock=clock, env=env, sandbox=sandbox)
    if config.kind == "openai":
        return OpenAICompatBackend(config, clock=clock, transport=transport)
    if config.kind == "anthropic":
        return AnthropicApiBackend(config, clock=clock, transport=transport)
    if config.kind == "sim":
        # Imported here so the real backends never depend on the simulator's module.
        from engine.backends.sim import SimBackend

        return SimBackend(config, clock=clock)
    raise ValueError(f"backend {config.name!r}: unknown kind {config.kind!r}")
