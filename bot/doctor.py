"""`switchboard doctor`: what `switchboard run` needs, checked the way run will meet it.

The configuration (strict, times and zones included) was already checked by ``load_settings``: doctor and run
refuse a bad one with the same line. Then: the data folder (writable, 0700, no engine already running on it),
disk space, Telegram (the
channel's own refusals, then ``getMe`` with a short timeout: reachable, token accepted, the bot's name), the
worker sandbox, the pulse's time zone and times, git (for projects' worktrees), each backend's credentials,
and a warning when a reviewed job type has no reviewer of another family. A check is ``ok``, ``warn`` (run
starts, but look) or ``fail``; the exit code is 0 only when nothing failed, that is when run would start cleanly.
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import stat
import tempfile
from typing import Any

import httpx

from engine.backends.registry import build_backend
from engine.clock import SystemClock
from engine.errors import SandboxUnavailable
from engine.redaction import redact
from engine.sandbox import Sandbox
from engine.settings import BOT_TOKEN_ENV, Settings

TELEGRAM_TIMEOUT_S = 5.0
MIN_FREE_BYTES = 200 * 2**20
_MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def _check(name: str, ok: bool, detail: str, *, warn: bool = False) -> dict[str, Any]:
    level = "fail" if not ok else "warn" if warn else "ok"
    return {"check": name, "ok": ok, "level": level, "detail": detail}


def passed(checks: list[dict[str, Any]]) -> bool:
    """Would run start cleanly? Warnings do not stop it."""
    return all(c["ok"] for c in checks)


def check_line(check: dict[str, Any]) -> str:
    return f"{_MARKS[check['level']]} {check['check']}: {check['detail']}"


async def run_checks(settings: Settings, *, telegram_timeout_s: float = TELEGRAM_TIMEOUT_S) -> list[dict[str, Any]]:
    checks = [_check("config", True, f"{len(settings.backends)} backend(s), data in {settings.home}")]
    checks.append(_data_folder(settings))
    checks.append(_engine_lock(settings))
    checks.append(_disk(settings))
    checks.append(await telegram_check(settings, timeout_s=telegram_timeout_s))
    sandbox, sandbox_check = _sandbox(settings)
    checks.append(sandbox_check)
    checks.append(_times(settings))
    checks.append(_git())
    checks.extend(_single_family(settings))
    checks.extend(await _backends(settings, sandbox))
    return checks


def _data_folder(settings: Settings) -> dict[str, Any]:
    home = settings.home
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home):
            pass
        mode = stat.S_IMODE(home.stat().st_mode)
    except OSError as exc:
        return _check("data folder", False, f"{home}: {exc.strerror}")
    if mode & 0o077:
        return _check("data folder", False, f"{home} is {mode:04o}, readable by others: chmod 700 {home}")
    return _check("data folder", True, f"{home} is writable and private ({mode:04o})")


def _engine_lock(settings: Settings) -> dict[str, Any]:
    """Run refuses to start while another engine holds the data folder's lock (``bot.app.engine_lock``)."""
    path = settings.home / "engine.lock"
    if not path.exists():
        return _check("engine", True, "no engine running on this data folder")
    try:
        with path.open("a") as handle:  # "a": never truncate the running engine's pid
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        pid = path.read_text(encoding="utf-8").strip() or "?"
        return _check("engine", False, f"another switchboard (pid {pid}) is already running on {settings.home}: "
                      "run would refuse to start")
    except OSError as exc:
        return _check("engine", False, f"{path}: {exc.strerror}")
    return _check("engine", True, "no engine running on this data folder")


def _git() -> dict[str, Any]:
    """Projects on a git folder run each job in a worktree; without git those jobs cannot start."""
    found = shutil.which("git")
    if found is None:
        return _check("git", True, "git not found on PATH: jobs of projects bound to a git repository will fail "
                      "(apt-get install git); other jobs are not affected", warn=True)
    return _check("git", True, f"{found}: job worktrees for projects in git repositories")


def _disk(settings: Settings) -> dict[str, Any]:
    free = shutil.disk_usage(settings.home if settings.home.exists() else settings.home.parent).free
    return _check("disk", free > MIN_FREE_BYTES, f"{free / 2**30:.1f} GiB free in {settings.home}")


