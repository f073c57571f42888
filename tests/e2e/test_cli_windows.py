"""`switchboard backends` and `switchboard status` show each subscription's usage windows, as a user runs them:
what the windows table holds (written by the engine's window tracker on a real SQLite file), and "window unknown"
for a subscription that never reported one."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from engine.backends.base import BackendResult, Usage
from engine.clock import SystemClock
from engine.quota import WindowReport, WindowStatus
from engine.settings import BackendConfig, Settings
from engine.store import Store
from engine.windows import WindowTracker
from tests.e2e.test_cli import _run

CONFIG = """
[[backends]]
name = "max"
kind = "claude_cli"
family = "anthropic"
subscription = true

[[backends]]
name = "plus"
kind = "codex_cli"
family = "openai"
subscription = true

[[backends]]
name = "paid"
kind = "openai"
family = "deepseek"
base_url = "http://127.0.0.1:9/v1"
price_in_per_mtok = 0.5
"""


async def _record_a_warning(home: Path, resets_at: float) -> None:
    max_config = BackendConfig(name="max", kind="claude_cli", family="anthropic", subscription=True)
    settings = Settings(home=home, backends=[max_config])
    store = await Store.open(settings.db_path, SystemClock())
    try:
        report = WindowReport(kind="five_hour", status=WindowStatus.WARNING, resets_at=resets_at, utilization=0.85)
        result = BackendResult(text="ok", usage=Usage(input_tokens=40_000, output_tokens=2_000), windows=[report])
        await WindowTracker(settings, store, SystemClock()).after_call(max_config, result)
    finally:
        await store.close()


def test_backends_and_status_show_the_windows(tmp_path: Path) -> None:
    home, config = tmp_path / "home", tmp_path / "switchboard.toml"
    config.write_text(CONFIG)
    resets_at = float(int(time.time()) + 7200)
    asyncio.run(_record_a_warning(home, resets_at))
    reset_text = time.strftime("%a %H:%M UTC", time.gmtime(resets_at))

    listed = _run(home, "backends", config=config)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("max ") and lines[1].strip() == (
        f"five-hour: WARNING, 85% used, resets {reset_text}, Switchboard used 42k tokens in 1 run(s)"
    )
    assert lines[2].startswith("plus ") and lines[3].strip() == "window unknown"
    assert lines[4].startswith("paid ") and len(lines) == 5  # pay-per-token: no window

    data = {b["name"]: b for b in json.loads(_run(home, "backends", "--json", config=config).stdout)}
    assert data["max"]["window_data"][0]["status"] == "allowed_warning"
    assert data["max"]["window_data"][0]["resets_at"] == resets_at
    assert data["plus"]["windows"] == ["window unknown"] and data["paid"]["windows"] == []

    status = _run(home, "status", config=config)
    assert f"five-hour: WARNING, 85% used, resets {reset_text}" in status.stdout
