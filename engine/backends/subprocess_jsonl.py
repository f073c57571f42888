"""Run a CLI worker that prints JSON lines, in its own process group, and always clean it up.

Used by the ``claude_cli`` and ``codex_cli`` backends. The child gets stdin ``/dev/null`` (``claude -p``
never exits with an open stdin pipe) and a new session, so on timeout or cancellation the whole group
(the CLI and every tool process it started) gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# One stream line can carry a whole file a tool read; beyond this it is dropped rather than buffered.
MAX_LINE_BYTES = 32 * 1024 * 1024
_STDERR_TAIL_BYTES = 8192
_READ_CHUNK = 64 * 1024

# Called for each complete stdout line; returns True once the final line was seen (stop reading).
LineHandler = Callable[[str], Awaitable[bool]]


@dataclass
class ProcessOutcome:
    exit_code: int | None
    timed_out: bool
    stderr_tail: str
    lines: int


async def run_jsonl_process(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout_s: float,
    on_line: LineHandler,
    kill_grace_s: float = 3.0,
    exit_grace_s: float = 5.0,
) -> ProcessOutcome:
    """Start ``argv``, feed each stdout line to ``on_line``, kill the group on timeout or cancellation.

    Raises ``OSError`` when the binary cannot be started; the caller classifies it.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd) if cwd else None, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(_tail(proc.stderr))
    counter = [0]
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await _read_lines(proc.stdout, on_line, counter)
                # A tool process that inherited stdout could keep the pipe open after the CLI is done:
                # once the final line is in, give the CLI a moment to exit and then clean up regardless.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), exit_grace_s)
        except TimeoutError:
            timed_out = True
    finally:
        # Runs on cancellation too; shielded so a second cancel cannot leave the group running.
        await asyncio.shield(kill_process_group(proc, kill_grace_s))
        stderr_tail = await _finish_stderr(stderr_task)
    return ProcessOutcome(proc.returncode, timed_out, stderr_tail, counter[0])


async def kill_process_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL after ``grace_s``; also sweeps leftovers of a finished
    child (its group id is its pid because it was started in a new session)."""
    pgid = proc.pid
    if proc.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            _signal_group(pgid, signal.SIGKILL)
            await proc.wait()
    # Tool processes the CLI left behind in its group.
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _read_lines(stream: asyncio.StreamReader, on_line: LineHandler, counter: list[int]) -> None:
    buffer = bytearray()
    oversized = False
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            break
        buffer.extend(chunk)
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if oversized:
                oversized = False
                continue
            counter[0] += 1
            if await on_line(line.decode("utf-8", "replace")):
                return
        if len(buffer) > MAX_LINE_BYTES:
            buffer.clear()
            oversized = True
    if buffer and not oversized:
        counter[0] += 1
        await on_line(bytes(buffer).decode("utf-8", "replace"))


async def _tail(stream: asyncio.StreamReader) -> bytes:
    tail = bytearray()
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return bytes(tail)
        tail.extend(chunk)
        del tail[:-_STDERR_TAIL_BYTES]


async def _finish_stderr(task: asyncio.Task[bytes]) -> str:
    try:
        data = await asyncio.wait_for(task, 1.0)
    except TimeoutError:
        return ""
    return data.decode("utf-8", "replace")
