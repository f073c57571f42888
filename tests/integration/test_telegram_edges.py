"""The Telegram edges, over real HTTP against the spec-checked fake Bot API: which chats are served, and ids
that do not fit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.commands import CommandRouter
from bot.telegram import TelegramChannel
from engine.clock import FakeClock
from engine.control import Control
from engine.settings import Settings, default_sim_backends
from engine.store import Store
from tests.conftest import instant
from tests.fakes.fake_telegram import FakeTelegram

OPERATOR = 4242
GROUP = -100123


@dataclass
class Rig:
    fake: FakeTelegram
    store: Store
    control: Control


@pytest.fixture
async def make_rig(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    cleanups: list[Callable[[], Any]] = []

    async def make(**telegram: Any) -> Rig:
        fake = FakeTelegram()
        base_url = await fake.start_http()
        settings = Settings(
            home=tmp_path / "home",
            backends=instant(default_sim_backends()),
            telegram={"operator_ids": [OPERATOR], "api_base_url": base_url.removesuffix("/bot"), **telegram},
        )
        store = await Store.open(settings.db_path, clock)
        control = Control(settings, store, clock)
        channel = TelegramChannel(
            settings, control, CommandRouter(control), fake.token, clock=clock, limiter_retries=0,
            poll_timeout_s=0.5, sender_poll_s=0.01, live_tick_s=0.05,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))
        await fake.wait_for_calls("getUpdates", 1)

        async def cleanup() -> None:
            stop.set()
            await asyncio.wait_for(task, 10)
            await store.close()
            await fake.aclose()

        cleanups.append(cleanup)
        return Rig(fake, store, control)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


# ---- which chats are served ---------------------------------------------------------------------------


async def test_the_operator_in_a_group_is_not_answered_there(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    rig.fake.sends_command(OPERATOR, GROUP, "status")
    rig.fake.operator_sends_text(OPERATOR, GROUP, "research something for the group")
    await rig.fake.wait_for_delivery()
    await rig.fake.assert_silent(GROUP, during_s=0.3)
    assert await rig.store.list_jobs() == [], "nothing said in a group became a job"
    assert await rig.store.outbox_all() == []

    rig.fake.sends_command(OPERATOR, OPERATOR, "status")  # the private chat is served as before
    [reply] = await rig.fake.wait_for_messages(OPERATOR, 1)
    assert "slots" in reply.text.lower()


async def test_a_group_named_in_allowed_chats_is_served(make_rig: Any) -> None:
    rig: Rig = await make_rig(allowed_chats=[GROUP])
    rig.fake.sends_command(OPERATOR, GROUP, "status")
    [reply] = await rig.fake.wait_for_messages(GROUP, 1)
    assert "slots" in reply.text.lower()
    other = GROUP - 1
    rig.fake.sends_command(OPERATOR, other, "status")  # another group still is not
    await rig.fake.wait_for_delivery()
    await rig.fake.assert_silent(other, during_s=0.3)
