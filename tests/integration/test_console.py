"""The console answers like Telegram (issue 12, item 5): every command Telegram lists (/reroute and /digest
included), a prompt at a terminal, a warning when a line reached the terminal's 4,095-character limit, and a
clear message when input closes (Ctrl-D)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from bot.app import open_services
from bot.commands import COMMANDS
from bot.console import EOF_NOTE, LINE_LIMIT_NOTE, PROMPT, ConsoleChannel
from engine.clock import FakeClock
from engine.models import JobState
from engine.settings import Settings, default_sim_backends
from tests.conftest import instant


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", backends=instant(default_sim_backends()), memory={"enabled": False})


async def test_every_telegram_command_is_answered_on_the_console(tmp_path: Path, clock: FakeClock) -> None:
    async with open_services(_settings(tmp_path), clock=clock) as services:
        for name in COMMANDS:
            answer = await services.commands.handle(f"/{name}")
            assert answer and not answer.startswith("Unknown command"), name
        job, _ = await services.control.add_job("count the widgets", type="analysis")
        await services.control.cancel(job.id)
        assert "queued again" in await services.commands.handle(f"/reroute {job.id}")
        assert (await services.control.job(job.id)).state == JobState.QUEUED
        assert "which job?" in await services.commands.handle("/reroute")
        from engine.pulse import Pulse

        expected = await Pulse(services.settings, services.store, clock, {}).build_digest()
        assert await services.commands.handle("/digest") == expected.text  # what `switchboard digest` prints


async def _console(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    stdin: str, *, interactive: bool,
) -> tuple[str, str]:
    """Everything the console printed until it said its input closed."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    stop = asyncio.Event()
    out = err = ""
    async with open_services(_settings(tmp_path), clock=clock) as services:
        task = asyncio.create_task(ConsoleChannel(services, interactive=interactive).run(stop))
        try:
            for _ in range(1000):
                captured = capsys.readouterr()
                out, err = out + captured.out, err + captured.err
                if EOF_NOTE in err:
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    return out, err


async def test_a_terminal_gets_a_prompt_a_line_limit_warning_and_a_ctrl_d_message(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cut_line = "x" * 4095  # what a terminal hands over of a 5,000-character line
    out, err = await _console(tmp_path, clock, monkeypatch, capsys, f"/digest\n{cut_line}\nshort one\n",
                              interactive=True)
    assert out.startswith(PROMPT) and out.count(PROMPT) >= 4
    assert out.count(LINE_LIMIT_NOTE) == 1
    assert EOF_NOTE in err and "Unknown command" not in out


async def test_a_pipe_gets_no_prompt_and_no_line_warning(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = await _console(tmp_path, clock, monkeypatch, capsys, f"{'y' * 5000}\n", interactive=False)
    assert PROMPT not in out and LINE_LIMIT_NOTE not in out
    assert EOF_NOTE in err
