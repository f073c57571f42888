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


def pinned_cli(env_var: str, tool: str) -> str:
    """The real pinned CLI the Makefile installs (``$env_var``, else ``.tools/node_modules/.bin/<tool>``): a
    skip where it is missing, a failure on CI, where `make test` installs it."""
    import pytest

    candidate = os.environ.get(env_var) or str(Path(__file__).resolve().parents[1] / f".tools/node_modules/.bin/{tool}")
    if os.access(candidate, os.X_OK):
        return candidate
    message = f"{tool} CLI not found at {candidate} (run `make .tools/node_modules/.bin/{tool}`)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
