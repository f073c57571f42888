"""Errors raised by the memory package.

Hierarchy::

    MemoryStoreError                 anything the memory package refuses or cannot do
    ├── CoreMemoryTooLarge           an edit of core.md over the byte limit (nothing written)
    ├── MemoryNotFound               an id that names no memory
    └── EmbedderError                an embedder could not produce vectors (HTTP, missing extra, bad reply)

Third-party exceptions (httpx, lancedb, OSError) are translated at the boundary with ``raise X from exc``
so callers handle one tree. The name avoids shadowing the builtin ``MemoryError``.
"""

from __future__ import annotations


class MemoryStoreError(Exception):
    """Base class of every error the memory package raises on purpose."""


class CoreMemoryTooLarge(MemoryStoreError):
    def __init__(self, size_bytes: int, max_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes
        super().__init__(
            f"core memory edit refused: {size_bytes} bytes is over the limit of {max_bytes} bytes "
            f"(remove {size_bytes - max_bytes} bytes, or move details into semantic memory)"
        )


class MemoryNotFound(MemoryStoreError):
    def __init__(self, memory_id: str) -> None:
        self.memory_id = memory_id
        super().__init__(f"no memory with id {memory_id!r}")


class EmbedderError(MemoryStoreError):
    """The embedder failed; the message says which embedder and why (never an API key)."""
