"""Data safety on real SQLite files: a full database and a read-only one reach the operator as one sentence
(never "cannot rollback - no transaction is active"), and the store stays usable once the cause is gone."""

from __future__ import annotations

import asyncio
import logging
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.job_factory import new_job
from engine.models import JobState
from engine.settings import Settings
from engine.store import Store, StoreError

REPO = Path(__file__).resolve().parents[2]


def _connection(store: Store) -> sqlite3.Connection:
    conn = store._db._conn  # the store's own connection: max_page_count and query_only are per connection
    assert conn is not None
    return conn


async def test_full_database_is_one_sentence_and_nothing_half_written(store: Store, settings: Settings) -> None:
    before = await store.counts_by_state()
    conn = _connection(store)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages + 2}")  # SQLite itself reports SQLITE_FULL past this
    with pytest.raises(StoreError) as raised:
        await store.enqueue_many([new_job(settings, type="analysis", prompt="x" * 50_000) for _ in range(4)])
    message = str(raised.value)
    assert message.startswith("database or disk is full") and "rollback" not in message
    cause = raised.value.__cause__
    assert isinstance(cause, sqlite3.OperationalError) and cause.sqlite_errorname == "SQLITE_FULL"
    assert not conn.in_transaction
    assert await store.counts_by_state() == before  # the batch was rolled back whole
    conn.execute("PRAGMA max_page_count=1073741823")
    job, created = await store.enqueue(new_job(settings, type="analysis", prompt="after the disk was freed"))
    assert created and job.state == JobState.QUEUED


async def test_read_only_database_is_one_sentence(store: Store, settings: Settings) -> None:
    job, _ = await store.enqueue(new_job(settings, type="analysis", prompt="written before"))
    conn = _connection(store)
    conn.execute("PRAGMA query_only=ON")  # root ignores chmod; SQLite's own read-only mode is genuine
    with pytest.raises(StoreError, match=r"^the data folder is read-only: switchboard cannot write "):
        await store.enqueue(new_job(settings, type="analysis", prompt="refused"))
    with pytest.raises(StoreError, match="read-only"):
        await store.cancel(job.id)
    assert (await store.get_job(job.id)).state == JobState.QUEUED  # reads still work  # type: ignore[union-attr]
    assert not conn.in_transaction


async def test_read_only_file_opened_read_only_is_one_sentence(settings: Settings, clock: FakeClock) -> None:
    store = await Store.open(settings.db_path, clock)
    await store.close()
    ro = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True, isolation_level=None)
    try:
        from engine.store.db import translate

        with pytest.raises(sqlite3.OperationalError) as raised:
            ro.execute("INSERT INTO kv(key, value, updated_at) VALUES ('k', 'v', 0)")
        assert str(translate(raised.value, settings.db_path)).startswith("the data folder is read-only")
    finally:
        ro.close()


async def test_engine_says_a_store_error_once(
    store: Store, settings: Settings, clock: FakeClock, make_engine: object, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await make_engine(settings, store, clock)  # type: ignore[operator]
    _connection(store).execute("PRAGMA query_only=ON")
    with caplog.at_level(logging.ERROR, logger="engine.loop"):
        for _ in range(5):  # five whole dispatch passes, each meeting the read-only store
            engine.wake()
            await asyncio.wait_for(engine.passes.next_whole(), 30)
    _connection(store).execute("PRAGMA query_only=OFF")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "the data folder is read-only" in errors[0].getMessage() and errors[0].exc_info is None


def test_cli_prints_a_write_failure_as_one_line(tmp_path: Path) -> None:
    """A real write failure from the kernel: the file-size limit (RLIMIT_FSIZE, which binds root too) stops
    the database growing, as a full disk would."""
    home = tmp_path / "home"
    env = {"SWITCHBOARD_HOME": str(home), "SWITCHBOARD_DETECT_BACKENDS": "false", "PYTHONPATH": str(REPO)}

    def add(text: str, limit_bytes: int | None) -> subprocess.CompletedProcess[str]:
        def limit() -> None:
            if limit_bytes is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

        return subprocess.run(
            [sys.executable, "-m", "bot.cli", "jobs", "add", text],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False, preexec_fn=limit,
        )

    assert add("first", None).returncode == 0
    size = (home / "switchboard.db").stat().st_size
    results = [add("x" * 90_000, size + 60_000) for _ in range(2)]
    failed = [r for r in results if r.returncode != 0]
    assert failed, [r.stdout for r in results]
    for result in failed:
        assert result.returncode == 1 and "Traceback" not in result.stderr and "rollback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("switchboard: "), result.stderr
        assert "disk" in lines[0]
