"""The console channel: with no Telegram token, the same persona and commands on stdin/stdout.

At a terminal it shows a prompt, warns when a line reached the terminal's own line limit (a terminal in
canonical mode hands over at most 4,095 bytes of one line and drops the rest), and says what happens when
input closes (Ctrl-D): it stops reading but keeps running and printing notifications.
"""

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
PROMPT = "you> "
TTY_LINE_LIMIT_BYTES = 4095
LINE_LIMIT_NOTE = (
    "That line reached the terminal's limit of 4,095 characters, so it was probably cut there. For longer "
    'text: switchboard jobs add "$(cat FILE)", or send it in parts.'
)
EOF_NOTE = (
    "switchboard: input closed (Ctrl-D): no more commands from here; still running and printing notifications. "
    "Stop with Ctrl-C."
)


class ConsoleChannel:
    def __init__(self, services: Services, *, read_stdin: bool = True, interactive: bool | None = None) -> None:
        self._control = services.control
        self._redact = services.redactor
        self._commands = services.commands
        self._read_stdin = read_stdin
        # A terminal (default: whether stdin is one) gets the prompt and the line-limit warning.
        self._interactive = interactive

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        reading = self._read_stdin and sys.stdin is not None and not sys.stdin.closed
        if self._interactive is None:
            self._interactive = reading and sys.stdin.isatty()
        prompt = PROMPT if self._interactive else None
        tasks = [asyncio.create_task(deliver_to_console(self._control.store, stop, self._redact, prompt=prompt))]
        if reading:
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
            if self._interactive:
                print(PROMPT, end="", flush=True)
            line = await lines.get()
            if not line:  # EOF: keep running for notifications, stop reading
                print(("\n" if self._interactive else "") + EOF_NOTE, file=sys.stderr, flush=True)
                return
            if self._interactive and len(line.rstrip("\n").encode()) >= TTY_LINE_LIMIT_BYTES:
                print(LINE_LIMIT_NOTE, flush=True)
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
    store: Store, stop: asyncio.Event, redact: Callable[[str], str], poll_s: float = 0.2, prompt: str | None = None
) -> None:
    """Print every due outbox message once (through the redactor: the last exit) and mark it sent (then the
    prompt again, at a terminal)."""
    while not stop.is_set():
        due = await store.outbox_due(limit=50)
        for message in due:
            print(f"\n{redact(message.text)}\n", flush=True)
            await store.outbox_mark_sent(message.id, None)
        if due and prompt:
            print(prompt, end="", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
        except TimeoutError:
            pass
