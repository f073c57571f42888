"""What the CLI backends (``claude_cli``, ``codex_cli``) share: finding the binary, asking its version, and
running one job as one process, inside the worker sandbox (engine/sandbox.py), whose JSON lines become
events, progress and, at the end, a result.

``CliBackend`` holds that; a subclass names its tool and builds the command line. The process itself (its
group, the timeout kill, the line reader) is ``engine.backends.subprocess_jsonl``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from engine.backends.base import BackendRequest, BackendResult
from engine.backends.http_common import Progress, elapsed_ms
from engine.backends.subprocess_jsonl import LineHandler, ProcessOutcome, run_jsonl_process
from engine.clock import Clock
from engine.failures import Failure, FailureClass
from engine.redaction import redact
from engine.sandbox import Sandbox, WorkerMounts
from engine.settings import BackendConfig

E = TypeVar("E", bound=BaseModel)


def parse_line(model: type[E], line: str) -> E | None:
    """One JSON object line as ``model``; None if the line is not one (a banner, a half line, an array)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return model.model_validate_json(line)
    except ValidationError:
        return None


def clip(text: str, limit: int = 160) -> str:
    """``text`` on one line, at most ``limit`` characters: for progress cards and failure messages."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_handler(parse: Callable[[str], E | None], feed: Callable[[E], None], describe: Callable[[E], str],
                  is_last: Callable[[E], bool], progress: Progress) -> LineHandler:
    """A line handler for ``run_jsonl_process``: parse each line, feed the event to the run's state, report it
    as progress, and stop reading after the last event."""

    async def on_line(line: str) -> bool:
        event = parse(line)
        if event is None:
            return False
        feed(event)
        await progress(describe(event), force=True)
        return is_last(event)

    return on_line


async def version_output(binary: str, env: dict[str, str]) -> tuple[int | None, str] | None:
    """``binary --version``: its exit code and stdout, or None when it cannot start or takes over 30 s."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, "--version", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        out, _ = await asyncio.wait_for(proc.communicate(), 30.0)
    except (OSError, TimeoutError):
        return None
    return proc.returncode, out.decode("utf-8", "replace")


def worker_folders(request: BackendRequest, job_dir: Path) -> tuple[Path, ...]:
    """The folders a worker writes, its working directory first: its job folder and the folder the work happens
    in, or (a git worktree) the other way round."""
    if request.work_dir is None:
        return (job_dir,)
    work = request.work_dir.resolve()
    return (work, job_dir) if request.cwd_in_work_dir else (job_dir, work)


class CliBackend:
    """One process of ``tool`` per job, inside the engine's ``Sandbox`` (engine/sandbox.py). ``env`` stands for
    the engine's environment (default: this process's); the worker gets only the allow-listed part of it."""

    tool: str  # the binary's usual name: "claude"
    binary_env: str  # the variable that may point at it: "SWITCHBOARD_CLAUDE_BIN"
    signature: str  # failure signatures start with it: "cli"
    config_dir_env: str  # the variable naming the CLI's config folder: "CLAUDE_CONFIG_DIR"
    config_dir_name: str  # that folder in the home folder by default: ".claude"
    own_vars: tuple[str, ...] = ()  # the CLI's own settings and credential variables, passed when set
    own_prefixes: tuple[str, ...] = ()  # and the variables starting with these: "CLAUDE_CODE_"

    def __init__(self, config: BackendConfig, *, clock: Clock, env: dict[str, str] | None = None,
                 sandbox: Sandbox | None = None) -> None:
        self.config = config
        self._clock = clock
        self._env = env
        # Built alone (tests, tools), a backend still hides the operator's home; the engine passes its own.
        self._sandbox = sandbox if sandbox is not None else Sandbox.detect("auto", hidden=[Path.home()])

    def _base_env(self) -> dict[str, str]:
        return dict(os.environ if self._env is None else self._env)

    def config_dir(self) -> Path:
        """The CLI's config folder (its login, its sessions): ``$config_dir_env``, else in the home folder."""
        env = self._base_env()
        return Path(env.get(self.config_dir_env) or Path(env.get("HOME") or Path.home()) / self.config_dir_name)

    def credentials(self, env: dict[str, str]) -> dict[str, str]:
        """Variables set for the CLI from the config (its key from ``api_key_env``, a base URL)."""
        return {}

    def child_env(self) -> dict[str, str]:
        """The worker's environment without its ``HOME`` and ``TMPDIR`` (those are per job)."""
        source = self._base_env()
        values = self.credentials(source)
        if self.config_dir().is_dir():  # else the CLI keeps its config in the worker's own home
            values[self.config_dir_env] = str(self.config_dir())
        own = [self.config.api_key_env] if self.config.api_key_env else []
        return self._sandbox.environment(source, names=(*self.own_vars, *self.config.env_passthrough),
                                         prefixes=self.own_prefixes, own=own, values=values)

    def version_env(self) -> dict[str, str]:
        """For ``--version``, run by the engine itself: the allow-list with the engine's home folder."""
        home = self._base_env().get("HOME")
        return {**self.child_env(), **({"HOME": home} if home else {})}

    def binary(self) -> str | None:
        """config.binary, else ``$binary_env``, else ``tool`` on PATH; None when none exists."""
        env = self._base_env()
        candidate = self.config.binary or env.get(self.binary_env) or os.environ.get(self.binary_env) or self.tool
        if os.sep in candidate:
            return candidate if os.access(candidate, os.X_OK) else None
        return shutil.which(candidate, path=env.get("PATH"))

    def build_command(self, binary: str, request: BackendRequest) -> list[str]:
        """The argv of one job's process."""
        raise NotImplementedError

    async def _run_process(self, request: BackendRequest, *, env: dict[str, str], secrets: list[str],
                           on_line: LineHandler, finish: Callable[[ProcessOutcome], BackendResult]) -> BackendResult:
        """Run the job's process in the sandbox; ``finish`` turns what it showed into the result. A missing
        binary or one that cannot start is a classified failure, not an exception."""
        started = time.monotonic()
        binary = self.binary()
        if binary is None:
            return BackendResult(failure=Failure(
                failure_class=FailureClass.AUTH, message=f"{self.tool} binary not found",
                signature=f"{self.signature}:binary_missing"))
        job_dir = request.workspace.resolve() if request.workspace is not None else None
        try:
            with self._sandbox.worker_dirs(job_dir) as (home, tmp):
                folders = worker_folders(request, job_dir or home.parent)
                folder = folders[0]
                config_dir = self.config_dir()
                mounts = WorkerMounts(
                    writable=folders,
                    readable=tuple(p.resolve() for p in request.read_dirs),
                    config_dirs=(config_dir.resolve(),) if env.get(self.config_dir_env) else ())
                argv = self._sandbox.command(self.build_command(binary, request), mounts, env)
                outcome = await run_jsonl_process(
                    argv, cwd=folder, env={**env, "HOME": str(home), "TMPDIR": str(tmp)},
                    timeout_s=min(request.timeout_s, self.config.timeout_s), on_line=on_line)
        except OSError as exc:
            return BackendResult(failure=Failure(
                failure_class=FailureClass.UNKNOWN, message=redact(f"cannot start {self.tool}: {exc}", secrets),
                signature=f"{self.signature}:spawn:{type(exc).__name__}"))
        return finish(outcome).model_copy(update={"latency_ms": elapsed_ms(started)})

    async def aclose(self) -> None:
        """Nothing to close: every run owns its process and reaps it."""
