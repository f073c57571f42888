"""What to run on when the configuration names no backends: detect, else simulate.

Looks, without calling any model, for a logged-in ``claude`` on PATH, provider API keys in the environment and
a local Ollama (a TCP connect to its port; nothing is sent). Whatever is found becomes the backend list;
with nothing found Switchboard runs on the simulated set and says so.

What is found comes back as the ``[[backends]]`` tables an operator would have written, and ``load_settings``
validates them exactly like the file's; so this module needs nothing from ``engine.settings`` (which calls it).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Required, TypedDict

OLLAMA_HOST = "127.0.0.1"
OLLAMA_PORT = 11434


class BackendTable(TypedDict, total=False):
    """One detected backend: the keys of ``engine.settings.BackendConfig`` that detection fills."""

    name: Required[str]
    kind: Required[str]
    family: Required[str]
    model: str
    tier: int
    base_url: str
    api_key_env: str
    binary: str
    subscription: bool
    price_in_per_mtok: float
    price_out_per_mtok: float

# (env var, name prefix, base_url, family, [(model, tier, price in, price out)]) for OpenAI-compatible APIs.
_OPENAI_COMPATIBLE: tuple[tuple[str, str, str, str, list[tuple[str, int, float, float]]], ...] = (
    (
        "OPENAI_API_KEY",
        "openai",
        "https://api.openai.com/v1",
        "openai",
        [("gpt-4.1", 3, 2.0, 8.0), ("gpt-4.1-mini", 2, 0.4, 1.6)],
    ),
    (
        "DEEPSEEK_API_KEY",
        "deepseek",
        "https://api.deepseek.com/v1",
        "deepseek",
        [("deepseek-reasoner", 3, 0.55, 2.19), ("deepseek-chat", 2, 0.27, 1.1)],
    ),
    ("MOONSHOT_API_KEY", "kimi", "https://api.moonshot.ai/v1", "moonshot", [("kimi-k2-0711-preview", 2, 0.6, 2.5)]),
    (
        "GEMINI_API_KEY",
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "google",
        [("gemini-2.5-flash", 1, 0.3, 2.5)],
    ),
    (
        "OPENROUTER_API_KEY",
        "openrouter",
        "https://openrouter.ai/api/v1",
        "deepseek",
        [("deepseek/deepseek-r1", 3, 0.55, 2.19)],
    ),
)


def detect_backends(env: Mapping[str, str] | None = None, *, ollama_port: int = OLLAMA_PORT) -> list[BackendTable]:
    env = os.environ if env is None else env
    found = _claude(env) + _anthropic_api(env)
    for variable, prefix, base_url, family, models in _OPENAI_COMPATIBLE:
        if env.get(variable):
            found += [
                BackendTable(
                    name=_name(prefix, model),
                    kind="openai",
                    base_url=base_url,
                    api_key_env=variable,
                    model=model,
                    family=family,
                    tier=tier,
                    price_in_per_mtok=p_in,
                    price_out_per_mtok=p_out,
                )
                for model, tier, p_in, p_out in models
            ]
    if _listening(OLLAMA_HOST, ollama_port):
        found.append(
            BackendTable(
                name="ollama",
                kind="openai",
                base_url=f"http://{OLLAMA_HOST}:{ollama_port}/v1",
                model=env.get("SWITCHBOARD_OLLAMA_MODEL", "llama3.2"),
                family="local",
                tier=1,
            )
        )
    return found


def _name(prefix: str, model: str) -> str:
    short = model.rsplit("/", 1)[-1]
    return short if short.startswith(prefix) else f"{prefix}-{short}"


def _claude(env: Mapping[str, str]) -> list[BackendTable]:
    binary = shutil.which("claude", path=env.get("PATH"))
    if binary is None:
        return []
    config_dir = Path(env.get("CLAUDE_CONFIG_DIR") or Path(env.get("HOME", "~")).expanduser() / ".claude")
    logged_in = (config_dir / ".credentials.json").is_file()
    if not logged_in and not env.get("ANTHROPIC_API_KEY"):
        return []
    return [
        BackendTable(
            name=f"claude-{model}",
            kind="claude_cli",
            binary=binary,
            model=model,
            family="anthropic",
            tier=tier,
            subscription=logged_in,
        )
        for model, tier in (("opus", 3), ("sonnet", 2), ("haiku", 1))
    ]


def _anthropic_api(env: Mapping[str, str]) -> list[BackendTable]:
    if not env.get("ANTHROPIC_API_KEY") or shutil.which("claude", path=env.get("PATH")):
        return []  # with the CLI present, the key already serves the claude_cli workers
    return [
        BackendTable(
            name="anthropic-sonnet",
            kind="anthropic",
            api_key_env="ANTHROPIC_API_KEY",
            model="claude-sonnet-4-5",
            family="anthropic",
            tier=2,
            price_in_per_mtok=3.0,
            price_out_per_mtok=15.0,
        )
    ]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
