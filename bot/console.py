"""The console channel: with no Telegram token, the same persona and commands on stdin/stdout."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable

from bot.services import Services
from engine.store import Store
from engine.text import clip

log = logging.getLogger(__name__)
CONSOLE_CHAT_ID = 0


class ConsoleChannel:
    def __init__(self, services: Services, *, read_stdin: bool = True) -> None:
        self._control = services.control
        self._redact = services.redactor
        self._commands = services.commands
        self._read_stdin = read_stdin

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        tasks = [asyncio.create_task(deliver_to_console(self._control.store, stop, self._redact))]
        if self._read_stdin and sys.stdin is not None and not sys.stdin.closed:
            tasks.append(asyncio.create_task(self._read(stop)))
        if ready is not None:
            ready()
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def pump() -> None:
            # A daemon thread: a blocked readline must never hold up shutdown.
            for raw in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, raw)
            loop.call_soon_threadsafe(lines.put_nowait, "")

        threading.Thread(target=pump, name="console-stdin", daemon=True).start()
        while not stop.is_set():
            line = await lines.get()
            if not line:  # EOF: keep running for notifications, stop reading
                return
            text, cut = clip(line.strip())
            if not text:
                continue
            if cut:
                print(cut, flush=True)
            if text.startswith("/"):
                print(await self._commands.handle(text), flush=True)
                continue
            job = await self._control.chat(CONSOLE_CHAT_ID, text)
            print(f"… (#{job.id if job else '?'})", flush=True)


async def deliver_to_console(
    store: Store, stop: asyncio.Event, redact: Callable[[str], str], poll_s: float = 0.2
) -> None:
    """Print every due outbox message once (through the redactor: the last exit) and mark it sent."""
    while not stop.is_set():
        for message in await store.outbox_due(limit=50):
            print(f"\n{redact(message.text)}\n", flush=True)
            await store.outbox_mark_sent(message.id, None)
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
        except TimeoutError:
            pass
