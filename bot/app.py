"""The composition root: build settings, store, backends, memory, engine and channels; run; shut down.

Everything is opened here, in order, and closed in reverse. Nothing else constructs services.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bot.commands import CommandRouter
from bot.console import ConsoleChannel
from bot.memory_commands import memory_commands
from engine.backends.base import Backend
from engine.backends.registry import build_backend
from engine.clock import Clock, SystemClock
from engine.control import Control
from engine.pulse import Pulse, PulseTrigger
from engine.redaction import Redactor, redacting_logs
from engine.runner import EngineHooks, NoHooks
from engine.scheduler import Engine
from engine.settings import Settings
from engine.store import Store, StoreError

log = logging.getLogger("switchboard")


class AlreadyRunning(Exception):
    pass


@contextlib.contextmanager
def engine_lock(home: Path):  # type: ignore[no-untyped-def]
    """One engine per data folder: the orphan sweep at start relies on it."""
    home.mkdir(parents=True, exist_ok=True)
    handle = open(home / "engine.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(f"another switchboard is already running on {home}") from None
    try:
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.asynccontextmanager
async def open_memory(settings: Settings, clock: Clock) -> AsyncIterator[EngineHooks]:
    """Memory is helpful, never required: if it cannot open, the engine runs without it and says so."""
    if not settings.memory.enabled:
        yield NoHooks()
        return
    try:
        from engine.memory_link import MemoryHooks
        from memory import CoreMemory, SemanticMemory
        from memory.embedders import build_embedder

        key = os.environ.get(settings.memory.embedder_api_key_env or "") or None
        embedder = build_embedder(settings.memory, api_key=key)
        semantic = await SemanticMemory.open(settings.home, embedder, settings.memory, now=clock.now)
        core = CoreMemory(settings.home, settings.memory.core_max_bytes, now=clock.now)
    except Exception as exc:
        log.warning("memory unavailable, running without it: %s", exc)
        yield NoHooks()
        return
    try:
        yield MemoryHooks(core, semantic, settings.memory.context_budget_bytes, settings=settings)
    finally:
        await semantic.close()


def build_backends(settings: Settings, clock: Clock) -> dict[str, Backend]:
    return {config.name: build_backend(config, clock=clock) for config in settings.backends}


async def run_switchboard(settings: Settings, *, console: bool = True, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the bot token in URLs
    if os.environ.get("TELEGRAM_BOT_TOKEN"):
        from bot.telegram_channel import refusal

        problem = refusal(settings)
        if problem:  # fail closed, before anything is opened
            print(f"switchboard: {problem}", file=sys.stderr)
            return 1
    from bot.telegram import ChannelRefused

    try:
        redactor = Redactor.from_settings(settings)  # one redactor for every exit: the engine's and the logs'
        with engine_lock(settings.home), redacting_logs(redactor):
            return await _serve(settings, clock, console, redactor)
    except (AlreadyRunning, StoreError, ChannelRefused) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: Settings, clock: Clock, console: bool, redactor: Redactor) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = await Store.open(settings.db_path, clock)
    backends = build_backends(settings, clock)
    try:
        async with open_memory(settings, clock) as hooks:
            engine = Engine(settings, store, backends, clock, hooks=hooks, redactor=redactor)
            if hasattr(hooks, "enqueue"):  # memory's consolidation runs as an ordinary job
                hooks.enqueue = engine.submit
            await engine.start()
            # The pulse and schedules: APScheduler triggers ticks; what is due is decided from the database.
            maintain = getattr(hooks, "maintain", None)  # memory upkeep, when memory is open
            pulse = PulseTrigger(Pulse(settings, store, clock, backends, maintain_memory=maintain, wake=engine.wake))
            pulse.start()
            control = Control(settings, store, clock, engine)
            _announce(settings)
            try:
                await _run_channel(settings, control, stop, console, hooks, clock)
            finally:
                await pulse.shutdown()
                await engine.stop()
    finally:
        for backend in backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
        await store.close()
    print("switchboard: stopped cleanly", file=sys.stderr, flush=True)
    return 0


async def _run_channel(
    settings: Settings, control: Control, stop: asyncio.Event, console: bool, hooks: EngineHooks, clock: Clock
) -> None:
    commands = CommandRouter(control, extra=memory_commands(hooks))
    token = os.environ.get("TELEGRAM_BOT_TOKEN")
    if token:
        from bot.telegram_channel import TelegramChannel

        channel = TelegramChannel(settings, control, commands, token, clock=clock)
        await channel.run(stop)
        return
    await ConsoleChannel(control, commands, read_stdin=console).run(stop)


def _announce(settings: Settings) -> None:
    names = ", ".join(b.name for b in settings.backends)
    if settings.simulated_only:
        print(
            f"switchboard: running on SIMULATED backends ({names}); no real model is called. "
            "Configure [[backends]] in switchboard.toml to use real ones.",
            file=sys.stderr,
            flush=True,
        )
    elif settings.backends_detected:
        families = sorted({b.family for b in settings.backends})
        print(
            f"switchboard: no [[backends]] configured; detected {names}. "
            + ("" if len(families) > 1 else "Only one model family: reviewed jobs wait for a reviewer of another. "),
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"switchboard: running with backends {names}", file=sys.stderr, flush=True)
    channel = (
        f"Telegram channel for operators {settings.telegram.operator_ids}"
        if os.environ.get("TELEGRAM_BOT_TOKEN")
        else "console channel: type a message or /help"
    )
    print(f"switchboard: data in {settings.home}; {channel}", file=sys.stderr, flush=True)
