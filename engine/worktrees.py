"""Where a project's job works on the operator's own folder: a git worktree of its own, or the folder itself.

A project may name a folder of the operator's (``projects add NAME --path DIR --test CMD``). A job of a project
whose folder is a git repository works in a fresh worktree ``jobs/<id>/worktree-<id>`` on the branch
``switchboard/<id>-<slug>``, created from the repository's HEAD; the operator's checkout is never written. A
revision or an answer continues in the same worktree. The worker (in its sandbox) writes the worktree and reads
the repository's git folder; the engine commits what it left, runs the project's test command there, shows the
diff and merges on the operator's word. A folder that is not a git repository is bound read-write as it is.

Paths and names from outside are checked here: ``check_project_path``, ``check_test_command``,
``check_project_name``. Each refusal is one clear ``ValueError`` and creates nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import prompts
from engine.errors import WorkspaceError
from engine.fences import fences
from engine.gitrepo import Git, MergeOutcome, branch_for
from engine.models import Job, Project
from engine.sandbox import Sandbox
from engine.testrun import TestRun, run_tests
from engine.workspace import MAX_EVIDENCE_CHARS, Workspace

if TYPE_CHECKING:
    from engine.store import Store

__all__ = ["Place", "ProjectWork", "WorkEvidence", "check_project_name", "check_project_path", "check_test_command",
           "extract_patch", "folder_of", "keep_tail"]

MAX_PATH_CHARS = 1024
MAX_TEST_COMMAND_CHARS = 2000
MAX_DIFF_CHARS = 2_000_000
REVIEW_DIFF_CHARS = 60_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def keep_tail(text: str, max_chars: int = MAX_EVIDENCE_CHARS) -> str:
    """The end of a long output (where test runners print their summary), saying how much was left out."""
    if len(text) <= max_chars:
        return text
    return f"[first {len(text) - max_chars} characters omitted]\n" + text[-max_chars:]


@dataclass(frozen=True)
class WorkEvidence:
    """What the engine itself saw of a job's work on a project's folder: its own test run (None: the project
    has no test command), the change as a diff and its stat, the files the done notice attaches, how many test
    runs of this job hung, and why the work could not even be tested (a patch that did not apply)."""

    tests: TestRun | None
    diff: str = ""
    diff_stat: str = ""
    documents: list[str] = field(default_factory=list)
    timeouts: int = 0
    problem: str = ""

    def summary(self) -> str:
        """What the done notice shows: the diff stat's last line (files, insertions, deletions) and the tests."""
        lines = [line.strip() for line in self.diff_stat.strip().splitlines()]
        parts = [f"change: {lines[-1]}" if lines else ""]
        parts.append(f"tests: {self.tests.summary}" if self.tests is not None else "")
        return "\n".join(p for p in parts if p)

    def for_reviewer(self) -> str:
        blocks = []
        if self.tests is not None:
            blocks.append(prompts.untrusted("test run by Switchboard itself", keep_tail(self.tests.report())))
        if self.diff:
            diff = self.diff if len(self.diff) <= REVIEW_DIFF_CHARS else self.diff[:REVIEW_DIFF_CHARS] + "\n[cut]\n"
            blocks.append(prompts.untrusted("the change, as git diff", diff))
        return "\n\n".join(blocks)


# --- Checking what comes from outside ----------------------------------------------------------------------


def check_project_name(name: str, max_chars: int = 64) -> str:
    """A project name: 1 to ``max_chars`` characters, no control characters, not a path (``..``, ``/x``, ``~``)."""
    if not name or len(name) > max_chars:
        raise ValueError(f"a project needs a name of 1 to {max_chars} characters")
    if _CONTROL.search(name):
        raise ValueError("a project name cannot hold control characters")
    if name.startswith(("/", "~", "\\")) or ".." in re.split(r"[/\\]", name):
        raise ValueError(f"{name!r} looks like a path; a project name is a plain name (e.g. website)")
    return name


def check_project_path(text: str, home: Path, cwd: Path | None = None) -> Path:
    """The operator's folder for a project, absolute and resolved. Refuses a path that does not exist, is not a
    folder, holds control characters or is over-long, and one inside (or holding) Switchboard's data folder."""
    if not text.strip() or len(text) > MAX_PATH_CHARS:
        raise ValueError(f"a project path has 1 to {MAX_PATH_CHARS} characters")
    if _CONTROL.search(text):
        raise ValueError("a project path cannot hold control characters")
    path = Path(text).expanduser()
    path = ((cwd or Path.cwd()) / path if not path.is_absolute() else path).resolve()
    if not path.exists():
        raise ValueError(f"no folder {path}: the project path must exist")
    if not path.is_dir():
        raise ValueError(f"{path} is a file; the project path must be a folder")
    data = Path(home).expanduser().resolve()
    if path.is_relative_to(data):
        raise ValueError(f"{path} is inside Switchboard's data folder ({data}); choose a folder of your own")
    if data.is_relative_to(path):
        raise ValueError(f"{path} holds Switchboard's data folder ({data}); choose the project's own folder")
    return path


