"""Which folder a CLI worker runs in and which it gets as added folders: its job folder, a folder of the operator's
(added with ``--add-dir``), or a git worktree (its working directory, the job folder added)."""

from __future__ import annotations

from pathlib import Path

from engine.backends.base import BackendRequest
from engine.backends.claude_cli import ClaudeCliBackend
from engine.backends.cli_common import worker_folders
from engine.backends.codex_cli import CodexCliBackend
from engine.clock import FakeClock
from engine.settings import BackendConfig

JOB = Path("/data/jobs/7")
REQUEST = BackendRequest(job_id=7, job_type="coding", prompt="fix it", workspace=JOB)


def _claude() -> ClaudeCliBackend:
    config = BackendConfig(name="claude", kind="claude_cli", family="anthropic")
    return ClaudeCliBackend(config, clock=FakeClock(), env={"PATH": ""})


def _codex() -> CodexCliBackend:
    config = BackendConfig(name="codex", kind="codex_cli", family="openai")
    return CodexCliBackend(config, clock=FakeClock(), env={"PATH": ""})


def test_a_job_without_a_work_folder_runs_in_its_job_folder_alone() -> None:
    assert worker_folders(REQUEST, JOB) == (JOB,)
    assert not [a for a in _claude().build_command("claude", REQUEST) if a.startswith("--add-dir")]
    argv = _codex().build_command("codex", REQUEST)
    assert argv[argv.index("--cd") + 1] == str(JOB) and not [a for a in argv if a.startswith("--add-dir")]


def test_a_folder_of_the_operators_is_an_added_folder() -> None:
    request = REQUEST.model_copy(update={"work_dir": Path("/srv/notes")})
    assert worker_folders(request, JOB) == (JOB, Path("/srv/notes"))
    claude = _claude().build_command("claude", request)
    assert "--add-dir=/srv/notes" in claude and claude.index("--add-dir=/srv/notes") < claude.index("--")
    codex = _codex().build_command("codex", request)
    assert codex[codex.index("--cd") + 1] == str(JOB) and "--add-dir=/srv/notes" in codex


def test_a_worktree_is_the_working_directory_and_the_job_folder_is_added() -> None:
    worktree = JOB / "worktree-7"
    request = REQUEST.model_copy(update={"work_dir": worktree, "cwd_in_work_dir": True})
    assert worker_folders(request, JOB) == (worktree, JOB)
    assert f"--add-dir={JOB}" in _claude().build_command("claude", request)
    codex = _codex().build_command("codex", request)
    assert codex[codex.index("--cd") + 1] == str(worktree) and f"--add-dir={JOB}" in codex
