"""Webhook mode, over real HTTP on 127.0.0.1: updates arrive only on the registered path and only with Telegram's
secret token; a large body is refused before it is read, a malformed one with a 400, and no body is ever logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.app import open_services
from bot.telegram import TelegramChannel
from bot.telegram.webhook import MAX_BODY_BYTES
from engine.clock import FakeClock
from engine.settings import Settings, default_sim_backends
from engine.store import Store
from tests.conftest import instant
from tests.fakes.fake_telegram import FakeTelegram

OPERATOR = 4242
SECRET = "s3cret-token_for-webhooks"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Hook:
    fake: FakeTelegram
    store: Store
    client: httpx.AsyncClient

    async def jobs_after(self, count: int) -> list[str]:
        for _ in range(100):
            jobs = await self.store.list_jobs()
            if len(jobs) >= count:
                break
            await asyncio.sleep(0.02)
        return [j.prompt for j in jobs]


@pytest.fixture
async def hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> AsyncIterator[Hook]:
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
        await fake.wait_for_calls("setWebhook", 1)  # the server listens before the webhook is registered
        assert fake.webhook["url"] == "https://bot.example.org/hook"
        assert fake.calls["getUpdates"] == 0  # no polling in webhook mode
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield Hook(fake, store, client)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await stack.aclose()
        await fake.aclose()


async def test_updates_arrive_on_the_registered_path_with_the_secret_token(hook: Hook) -> None:
    update = hook.fake.operator_sends_text(OPERATOR, OPERATOR, "research webhooks")
    forged = await hook.client.post("/hook", json=update)
    wrong = await hook.client.post("/hook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
    assert forged.status_code == 403 and wrong.status_code == 403
    elsewhere = await hook.client.post("/", json=update, headers=HEADERS)
    assert elsewhere.status_code == 404, "only the path given to setWebhook is served"
    # Updates are handled one at a time, in order: once a later genuine /status is answered, anything let in
    # before it would have been handled.
    status = hook.fake.sends_command(OPERATOR, OPERATOR, "status")
    assert (await hook.client.post("/hook", json=status, headers=HEADERS)).status_code == 200
    await hook.fake.wait_for_messages(OPERATOR, 1)
    assert await hook.store.list_jobs() == []  # nothing got in without the secret, or on another path

    ok = await hook.client.post("/hook", json=update, headers=HEADERS)
    assert ok.status_code == 200
    assert await hook.jobs_after(1) == ["research webhooks"]


async def _raw_post(port: int, headers: dict[str, str], body: bytes) -> str:
    """POST by hand: send the head and ``body`` (which may be only the start of what the head declares), then
    read the status line. A server that waits for the whole declared body never answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "localhost", **HEADERS, **headers}.items())
    writer.write(f"POST /hook HTTP/1.1\r\n{head}\r\n".encode() + body)
    await writer.drain()
    try:
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()


async def test_a_large_body_is_refused_before_it_is_read(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    port = int(str(hook.client.base_url).rsplit(":", 1)[1].rstrip("/"))
    fifty_mb = str(50 * 1024 * 1024)
    declared = await _raw_post(port, {"Content-Type": "application/json", "Content-Length": fifty_mb}, b"{")
    assert declared.startswith("HTTP/1.1 413"), declared  # answered after one byte of 50 MB

    size = MAX_BODY_BYTES + 1
    chunk = f"{size:x}\r\n".encode() + b" " * size + b"\r\n"
    chunked = await _raw_post(port, {"Transfer-Encoding": "chunked"}, chunk)  # no length given: cut at the limit
    assert chunked.startswith("HTTP/1.1 413"), chunked

    update = hook.fake.operator_sends_text(OPERATOR, OPERATOR, "still served")
    assert (await hook.client.post("/hook", json=update, headers=HEADERS)).status_code == 200
    assert await hook.jobs_after(1) == ["still served"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_malformed_bodies_get_a_400_and_are_never_logged(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    marker = "PRIVATE-CONTENT-4711"
    bodies = [
        b"{not json " + marker.encode(),
        json.dumps([{"update_id": 1, "message": {"text": marker}}]).encode(),  # an array, not an object
        json.dumps(marker).encode(),
        b"\xff\xfe" + marker.encode(),
        json.dumps({"update_id": "x", "message": marker}).encode(),  # an object, not an update
    ]
    for body in bodies:
        answer = await hook.client.post("/hook", content=body, headers={**HEADERS, "Content-Type": "application/json"})
        assert answer.status_code == 400, body
    assert await hook.store.list_jobs() == []
    assert marker not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert caplog.text.count("webhook: refused") == len(bodies)
