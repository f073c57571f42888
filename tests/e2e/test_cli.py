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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[engine]\nmax_slot = 10\n", "unknown setting engine.max_slot (did you mean max_slots?)"),
        ('[pulse]\ntimezone = "Mars/Olympus"\n', "invalid setting pulse.timezone: unknown time zone 'Mars/Olympus'"),
        ('[pulse]\nquiet_hours = "25:00-07:00"\n', "invalid setting pulse.quiet_hours: not a time of day"),
    ],
)
def test_doctor_and_run_refuse_a_bad_config_with_the_same_line(
    home: Path, tmp_path: Path, text: str, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    doctor = _run(home, "doctor", config=config)
    run = _run(home, "run", "--no-console", config=config)
    assert doctor.returncode == run.returncode == 1
    assert doctor.stderr == run.stderr and len(doctor.stderr.splitlines()) == 1
    assert doctor.stderr.startswith(f"switchboard: configuration error: {config}: {expected}")
    assert "Traceback" not in doctor.stderr and doctor.stdout == ""


def test_an_unknown_switchboard_variable_is_refused_by_the_cli(home: Path) -> None:
    env = {**os.environ, "SWITCHBOARD_HOME": str(home), "SWITCHBOARD_ENGIN__MAX_SLOTS": "10"}
    refused = subprocess.run(
        [sys.executable, "-m", "bot.cli", "doctor"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert refused.returncode == 1 and refused.stderr == (
        "switchboard: configuration error: environment variable SWITCHBOARD_ENGIN__MAX_SLOTS: no such setting engin "
        "(did you mean SWITCHBOARD_ENGINE__MAX_SLOTS?)\n"
    )


def test_json_everywhere_and_global_options_after_the_command(home: Path, tmp_path: Path) -> None:
    missing = _run(home, "jobs", "cancel", "999", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout) == {"error": "no job #999"}
    paused = _run(home, "backends", "pause", "sim-opus", "--json")
    assert paused.returncode == 0 and json.loads(paused.stdout) == {"backend": "sim-opus", "paused": True}
    resumed = _run(home, "--json", "backends", "resume", "sim-opus")
    assert resumed.returncode == 0 and json.loads(resumed.stdout) == {"backend": "sim-opus", "paused": False}
    config = tmp_path / "x.toml"
    config.write_text("[engine]\nmax_slot = 3\n")
    refused = _run(home, "doctor", "--config", str(config), "--json")  # after the command, not only before
    assert refused.returncode == 1 and "unknown setting engine.max_slot" in json.loads(refused.stdout)["error"]
    config.write_text("[engine]\nmax_slots = 3\n")
    status = _run(home, "status", "--config", str(config), "--json")
    assert json.loads(status.stdout)["slots"]["max"] == 3
