"""`switchboard doctor`: config, worker sandbox, credentials, CLI binaries and versions, reachability, data
folder."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

from engine.backends.registry import build_backend
from engine.clock import SystemClock
from engine.errors import SandboxUnavailable
from engine.sandbox import Sandbox
from engine.settings import BOT_TOKEN_ENV, Settings


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


async def run_checks(settings: Settings) -> list[dict[str, Any]]:
    checks = [_check("config", True, f"{len(settings.backends)} backend(s), data in {settings.home}")]
    checks.append(_data_folder(settings))
    free = shutil.disk_usage(settings.home if settings.home.exists() else settings.home.parent).free
    checks.append(_check("disk", free > 200 * 2**20, f"{free / 2**30:.1f} GiB free"))
    if settings.telegram.bot_token:
        ids = settings.telegram.operator_ids
        checks.append(
            _check(
                "telegram",
                bool(ids),
                f"token set; operators {ids}"
                if ids
                else "token set but telegram.operator_ids is empty: the channel refuses to start",
            )
        )
    else:
        checks.append(_check("telegram", True, f"no {BOT_TOKEN_ENV}: console channel"))
    try:
        sandbox = Sandbox.for_settings(settings)
        checks.append(_check("sandbox", sandbox.isolated or settings.engine.sandbox == "off", sandbox.describe()))
    except SandboxUnavailable as exc:
        sandbox = Sandbox(mode="off", problem=str(exc))
        checks.append(_check("sandbox", False, f"{exc}: switchboard run refuses to start"))
    clock = SystemClock()
    for config in settings.backends:
        backend = build_backend(config, clock=clock, sandbox=sandbox)
        try:
            status = await asyncio.wait_for(backend.check_credentials(), timeout=15)
            label = " [simulated]" if config.simulated else ""
            checks.append(_check(f"backend {config.name}", status.ok, f"{config.kind}{label}: {status.message}"))
        except TimeoutError:
            checks.append(_check(f"backend {config.name}", False, "credential check timed out"))
        finally:
            await backend.aclose()
    return checks


def _data_folder(settings: Settings) -> dict[str, Any]:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.home):
            pass
    except OSError as exc:
        return _check("data folder", False, f"{settings.home}: {exc.strerror}")
    return _check("data folder", True, f"{settings.home} is writable")
