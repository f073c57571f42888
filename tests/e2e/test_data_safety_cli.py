"""Data safety as the operator meets it, through the real ``switchboard`` command: a truncated database in a
used data folder stops ``run`` and the CLI with one message instead of starting empty; a fresh folder starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.clock import SystemClock
from engine.job_factory import new_job
from engine.settings import load_settings
from engine.store import Store
from tests.e2e.test_crash_restart import Process, _eventually, _query, _scalar, write_config


def _switchboard(home: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHBOARD_HOME": str(home), "SWITCHBOARD_DETECT_BACKENDS": "false"}
    env.pop("SWITCHBOARD_CONFIG", None)
    env.pop("TELEGRAM_BOT_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home.parent,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def used_home(tmp_path: Path) -> Path:
    """A data folder with jobs in its database (and their folders), then the database truncated to 0 bytes."""
    home = tmp_path / "home"
    added = _switchboard(home, "jobs", "add", "first job")
    assert added.returncode == 0, added.stderr
    for job_id in (1, 2):
        (home / "jobs" / str(job_id)).mkdir(parents=True)
    (home / "switchboard.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (home / f"switchboard.db{suffix}").unlink(missing_ok=True)
    return home


@pytest.mark.parametrize("command", [["jobs", "list"], ["run", "--no-console"]])
def test_truncated_database_in_a_used_folder_stops_with_one_message(used_home: Path, command: list[str]) -> None:
    result = _switchboard(used_home, *command)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "switchboard.db is empty (no tables)" in lines[0]
    assert "2 job folder(s) in jobs/" in lines[0]
    assert "restore switchboard.db from a backup" in lines[0] and "aside" in lines[0]
    assert (used_home / "switchboard.db").stat().st_size == 0  # nothing was written over the evidence


def test_deleted_database_in_a_used_folder_stops_too(used_home: Path) -> None:
    (used_home / "switchboard.db").unlink()
    result = _switchboard(used_home, "jobs", "list")
    assert result.returncode == 1 and "switchboard.db is missing" in result.stderr
    assert not (used_home / "switchboard.db").exists()


def test_fresh_and_memory_only_folders_still_start(tmp_path: Path) -> None:
    fresh = _switchboard(tmp_path / "fresh", "jobs", "add", "hello")
    assert fresh.returncode == 0, fresh.stderr
    memory_first = tmp_path / "memory-first"  # `switchboard memory ...` can run before any database exists
    (memory_first / "core_versions").mkdir(parents=True)
    (memory_first / "core_versions" / "core-1.md").write_text("note\n")
    (memory_first / "memory.lance").mkdir()
    listed = _switchboard(memory_first, "jobs", "list")
    assert listed.returncode == 0, listed.stderr


def test_empty_database_with_memory_history_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "core_versions").mkdir(parents=True)
    (home / "core_versions" / "core-1.md").write_text("note\n")
    (home / "memory.lance").mkdir()
    (home / "switchboard.db").write_bytes(b"")
    result = _switchboard(home, "jobs", "list")
    assert result.returncode == 1
    assert "1 core.md version(s), memory.lance" in result.stderr



def _running_owners(home: Path) -> dict[int, str]:
    return {r["id"]: r["lease_owner"] for r in _query(home, "SELECT id, lease_owner FROM jobs WHERE state = 'running'")}


def _sweeps(home: Path) -> int:
    return _scalar(home, "SELECT COUNT(*) FROM events WHERE reason LIKE 'orphan sweep%'")


async def test_second_run_refuses_while_the_first_lives_even_without_the_lock_file(tmp_path: Path) -> None:
    """Two `switchboard run` on one data folder, engine.lock deleted in between: the second refuses (the lease
    in the database), the first keeps its six running jobs (none taken over, none run twice). Once the first
    is killed, a new run takes the folder at once (its holder is gone) and recovers the jobs."""
    home = tmp_path / "home"
    config = write_config(tmp_path, latency_ms=60_000)
    settings = load_settings(config).model_copy(update={"home": home})
    store = await Store.open(settings.db_path, SystemClock())
    try:
        await store.enqueue_many([new_job(settings, type="analysis", prompt=f"job {i}") for i in range(6)])
    finally:
        await store.close()
    first, second, third = Process(home, config), Process(home, config), Process(home, config)
    try:
        await first.start()
        await _eventually(lambda: len(_running_owners(home)) == 6, 30, "six running jobs")
        owners = _running_owners(home)
        (home / "engine.lock").unlink()
        with pytest.raises(AssertionError, match=r"did not start \(exit 1\)"):
            await second.start()
        assert "another engine is running on" in second.err_text() and "stop it first" in second.err_text()
        assert _running_owners(home) == owners and _sweeps(home) == 0  # nothing taken over, nothing run twice
        assert await first.kill() == -9
        await third.start()  # the holder is gone: no wait for the lease to expire
        await _eventually(lambda: _sweeps(home) == 6, 30, "the six jobs recovered")
        assert _query(home, "SELECT owner FROM engine_lease")[0]["owner"] not in set(owners.values())
    finally:
        for proc in (first, second, third):
            await proc.ensure_stopped()
