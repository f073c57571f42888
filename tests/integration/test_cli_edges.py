"""The command line's edges, run in process through ``bot.cli.main`` on a real data folder: ids and durations
that do not fit are one clear line and exit 1 (``{"error": ...}`` on stdout with --json), never a traceback."""

from __future__ import annotations

import _thread
import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from engine.clock import SystemClock
from engine.store import Store, db

HUGE = "99999999999999999999"  # 20 digits: more than SQLite's largest integer
NO_SUCH_JOB = f"no job #{HUGE} (job ids go from 1 to {2**63 - 1})"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SWITCHBOARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWITCHBOARD_DETECT_BACKENDS", "false")
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)  # main() sets the process umask; the tests after these keep theirs
    try:
        yield tmp_path / "home"
    finally:
        os.umask(umask)


@pytest.mark.parametrize("verb", ["show", "cancel", "retry", "approve", "reroute"])
def test_an_out_of_range_job_id_is_one_clear_line(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", verb, HUGE]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"switchboard: {NO_SUCH_JOB}\n"


def test_with_json_the_error_is_the_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "answer", HUGE, "yes", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": NO_SUCH_JOB} and err.count("\n") == 1
    assert main(["jobs", "show", HUGE, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"error": NO_SUCH_JOB}


def test_a_schedule_interval_over_a_year_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    every = f"{HUGE}000d"
    assert main(["schedule", "add", "mail", "check mail", "--type", "triage", "--every", every]) == 1
    assert "too long: at most 366 days" in capsys.readouterr().err
    assert main(["stats", "--since", "400d"]) == 1
    assert "too long: at most 366 days" in capsys.readouterr().err
    assert main(["schedule", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_project_names_are_one_line_and_never_share_a_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["projects", "add", "thesis\nnotes\u200b", "--goal", "a review\x00"]) == 0
    assert main(["projects", "add", "Thesis  Notes"]) == 1
    err = capsys.readouterr().err
    assert err.strip().startswith("switchboard: a project named 'thesis notes' already exists, and 'Thesis Notes'")
    assert main(["projects", "list", "--json"]) == 0
    [project] = json.loads(capsys.readouterr().out)
    assert (project["name"], project["goal"]) == ("thesis notes", "a review")
    assert main(["projects", "list"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_memory_add_has_the_limit_of_remember(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "add", "x" * 20_000]) == 1
    assert "a memory holds at most 2,000" in capsys.readouterr().err


def test_schedule_names_and_text_are_cleaned(capsys: pytest.CaptureFixture[str]) -> None:
    name, text = "mail\u202e\nbox", "check\x00 mail\u200b"
    assert main(["schedule", "add", name, text, "--type", "triage", "--every", "1h"]) == 0
    capsys.readouterr()
    assert main(["schedule", "list", "--json"]) == 0
    [schedule] = json.loads(capsys.readouterr().out)
    assert (schedule["name"], schedule["prompt"]) == ("mail box", "check mail")


def test_a_schedule_stored_before_the_bound_no_longer_breaks_the_list(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def store_one() -> None:  # what `schedule add --every 99999999999999999999999d` stored before
        store = await Store.open(home / "switchboard.db", SystemClock())
        try:
            huge = 99999999999999999999999 * 86_400.0
            await store.add_schedule("old", "triage", "check mail", next_run_at=huge, interval_s=huge)
        finally:
            await store.close()

    asyncio.run(store_one())
    assert main(["schedule", "list"]) == 0
    assert "every out of range" in capsys.readouterr().out
    assert main(["schedule", "remove", "old"]) == 0


def test_a_list_limit_out_of_range_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "list", "--limit", "99999999999999999999"])
    assert exit_.value.code == 2 and "not a count from 1 to 10000" in capsys.readouterr().err
    assert main(["jobs", "list", "--limit", "10000"]) == 0


def test_a_store_command_waits_for_the_engines_write_then_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Commands on the store run without an event loop, each transaction in the calling thread: one that meets
    another process's write lock waits for it there (SQLite's busy timeout), then does its work."""
    assert main(["jobs", "list"]) == 0  # the database exists
    capsys.readouterr()
    writer = sqlite3.connect(home / "switchboard.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # the engine in the middle of a write
    writer.execute("INSERT INTO kv(key, value, updated_at) VALUES ('written:by', 'the engine', 0)")
    committed = threading.Event()

    def commit() -> None:
        writer.execute("COMMIT")
        committed.set()

    timer = threading.Timer(0.2, commit)
    timer.start()
    try:
        assert main(["jobs", "add", "look into it", "--json"]) == 0
        assert committed.is_set()  # it could only write once the other write was committed
    finally:
        timer.join()
        writer.close()
    assert json.loads(capsys.readouterr().out)["created"] is True
    assert main(["jobs", "list", "--json"]) == 0
    assert [job["title"] for job in json.loads(capsys.readouterr().out)] == ["look into it"]


def test_ctrl_c_while_a_store_command_waits_for_the_lock_stops_it_at_once(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The blocking store waits for the lock in slices, so Ctrl-C is seen within one, not after the whole wait."""
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 60_000)  # without the slices this test would wait a minute
    assert main(["jobs", "list"]) == 0
    writer = sqlite3.connect(home / "switchboard.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # held until the end: the command can only stop by Ctrl-C
    ctrl_c = threading.Timer(0.2, _thread.interrupt_main)
    started = time.monotonic()
    ctrl_c.start()
    try:
        assert main(["jobs", "add", "never queued"]) == 130
        waited_s = time.monotonic() - started
    finally:
        ctrl_c.join()
        writer.execute("ROLLBACK")
        writer.close()
    assert waited_s < 30  # a bound, not a speed claim: without slices it is the full 60 s
    capsys.readouterr()
    assert main(["jobs", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("k", ["0", "101", "-3", "99999999999999999999", "five"])
def test_a_memory_search_count_out_of_range_is_refused_by_the_parser(
    k: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["memory", "search", "peanuts", "-k", k])
    assert exit_.value.code == 2 and "is not a count from 1 to 100" in capsys.readouterr().err
