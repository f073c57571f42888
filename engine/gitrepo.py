"""Git, run as a subprocess: what the engine does to an operator's repository and to a job's worktree.

The operator's checkout is never written here except by ``merge``, on the operator's word. A job's worktree is
written by a worker (untrusted), so every command in it names the worktree's git folder itself
(``--git-dir``/``--work-tree``) instead of following the ``.git`` file the worker could have rewritten, and
runs with hooks and fsmonitor off: nothing a worker left behind runs outside its sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from engine.errors import WorkspaceError

__all__ = ["Git", "GitOutput", "Head", "MergeOutcome", "branch_for", "git_env"]

GIT_TIMEOUT_S = 120.0
_SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "commit.gpgsign=false",
         "-c", "protocol.file.allow=never")
_IDENTITY = ("-c", "user.name=Switchboard", "-c", "user.email=switchboard@localhost")
_SLUG_CHARS = 40


@dataclass(frozen=True)
class GitOutput:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True)
class Head:
    """Where a checkout stands: its commit, its branch (None when detached) and whether it has uncommitted
    changes to tracked files."""

    sha: str
    branch: str | None
    dirty: bool


@dataclass(frozen=True)
class MergeOutcome:
    merged: bool
    how: str  # "fast-forward", "merge", "up to date", or why not
    conflicts: tuple[str, ...] = ()


def git_env(source: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``GIT_*`` variable (a ``GIT_DIR`` would point every command at
    another repository), never prompting, with untranslated messages."""
    env = {k: v for k, v in (source if source is not None else os.environ).items() if not k.startswith("GIT_")}
    return {**env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def branch_for(job_id: int, title: str) -> str:
    """``switchboard/<id>-<slug>``: the slug is the title in lower-case ASCII letters, digits and dashes."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:_SLUG_CHARS].strip("-")
    return f"switchboard/{job_id}-{slug}" if slug else f"switchboard/{job_id}"


async def _run(args: list[str], cwd: Path | None, timeout_s: float) -> GitOutput:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=str(cwd) if cwd else None, env=git_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise WorkspaceError(f"cannot run git: {exc.strerror or exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise WorkspaceError(f"git {args[-1] if args else ''} took over {timeout_s:g} s; stopped") from None
        raise
    return GitOutput(proc.returncode or 0, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class Git:
    """Git commands on one repository (``repo``: the operator's checkout, trusted) and its job worktrees."""

    def __init__(self, repo: Path, timeout_s: float = GIT_TIMEOUT_S) -> None:
        self.repo = Path(repo)
        self._timeout_s = timeout_s

    async def run(self, *args: str, check: bool = True) -> GitOutput:
        result = await _run([*_SAFE, "-C", str(self.repo), *args], None, self._timeout_s)
        if check and not result.ok:
            raise WorkspaceError(f"git {args[0]} failed in {self.repo}: {_last_line(result)}")
        return result

    async def in_worktree(self, worktree: Path, admin: Path, *args: str, check: bool = True) -> GitOutput:
        """A command in a job's worktree, its git folder named explicitly (the worker cannot redirect it)."""
        prefix = [*_SAFE, *_IDENTITY, f"--git-dir={admin}", f"--work-tree={worktree}", "-C", str(worktree)]
        result = await _run([*prefix, *args], None, self._timeout_s)
        if check and not result.ok:
            raise WorkspaceError(f"git {args[0]} failed in {worktree}: {_last_line(result)}")
        return result

    # --- The repository ------------------------------------------------------------------------------------

    @staticmethod
    async def toplevel(path: Path) -> Path | None:
        """The top folder of the git checkout ``path`` is in, or None when it is not in one."""
        result = await _run(["-C", str(path), "rev-parse", "--show-toplevel"], None, GIT_TIMEOUT_S)
        return _resolved(result.out.strip()) if result.ok and result.out.strip() else None

    async def common_dir(self) -> Path:
        """The repository's own git folder (``.git``), where every worktree's objects and refs live."""
        return _resolved((await self.run("rev-parse", "--path-format=absolute", "--git-common-dir")).out.strip())

    async def head(self) -> Head:
        found = await self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if not found.ok:
            raise WorkspaceError(f"{self.repo} has no commit yet: a job's branch starts from HEAD, so commit first")
        sha = found.out.strip()
        branch = await self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        status = await self.run("status", "--porcelain", "--untracked-files=no", check=False)
        return Head(sha, branch.out.strip() if branch.ok else None, bool(status.out.strip()))

    async def branch_exists(self, branch: str) -> bool:
        return (await self.run("show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False)).ok

    # --- Worktrees -----------------------------------------------------------------------------------------

    async def add_worktree(self, path: Path, branch: str, base: str) -> None:
        """A new worktree at ``path`` on ``branch``: created from ``base``, or checked out when it exists."""
        if await self.branch_exists(branch):
            await self.run("worktree", "add", "--quiet", str(path), branch)
        else:
            await self.run("worktree", "add", "--quiet", "-b", branch, str(path), base)

    async def admin_dir(self, worktree: Path) -> Path | None:
        """The git folder of ``worktree`` (``.git/worktrees/<name>``), found from the repository's side: its
        ``gitdir`` file names the worktree. None when the repository does not know the worktree."""
        return _admin_of(await self.common_dir() / "worktrees", _resolved(str(Path(worktree) / ".git")))

    async def commit_all(self, worktree: Path, admin: Path, message: str) -> bool:
        """Commit everything changed in the worktree (new files too). False when there was nothing to commit."""
        await self.in_worktree(worktree, admin, "add", "--all")
        staged = await self.in_worktree(worktree, admin, "diff", "--cached", "--quiet", check=False)
        if staged.ok:
            return False
        await self.in_worktree(worktree, admin, "commit", "--quiet", "--no-verify", "-m", message)
        return True

    async def apply_patch(self, worktree: Path, admin: Path, patch: str) -> str | None:
        """Apply a unified diff to the worktree (``git apply``: it refuses paths outside the worktree and through
        symlinks). None when it applied, else why not; a patch that does not apply changes nothing."""
        with tempfile.NamedTemporaryFile("w", suffix=".diff", encoding="utf-8", delete=False) as handle:
            handle.write(patch if patch.endswith("\n") else patch + "\n")
        try:
            checked = await self.in_worktree(worktree, admin, "apply", "--check", "--recount", handle.name,
                                             check=False)
            if not checked.ok:
                return _last_line(checked)
            await self.in_worktree(worktree, admin, "apply", "--recount", handle.name)
            return None
        finally:
            os.unlink(handle.name)

    async def tracked_files(self, worktree: Path, admin: Path, limit: int) -> list[str]:
        out = (await self.in_worktree(worktree, admin, "ls-files", "-z")).out
        return [name for name in out.split("\0") if name][:limit]

    async def remove_worktree(self, worktree: Path) -> None:
        """Remove a job's worktree (its branch stays). Forced: a finished job's leftovers are not kept."""
        await self.run("worktree", "remove", "--force", str(worktree), check=False)
        await self.run("worktree", "prune", check=False)

    # --- Diff and merge ------------------------------------------------------------------------------------

    async def diff(self, base: str, branch: str, *, stat: bool = False) -> str:
        args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv"] + (["--stat"] if stat else [])
        return (await self.run(*args, f"{base}..{branch}")).out

    async def merge(self, branch: str) -> MergeOutcome:
        """Merge ``branch`` into the checkout's branch when that is a fast-forward or a merge without conflicts;
        otherwise change nothing and say why."""
        head = await self.head()
        if head.branch is None:
            return MergeOutcome(False, "the project's checkout is on a detached HEAD; check out a branch first")
        if head.dirty:
            return MergeOutcome(False, f"the project's checkout ({head.branch}) has uncommitted changes; "
                                       "commit or stash them first")
        tip = (await self.run("rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}")).out.strip()
        if (await self.run("merge-base", "--is-ancestor", tip, head.sha, check=False)).ok:
            return MergeOutcome(False, f"{head.branch} already contains {branch}: nothing to merge")
        if (await self.run("merge-base", "--is-ancestor", head.sha, tip, check=False)).ok:
            await self.run("merge", "--ff-only", "--quiet", tip)
            return MergeOutcome(True, "fast-forward")
        trial = await self.run("merge-tree", "--write-tree", "--name-only", "--no-messages", head.sha, tip,
                               check=False)
        if trial.code == 1:
            files = tuple(line for line in trial.out.splitlines()[1:] if line.strip())
            return MergeOutcome(False, f"merging {branch} into {head.branch} would conflict", files)
        if not trial.ok:
            return MergeOutcome(False, f"git cannot merge {branch}: {_last_line(trial)}")
        await self.run(*_IDENTITY, "merge", "--no-ff", "--no-edit", "--quiet", tip,
                       "-m", f"Merge {branch} (Switchboard)")
        return MergeOutcome(True, "merge")


def _resolved(path: str) -> Path:
    return Path(path).resolve()


def _admin_of(folder: Path, wanted: Path) -> Path | None:
    with contextlib.suppress(OSError):
        for admin in folder.iterdir():
            with contextlib.suppress(OSError):
                if _resolved((admin / "gitdir").read_text(encoding="utf-8").strip()) == wanted:
                    return admin
    return None


def _last_line(result: GitOutput) -> str:
    lines = (result.err or result.out).strip().splitlines()
    return lines[-1][:300] if lines else f"exit code {result.code}"
