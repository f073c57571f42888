"""What is still running, for tests that prove a CLI backend leaves no process behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def worker_python() -> str:
    """A Python for stand-in worker scripts that also runs inside the worker sandbox, which shows the system
    but not a Python installed in the operator's home (pyenv, a venv there)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def processes_in(directory: Path) -> list[int]:
    """PIDs whose working directory is ``directory``: a CLI (or its tools) still running for that job."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
