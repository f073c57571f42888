"""/memory, /remember and /forget for the command router, over the memory the composition root opened.

With memory disabled (or unavailable) each still answers, saying so; while memory is still opening at start
(``engine.late_memory``) too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from bot.commands import Extra
from engine.text import memory_text

if TYPE_CHECKING:  # imports the vector store: only when memory is on
    from memory.semantic import SemanticMemory

_OFF = "Memory is off. Enable [memory] in switchboard.toml (it needs the embedder) and restart."
_NOT_OPEN = (
    "Memory is not open yet: it opens in the background at start (if this lasts, it could not open: see the log)."
)


class Memory(Protocol):
    """``MemoryHooks`` (open) or ``LateMemory`` (``semantic`` is None until it has opened)."""

    @property
    def semantic(self) -> SemanticMemory | None: ...


def memory_commands(memory: Memory | None) -> dict[str, Extra]:
    """The three commands over memory; with ``None`` (memory off or unavailable) each says so."""
    if memory is None:

        async def off(args: str) -> str:
            return _OFF

        return {"memory": off, "remember": off, "forget": off}
    from memory.errors import MemoryStoreError

    def when_open(command: Callable[[SemanticMemory, str], Awaitable[str]]) -> Extra:
        async def run(args: str) -> str:
            semantic = memory.semantic
            return _NOT_OPEN if semantic is None else await command(semantic, args)

        return run

    async def search(semantic: SemanticMemory, args: str) -> str:
        if not args:
            count = await semantic.count()
            return f"{count} memories stored. Search them: /memory QUERY · store one: /remember TEXT"
        found = await semantic.search(args[:500], k=8)
        if not found:
            return f"Nothing relevant remembered about {args[:80]!r}."
        return "\n".join(f"{m.record.id} · {m.record.text[:300]}" for m in found)

    async def remember(semantic: SemanticMemory, args: str) -> str:
        if not args:
            return "What should I remember? /remember TEXT (for example: /remember deploys happen on Fridays)"
        try:
            outcome = await semantic.add(memory_text(args))
        except (MemoryStoreError, ValueError) as exc:
            return f"Cannot do that: {exc}"
        if outcome.action == "added":
            return f"Remembered ({outcome.id}). /forget {outcome.id} to undo."
        return f"I already knew that; merged into {outcome.id}."

    async def forget(semantic: SemanticMemory, args: str) -> str:
        memory_id = args.split()[0] if args.split() else ""
        if not memory_id:
            return "Which memory? /forget ID (find ids with /memory QUERY)"
        if not memory_id.isalnum() or len(memory_id) > 64:
            return f"{memory_id[:64]!r} is not a memory id (ids look like 3f9a0c1d2b4e5f60)."
        if await semantic.forget(memory_id):
            return f"Forgot {memory_id}."
        return f"No memory with id {memory_id}."

    return {"memory": when_open(search), "remember": when_open(remember), "forget": when_open(forget)}
