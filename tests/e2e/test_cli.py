"""The command line as a user runs it: one JSON document on stdout with --json, one clear line on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.configs import REPO


def _run(home: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHBOARD_HOME": str(home), "SWITCHBOARD_DETECT_BACKENDS": "false", "PYTHONPATH": str(REPO)}
    env.pop("SWITCHBOARD_CONFIG", None)
    env.pop("TELEGRAM_BOT_TOKEN", None)
    prefix = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *prefix, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home.parent,
        timeout=60,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_jobs_add_list_show_with_json(home: Path) -> None:
    added = _run(home, "jobs", "add", "research the best SQLite settings", "--type", "research", "--json")
    assert added.returncode == 0, added.stderr
    job = json.loads(added.stdout)  # exactly one JSON document, nothing else on stdout
    assert job["type"] == "research" and job["state"] == "queued" and job["created"] is True
    again = json.loads(_run(home, "jobs", "add", "x", "--type", "triage", "--key", "k1", "--json").stdout)
    same = json.loads(_run(home, "jobs", "add", "y", "--type", "triage", "--key", "k1", "--json").stdout)
    assert same["id"] == again["id"] and same["created"] is False

    listed = json.loads(_run(home, "jobs", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [again["id"], job["id"]]
    shown = json.loads(_run(home, "jobs", "show", str(job["id"]), "--json").stdout)
    assert shown["job"]["id"] == job["id"] and [e["to_state"] for e in shown["events"]] == ["queued"]

    cancelled = _run(home, "jobs", "cancel", str(job["id"]))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    stats = json.loads(_run(home, "stats", "--since", "1d", "--json").stdout)
    assert stats["total_jobs"] == 2 and stats["cancelled"] == 1


def test_errors_are_one_clear_line_and_exit_1(home: Path, tmp_path: Path) -> None:
    bad_type = _run(home, "jobs", "add", "x", "--type", "bogus")
    assert bad_type.returncode == 1 and "unknown job type 'bogus'" in bad_type.stderr
    assert "Traceback" not in bad_type.stderr and bad_type.stdout == ""
    missing = _run(home, "jobs", "show", "999")
    assert missing.returncode == 1 and missing.stderr.strip() == "switchboard: no job #999"
    config = tmp_path / "elsewhere" / "broken.toml"
    config.parent.mkdir()
    config.write_text('[engine]\nmax_slots = "many"\n')
    broken = _run(home, "status", config=config)
    assert broken.returncode == 1 and "engine.max_slots" in broken.stderr and "Traceback" not in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    bad_duration = _run(home, "stats", "--since", "forever")
    assert bad_duration.returncode == 1 and "not a duration" in bad_duration.stderr


def test_status_check_fails_without_a_running_engine(home: Path) -> None:
    status = _run(home, "status", "--check", "--json")
    assert status.returncode == 1
    assert json.loads(status.stdout)["engine"]["alive"] is False
    assert "no running engine" in status.stderr
