"""What is still running, for tests that prove a CLI backend leaves no process behind."""

from __future__ import annotations

import os
from pathlib import Path


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
