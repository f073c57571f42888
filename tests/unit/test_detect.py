"""Backend detection when nothing is configured: a logged-in claude, API keys, a local Ollama; else the sims."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.detect import BackendTable, detect_backends
from engine.settings import BackendConfig, load_settings


def _configs(tables: list[BackendTable]) -> list[BackendConfig]:
    """Detection returns [[backends]] tables; load_settings validates them like the file's."""
    return [BackendConfig.model_validate(table) for table in tables]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def _fake_claude(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text("#!/bin/sh\necho '2.1.332 (Claude Code)'\n")
    claude.chmod(claude.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_nothing_found_means_nothing(tmp_path: Path, closed_port: int) -> None:
    assert detect_backends({"PATH": str(tmp_path), "HOME": str(tmp_path)}, ollama_port=closed_port) == []


def test_a_logged_in_claude_gives_three_tiers_of_workers(tmp_path: Path, closed_port: int) -> None:
    bin_dir = _fake_claude(tmp_path)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    assert detect_backends(env, ollama_port=closed_port) == []  # on PATH but not logged in: not usable
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text("{}")
    found = _configs(detect_backends(env, ollama_port=closed_port))
    assert [(b.name, b.kind, b.tier, b.subscription) for b in found] == [
        ("claude-opus", "claude_cli", 3, True),
        ("claude-sonnet", "claude_cli", 2, True),
        ("claude-haiku", "claude_cli", 1, True),
    ]
    assert found[0].binary == str(bin_dir / "claude")


def test_api_keys_and_a_local_ollama(tmp_path: Path, listening_port: int) -> None:
    env = {
        "PATH": str(tmp_path),
        "HOME": str(tmp_path),
        "DEEPSEEK_API_KEY": "sk-ds-9Zq",
        "ANTHROPIC_API_KEY": "sk-ant-7Yw",
    }
    found = {b.name: b for b in _configs(detect_backends(env, ollama_port=listening_port))}
    assert set(found) == {"anthropic-sonnet", "deepseek-reasoner", "deepseek-chat", "ollama"}
    assert found["deepseek-chat"].api_key_env == "DEEPSEEK_API_KEY" and found["deepseek-chat"].pay_per_token
    assert found["anthropic-sonnet"].kind == "anthropic"
    assert found["ollama"].base_url == f"http://127.0.0.1:{listening_port}/v1" and found["ollama"].tier == 1
    assert "sk-ds-9Zq" not in repr(found) and "sk-ant-7Yw" not in repr(found)  # variable names, never values


def test_load_settings_uses_detection_only_when_nothing_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    detected = load_settings(home=str(tmp_path / "home"))
    assert detected.backends_detected and [b.name for b in detected.backends] == ["gemini-2.5-flash"]

    monkeypatch.setenv("SWITCHBOARD_DETECT_BACKENDS", "false")
    simulated = load_settings(home=str(tmp_path / "home"))
    assert simulated.simulated_only and not simulated.backends_detected

    monkeypatch.delenv("SWITCHBOARD_DETECT_BACKENDS")
    (tmp_path / "switchboard.toml").write_text('[[backends]]\nname = "mine"\nkind = "sim"\nfamily = "x"\n')
    configured = load_settings(home=str(tmp_path / "home"))
    assert [b.name for b in configured.backends] == ["mine"] and not configured.backends_detected
