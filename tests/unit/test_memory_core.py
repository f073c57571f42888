"""Core memory: seeding, size limit, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory.core import CoreMemory, load_prompt
from memory.errors import CoreMemoryTooLarge


class Clock:
    def __init__(self) -> None:
        self.t = 1_767_225_600.0

    def __call__(self) -> float:
        return self.t


def test_seeded_from_prompts_on_first_read(tmp_path: Path) -> None:
    core = CoreMemory(tmp_path, 6144)
    text = core.read()
    assert text == load_prompt("core_seed.md")
    assert (tmp_path / "core.md").read_text(encoding="utf-8") == text
    assert core.versions() == []


def test_every_edit_keeps_the_previous_version(tmp_path: Path) -> None:
    clock = Clock()
    core = CoreMemory(tmp_path, 6144, now=clock)
    seed = core.read()
    core.write("first")
    clock.t += 60
    core.write("second")
    core.write("second")  # unchanged text makes no version
    assert core.read() == "second"
    versions = core.versions()
    assert [v.path.read_text(encoding="utf-8") for v in versions] == [seed, "first"]
    assert versions[1].saved_at == pytest.approx(clock.t)


def test_edit_over_limit_is_refused_with_sizes(tmp_path: Path) -> None:
    core = CoreMemory(tmp_path, 100)
    core.write("small")
    with pytest.raises(CoreMemoryTooLarge) as info:
        core.write("é" * 60)  # 120 bytes in UTF-8 although only 60 characters
    assert "120 bytes" in str(info.value)
    assert "100 bytes" in str(info.value)
    assert core.read() == "small"
    assert len(core.versions()) == 1


def test_default_seed_fits_default_limit(tmp_path: Path) -> None:
    assert len(load_prompt("core_seed.md").encode("utf-8")) < 6144
