"""Memory that opens while the engine already runs: ``switchboard run`` starts the engine and the channel at once
and opens memory beside them (LanceDB, pyarrow and the embedder's model take seconds to load).

``LateMemory`` is what the engine, the pulse and the memory commands hold meanwhile. Until memory is open (or if
it cannot open) a job gets no memories and records no episode, and the pulse's memory upkeep waits for its next
slot; once open, every call goes to memory's hooks. Jobs are not held back waiting for it: memory is helpful,
never required.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from engine.runner import JobContext

if TYPE_CHECKING:  # imports the vector store; this module must not
    from engine.memory_link import Enqueue, MemoryHooks
    from engine.models import Job
    from engine.store import Store
    from memory.semantic import SemanticMemory


class LateMemory:
    """``enqueue`` (``Engine.submit``) and ``store`` are set by the composition root, as on ``MemoryHooks``, and
    handed to them."""

    def __init__(self) -> None:
        self.hooks: MemoryHooks | None = None
        self.enqueue: Enqueue | None = None
        self.store: Store | None = None
        self.settled = asyncio.Event()  # set once opening ended: memory open (``hooks``) or unavailable (None)

    def open(self, hooks: MemoryHooks | None) -> None:
        if hooks is not None:
            hooks.enqueue = self.enqueue
            hooks.store = self.store
        self.hooks = hooks
        self.settled.set()

    async def context_for(self, job: Job) -> JobContext:
        return await self.hooks.context_for(job) if self.hooks is not None else JobContext()

    async def job_finished(self, job: Job) -> None:
        if self.hooks is not None:
            await self.hooks.job_finished(job)

    @property
    def semantic(self) -> SemanticMemory | None:
        return self.hooks.semantic if self.hooks is not None else None

    async def maintain(self) -> str:
        if self.hooks is None:
            return "memory unavailable" if self.settled.is_set() else "memory not open yet"
        return await self.hooks.maintain()
