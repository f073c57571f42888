"""The outbox sender against the fake Bot API over real HTTP: a send that timed out after the request went
out may have arrived, so it is marked uncertain, never sent twice, and counted in ``stats``; a failure before
anything was delivered is still retried."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import Bot
from telegram.request import HTTPXRequest

from bot import render
from bot.telegram.sender import OutboxSender
from engine.clock import FakeClock
from engine.models import NewOutbox
from engine.redaction import Redactor
from engine.settings import Settings
from engine.store import Store
from tests.fakes.fake_telegram import FakeTelegram

CHAT = 4242
READ_TIMEOUT_S = 0.2


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as running:
        yield running


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    request = HTTPXRequest(read_timeout=READ_TIMEOUT_S, connect_timeout=2.0)
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url, request=request) as real:
        yield real


async def _queue(store: Store, key: str, text: str) -> None:
    assert await store.add_outbox(NewOutbox(dedupe_key=key, kind="info", text=text, chat_id=CHAT))


async def test_a_send_that_timed_out_after_sending_is_not_sent_again_and_is_counted(
    settings: Settings, store: Store, clock: FakeClock, fake: FakeTelegram, bot: Bot
) -> None:
    sender = OutboxSender(settings, store, bot, clock)
    await _queue(store, "slow", "the answer came too late")
    fake.script_slow_answer("sendMessage", delay_s=READ_TIMEOUT_S + 0.3)
    assert await sender.drain_once() == 0  # the client gave up waiting for the answer ...
    assert [m.text for m in fake.messages_to(CHAT)] == ["the answer came too late"]  # ... but it arrived
    [row] = await store.outbox_all()
    assert row.state == "uncertain" and row.attempts == 1
    for _ in range(3):  # never sent again, however long one waits
        clock.advance(3600)
        assert await sender.drain_once() == 0
    assert len(fake.messages_to(CHAT)) == 1
    stats = await store.stats(since=0)
    assert stats.uncertain_sends == 1
    assert "uncertain sends 1 (timed out after sending" in render.stats_text(stats)


async def test_a_failure_before_delivery_is_still_retried(
    settings: Settings, store: Store, clock: FakeClock, fake: FakeTelegram, bot: Bot
) -> None:
    sender = OutboxSender(settings, store, bot, clock)
    await _queue(store, "bad-gateway", "try again")
    fake.script_error("sendMessage", 502, "Bad Gateway")
    assert await sender.drain_once() == 0 and fake.messages_to(CHAT) == []
    clock.advance(60)
    assert await sender.drain_once() == 1
    assert [m.text for m in fake.messages_to(CHAT)] == ["try again"]
    assert (await store.stats(since=0)).uncertain_sends == 0


async def test_rows_written_outside_the_engine_are_redacted_on_the_way_out(
    settings: Settings, store: Store, clock: FakeClock, fake: FakeTelegram, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pulse alert or a command answer is not a Completion: the sender is the last exit, and it redacts."""
    key = "sk-live-0123456789abcdefghijklmnop"
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", key)
    configured = settings.model_copy(
        update={"backends": [settings.backends[0].model_copy(update={"api_key_env": "SWITCHBOARD_TEST_KEY"})]}
    )
    sender = OutboxSender(configured, store, bot, clock, redactor=Redactor.from_settings(configured))
    token = "123456789:AAHfakeFAKEfake_tokenTOKEN-token0123456"
    await _queue(store, "alert", f"Backend said: invalid key {key}; bot {token}")
    assert await sender.drain_once() == 1
    [sent] = fake.messages_to(CHAT)
    assert key not in sent.text and token not in sent.text
    assert sent.text.startswith("Backend said: invalid key ***")
