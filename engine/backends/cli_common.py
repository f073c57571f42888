"""What the CLI backends (``claude_cli``, ``codex_cli``) share: finding the binary, asking its version, and
running one job as one process whose JSON lines become events, progress and, at the end, a result.

``CliBackend`` holds that; a subclass names its tool and builds the command line. The process itself (its
group, the timeout kill, the line reader) is ``engine.backends.subprocess_jsonl``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from engine.backends.base import BackendRequest, BackendResult
from engine.backends.http_common import Progress, elapsed_ms
from engine.backends.subprocess_jsonl import LineHandler, ProcessOutcome, run_jsonl_process
from engine.clock import Clock
from engine.failures import Failure, FailureClass
from engine.redaction import redact
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


class CliBackend:
    """One process of ``tool`` per job. ``env`` is the child's whole environment (default: this process's)."""

    tool: str  # the binary's usual name: "claude"
    binary_env: str  # the variable that may point at it: "SWITCHBOARD_CLAUDE_BIN"
    signature: str  # failure signatures start with it: "cli"

    def __init__(self, config: BackendConfig, *, clock: Clock, env: dict[str, str] | None = None) -> None:
        self.config = config
        self._clock = clock
        self._env = env

    def _base_env(self) -> dict[str, str]:
        return dict(os.environ if self._env is None else self._env)

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
        """Run the job's process; ``finish`` turns what it showed into the result. A missing binary or one
        that cannot start is a classified failure, not an exception."""
        started = time.monotonic()
        binary = self.binary()
        if binary is None:
            return BackendResult(failure=Failure(
                failure_class=FailureClass.AUTH, message=f"{self.tool} binary not found",
                signature=f"{self.signature}:binary_missing"))
        try:
            outcome = await run_jsonl_process(
                self.build_command(binary, request), cwd=request.workspace, env=env,
                timeout_s=min(request.timeout_s, self.config.timeout_s), on_line=on_line)
        except OSError as exc:
            return BackendResult(failure=Failure(
                failure_class=FailureClass.UNKNOWN, message=redact(f"cannot start {self.tool}: {exc}", secrets),
                signature=f"{self.signature}:spawn:{type(exc).__name__}"))
        return finish(outcome).model_copy(update={"latency_ms": elapsed_ms(started)})

    async def aclose(self) -> None:
        """Nothing to close: every run owns its process and reaps it."""
