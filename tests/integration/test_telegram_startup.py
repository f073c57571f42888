"""Starting the Telegram channel: a rejected token is a clear, fatal error; an unreachable server is retried."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot import render
from bot.app import open_services
from bot.telegram import ChannelRefused, TelegramChannel
from engine.clock import FakeClock
from engine.control import CHANNEL_PROBLEM_KEY, Control
from engine.loop import ALIVE_KEY
from engine.settings import Settings, default_sim_backends
from tests.conftest import instant
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.scenario import wait_for

OPERATOR = 4242
Eventually = Callable[..., Awaitable[Any]]


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


@pytest.mark.parametrize("token", ["123456:not-the-bot-token", "123456789:AAHnotTheBotTokenButWellFormed_abcdefgh"])
async def test_a_rejected_token_stops_with_a_clear_message(tmp_path: Path, clock: FakeClock, token: str) -> None:
    async with FakeTelegram(http=False) as fake:
        async with _channel(tmp_path, clock, fake, token) as channel:
            with pytest.raises(ChannelRefused, match="rejected the bot token in TELEGRAM_BOT_TOKEN") as refused:
                await asyncio.wait_for(channel.run(asyncio.Event()), 5)
    assert token not in str(refused.value) and token.split(":")[1] not in str(refused.value)  # issue 12


async def test_an_unreachable_telegram_is_said_once_a_minute_and_shown_in_status(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, eventually: Eventually
) -> None:
    async with FakeTelegram(http=False) as fake:
        fake.script_error("getMe", 502, "Bad Gateway", times=9)
        async with _channel(tmp_path, clock, fake, fake.token) as channel:
            store = channel._store
            control = Control(channel._settings, store, clock)
            await store.kv_set_if_changed(ALIVE_KEY, f"{clock.now():.0f} test-engine")  # as a running engine does
            stop = asyncio.Event()
            task = asyncio.create_task(channel.run(stop))
            try:
                for attempt, delay_s in enumerate([1, 2, 4, 8, 16, 32, 60, 60, 60], start=1):
                    await fake.wait_for_calls("getMe", attempt)
                    if attempt in (1, 7, 8, 9):  # at 0, 63, 123 and 183 s: a minute or more since the last word

                        async def said(now: float = clock.now()) -> bool:
                            return (await store.kv_get(CHANNEL_PROBLEM_KEY) or "").startswith(f"{now:.0f} ")

                        await eventually(said)
                    if attempt == 1:
                        text = render.status_text(await control.status())
                        assert "Channel: Telegram is unreachable" in text and fake.token not in text
                    await asyncio.sleep(0.05)  # the channel is now waiting on the fake clock
                    clock.advance(delay_s)
                await fake.wait_for_calls("getUpdates", 1)  # up at last
                assert (await store.kv_get(CHANNEL_PROBLEM_KEY)) == ""  # cleared once it answered
                assert "Channel:" not in render.status_text(await control.status())
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
    warnings = [r for r in caplog.records if "Telegram is unreachable" in r.getMessage()]
    assert len(warnings) == 4  # nine failures over 243 s of fake time, said at most once a minute
    assert fake.token not in caplog.text


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
