"""Projects on the operator's own folders (issue 13), with real git repositories in temporary folders and the
real engine: a worktree per job on its own branch, the operator's checkout byte-for-byte unchanged, the engine's
own test run deciding between revision and review, ``jobs diff`` and ``jobs merge``, routing to file-capable
backends only, and bad input refused with one clear message.

The worker is a fake of the CLI worker boundary (kind ``claude_cli``): it edits files in the folder the engine
gives it, as a real worker would. The real ``claude`` doing the same is in test_workspace_claude.py.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.commands import CommandRouter
from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback
from engine.clock import FakeClock
from engine.control import Control
from engine.models import Job, JobState, OutboxMessage
from engine.pulse import Pulse
from engine.sandbox import Sandbox
from engine.settings import BackendConfig, BackendKind, Settings, default_sim_backends
from engine.store import Store
from engine.workspace import Workspace
from engine.worktrees import ProjectWork, extract_patch
from tests.conftest import instant, sim_backends

BROKEN = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST_FILE = "from calc import add\nassert add(2, 3) == 5, f'add(2, 3) gave {add(2, 3)}'\nprint('1 passed')\n"
TEST_COMMAND = "python3 -B test_calc.py"  # -B: no stale bytecode when a file changes within a second


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=Op", "-c", "user.email=op@example.org", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name, text in (files or {"calc.py": BROKEN, "test_calc.py": TEST_FILE}).items():
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def checkout_state(repo: Path) -> dict[str, str]:
    """Every file of the operator's checkout (its working tree, index and HEAD), by content hash."""
    state = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and (not rel.startswith(".git/") or rel in (".git/HEAD", ".git/index")):
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    state["HEAD"] = git(repo, "rev-parse", "HEAD")
    state["status"] = git(repo, "status", "--porcelain", "--branch")
    return state


def is_folder(path: Path) -> bool:
    return path.is_dir()


def found(root: Path, name: str) -> list[Path]:
    return list(root.rglob(name))


class FileWorker:
    """A CLI worker stand-in: each run applies the next edit (file name -> new text) to its work folder."""

    def __init__(self, name: str, family: str, edits: list[dict[str, str]], kind: BackendKind = "claude_cli",
                 meanwhile: Callable[[], None] | None = None) -> None:
        self.config = BackendConfig(name=name, kind=kind, model=name, family=family, tier=3)
        self.edits = edits
        self.meanwhile = meanwhile  # something that happens while the worker works
        self.requests: list[BackendRequest] = []

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.requests.append(request)
        edit = self.edits[min(len(self.requests), len(self.edits)) - 1]
        assert request.work_dir is not None
        for name, text in edit.items():
            (request.work_dir / name).write_text(text)
        if self.meanwhile is not None:
            self.meanwhile()
        return BackendResult(text=f"Changed {', '.join(edit) or 'nothing'}.", model=self.config.model,
                             session_id="session-1")

    async def check_credentials(self) -> CredentialStatus:
        return CredentialStatus(ok=True)

    async def aclose(self) -> None:
        return None


async def start(make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
                *workers: FileWorker, **settings_kw: Any) -> tuple[Settings, Control]:
    configs = instant(default_sim_backends())
    settings = make_settings(backends=[*configs, *(w.config for w in workers)],
                             routing={"coding": [w.config.name for w in workers]}, **settings_kw)
    backends = {**sim_backends(settings, clock), **{w.config.name: w for w in workers}}
    engine = await make_engine(settings, store, clock, backends)
    return settings, Control(settings, store, clock, engine)


async def outbox_of(store: Store, job_id: int) -> list[OutboxMessage]:
    return [m for m in await store.outbox_all() if m.job_id == job_id]


async def until(store: Store, job_id: int, *states: JobState, eventually: Any) -> Job:
    async def check() -> Job | None:
        job = await store.get_job(job_id)
        return job if job is not None and job.state in states else None

    return await eventually(check)  # type: ignore[no-any-return]


