"""Core memory: ``core.md``, the identity text present in every persona and worker context.

Kept small (``max_bytes``, about 6 KB) because it sits in the cached prefix of every prompt. Each edit
first copies the current text to ``core_versions/``, so no edit loses anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from memory.errors import CoreMemoryTooLarge, MemoryStoreError

SEED_RESOURCE = "core_seed.md"


class CoreVersion(BaseModel):
    path: Path
    saved_at: float
    size_bytes: int


def load_prompt(name: str) -> str:
    return resources.files("prompts").joinpath(name).read_text(encoding="utf-8")


class CoreMemory:
    def __init__(self, home: Path, max_bytes: int, now: Callable[[], float] | None = None) -> None:
        self.path = home / "core.md"
        self.versions_dir = home / "core_versions"
        self.max_bytes = max_bytes
        self._now = now or time.time

    def read(self) -> str:
        """The current text, seeding core.md from prompts/core_seed.md on first use."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        seed = load_prompt(SEED_RESOURCE)
        # Not size-checked: the limit guards edits, and refusing the shipped seed would leave no core at all.
        self._write_atomic(seed)
        return seed

    def write(self, text: str) -> None:
        """Replace the text; refused with CoreMemoryTooLarge (nothing written) when over the limit."""
        self._check_size(text)
        current = self.read()
        if current == text:
            return
        self._save_version(current)
        self._write_atomic(text)

    def versions(self) -> list[CoreVersion]:
        """Earlier texts, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = []
        for path in sorted(self.versions_dir.glob("core-*.md")):
            stamp_ms = path.name.split("-")[1]
            found.append(CoreVersion(path=path, saved_at=int(stamp_ms) / 1000, size_bytes=path.stat().st_size))
        return found

    def _check_size(self, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > self.max_bytes:
            raise CoreMemoryTooLarge(size, self.max_bytes)

    def _save_version(self, text: str) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        stamp_ms = int(self._now() * 1000)
        # The sequence number keeps names unique and ordered when two edits share a millisecond.
        seq = len(list(self.versions_dir.glob("core-*.md"))) + 1
        target = self.versions_dir / f"core-{stamp_ms:013d}-{seq:06d}.md"
        target.write_text(text, encoding="utf-8")

    def _write_atomic(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".md.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            # A reader (another process building a prompt) sees the old text or the new, never half.
            os.replace(tmp, self.path)
        except OSError as exc:
            raise MemoryStoreError(f"cannot write {self.path}: {exc.strerror}") from exc
