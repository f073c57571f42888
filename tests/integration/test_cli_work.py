"""``switchboard projects add --path/--test``, ``projects show``, ``jobs diff`` and ``jobs merge`` from the command
line, on a real git repository and a job the real engine finished (its worker a fake that edits the worktree)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from engine.clock import SystemClock
from engine.loop import Engine
from engine.models import JobState
from engine.settings import load_settings
from engine.store import Store
from tests.conftest import sim_backends
from tests.fakes.scenario import wait_for
from tests.integration.test_workspaces import FIXED, TEST_COMMAND, FileWorker, checkout_state, make_repo

CONFIG = """
[routing]
coding = ["coder"]

[[backends]]
name = "coder"
kind = "claude_cli"
family = "anthropic"
tier = 3

[[backends]]
name = "reviewer"
kind = "sim"
family = "google"
tier = 3
sim = {latency_ms = 0}
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "switchboard.toml").write_text(CONFIG)
    monkeypatch.setenv("SWITCHBOARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "switchboard.toml"))
    monkeypatch.setenv("SWITCHBOARD_DETECT_BACKENDS", "false")
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)  # main() sets the process umask; the tests after these keep theirs
    try:
        yield tmp_path / "home"
    finally:
        os.umask(umask)


async def _run_job_to_done(job_id: int) -> None:
    settings = load_settings()
    clock = SystemClock()
    store = await Store.open(settings.db_path, clock)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    engine = Engine(settings, store, {**sim_backends(settings, clock), "coder": worker}, clock)
    try:
        await engine.start()

        async def done() -> bool:
            job = await store.get_job(job_id)
            return job is not None and job.state is JobState.DONE

        await wait_for(done, 30, "the job done")
    finally:
        await engine.stop(grace_s=0)
        await store.close()


def test_projects_add_show_and_jobs_diff_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path)
    assert main(["projects", "add", "calc", "--path", "repo", "--test", TEST_COMMAND]) == 0
    assert f"({repo.resolve()}); tests: {TEST_COMMAND}" in capsys.readouterr().out
    assert main(["projects", "add", "bad", "--path", str(tmp_path / "home")]) == 1
    assert "inside Switchboard's data folder" in capsys.readouterr().err
    assert main(["jobs", "add", "fix add()", "--type", "coding", "--project", "calc"]) == 0
    capsys.readouterr()
    assert main(["projects", "show", "calc"]) == 0
    shown = capsys.readouterr().out
    assert f"folder {repo.resolve()}" in shown and "branch main" in shown and "open jobs 1" in shown
    assert f"tests {TEST_COMMAND}" in shown
    assert main(["jobs", "diff", "1"]) == 1  # no branch yet
    assert "has no branch" in capsys.readouterr().err
    before = checkout_state(repo)

    asyncio.run(_run_job_to_done(1))

    assert checkout_state(repo) == before
    assert main(["jobs", "diff", "1", "--stat"]) == 0
    assert "calc.py | 2 +-" in capsys.readouterr().out
    assert main(["jobs", "diff", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["branch"] == "switchboard/1-fix-add" and "+    return a + b" in data["diff"]
    assert main(["jobs", "merge", "1"]) == 0
    assert "switchboard/1-fix-add merged (fast-forward)" in capsys.readouterr().out
    assert (repo / "calc.py").read_text() == FIXED
    assert main(["jobs", "merge", "1", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["merged"] is False