def check_test_command(text: str) -> str:
    """A test command: one line of at most ``MAX_TEST_COMMAND_CHARS`` characters, run with ``/bin/sh -c``."""
    command = text.strip()
    if not command or len(command) > MAX_TEST_COMMAND_CHARS:
        raise ValueError(f"a test command has 1 to {MAX_TEST_COMMAND_CHARS} characters")
    if _CONTROL.search(command.replace("\t", " ")):
        raise ValueError("a test command is one line without control characters")
    return command


# --- A job's place -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where one job works. For a git project: its worktree, the repository, its git folder (``git_dir``, read
    by the worker), the worktree's own git folder (``admin``), its branch and the commit it started from."""

    work_dir: Path
    repo: Path | None = None
    git_dir: Path | None = None
    admin: Path | None = None
    branch: str | None = None
    base: str | None = None
    note: str = ""  # what the operator is told when the worktree is created (uncommitted changes, detached HEAD)

    @property
    def is_worktree(self) -> bool:
        return self.admin is not None


class ProjectWork:
    """Worktrees, commits, test runs, diffs and merges of the jobs of projects bound to a folder.

    ``sandbox`` gives the worker boundary the test runs use (asked once, when the first test runs)."""

    def __init__(self, workspace: Workspace, sandbox: Callable[[], Sandbox]) -> None:
        self._workspace = workspace
        self._sandbox_factory = sandbox
        self._sandbox: Sandbox | None = None

    def worktree_path(self, job: Job) -> Path:
        return self._workspace.job_dir(job.id) / f"worktree-{job.id}"

    async def place(self, job: Job, project: Project) -> Place | None:
        """The job's place in the project's folder; None when the project has no folder of the operator's.
        Raises ``WorkspaceError`` when the folder is gone or git refuses."""
        if not project.path:
            return None
        folder = folder_of(project)
        if folder is None:
            raise WorkspaceError(f"the folder of project {project.name!r} ({folder}) no longer exists")
        top = await Git.toplevel(folder)
        if top is None:
            return Place(work_dir=folder)
        git = Git(top)
        git_dir = await git.common_dir()
        path = self.worktree_path(job)
        branch = job.branch or branch_for(job.id, job.title or job.type)
        admin = await git.admin_dir(path) if path.exists() else None
        note = ""
        if admin is None:
            if path.exists():  # a half-made worktree (a crash while git made it): start it again
                shutil.rmtree(path)
                await git.run("worktree", "prune", check=False)
            head = await git.head()
            note = _start_note(project, head.branch, head.sha, head.dirty)
            path.parent.mkdir(parents=True, exist_ok=True)
            await git.add_worktree(path, branch, head.sha)
            admin = await git.admin_dir(path)
            if admin is None:
                raise WorkspaceError(f"git made no worktree at {path}")
            base = job.base_commit or head.sha
        else:
            base = job.base_commit or (await git.run("merge-base", "HEAD", branch)).out.strip()
        return Place(work_dir=path, repo=top, git_dir=git_dir, admin=admin, branch=branch, base=base, note=note)

    async def commit(self, job: Job, place: Place) -> bool:
        """Commit what the worker left in the worktree on the job's branch. False: nothing changed."""
        if place.repo is None or place.admin is None:
            return False
        message = f"Switchboard job #{job.id} (revision {job.revision}): {job.title or job.type}"[:200]
        return await Git(place.repo).commit_all(place.work_dir, place.admin, message)

    async def finish(self, job: Job, place: Place, project: Project, *, patch_from: str | None,
                     test_timeout_s: float, store: Store) -> WorkEvidence:
        """After the maker: apply its patch (``patch_from``: the answer of a backend that cannot act on files),
        commit what it left on the job's branch, run the project's tests (recorded in the store), and keep the
        diff and the test log, as files in the job folder, for the reviewer and the operator."""
        if folder_of(project) is None:
            raise WorkspaceError(f"the folder of project {project.name!r} ({project.path}) was removed while the "
                                 "job ran; its work stays in the job's folder")
        if patch_from is not None and place.is_worktree:
            problem = await self.apply_patch(place, patch_from)
            if problem is not None:
                return WorkEvidence(tests=None, problem=problem)
        await self.commit(job, place)
        tests = None
        if project.test_command:
            tests = await self.test(job, place, project.test_command, test_timeout_s)
            await store.add_test_run(job.id, job.revision, tests.command, tests.exit_code, tests.timed_out,
                                     tests.duration_s, tests.output, tests.summary)
        stat = diff = ""
        documents = []
        if place.is_worktree and place.branch and place.base:
            git_job = job.model_copy(update={"branch": place.branch, "base_commit": place.base})
            stat, diff = await self.diff(git_job, project, stat=True), await self.diff(git_job, project)
            documents.append(str(self._workspace.write_text(job.id, f"job-{job.id}.diff", diff or "(no change)\n")))
        if tests is not None:
            documents.append(str(self._workspace.write_text(job.id, f"job-{job.id}-tests.log", tests.report())))
        hung = [r for r in await store.test_runs(job.id) if r.timed_out]
        return WorkEvidence(tests=tests, diff=diff, diff_stat=stat, documents=documents, timeouts=len(hung))

    async def patch_instructions(self, place: Place, limit: int = 400) -> str:
        """What an HTTP backend is told when it must answer with a diff: how, and the repository's files."""
        files: list[str] = []
        if place.repo is not None and place.admin is not None:
            files = await Git(place.repo).tracked_files(place.work_dir, place.admin, limit)
        return prompts.render("patch_request", limit=limit, files="\n".join(files) or "(none)")

    async def apply_patch(self, place: Place, answer: str) -> str | None:
        """Apply the unified diff in an HTTP backend's answer to the job's worktree. None when it applied,
        else why not (no diff in the answer, or git refused it)."""
        if place.repo is None or place.admin is None:
            return "a patch needs a git project's worktree"
        patch = extract_patch(answer)
        if patch is None:
            return "the answer holds no unified diff (a fenced ```diff block)"
        problem = await Git(place.repo).apply_patch(place.work_dir, place.admin, patch)
        return f"the patch does not apply: {problem}" if problem else None

    async def test(self, job: Job, place: Place, command: str, timeout_s: float) -> TestRun:
        """Run the project's test command in the job's place, inside the worker sandbox."""
        if self._sandbox is None:
            self._sandbox = self._sandbox_factory()
        return await run_tests(command, place.work_dir, timeout_s=timeout_s, sandbox=self._sandbox,
                               job_dir=self._workspace.job_dir(job.id), git_dir=place.git_dir)

    async def diff(self, job: Job, project: Project, *, stat: bool = False) -> str:
        """The job's change on its branch since the commit it started from (``--stat``: the summary)."""
        git = await self._git_of(job, project)
        text = await git.diff(job.base_commit or "HEAD", job.branch or "", stat=stat)
        return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + "\n[diff truncated by Switchboard]\n"

    async def merge(self, job: Job, project: Project) -> MergeOutcome:
        git = await self._git_of(job, project)
        return await git.merge(job.branch or "")

    async def prune(self, job: Job, project: Project | None) -> bool:
        """Remove a finished job's worktree; its branch stays. False when nothing was there to remove."""
        path = self.worktree_path(job)
        if not path.exists():
            return False
        folder = folder_of(project) if project else None
        top = await Git.toplevel(folder) if folder else None
        if top is not None:
            await Git(top).remove_worktree(path)
        if path.exists():  # the repository is gone or git refused: the folder goes anyway
            shutil.rmtree(path, ignore_errors=True)
        return True

    async def _git_of(self, job: Job, project: Project) -> Git:
        if not job.branch:
            raise ValueError(f"job #{job.id} has no branch: it did not work in a git project's worktree")
        folder = folder_of(project)
        if folder is None:
            raise ValueError(f"the folder of project {project.name!r} ({project.path}) no longer exists")
        top = await Git.toplevel(folder)
        if top is None:
            raise ValueError(f"the folder of project {project.name!r} ({project.path}) is no longer a git repository")
        git = Git(top)
        if not await git.branch_exists(job.branch):
            raise ValueError(f"the branch {job.branch} of job #{job.id} no longer exists in {top}")
        return git


def extract_patch(answer: str) -> str | None:
    """The last fenced ``diff``/``patch`` block of a model's answer, else the answer from its first
    ``diff --git`` line; None when it holds no diff."""
    blocks = [f.body for f in fences(answer.splitlines(keepends=True)) if f.lang in ("diff", "patch")]
    if blocks:
        return blocks[-1]
    start = answer.find("diff --git ")
    return answer[start:] if start != -1 else None


def folder_of(project: Project) -> Path | None:
    """The project's folder of the operator's, when it has one and it still exists."""
    return Path(project.path) if project.path and os.path.isdir(project.path) else None


def _start_note(project: Project, branch: str | None, sha: str, dirty: bool) -> str:
    """What the operator learns when a job's worktree is made from a checkout that is not clean or on a branch."""
    notes = []
    if branch is None:
        notes.append(f"{project.path} is on a detached HEAD; the work starts from commit {sha[:10]}")
    if dirty:
        notes.append(f"{project.path} has uncommitted changes; they are not included: the work starts from "
                     f"{branch or 'HEAD'} at commit {sha[:10]}")
    return "; ".join(notes)
