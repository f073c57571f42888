"""The console reads operator text through the same normalisation as Telegram: invisible characters removed,
a cut stated."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from bot.app import open_services
from bot.console import CONSOLE_CHAT_ID, ConsoleChannel
from engine.clock import FakeClock
from engine.settings import Settings


async def test_console_text_is_cleaned_and_a_cut_is_stated(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    long_text = "z" * 20_500
    monkeypatch.setattr("sys.stdin", io.StringIO(f"research\u202e the\x00 logs\u200b\n{long_text}\n"))
    settings = Settings(home=tmp_path / "home")
    stop = asyncio.Event()
    async with open_services(settings, clock=clock) as services:
        store = services.store
        task = asyncio.create_task(ConsoleChannel(services).run(stop))
        try:
            for _ in range(200):
                if len(await store.recent_messages(CONSOLE_CHAT_ID)) == 2:
                    break
                await asyncio.sleep(0.01)
            texts = [m.text for m in await store.recent_messages(CONSOLE_CHAT_ID)]
            assert texts == ["research the logs", long_text[:20_000]]
            assert "Your message was 20,500 characters; I read only the first 20,000." in capsys.readouterr().out
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
