"""``Services``: the typed container every entry point works through (run, the CLI, the console, Telegram, tests).

Built in one place, ``bot.app.open_services``, inside one ``AsyncExitStack`` that closes everything in reverse
(a CLI command that only touches the database needs none of it: ``bot.cli_common.on_store`` gives it a ``Control``).
Channels and handlers take it whole and reach services by attribute, never by string key or by probing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # memory_link imports the vector store; only the composition root opens it
    from bot.commands import CommandRouter
    from engine.backends.base import Backend
    from engine.clock import Clock
    from engine.control import Control
    from engine.late_memory import LateMemory
    from engine.loop import Engine
    from engine.memory_link import MemoryHooks
    from engine.pulse import PulseTrigger
    from engine.redaction import Redactor
    from engine.settings import Settings
    from engine.store import Store


@dataclass(frozen=True)
class Services:
    """What is open for one process. ``engine``, ``memory`` and ``pulse`` are None where they were not asked
    for (the CLI runs on the store alone) or, for memory, when it is off or could not open. ``switchboard run``
    opens memory in the background: there ``memory`` is a ``LateMemory`` whose ``hooks`` appear once it is open."""

    settings: Settings
    clock: Clock
    store: Store
    backends: dict[str, Backend]
    memory: MemoryHooks | LateMemory | None
    engine: Engine | None
    pulse: PulseTrigger | None
    control: Control
    redactor: Redactor  # the last exit: channels pass what they send through it
    make_commands: Callable[[], CommandRouter] = field(repr=False)

    @cached_property
    def commands(self) -> CommandRouter:
        """The slash commands and the persona's verbs, built at first use: a CLI command on the store never needs
        them, and building them (the persona's action models, memory's verbs) cost each one about 15 ms."""
        return self.make_commands()
