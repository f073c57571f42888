"""The data folder is the operator's alone, whatever the umask: folders 0700, files 0600. Run under umask 022
(the usual default, which made everything world-readable): ``switchboard run`` with a coding job (its folder,
CLAUDE.md, progress.md and the worker's own files), then the memory commands (core.md, its versions,
memory.lance)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.cli import main
from tests.e2e.telegram_rig import OPERATOR, Switchboard, eventually, write_config
from tests.fakes.fake_telegram import FakeTelegram


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)  # inherited by the subprocess; main() in process sets its own
    try:
        yield
    finally:
        os.umask(before)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def _modes(home: Path, *names: str) -> dict[str, str]:
    return {name: oct(stat.S_IMODE((home / name).stat().st_mode)) for name in names}


def _loose(home: Path) -> list[str]:
    """Everything under ``home`` that the group or others can reach."""
    paths = [home, *home.rglob("*")]
    return [f"{p}: {oct(stat.S_IMODE(p.lstat().st_mode))}" for p in paths
            if not p.is_symlink() and p.lstat().st_mode & 0o077]


async def test_run_makes_every_folder_0700_and_every_file_0600(
    tmp_path: Path, fake: FakeTelegram, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "probe"
    probe.write_text("x")
    assert stat.S_IMODE(probe.stat().st_mode) == 0o644  # the umask this test runs under

    switchboard = Switchboard(tmp_path, write_config(tmp_path, fake), fake.token)
    home = switchboard.home
    await switchboard.start()
    try:
        fake.operator_sends_text(OPERATOR, OPERATOR, "fix the login bug")  # a coding job: a job folder
        # tests.txt is written by the (simulated) worker itself, as a real worker writes its result.md
        await eventually(lambda: list(home.glob("jobs/*/checkpoints/tests.txt")), 60, "the worker's evidence")
        names = ["", "switchboard.db", "switchboard.db-wal", "switchboard.db-shm"]
        modes = _modes(home, *names)  # while it runs: the WAL and shared-memory files exist
        assert modes == {"": "0o700", "switchboard.db": "0o600", "switchboard.db-wal": "0o600",
                         "switchboard.db-shm": "0o600"}
        assert not _loose(home)
    finally:
        await switchboard.terminate()
        await switchboard.ensure_stopped()

    monkeypatch.setenv("SWITCHBOARD_HOME", str(home))
    monkeypatch.setenv("SWITCHBOARD_DETECT_BACKENDS", "false")
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    core = tmp_path / "core.md"
    core.write_text("I am the operator's assistant.\n", encoding="utf-8")
    # main() runs its own event loop: off this one, in a thread
    assert await asyncio.to_thread(main, ["memory", "core", "--set", str(core)]) == 0
    assert await asyncio.to_thread(main, ["memory", "add", "The operator drinks tea."]) == 0
    assert (home / "core.md").is_file() and (home / "memory.lance").is_dir()
    assert not _loose(home), "core.md, its versions and memory.lance are private too"
