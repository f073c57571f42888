"""The composition root: open the services (store, backends, memory, engine, pulse, control, commands) into one
typed ``Services``, run a channel on them, shut down.

``open_services`` is the one place that builds them, in one ``AsyncExitStack``: opened in order, closed in
reverse. ``switchboard run``, the CLI commands that need an event loop, the console and the tests build them
through it; a CLI command that only touches the database opens a blocking store and a ``Control`` on it, with no
loop (``bot.cli_common.on_store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bot.services import Services
from engine.clock import Clock, SystemClock
from engine.control import Control
from engine.errors import AlreadyRunning, SandboxUnavailable
from engine.redaction import Redactor, redacting_logs
from engine.settings import Settings
from engine.store import Store, StoreError

# The engine's, the backends' and the pulse's modules (httpx, the gates, APScheduler) are imported where they are
# opened: the CLI's commands open the store alone and should not pay for them.
if TYPE_CHECKING:
    from bot.commands import CommandRouter
    from bot.console import ConsoleChannel
    from bot.telegram import TelegramChannel
    from engine.backends.base import Backend
    from engine.late_memory import LateMemory
    from engine.loop import Engine
    from engine.memory_link import MemoryHooks
    from engine.pulse import PulseTrigger
    from engine.runner import EngineHooks
    from engine.sandbox import Sandbox
    from memory.embedders import Embedder

log = logging.getLogger("switchboard")


@contextlib.contextmanager
def engine_lock(home: Path) -> Iterator[None]:
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
async def open_memory(settings: Settings, clock: Clock) -> AsyncIterator[MemoryHooks | None]:
    """Memory is helpful, never required: if it cannot open, the engine runs without it (None) and says so."""
    if not settings.memory.enabled:
        yield None
        return
    try:
        # Importing LanceDB and pyarrow and loading the embedder's model take seconds of CPU: in a thread, so that
        # an engine and a channel started beside it (``switchboard run``) keep answering meanwhile.
        embedder = await asyncio.to_thread(_load_memory, settings)
        from engine.memory_link import MemoryHooks
        from memory.core import CoreMemory
        from memory.semantic import SemanticMemory

        semantic = await SemanticMemory.open(settings.home, embedder, settings.memory, now=clock.now)
        core = CoreMemory(settings.home, settings.memory.core_max_bytes, now=clock.now)
    except Exception as exc:
        log.warning("memory unavailable, running without it: %s", exc)
        yield None
        return
    try:
        yield MemoryHooks(core, semantic, settings.memory.context_budget_bytes, settings=settings)
    finally:
        await semantic.close()
        await embedder.aclose()  # the OpenAI-compatible embedder holds an httpx client


def _load_memory(settings: Settings) -> Embedder:
    """Run in a thread: import memory's modules (LanceDB, pyarrow) and build the embedder (its model loads)."""
    import engine.memory_link  # noqa: F401  (seconds of import, kept off the event loop; open_memory uses it)
    from memory.embedders import build_embedder

    key = os.environ.get(settings.memory.embedder_api_key_env or "") or None
    return build_embedder(settings.memory, api_key=key)


@contextlib.asynccontextmanager
async def open_memory_late(settings: Settings, clock: Clock, late: LateMemory) -> AsyncIterator[None]:
    """Open memory in a task beside whatever starts next, into ``late``; close it (or stop opening it) on exit."""
    async with contextlib.AsyncExitStack() as stack:

        async def opening() -> None:
            try:
                late.open(await stack.enter_async_context(open_memory(settings, clock)))
            finally:
                late.settled.set()
            if late.hooks is not None:
                log.info("memory open")

        task = asyncio.create_task(opening(), name="memory-open")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_backends(settings: Settings, clock: Clock, sandbox: Sandbox | None = None) -> dict[str, Backend]:
    from engine.backends.registry import build_backend
    from engine.sandbox import Sandbox

    sandbox = sandbox or Sandbox.for_settings(settings)
    return {config.name: build_backend(config, clock=clock, sandbox=sandbox) for config in settings.backends}


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: bool = False,
    memory: bool = False,
    pulse: bool = False,
    backends: dict[str, Backend] | None = None,
    redactor: Redactor | None = None,
    wait_for_memory: bool = True,
) -> AsyncIterator[Services]:
    """Open what an entry point needs, in order, and close it in reverse: store, backends, memory, engine,
    pulse. The CLI asks for the store alone; ``switchboard run`` for everything; tests for what they exercise.
    ``backends`` (default: built from the settings) are closed with the rest. ``redactor`` (default: built from
    the settings) is the one for every exit: the engine's backends and completions, the pulse's credential
    checks, and what the channels send.

    With ``wait_for_memory=False`` (``switchboard run``) memory opens in the background while the engine, the
    pulse and the channel start, and they reach it through a ``LateMemory`` once it is open: being ready does not
    wait seconds for LanceDB and the embedder's model; the jobs started meanwhile get no memories."""
    clock = clock or SystemClock()
    redactor = redactor or Redactor.from_settings(settings)
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(settings.db_path, clock)
        stack.push_async_callback(store.close)
        if backends is None:
            backends = build_backends(settings, clock) if engine or pulse else {}
        stack.push_async_callback(_close_backends, backends)
        hooks: MemoryHooks | LateMemory | None = None
        if memory and settings.memory.enabled and not wait_for_memory:
            from engine.late_memory import LateMemory

            hooks = LateMemory()
            await stack.enter_async_context(open_memory_late(settings, clock, hooks))
        elif memory:
            hooks = await stack.enter_async_context(open_memory(settings, clock))
        running = await _start_engine(stack, settings, store, backends, clock, hooks, redactor) if engine else None
        trigger: PulseTrigger | None = None
        if pulse:
            # The pulse and schedules: APScheduler triggers ticks; what is due is decided from the database.
            from engine.pulse import Pulse, PulseTrigger

            maintain = hooks.maintain if hooks is not None else None  # memory upkeep, when memory is open
            wake = running.wake if running is not None else None
            checked: dict[str, Backend] = {name: redactor.backend(backend) for name, backend in backends.items()}
            trigger = PulseTrigger(Pulse(settings, store, clock, checked, maintain_memory=maintain, wake=wake))
            trigger.start()
            stack.push_async_callback(trigger.shutdown)
        control = Control(settings, store, clock, running)

        def make_commands() -> CommandRouter:
            from bot.commands import CommandRouter
            from bot.memory_commands import memory_commands
            from engine.persona_actions import PersonaActions

            memory_verbs = memory_commands(hooks)
            actions = PersonaActions(control, memory_verbs)  # the persona's verbs: Control, as the commands
            if running is not None:
                running.use_persona_actions(actions)
            return CommandRouter(control, extra={**memory_verbs, **actions.commands()})

        services = Services(settings, clock, store, backends, hooks, running, trigger, control, redactor, make_commands)
        if running is not None:
            services.commands  # noqa: B018 - built now: the engine's persona turns act through these verbs
        yield services


