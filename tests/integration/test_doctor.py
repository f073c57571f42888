"""`switchboard doctor` means it (issue 12, item 4): Telegram's getMe over real HTTP against the fake Bot API
(a good token, a rejected one, an unreachable port), the data folder's permissions, the single-family warning;
exit code 0 only when `run` would start cleanly, and never the token in any output."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.doctor import passed, run_checks, telegram_check
from engine.settings import BackendConfig, Settings, default_sim_backends
from tests.conftest import instant
from tests.fakes.fake_telegram import FakeTelegram

OPERATOR = 4242
BAD_TOKEN = "123456789:AAHrejectedTokenThatMustNeverBePrinted_x"


def _settings(tmp_path: Path, fake_root: str, token: str | None, **overrides: Any) -> Settings:
    telegram = {"operator_ids": [OPERATOR], "api_base_url": fake_root}
    if token is not None:
        telegram["bot_token"] = token
    return Settings(home=tmp_path / "home", backends=instant(default_sim_backends()), telegram=telegram, **overrides)


def _root(fake: FakeTelegram) -> str:
    return fake.base_url.removesuffix("/bot")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_good_token_is_accepted_and_the_bot_named(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        settings = _settings(tmp_path, _root(fake), fake.token)
        checks = await run_checks(settings)
        assert fake.calls["getMe"] == 1
    [telegram] = [c for c in checks if c["check"] == "telegram"]
    assert telegram["level"] == "ok" and "@switchboard_test_bot" in telegram["detail"]
    assert fake.token not in json.dumps(checks)
    assert passed(checks), [c for c in checks if not c["ok"]]


async def test_a_rejected_token_fails_without_showing_it(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        check = await telegram_check(_settings(tmp_path, _root(fake), BAD_TOKEN))
    assert check["level"] == "fail" and "rejected the bot token in TELEGRAM_BOT_TOKEN" in check["detail"]
    assert BAD_TOKEN not in check["detail"] and BAD_TOKEN.split(":")[1] not in check["detail"]


async def test_an_unreachable_telegram_fails_quickly(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"http://127.0.0.1:{_closed_port()}", BAD_TOKEN)
    check = await asyncio.wait_for(telegram_check(settings, timeout_s=2.0), 10)
    assert check["level"] == "fail" and "unreachable" in check["detail"] and "keep retrying" in check["detail"]
    assert BAD_TOKEN not in check["detail"]


async def test_a_channel_that_would_refuse_fails_before_any_call(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        settings = _settings(tmp_path, _root(fake), fake.token)
        settings.telegram.operator_ids = []
        check = await telegram_check(settings)
        assert fake.calls["getMe"] == 0
    assert check["level"] == "fail" and "operator_ids is empty" in check["detail"]


async def test_no_token_means_the_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    check = await telegram_check(_settings(tmp_path, "http://127.0.0.1:9", None))
    assert check["level"] == "ok" and "console channel" in check["detail"]


async def test_a_data_folder_others_can_read_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    settings = _settings(tmp_path, "http://127.0.0.1:9", None)
    settings.home.mkdir(mode=0o755)
    settings.home.chmod(0o755)
    checks = await run_checks(settings)
    [folder] = [c for c in checks if c["check"] == "data folder"]
    assert folder["level"] == "fail" and "0755" in folder["detail"] and "chmod 700" in folder["detail"]
    assert not passed(checks)
    settings.home.chmod(0o700)
    assert passed(await run_checks(settings))


async def test_no_git_warns_but_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    settings = _settings(tmp_path, "http://127.0.0.1:9", None)
    [git] = [c for c in await run_checks(settings) if c["check"] == "git"]
    assert git["level"] == "ok" and git["detail"].endswith("job worktrees for projects in git repositories")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # (the CLI backends' checks then fail: not this test's)
    [git] = [c for c in await run_checks(settings) if c["check"] == "git"]
    assert git["level"] == "warn" and git["ok"] and "git not found on PATH" in git["detail"]


async def test_reviewed_types_with_one_family_warn_but_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    solo = [BackendConfig(name=n, kind="sim", family="anthropic", tier=t) for n, t in (("a", 3), ("b", 2), ("c", 1))]
    settings = Settings(home=tmp_path / "home", backends=instant(solo))
    checks = await run_checks(settings)
    [review] = [c for c in checks if c["check"] == "review"]
    assert review["level"] == "warn" and "coding" in review["detail"] and "anthropic" in review["detail"]
    assert "come to you for a decision after 30 s (gate.when_no_other_family = operator)" in review["detail"]
    assert passed(checks)
    mixed = Settings(home=tmp_path / "home", backends=instant(default_sim_backends()))
    assert not [c for c in await run_checks(mixed) if c["check"] == "review"]
    assert [c["check"] for c in await run_checks(mixed) if c["check"] == "time"] == ["time"]


async def test_doctor_and_run_exit_1_on_a_rejected_token_and_never_print_it(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        config = tmp_path / "switchboard.toml"
        config.write_text(f'[telegram]\noperator_ids = [{OPERATOR}]\napi_base_url = "{_root(fake)}"\n')
        env = {**os.environ, "SWITCHBOARD_HOME": str(tmp_path / "home"), "SWITCHBOARD_DETECT_BACKENDS": "false",
               "TELEGRAM_BOT_TOKEN": BAD_TOKEN}
        env.pop("SWITCHBOARD_CONFIG", None)
        outputs = []
        for command in (["doctor"], ["doctor", "--json"], ["run", "--no-console"]):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "--config", str(config), *command, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(process.communicate(), 120)
            finally:  # no process left behind if it hung
                if process.returncode is None:
                    process.kill()
                    await process.communicate()
            assert process.returncode == 1, err.decode()
            outputs.append((out.decode(), err.decode()))
    assert "FAIL telegram: Telegram rejected the bot token in TELEGRAM_BOT_TOKEN" in outputs[0][0]
    assert json.loads(outputs[1][0])["ok"] is False  # one JSON document on stdout
    assert "rejected the bot token in TELEGRAM_BOT_TOKEN" in outputs[2][1]  # run stops with the same news
    for output in (text for pair in outputs for text in pair):
        assert BAD_TOKEN not in output and BAD_TOKEN.split(":")[1] not in output


async def test_an_engine_already_running_on_the_data_folder_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.app import engine_lock

    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    settings = _settings(tmp_path, "http://127.0.0.1:9", None)
    with engine_lock(settings.home):  # what `switchboard run` holds while it runs
        checks = await run_checks(settings)
        [engine] = [c for c in checks if c["check"] == "engine"]
        assert engine["level"] == "fail" and f"(pid {os.getpid()})" in engine["detail"] and not passed(checks)
        assert (settings.home / "engine.lock").read_text() == str(os.getpid())  # doctor left the pid alone
    [engine] = [c for c in await run_checks(settings) if c["check"] == "engine"]
    assert engine["level"] == "ok"
