"""`switchboard run --no-console` as a subprocess against the HTTP fake Bot API (shared by the Telegram e2e tests).

The fake's HTTP server runs on the test's event loop, so the process is driven with asyncio subprocesses and
every wait is an ``await``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from tests.e2e.configs import READY_LINE, READY_TIMEOUT_S, REPO, SWITCHBOARD, sim_backends_toml
from tests.fakes.fake_telegram import FakeTelegram

OPERATOR = 4242
STRANGER = 666

# Several families across tiers, answering in a few milliseconds: the maker and the reviewer differ.
_BACKENDS = [
    ("sim-opus", "anthropic", 3),
    ("sim-gpt", "openai", 3),
    ("sim-sonnet", "anthropic", 2),
    ("sim-kimi", "moonshot", 2),
    ("sim-flash", "google", 1),
]


def write_config(tmp_path: Path, fake: FakeTelegram, latency_ms: float = 20.0) -> Path:
    root = fake.base_url.removesuffix("/bot")
    lines = [
        "[telegram]",
        f"operator_ids = [{OPERATOR}]",
        f'api_base_url = "{root}"',
        "progress_edit_interval_s = 60",
        "",
        "[memory]",
        "enabled = false",
        "",
    ]
    lines += sim_backends_toml([(name, family, tier, latency_ms) for name, family, tier in _BACKENDS])
    path = tmp_path / "switchboard.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Switchboard:
    """One `switchboard run --no-console` process."""

    def __init__(self, tmp_path: Path, config: Path, token: str) -> None:
        self.home = tmp_path / "home"
        self._config = config
        self._token = token
        self.process: asyncio.subprocess.Process | None = None
        self.stderr = b""

    async def start(self, *, wait_ready: bool = True) -> None:
        """Spawn the process and (unless told not to) wait for its readiness line: polling has started."""
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": self._token,
            "SWITCHBOARD_HOME": str(self.home),
            "MPLCONFIGDIR": str(self.home / "mpl"),
            "PYTHONPATH": str(REPO),
        }
        self.process = await asyncio.create_subprocess_exec(
            str(SWITCHBOARD),
            "--config",
            str(self._config),
            "run",
            "--no-console",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        if wait_ready:
            await self._ready()

    async def _ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout

        async def ready_line() -> bool:
            async for raw in stdout:
                if raw.startswith(READY_LINE):
                    return True
            return False  # exited first

        try:
            ready = await asyncio.wait_for(ready_line(), READY_TIMEOUT_S)
        except TimeoutError:
            await self.ensure_stopped()  # the caller's clean-up has not begun: no process is left behind
            raise AssertionError(f"switchboard was not ready within {READY_TIMEOUT_S:.0f} s") from None
        if not ready:
            code = await self._finish(30.0)
            raise AssertionError(f"switchboard exited ({code}) before it was ready: {self.stderr.decode()[-3000:]}")

    async def terminate(self, timeout_s: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self._finish(timeout_s)

    async def kill(self) -> int:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no cleanup of any kind
        return await self._finish(10.0)

    async def _finish(self, timeout_s: float) -> int:
        assert self.process is not None
        _, stderr = await asyncio.wait_for(self.process.communicate(), timeout_s)
        self.stderr += stderr
        return self.process.returncode if self.process.returncode is not None else -1

    async def ensure_stopped(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.communicate()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read the live database (read-only; WAL lets the test read while the process writes)."""
        conn = sqlite3.connect(f"file:{self.home / 'switchboard.db'}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


async def eventually(check: Any, timeout_s: float = 20.0, what: str = "it") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            result = check()
        except sqlite3.OperationalError:  # the database does not exist yet
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {result!r})")
        await asyncio.sleep(0.05)
