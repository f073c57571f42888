"""What the e2e tests share: the `switchboard` command of this venv, its readiness line, sim-backend config text."""

from __future__ import annotations

import sys
from pathlib import Path

SWITCHBOARD = Path(sys.executable).parent / "switchboard"
# Put on PYTHONPATH of every process a test starts: the code of this checkout runs, whichever checkout the
# venv's `switchboard` was installed from (worktrees share one venv).
REPO = Path(__file__).resolve().parents[2]
# `switchboard run` prints this on stdout once the engine runs and the channel is up. Tests wait for it, never
# for a fixed time; the limit is generous because a busy CI machine can take many seconds to start Python.
READY_LINE = b"switchboard ready"
READY_TIMEOUT_S = 120.0


def sim_backends_toml(backends: list[tuple[str, str, int, float]], *, max_concurrency: int | None = None) -> list[str]:
    """``[[backends]]`` tables for simulated backends given as (name, family, tier, latency_ms)."""
    lines: list[str] = []
    for name, family, tier, latency_ms in backends:
        lines += ["[[backends]]", f'name = "{name}"', 'kind = "sim"', f'model = "{name}"', f'family = "{family}"',
                  f"tier = {tier}"]
        if max_concurrency is not None:
            lines.append(f"max_concurrency = {max_concurrency}")
        lines += ["[backends.sim]", f"latency_ms = {latency_ms}", ""]
    return lines
