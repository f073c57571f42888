"""What a prompt gets from memory: the stable core text and the variable relevant memories.

Callers put ``core`` in the stable, cached prefix (persona, job instructions, core memory) and
``relevant`` after it, so a new set of memories never invalidates the provider's prompt cache.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from memory.core import CoreMemory
from memory.semantic import ScoredMemory, SemanticMemory

# The prompt that carries these memories gives them their one heading ("## Relevant memories").
_HEADER = "Most relevant first:\n"


class MemoryContext(BaseModel):
    core: str
    relevant: str
    memories: list[ScoredMemory] = Field(default_factory=list)


def format_memory(memory: ScoredMemory) -> str:
    record = memory.record
    day = datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d")
    scope = f", {record.project}" if record.project else ""
    text = " ".join(record.text.split())
    return f"- [{record.kind}{scope}, {day}] {text}\n"


def fit_to_budget(memories: list[ScoredMemory], budget_bytes: int) -> tuple[str, list[ScoredMemory]]:
    """Whole lines in rank order while they fit; a line too long for what is left is skipped, not cut."""
    if budget_bytes <= len(_HEADER.encode("utf-8")):
        return "", []
    used = len(_HEADER.encode("utf-8"))
    lines: list[str] = []
    kept: list[ScoredMemory] = []
    for memory in memories:
        line = format_memory(memory)
        size = len(line.encode("utf-8"))
        if used + size > budget_bytes:
            continue
        lines.append(line)
        kept.append(memory)
        used += size
    if not lines:
        return "", []
    return _HEADER + "".join(lines), kept


async def build_context(
    core: CoreMemory, memory: SemanticMemory, query: str, project: str | None, budget_bytes: int,
    k: int | None = None,
) -> MemoryContext:
    """Core memory plus the best memories for ``query`` within ``budget_bytes`` (UTF-8) of text."""
    found = await memory.search(query, k=k or memory.settings.top_k, project=project)
    relevant, kept = fit_to_budget(found, budget_bytes)
    return MemoryContext(core=core.read(), relevant=relevant, memories=kept)
