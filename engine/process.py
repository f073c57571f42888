"""This process's identity, and whether a process recorded earlier still runs: what the engine lease
(``engine/store/lease.py``) checks before it treats a holder as gone.

On the same host a holder is gone when its pid no longer runs, is a zombie, or belongs to a process started at
another moment (a reused pid, e.g. PID 1 of a restarted container). On another host nothing can be checked:
only the lease's expiry tells.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessId:
    host: str
    pid: int
    started: str | None  # start time in clock ticks since boot (Linux /proc); None where unknown


def current() -> ProcessId:
    pid = os.getpid()
    return ProcessId(_host(), pid, _stat(pid)[1])


def is_gone(other: ProcessId) -> bool:
    """True only when ``other`` certainly no longer runs."""
    if other.host != _host():
        return False
    try:
        os.kill(other.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # runs, as another user
        pass
    state, started = _stat(other.pid)
    if state == "Z":
        return True
    return other.started is not None and started is not None and started != other.started


def _host() -> str:
    # gethostname(2)'s answer, as socket.gethostname() gives it, without loading socket (a CLI command's lease
    # check would pay for it)
    return os.uname().nodename


def _stat(pid: int) -> tuple[str | None, str | None]:
    """(state, start time) from /proc/<pid>/stat, or (None, None) where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None, None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) onwards
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)
