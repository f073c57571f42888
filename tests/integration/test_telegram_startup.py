"""Starting the Telegram channel: a rejected token is a clear, fatal error; an unreachable server is retried."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import open_services
from bot.telegram import ChannelRefused, TelegramChannel
from engine.clock import FakeClock
from engine.settings import Settings, default_sim_backends
from tests.conftest import instant
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.scenario import wait_for

OPERATOR = 4242


@contextlib.asynccontextmanager
async def _channel(tmp_path: Path, clock: FakeClock, fake: FakeTelegram, token: str) -> AsyncIterator[TelegramChannel]:
    settings = Settings(
        home=tmp_path / "home",
        backends=instant(default_sim_backends()),
        telegram={"operator_ids": [OPERATOR], "bot_token": token},
    )
    async with open_services(settings, clock=clock) as services:
        yield TelegramChannel(
            services,
            request=fake.request(),
            get_updates_request=fake.request(),
            limiter_retries=0,
            poll_timeout_s=0.2,
        )


async def test_a_rejected_token_stops_with_a_clear_message(tmp_path: Path, clock: FakeClock) -> None:
    async with FakeTelegram(http=False) as fake:
        async with _channel(tmp_path, clock, fake, "123456:not-the-bot-token") as channel:
            with pytest.raises(ChannelRefused, match="rejected the bot token"):
                await asyncio.wait_for(channel.run(asyncio.Event()), 5)


async def test_an_unreachable_telegram_is_retried_until_it_answers(tmp_path: Path, clock: FakeClock) -> None:
    async with FakeTelegram(http=False) as fake:
        fake.script_error("getMe", 502, "Bad Gateway", times=2)
        async with _channel(tmp_path, clock, fake, fake.token) as channel:
            stop = asyncio.Event()
            task = asyncio.create_task(channel.run(stop))
            try:
                await fake.wait_for_calls("getMe", 1)
                await wait_for(lambda: asyncio.sleep(0, clock.sleepers == 1), 30, "the channel's backoff sleep")
                assert fake.calls["getMe"] == 1 and fake.calls["getUpdates"] == 0  # waiting 1 s of fake time
                clock.advance(1.0)
                await fake.wait_for_calls("getMe", 2)
                clock.advance(2.0)  # the backoff doubles
                await fake.wait_for_calls("getUpdates", 1)  # up and polling
                assert fake.calls["getMe"] == 3
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