async def _start_engine(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    store: Store,
    backends: dict[str, Backend],
    clock: Clock,
    hooks: MemoryHooks | LateMemory | None,
    redactor: Redactor,
) -> Engine:
    from engine.loop import Engine
    from engine.runner import NoHooks

    engine_hooks: EngineHooks = hooks if hooks is not None else NoHooks()
    running = Engine(settings, store, backends, clock, hooks=engine_hooks, redactor=redactor)
    if hooks is not None:  # memory's consolidation runs as an ordinary job; episodes follow the store's events
        hooks.enqueue = running.submit
        hooks.store = store
    await running.start()
    stack.push_async_callback(running.stop)
    return running


async def _close_backends(backends: dict[str, Backend]) -> None:
    for backend in backends.values():
        try:
            await backend.aclose()
        except Exception:  # closing at shutdown: nothing left to do about it
            log.debug("closing a backend failed", exc_info=True)


async def run_switchboard(settings: Settings, *, console: bool = True, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the bot token in URLs
    from bot.telegram import ChannelRefused, refusal

    problem = refusal(settings) if settings.telegram.bot_token else None
    if problem:  # fail closed, before anything is opened
        print(f"switchboard: {problem}", file=sys.stderr)
        return 1
    try:
        redactor = Redactor.from_settings(settings)  # one redactor for every exit: the engine's and the logs'
        with engine_lock(settings.home), redacting_logs(redactor):
            return await _serve(settings, clock, console, redactor)
    except (AlreadyRunning, StoreError, ChannelRefused, SandboxUnavailable) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: Settings, clock: Clock, console: bool, redactor: Redactor) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from engine.sandbox import Sandbox

    sandbox = Sandbox.for_settings(settings)  # before anything is opened: "bwrap" without it refuses to start
    backends = build_backends(settings, clock, sandbox)
    async with open_services(
        settings,
        clock=clock,
        engine=True,
        memory=True,
        pulse=True,
        backends=backends,
        redactor=redactor,
        wait_for_memory=False,
    ) as services:
        _announce(settings)
        print(f"switchboard: worker sandbox: {sandbox.describe()}", file=sys.stderr, flush=True)
        channel = build_channel(services, read_stdin=console)
        await channel.run(stop, ready=lambda: _ready(channel))
    print("switchboard: stopped cleanly", file=sys.stderr, flush=True)
    return 0


def build_channel(services: Services, *, read_stdin: bool = True) -> TelegramChannel | ConsoleChannel:
    """Telegram when the settings hold a bot token, else the console."""
    if services.settings.telegram.bot_token:
        from bot.telegram import TelegramChannel

        return TelegramChannel(services)
    from bot.console import ConsoleChannel

    return ConsoleChannel(services, read_stdin=read_stdin)


def _ready(channel: TelegramChannel | ConsoleChannel) -> None:
    """One line on stdout once the engine runs and the channel is up: what scripts and tests wait for."""
    from bot.console import ConsoleChannel

    kind = "console" if isinstance(channel, ConsoleChannel) else "Telegram"
    print(f"switchboard ready: engine running, {kind} channel up (pid {os.getpid()})", flush=True)


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
        if settings.telegram.bot_token
        else "console channel: type a message or /help"
    )
    print(f"switchboard: data in {settings.home}; {channel}", file=sys.stderr, flush=True)