async def test_a_coding_job_works_on_its_own_branch_and_the_checkout_stays_as_it_was(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    (repo / "calc.py").write_text(BROKEN + "# the operator's uncommitted note\n")  # uncommitted, tracked
    (repo / "scratch.txt").write_text("untracked")
    before = checkout_state(repo)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    done = await until(store, job.id, JobState.DONE, eventually=eventually)

    assert checkout_state(repo) == before  # byte for byte
    assert done.branch == f"switchboard/{job.id}-fix-add" and done.base_commit == before["HEAD"]
    assert git(repo, "show", f"{done.branch}:calc.py") == FIXED.strip()
    assert git(repo, "log", "--format=%an", "-1", done.branch) == "Switchboard"
    request = worker.requests[0]
    assert request.work_dir == Path(done.workspace or "") and request.cwd_in_work_dir
    assert request.read_dirs == [(repo / ".git").resolve()]
    [run] = await store.test_runs(job.id)
    assert run.exit_code == 0 and "1 passed" in run.output and run.command == TEST_COMMAND
    [review_job] = [j for j in await store.list_jobs(parent_id=job.id) if j.type == "review"]
    assert "test run by Switchboard itself" in review_job.prompt and "1 passed" in review_job.prompt
    assert "-    return a - b" in review_job.prompt and "+    return a + b" in review_job.prompt
    outbox = {m.kind: m for m in await outbox_of(store, job.id)}
    assert "uncommitted changes" in outbox["info"].text and "not included" in outbox["info"].text
    notice = outbox["job_done"]
    assert "1 file changed, 1 insertion(+), 1 deletion(-)" in notice.text and "tests: passed" in notice.text
    diff_file, log_file = (Path(p) for p in notice.payload["documents"])
    assert "+    return a + b" in diff_file.read_text() and "1 passed" in log_file.read_text()
    stat = await control.job_diff(job.id, stat=True)
    assert "calc.py | 2 +-" in stat[1]


async def test_failing_tests_send_the_work_back_with_their_output_and_a_revision_reuses_the_worktree(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"notes.txt": "looked at it"}, {"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    done = await until(store, job.id, JobState.DONE, eventually=eventually)

    first, second = await store.test_runs(job.id)
    assert first.exit_code == 1 and "add(2, 3) gave -1" in first.output and second.exit_code == 0
    reviews = await store.job_reviews(job.id)
    assert reviews[0].reviewer_backend == "checks" and "add(2, 3) gave -1" in reviews[0].critique
    assert "add(2, 3) gave -1" in worker.requests[1].prompt  # the maker got the output
    assert worker.requests[0].work_dir == worker.requests[1].work_dir  # the same worktree
    assert worker.requests[1].session_id == "session-1"  # and the same session
    assert git(repo, "log", "--format=%s", done.branch or "").count("Switchboard job") == 2
    assert git(repo, "show", "main:calc.py") == BROKEN.strip()


async def test_a_worker_claiming_passing_tests_in_tests_txt_is_not_believed(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"notes.txt": "done"}])
    settings, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")
    (settings.home / "jobs" / str(job.id) / "checkpoints").mkdir(parents=True)
    (settings.home / "jobs" / str(job.id) / "checkpoints" / "tests.txt").write_text("42 passed, all green\n")

    stuck = await until(store, job.id, JobState.NEEDS_HUMAN, eventually=eventually)

    assert [j for j in await store.list_jobs(parent_id=job.id) if j.type == "review"] == []  # never reviewed
    assert len(await store.test_runs(job.id)) == stuck.max_revisions + 1


async def test_a_hanging_test_command_is_killed_and_goes_back_once_then_to_the_operator(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker,
                                            engine={"test_timeout_s": 0.5})
    await control.add_project("calc", path=str(repo), test="sleep 30")
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    await until(store, job.id, JobState.NEEDS_HUMAN, eventually=eventually)

    runs = await store.test_runs(job.id)
    assert [r.timed_out for r in runs] == [True, True] and all(r.duration_s < 10 for r in runs)
    assert len(worker.requests) == 2
    [notice] = [m for m in await outbox_of(store, job.id) if m.kind == "needs_human"]
    assert "timed out" in notice.text


async def test_detached_head_is_a_start_point_and_the_operator_is_told(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "--detach")
    before = checkout_state(repo)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    done = await until(store, job.id, JobState.DONE, eventually=eventually)

    assert checkout_state(repo) == before
    [info] = [m for m in await outbox_of(store, job.id) if m.kind == "info"]
    assert "detached HEAD" in info.text
    _, outcome = await control.job_merge(done.id)
    assert not outcome.merged and "detached HEAD" in outcome.how
    assert checkout_state(repo) == before


