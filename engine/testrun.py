"""The engine runs a project's test command itself, in the job's worktree, inside the worker sandbox.

The code under test was written by a worker, so it runs with the worker's boundary (``engine.sandbox``: the
environment allow-list, bubblewrap where it works), never with the engine's rights. The run has a time limit;
at the limit its whole process group is killed. What the operator and the reviewer see is the exit code and
the tail of the output (stdout and stderr together), where test runners print their summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from engine.sandbox import Sandbox, WorkerMounts

__all__ = ["MAX_TEST_OUTPUT_CHARS", "TestRun", "run_tests"]

MAX_TEST_OUTPUT_CHARS = 64_000
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class TestRun:
    """One run of a test command: ``exit_code`` None when it could not start or was killed at the limit."""

    __test__ = False  # not a pytest class

    command: str
    exit_code: int | None
    timed_out: bool
    duration_s: float
    output: str  # the tail, at most MAX_TEST_OUTPUT_CHARS
    problem: str = ""  # why it could not run at all

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def summary(self) -> str:
        """One line: 'passed in 2.1 s: 12 passed', 'failed (exit 1) in 0.4 s: 1 failed, 3 passed', ..."""
        if self.problem:
            return f"could not run: {self.problem}"
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f} s (killed)"
        last = next((line.strip() for line in reversed(self.output.splitlines()) if line.strip()), "")
        verdict = "passed" if self.passed else f"failed (exit {self.exit_code})"
        return f"{verdict} in {self.duration_s:.1f} s" + (f": {last[:160]}" if last else "")

    def report(self) -> str:
        """The command, the outcome and the output's tail, as the reviewer, the maker and the operator read it."""
        return f"$ {self.command}\n{self.output.rstrip()}\n\n[{self.summary}]\n"


async def run_tests(command: str, cwd: Path, *, timeout_s: float, sandbox: Sandbox, job_dir: Path,
                    git_dir: Path | None = None, env: dict[str, str] | None = None) -> TestRun:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd``, inside ``sandbox`` (``cwd`` writable, the repository's
    git folder ``git_dir`` readable, ``HOME`` and ``TMPDIR`` in the job folder)."""
    started = time.monotonic()
    if not _is_folder(cwd):
        return TestRun(command, None, False, 0.0, "", f"the folder {cwd} does not exist")
    source = dict(os.environ if env is None else env)
    with sandbox.worker_dirs(job_dir) as (home, tmp):
        child_env = {**sandbox.environment(source), "HOME": str(home), "TMPDIR": str(tmp)}
        mounts = WorkerMounts(writable=(cwd, job_dir), readable=(git_dir,) if git_dir else ())
        argv = sandbox.command(["/bin/sh", "-c", command], mounts, child_env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=str(cwd), env=child_env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return TestRun(command, None, False, 0.0, "", f"cannot start /bin/sh: {exc.strerror or exc}")
        assert proc.stdout is not None
        tail = bytearray()
        timed_out = False
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await proc.stdout.read(_CHUNK):
                    tail.extend(chunk)
                    del tail[:-MAX_TEST_OUTPUT_CHARS]
                await proc.wait()
        except TimeoutError:
            timed_out = True
        finally:
            await asyncio.shield(_kill_group(proc))
    output = tail.decode("utf-8", "replace")
    code = None if timed_out else proc.returncode
    return TestRun(command, code, timed_out, time.monotonic() - started, output)


def _is_folder(path: Path) -> bool:
    return path.is_dir()


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Everything the test command started (its process group) goes, not only the shell."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
