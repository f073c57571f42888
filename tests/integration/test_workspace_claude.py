"""A job's worktree for real: the pinned ``claude`` binary, scripted by the fake Anthropic server, edits a file
in its working directory (the job's git worktree) inside bubblewrap, the engine commits it on the job's
branch, runs the project's tests itself, a reviewer of another family passes it, and ``jobs merge`` merges it;
the operator's checkout is byte-for-byte what it was until the merge. And the boundary itself: inside the
sandbox a worktree's shell writes the worktree, reads the repository's history, and can neither write the
repository's git folder nor commit into it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.backends.claude_cli import ClaudeCliBackend
from engine.clock import SystemClock
from engine.control import Control
from engine.loop import Engine
from engine.models import JobState
from engine.sandbox import Sandbox, find_bubblewrap
from engine.settings import BackendConfig, Settings, default_sim_backends
from engine.store import Store
from engine.testrun import run_tests
from engine.workspace import Workspace
from engine.worktrees import ProjectWork
from tests.conftest import instant, sim_backends
from tests.fakes.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.fakes.scenario import wait_for
from tests.integration.test_claude_cli import _claude_binary, cli_env
from tests.integration.test_workspaces import BROKEN, FIXED, TEST_COMMAND, checkout_state, git, make_repo


def _sandbox_mode() -> str:
    return "bwrap" if find_bubblewrap()[0] is not None else "off"


async def test_the_real_claude_edits_its_worktree_and_the_engine_tests_commits_and_merges(tmp_path: Path) -> None:
    claude_bin = _claude_binary()
    repo = make_repo(tmp_path / "operator")
    before = checkout_state(repo)
    data = tmp_path / "data"
    worktree = data / "jobs" / "1" / "worktree-1"
    with FakeAnthropic() as fake:
        fake.script(
            Reply("", tool_uses=[ToolUse("Read", {"file_path": str(worktree / "calc.py")})]),
            Reply("", tool_uses=[ToolUse("Write", {"file_path": str(worktree / "calc.py"), "content": FIXED})]),
            Reply("Fixed add(): it subtracted. calc.py changed; the tests pass."),
        )
        env = cli_env(tmp_path, fake)
        sandbox = Sandbox.detect(_sandbox_mode(), hidden=[data, Path(env["HOME"])])  # type: ignore[arg-type]
        config = BackendConfig(name="claude", kind="claude_cli", model="claude-fake-1", family="anthropic",
                               binary=claude_bin, subscription=True)
        settings = Settings(home=data, backends=[config, *instant(default_sim_backends())],
                            routing={"coding": ["claude"]}, engine={"sandbox": _sandbox_mode()})
        clock = SystemClock()
        store = await Store.open(settings.db_path, clock)
        backends = {**sim_backends(settings, clock),
                    "claude": ClaudeCliBackend(config, clock=clock, env=env, sandbox=sandbox)}
        engine = Engine(settings, store, backends, clock)
        try:
            control = Control(settings, store, clock, engine)
            await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
            job, _ = await control.add_job("fix add() in calc.py", type="coding", project="calc")
            await engine.start()

            async def finished() -> object:
                found = await store.get_job(job.id)
                ended = (JobState.DONE, JobState.NEEDS_HUMAN, JobState.FAILED)
                return found if found and found.state in ended else None

            done = await wait_for(finished, timeout_s=90, what="the coding job finished")
            tool_results = json.dumps(fake.model_calls()[-1].body["messages"])
            assert done.state is JobState.DONE, (done.state, done.last_error, tool_results[-2000:])
            assert checkout_state(repo) == before  # the worker never touched the operator's checkout
            assert git(repo, "show", f"{done.branch}:calc.py") == FIXED.strip()
            [run] = await store.test_runs(job.id)
            assert run.exit_code == 0 and "1 passed" in run.output
            first_call = fake.model_calls()[0].body
            assert str(worktree) in json.dumps(first_call)  # its working directory, as the CLI told the model

            _, outcome = await control.job_merge(job.id)
            assert outcome.merged and outcome.how == "fast-forward"
            assert (repo / "calc.py").read_text() == FIXED and git(repo, "status", "--porcelain") == ""
        finally:
            await engine.stop(grace_s=0)
            await store.close()


async def test_inside_the_sandbox_a_worktree_is_writable_and_the_repository_is_not(tmp_path: Path) -> None:
    if find_bubblewrap()[0] is None:
        pytest.skip("no working bubblewrap on this machine; install the bubblewrap package")
    repo = make_repo(tmp_path / "operator")
    data = tmp_path / "data"
    settings = Settings(home=data, backends=instant(default_sim_backends()))
    store = await Store.open(settings.db_path, SystemClock())
    try:
        control = Control(settings, store, SystemClock())
        project = await control.add_project("calc", path=str(repo))
        job, _ = await control.add_job("look around", type="coding", project="calc")
        sandbox = Sandbox.detect("bwrap", hidden=[data])
        work = ProjectWork(Workspace(data), lambda: sandbox)
        place = await work.place(job, project)
        assert place is not None and place.git_dir is not None
        git_dir = place.git_dir
        command = (
            "echo new > new.txt && echo WROTE-WORKTREE; "
            "git log --format=%s -1; "
            f"(touch {git_dir}/planted 2>/dev/null && echo WROTE-GIT-DIR) || echo GIT-DIR-READ-ONLY; "
            f"(echo x >> {git_dir}/config 2>/dev/null && echo WROTE-CONFIG) || echo CONFIG-READ-ONLY; "
            "(git add new.txt && git commit -qm sneaky >/dev/null 2>&1 && echo COMMITTED) || echo COMMIT-REFUSED; "
            f"ls {data} 2>&1 | head -3; cat {repo}/calc.py 2>&1 | head -1"
        )
        run = await run_tests(command, place.work_dir, timeout_s=30, sandbox=sandbox,
                              job_dir=data / "jobs" / str(job.id), git_dir=git_dir)
    finally:
        await store.close()
    out = run.output
    assert "WROTE-WORKTREE" in out and "start" in out  # the worktree is its own, the history readable
    assert "GIT-DIR-READ-ONLY" in out and "CONFIG-READ-ONLY" in out and "COMMIT-REFUSED" in out
    assert "WROTE-GIT-DIR" not in out and "COMMITTED" not in out
    assert not (git_dir / "planted").exists() and "return a - b" not in out  # nor the operator's checkout
    assert (place.work_dir / "new.txt").read_text() == "new\n"
    assert (repo / "calc.py").read_text() == BROKEN