async def test_merge_fast_forwards_and_refuses_conflicts_changing_nothing(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    first, _ = await control.add_job("fix add()", type="coding", project="calc")
    await until(store, first.id, JobState.DONE, eventually=eventually)
    second, _ = await control.add_job("fix add() again", type="coding", project="calc")
    await until(store, second.id, JobState.DONE, eventually=eventually)
    # The operator changes the same line meanwhile: the second job's branch now conflicts.
    (repo / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    git(repo, "commit", "-qam", "operator's own fix")

    refused_before = checkout_state(repo)
    _, refused = await control.job_merge(second.id)
    assert not refused.merged and refused.conflicts == ("calc.py",) and "conflict" in refused.how
    assert checkout_state(repo) == refused_before

    git(repo, "reset", "-q", "--hard", "HEAD~1")
    _, merged = await control.job_merge(first.id)
    assert merged.merged and merged.how == "fast-forward"
    assert (repo / "calc.py").read_text() == FIXED and git(repo, "symbolic-ref", "--short", "HEAD") == "main"


async def test_http_backends_are_skipped_for_coding_with_a_visible_reason(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    api = FileWorker("api-model", "openai", [{}], kind="openai")
    cli = FileWorker("codex-worker", "openai", [{"calc.py": FIXED}], kind="codex_cli")
    repo = make_repo(tmp_path)
    _, control = await start(make_settings, store, clock, make_engine, api, cli)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    await until(store, job.id, JobState.DONE, eventually=eventually)

    assert api.requests == [] and len(cli.requests) == 1
    events = [e for e in await store.job_events(job.id) if e.kind == "routing"]
    assert "api-model: cannot act on files" in events[0].reason


async def test_a_chain_of_http_backends_only_fails_a_coding_job_at_once_saying_why(
        make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    api = FileWorker("api-model", "openai", [{}], kind="openai")
    _, control = await start(make_settings, store, clock, make_engine, api)
    job, _ = await control.add_job("fix add()", type="coding")

    failed = await until(store, job.id, JobState.FAILED, eventually=eventually)

    assert api.requests == [] and "can act on files" in (failed.last_error or "")


async def test_the_project_folder_deleted_before_the_job_runs_goes_to_the_operator(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    settings = make_settings(backends=[worker.config, *instant(default_sim_backends())],
                             routing={"coding": ["coder"]})
    control = Control(settings, store, clock)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")
    shutil.rmtree(repo)
    await make_engine(settings, store, clock, {**sim_backends(settings, clock), "coder": worker})

    stuck = await until(store, job.id, JobState.NEEDS_HUMAN, eventually=eventually)

    assert "no longer exists" in (stuck.last_error or "") and worker.requests == []


@pytest.mark.parametrize(("path", "problem"), [
    ("missing", "must exist"),
    ("file.txt", "is a file"),
    ("home/projects", "inside Switchboard's data folder"),
    (".", "holds Switchboard's data folder"),
    ("bad\nname", "control characters"),
    ("x" * 2000, "1 to 1024 characters"),
])
async def test_a_bad_project_path_is_refused_and_creates_nothing(
        tmp_path: Path, settings: Settings, store: Store, clock: FakeClock, path: str, problem: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    (settings.home / "projects").mkdir(parents=True)
    control = Control(settings, store, clock)
    with pytest.raises(ValueError, match=problem):
        await control.add_project("web", path=str(tmp_path / path))
    assert await store.list_projects() == [] and list((settings.home / "projects").iterdir()) == []


@pytest.mark.parametrize(("name", "test", "problem"), [
    ("../up", None, "looks like a path"),
    ("/abs", None, "looks like a path"),
    ("a" * 65, None, "1 to 64 characters"),
    ("web", "pytest\nrm -rf /", "one line"),
    ("web", "", "1 to 2000 characters"),
])
async def test_bad_names_and_test_commands_are_refused(
        tmp_path: Path, settings: Settings, store: Store, clock: FakeClock, name: str, test: str | None,
        problem: str) -> None:
    control = Control(settings, store, clock)
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match=problem):
        await control.add_project(name, path=str(tmp_path / "src"), test=test)
    assert await store.list_projects() == []


async def test_a_project_path_is_stored_absolute(
        tmp_path: Path, settings: Settings, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    project = await Control(settings, store, clock).add_project("calc", path="repo", test=" pytest -q ")
    assert (project.path, project.test_command) == (str(repo.resolve()), "pytest -q")
    assert not (settings.home / "projects" / "calc").exists()  # it works in the operator's folder


async def test_the_slash_commands_add_a_project_show_the_diff_and_merge(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    router = CommandRouter(control)

    added = await router.handle(f'/projects add calc --path {repo} --test "{TEST_COMMAND}" a calculator')
    assert added == f"Project calc added. Its folder: {repo.resolve()}; tests: {TEST_COMMAND}"
    assert "must exist" in await router.handle(f"/projects add other --path {repo}/nowhere")
    assert "needs a value" in await router.handle("/projects add other --path")
    job, _ = await control.add_job("fix add()", type="coding", project="calc")
    await until(store, job.id, JobState.DONE, eventually=eventually)

    diff = await router.handle(f"/diff {job.id}")
    assert f"on switchboard/{job.id}-fix-add" in diff and "calc.py | 2 +-" in diff and "+    return a + b" in diff
    merged = await router.handle(f"/merge {job.id}")
    assert merged == f"Job #{job.id}: switchboard/{job.id}-fix-add merged (fast-forward)."
    assert "already contains" in await router.handle(f"/merge {job.id}")
    assert (repo / "calc.py").read_text() == FIXED


async def test_the_pulse_prunes_finished_worktrees_after_the_keep_time_and_keeps_the_branches(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    settings, control = await start(make_settings, store, clock, make_engine, worker,
                                    engine={"worktree_keep_hours": 24})
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")
    done = await until(store, job.id, JobState.DONE, eventually=eventually)
    worktree = Path(done.workspace or "")
    assert is_folder(worktree)
    pulse = Pulse(settings, store, clock, {})

    assert (await pulse.run_once()).pruned == []  # finished just now: kept
    clock.advance(25 * 3600)
    report = await pulse.run_once()

    assert report.pruned == [job.id] and not is_folder(worktree)
    assert str(worktree) not in git(repo, "worktree", "list")
    assert git(repo, "show", f"{done.branch}:calc.py") == FIXED.strip()  # the branch stays
    assert (await pulse.run_once()).pruned == []
    assert (await control.job_merge(job.id))[1].merged


async def test_a_repository_without_a_commit_sends_the_job_to_the_operator_saying_so(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("fresh", path=str(repo))
    job, _ = await control.add_job("write calc.py", type="coding", project="fresh")

    stuck = await until(store, job.id, JobState.NEEDS_HUMAN, eventually=eventually)

    assert "has no commit yet" in (stuck.last_error or "") and worker.requests == []
    assert git(repo, "status", "--porcelain") == ""


async def test_a_folder_that_is_not_a_repository_is_worked_on_as_it_is(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "calc.py").write_text(BROKEN)
    (folder / "test_calc.py").write_text(TEST_FILE)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}])
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("plain", path=str(folder), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="plain")

    done = await until(store, job.id, JobState.DONE, eventually=eventually)

    assert (folder / "calc.py").read_text() == FIXED and done.branch is None
    request = worker.requests[0]
    assert request.work_dir == folder.resolve() and not request.cwd_in_work_dir and request.read_dirs == []
    [run] = await store.test_runs(job.id)
    assert run.exit_code == 0
    with pytest.raises(ValueError, match="has no branch"):
        await control.job_diff(job.id)


async def test_projects_add_in_chat_without_options_keeps_the_goal_as_written(
        settings: Settings, store: Store, clock: FakeClock) -> None:
    router = CommandRouter(Control(settings, store, clock))
    answer = await router.handle("/projects add site the company's website")
    assert answer.startswith("Project site added.")
    [project] = await store.list_projects()
    assert (project.goal, project.path) == ("the company's website", None)
    assert "Which project?" in await router.handle("/projects add")


async def test_the_project_folder_removed_while_the_job_runs_goes_to_the_operator_keeping_the_work(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    worker = FileWorker("coder", "anthropic", [{"calc.py": FIXED}], meanwhile=lambda: shutil.rmtree(repo))
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    stuck = await until(store, job.id, JobState.NEEDS_HUMAN, eventually=eventually)

    assert "was removed while the job ran" in (stuck.last_error or "")
    assert (Path(stuck.workspace or "") / "calc.py").read_text() == FIXED  # the work is kept
    [notice] = [m for m in await outbox_of(store, job.id) if m.kind == "needs_human"]
    assert "was removed while the job ran" in notice.text


async def test_an_answer_continues_in_the_same_worktree_and_session(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    asked: list[Path] = []

    def ask() -> None:  # the first run leaves a question in its job folder, as a worker does
        if not asked:
            asked.append(worker.requests[0].workspace or Path())
            (asked[0] / "question.md").write_text("Keep the old behaviour for negative numbers?")

    worker = FileWorker("coder", "anthropic", [{"notes.txt": "half done"}, {"calc.py": FIXED}], meanwhile=ask)
    _, control = await start(make_settings, store, clock, make_engine, worker)
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")
    waiting = await until(store, job.id, JobState.NEEDS_INPUT, eventually=eventually)
    assert waiting.branch == f"switchboard/{job.id}-fix-add"

    await control.answer(job.id, "No, fix them too.")
    done = await until(store, job.id, JobState.DONE, eventually=eventually)

    first, second = worker.requests
    assert first.work_dir == second.work_dir == Path(done.workspace or "")
    assert second.session_id == "session-1" and "No, fix them too." in second.prompt
    assert git(repo, "show", f"{done.branch}:notes.txt") == "half done"  # the first run's work is on the branch
    assert git(repo, "show", f"{done.branch}:calc.py") == FIXED.strip()


GOOD_PATCH = """Fixed: add() subtracted.

```diff
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
```
"""
STALE_PATCH = GOOD_PATCH.replace("-    return a - b", "-    return a * b")


class PatchModel(FileWorker):
    """An HTTP model: it cannot touch files, it answers with text (here: a unified diff)."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__("api-coder", "openai", [{}], kind="openai")
        self.answers = answers

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.requests.append(request)
        return BackendResult(text=self.answers[len(self.requests) - 1], model="api-coder")


async def test_a_job_type_that_accepts_a_patch_takes_a_diff_from_an_http_model_and_tests_it(
        tmp_path: Path, make_settings: Callable[..., Settings], store: Store, clock: FakeClock, make_engine: Any,
        eventually: Any) -> None:
    repo = make_repo(tmp_path)
    model = PatchModel([STALE_PATCH, "I would change calc.py.", GOOD_PATCH])
    coding = {"tier": 3, "review": True, "rubric": "coding", "require_test_evidence": True,
              "needs_workspace": True, "accept_patch": True, "max_revisions": 2}
    _, control = await start(make_settings, store, clock, make_engine, model, job_types={"coding": coding})
    await control.add_project("calc", path=str(repo), test=TEST_COMMAND)
    job, _ = await control.add_job("fix add()", type="coding", project="calc")

    done = await until(store, job.id, JobState.DONE, eventually=eventually)

    first_prompt = model.requests[0].prompt
    assert "calc.py\ntest_calc.py" in first_prompt and "fenced block marked `diff`" in first_prompt
    critiques = [r.critique for r in await store.job_reviews(job.id) if r.reviewer_backend == "checks"]
    assert "the patch does not apply" in critiques[0] and "holds no unified diff" in critiques[1]
    assert len(await store.test_runs(job.id)) == 1  # only the patch that applied was tested
    assert git(repo, "show", f"{done.branch}:calc.py") == FIXED.strip()
    assert git(repo, "show", "main:calc.py") == BROKEN.strip()


async def test_a_patch_reaching_outside_the_worktree_is_refused(
        tmp_path: Path, settings: Settings, store: Store, clock: FakeClock) -> None:
    repo = make_repo(tmp_path)
    control = Control(settings, store, clock)
    project = await control.add_project("calc", path=str(repo))
    job, _ = await control.add_job("fix add()", type="coding", project="calc")
    work = ProjectWork(Workspace(settings.home), lambda: Sandbox(mode="off"))
    place = await work.place(job, project)
    assert place is not None
    escape = "```diff\n--- /dev/null\n+++ b/../../../escaped.txt\n@@ -0,0 +1 @@\n+out\n```\n"
    problem = await work.apply_patch(place, escape)
    assert problem is not None and "does not apply" in problem
    assert not found(tmp_path, "escaped.txt")
    assert extract_patch("no diff here") is None
    assert await work.apply_patch(place, GOOD_PATCH) is None
    assert (place.work_dir / "calc.py").read_text() == FIXED and (repo / "calc.py").read_text() == BROKEN