async def telegram_check(settings: Settings, *, timeout_s: float = TELEGRAM_TIMEOUT_S) -> dict[str, Any]:
    """The channel's own refusals, then ``getMe``: reachable, token accepted, the bot's name. Never the token."""
    telegram = settings.telegram
    token = telegram.bot_token
    if token is None:
        return _check("telegram", True, f"no {BOT_TOKEN_ENV}: console channel")
    from bot.telegram.channel import refusal

    problem = refusal(settings)
    if problem:
        return _check("telegram", False, problem)
    root = telegram.api_base_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{root}/bot{token.get_secret_value()}/getMe")
    except httpx.HTTPError as exc:
        reason = redact(str(exc) or type(exc).__name__, [token])
        return _check("telegram", False, f"{root} unreachable ({reason}): run would keep retrying")
    if response.status_code in (401, 404):
        return _check("telegram", False, f"Telegram rejected the bot token in {BOT_TOKEN_ENV} "
                      f"({response.status_code} {response.reason_phrase}): get a new one from @BotFather")
    try:
        bot = response.json()["result"]
        name = f"@{bot['username']}"
    except (ValueError, KeyError, TypeError):
        return _check("telegram", False, f"{root} answered getMe with HTTP {response.status_code}")
    return _check("telegram", True, f"token set and accepted: {name} reachable; operators {telegram.operator_ids}")


def _sandbox(settings: Settings) -> tuple[Sandbox, dict[str, Any]]:
    try:
        sandbox = Sandbox.for_settings(settings)
        return sandbox, _check("sandbox", sandbox.isolated or settings.engine.sandbox == "off", sandbox.describe())
    except SandboxUnavailable as exc:
        refused = _check("sandbox", False, f"{exc}: switchboard run refuses to start")
        return Sandbox(mode="off", problem=str(exc)), refused


def _times(settings: Settings) -> dict[str, Any]:
    pulse = settings.pulse  # zone and times were validated at load
    quiet = f", quiet hours {pulse.quiet_hours}" if pulse.quiet_hours else ", no quiet hours"
    return _check("time", True, f"zone {pulse.timezone}, digest at {pulse.digest_time}{quiet}")


def _single_family(settings: Settings) -> list[dict[str, Any]]:
    """A reviewed job needs a reviewer of another family than its maker's, from the review chain."""
    enabled = {b.name: b.family for b in settings.backends if b.enabled}
    reviewers = {enabled[n] for n in settings.chain_for("review") if n in enabled}
    stuck = [
        name for name, config in sorted(settings.job_types.items())
        if config.review and any(not reviewers - {enabled[n]} for n in settings.chain_for(name) if n in enabled)
    ]
    if not stuck:
        return []
    families = ", ".join(sorted(reviewers)) or "none"
    gate = settings.gate
    then = {
        "operator": f"their jobs come to you for a decision after {gate.no_other_family_grace_s:g} s",
        "same_family_other_model": "another model of the maker's family reviews them (where there is one), "
                                   "else they come to you",
        "wait": "their jobs wait in reviewing until such a reviewer is configured",
    }[gate.when_no_other_family]
    return [_check("review", True, f"{', '.join(stuck)} are reviewed but the review chain has no backend of another "
                   f"family than their maker (reviewer families: {families}): {then} "
                   f"(gate.when_no_other_family = {gate.when_no_other_family})", warn=True)]


async def _backends(settings: Settings, sandbox: Sandbox) -> list[dict[str, Any]]:
    clock = SystemClock()
    checks = []
    for config in settings.backends:
        backend = build_backend(config, clock=clock, sandbox=sandbox)
        try:
            status = await asyncio.wait_for(backend.check_credentials(), timeout=15)
            label = " [simulated]" if config.simulated else ""
            checks.append(_check(f"backend {config.name}", status.ok, f"{config.kind}{label}: {status.message}",
                                 warn=not status.checked))
        except TimeoutError:
            checks.append(_check(f"backend {config.name}", False, "credential check timed out"))
        finally:
            await backend.aclose()
    return checks
