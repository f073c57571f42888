"""What the ``switchboard`` commands share: the ``--json`` flag, printing one JSON document or text, and
opening the services (``bot.app.open_services``: the store and a ``Control``) around one command.

Used by ``bot.cli`` and ``bot.cli_pulse``. (``bot.cli_memory`` opens memory, not the store, and prints its
JSON on one line with non-ASCII text kept, so it keeps its own.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from engine.control import Control
from engine.settings import Settings


def json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as one JSON document with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)


async def with_control(settings: Settings, fn: Callable[[Control], Awaitable[int]]) -> int:
    """Open the services a command needs (the store; no engine), run ``fn`` on their ``Control``, close them
    whatever happens."""
    from bot.app import open_services

    async with open_services(settings) as services:
        return await fn(services.control)
