"""Webhook mode: updates arrive over HTTP only with Telegram's secret token; anything else is refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import httpx
import pytest

from bot.app import open_services
from bot.telegram import TelegramChannel
from engine.clock import FakeClock
from engine.settings import Settings, default_sim_backends
from tests.conftest import instant
from tests.fakes.fake_telegram import FakeTelegram

OPERATOR = 4242
SECRET = "s3cret-token_for-webhooks"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_needs_the_secret_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)  # read by Settings itself
    stack = contextlib.AsyncExitStack()
    port = _free_port()
    fake = FakeTelegram(http=False)
    settings = Settings(
        home=tmp_path / "home",
        backends=instant(default_sim_backends()),
        telegram={
            "operator_ids": [OPERATOR],
            "webhook_url": "https://bot.example.org/hook",
            "webhook_listen": "127.0.0.1",
            "webhook_port": port,
            "bot_token": fake.token,
        },
    )
    services = await stack.enter_async_context(open_services(settings, clock=clock))
    store = services.store
    channel = TelegramChannel(
        services,
        request=fake.request(),
        get_updates_request=fake.request(),
        limiter_retries=0,
        sender_poll_s=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(channel.run(stop))
    try:
        await fake.wait_for_calls("setWebhook", 1)
        assert fake.webhook is not None
        assert fake.calls["getUpdates"] == 0  # no polling in webhook mode
        update = fake.operator_sends_text(OPERATOR, OPERATOR, "research webhooks")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(50):  # the webhook server starts right after setWebhook
                try:
                    forged = await client.post("/", json=update)
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            wrong = await client.post("/", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            assert forged.status_code == 403 and wrong.status_code == 403
            await asyncio.sleep(0.1)
            assert await store.list_jobs() == []  # nothing got in without the secret

            ok = await client.post("/", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            assert ok.status_code == 200
        for _ in range(100):
            jobs = await store.list_jobs()
            if jobs:
                break
            await asyncio.sleep(0.02)
        assert [(j.type, j.prompt) for j in jobs] == [("chat", "research webhooks")]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await stack.aclose()
        await fake.aclose()
