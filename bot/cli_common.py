"""What the ``switchboard`` commands share: a private data folder, the ``--json`` flag, printing one JSON
document or text, and opening a ``Control`` around one command: ``on_store`` for a command that only reads and
writes the database (run without an event loop), ``with_control`` for one that needs one (git, the network).

Used by ``bot.cli``, ``bot.cli_pulse`` and ``bot.cli_memory`` (which opens memory, not the store, and prints
its JSON on one line with non-ASCII text kept, so it keeps its own ``_emit``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # annotations only: `switchboard --help` builds the parser without loading the settings
    from engine.control import Control
    from engine.settings import Settings

PRIVATE_UMASK = 0o077
T = TypeVar("T")


def keep_data_private(home: Path) -> None:
    """Everything this process and its workers create is the operator's alone: folders 0700, files 0600.

    A umask, set once at the entry of every command (``run`` included), rather than a mode at each place a file
    is made: much of the data folder is written by code that takes no mode (SQLite's -wal and -shm, LanceDB's Rust
    writer under ``memory.lance``) or by the workers themselves (``result.md`` in their job folder), and the
    workers inherit the umask. A data folder made before this is tightened to 0700, which closes everything in it.
    """
    os.umask(PRIVATE_UMASK)
    if home.is_dir():
        with contextlib.suppress(OSError):  # not ours (a shared folder): leave it, the files inside are private
            home.chmod(0o700)


CONFIG_HELP = "path to switchboard.toml (default: $SWITCHBOARD_CONFIG or ./switchboard.toml)"
JSON_HELP = 'print one JSON document on stdout (errors too: {"error": ...})'
NO_JSON = frozenset({"run"})  # run prints no document: it runs until stopped
# A command: its help line, and what adds its arguments and actions to its parser (only when it is the one run).
CommandSpec = tuple[str, Callable[[argparse.ArgumentParser], None]]


def count_from_1_to(most: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from 1 to ``most``, refused with one line (however long the digits:
    Python will not convert more than 4,300 of them)."""

    def count(value: str) -> int:
        if not (value.isascii() and value.isdigit() and len(value) <= len(str(most)) and 1 <= int(value) <= most):
            raise argparse.ArgumentTypeError(f"{value[:24]!r} is not a count from 1 to {most}")
        return int(value)

    return count


def json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # SUPPRESS: a command's own default must not undo a --json given before it (``switchboard --json status``).
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    return parser


def global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--json`` accepted after every command and action too, not only before them."""
    for name, command in _subparsers(parser):
        if "--config" not in command._option_string_actions:
            command.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        if "--json" not in command._option_string_actions and name not in NO_JSON:
            json_flag(command)
        global_options_everywhere(command)


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every command and action below it."""
    return [parser, *(p for _, command in _subparsers(parser) for p in all_parsers(command))]


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    # argparse keeps no public handle on a parser's sub-commands
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(name, command) for group in groups for name, command in group.choices.items()]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as one JSON document with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)


async def with_control(settings: Settings, fn: Callable[[Control], Awaitable[int]]) -> int:
    """Open the services a command needs (the store; no engine), run ``fn`` on their ``Control``, close them
    whatever happens."""
    from bot.app import open_services

    async with open_services(settings) as services:
        return await fn(services.control)


def on_store(
    handler: Callable[[argparse.Namespace, Control], Awaitable[int]],
) -> Callable[[argparse.Namespace, Settings], int]:
    """A command that only reads and writes the database, run without an event loop: its store is blocking
    (each transaction in this thread, waiting for SQLite's lock here), so nothing it awaits ever suspends and
    ``run_blocking`` drives it to the end. Such a command does not load asyncio (6% of its start-up
    instructions, about 0.015 s).
    """

    @functools.wraps(handler)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        return run_blocking(_on_blocking_store(settings, lambda control: handler(args, control)))

    return run


async def _on_blocking_store(settings: Settings, fn: Callable[[Control], Awaitable[int]]) -> int:
    from engine.clock import SystemClock
    from engine.control import Control
    from engine.store import Store

    clock = SystemClock()
    store = await Store.open(settings.db_path, clock, blocking=True)
    try:
        return await fn(Control(settings, store, clock, None))
    finally:
        await store.close()


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end without an event loop. Only for one that never suspends: whatever it awaits
    finishes at once (the blocking store's calls do). One that would wait on a loop's future or timer is a
    programming error: it fails here, at once, rather than hang."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coroutine.close()
    raise RuntimeError("a command run without an event loop waited for something: run it with asyncio.run")
