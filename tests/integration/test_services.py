"""The composition root's ``open_services``: what each entry point gets, memory passed explicitly, everything
closed in reverse; and Settings holding the Telegram secrets without ever showing them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import open_services
from bot.doctor import run_checks
from bot.memory_commands import memory_commands
from engine.clock import FakeClock
from engine.errors import ConfigError
from engine.late_memory import LateMemory
from engine.memory_link import MemoryHooks
from engine.models import Job, JobState
from engine.runner import JobContext
from engine.settings import Settings, default_sim_backends, load_settings
from engine.store import StoreError
from tests.conftest import instant, sim_backends
from tests.fakes.fake_telegram import FakeTelegram

TOKEN = "123456:the-real-bot-token-never-shown"
HOOK_SECRET = "the-webhook-secret"


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(home=tmp_path / "home", backends=instant(default_sim_backends()), **overrides)


async def test_the_cli_gets_the_store_and_control_alone(tmp_path: Path) -> None:
    settings = _settings(tmp_path, memory={"enabled": False})
    async with open_services(settings, clock=FakeClock()) as services:
        assert services.engine is None and services.pulse is None and services.memory is None
        assert services.backends == {}
        assert services.control.store is services.store and services.control.engine is None
        job, created = await services.control.add_job("count the widgets", type="analysis")
        assert created and job.state == JobState.QUEUED
    with pytest.raises(StoreError):  # closed on the way out
        await services.store.get_job(job.id)


async def test_run_gets_an_engine_that_runs_jobs_and_is_stopped_on_the_way_out(
    tmp_path: Path, eventually: Callable[..., Awaitable[Any]]
) -> None:
    settings = _settings(tmp_path, memory={"enabled": False}, engine={"shutdown_grace_s": 0})
    clock = FakeClock()
    async with open_services(settings, clock=clock, engine=True, backends=sim_backends(settings, clock)) as services:
        assert services.engine is not None and services.control.engine is services.engine
        job, _ = await services.control.add_job("count the widgets", type="analysis")

        async def done() -> bool:
            current = await services.control.job(job.id)
            return current.state == JobState.DONE

        assert await eventually(done)
        engine = services.engine
    assert engine._stopping.is_set()


async def test_memory_is_passed_explicitly_to_the_engine_the_pulse_and_the_commands(tmp_path: Path) -> None:
    settings = _settings(tmp_path, engine={"shutdown_grace_s": 0})
    clock = FakeClock()
    backends = sim_backends(settings, clock)
    async with open_services(settings, clock=clock, engine=True, memory=True, backends=backends) as s:
        assert isinstance(s.memory, MemoryHooks)
        assert s.engine is not None and s.memory.enqueue == s.engine.submit  # consolidation runs as a job
        assert (await s.commands.handle("/memory")).startswith("0 memories stored")
    off = _settings(tmp_path / "off", memory={"enabled": False})
    async with open_services(off, clock=clock, memory=True) as s:
        assert s.memory is None
        assert "Memory is off" in await s.commands.handle("/memory")


def test_settings_read_the_telegram_secrets_and_never_show_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("MY_HOOK_SECRET", HOOK_SECRET)
    settings = _settings(tmp_path, telegram={"operator_ids": [1], "webhook_secret_env": "MY_HOOK_SECRET"})
    telegram = settings.telegram
    assert telegram.bot_token is not None and telegram.bot_token.get_secret_value() == TOKEN
    assert telegram.webhook_secret is not None and telegram.webhook_secret.get_secret_value() == HOOK_SECRET
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump()), caplog.text):
        assert TOKEN not in shown and HOOK_SECRET not in shown
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    assert _settings(tmp_path).telegram.bot_token is None


async def test_doctor_reads_the_token_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    async with FakeTelegram(TOKEN) as fake:  # doctor asks Telegram (getMe) whether it accepts the token
        root = fake.base_url.removesuffix("/bot")
        given = _settings(tmp_path, telegram={"operator_ids": [7], "bot_token": TOKEN, "api_base_url": root})
        [telegram] = [c for c in await run_checks(given) if c["check"] == "telegram"]
    assert telegram["ok"] and "token set" in telegram["detail"] and TOKEN not in telegram["detail"]


def test_a_config_file_holding_a_telegram_secret_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(f'[telegram]\noperator_ids = [1]\nbot_token = "{TOKEN}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="secrets are never in the file") as raised:
        load_settings(config)
    assert TOKEN not in str(raised.value)


async def test_run_opens_memory_in_the_background_and_hands_it_over_once_open(tmp_path: Path) -> None:
    """`switchboard run` does not wait for LanceDB and the embedder: the engine runs at once on a LateMemory."""
    settings = _settings(tmp_path, engine={"shutdown_grace_s": 0})
    clock = FakeClock()
    backends = sim_backends(settings, clock)
    async with open_services(
        settings, clock=clock, engine=True, memory=True, pulse=True, backends=backends, wait_for_memory=False
    ) as s:
        assert isinstance(s.memory, LateMemory) and s.engine is not None and s.pulse is not None
        await asyncio.wait_for(s.memory.settled.wait(), timeout=120)
        assert isinstance(s.memory.hooks, MemoryHooks)
        assert s.memory.hooks.enqueue == s.engine.submit  # consolidation still runs as a job
        assert (await s.commands.handle("/memory")).startswith("0 memories stored")
        assert "pruned 0 old episode(s)" in await s.memory.maintain()


async def test_until_memory_is_open_jobs_get_no_memories_and_the_commands_say_so(tmp_path: Path) -> None:
    late = LateMemory()
    job = Job.model_validate(
        {
            "id": 1, "type": "analysis", "title": "t", "prompt": "p", "source": "operator", "priority": 2,
            "state": "running", "tier": 3, "run_after": 0.0, "max_attempts": 3, "max_revisions": 2,
            "created_at": 0.0, "updated_at": 0.0,
        }
    )
    assert await late.context_for(job) == JobContext()
    await late.job_finished(job)  # nothing to record it in: no error
    assert await late.maintain() == "memory not open yet"
    assert "not open yet" in await memory_commands(late)["memory"]("deploys")
    late.open(None)  # it could not open
    assert late.settled.is_set() and await late.maintain() == "memory unavailable"
