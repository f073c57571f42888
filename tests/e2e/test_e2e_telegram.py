"""End to end: `switchboard run --no-console` as a subprocess, the HTTP fake Bot API, simulated backends.

The operator writes free text; the persona answers and queues a research job; the job runs, is reviewed by a
model of another family and the completion arrives. A stranger gets nothing. A flood wait is honoured.
SIGTERM stops the process cleanly. The bot token never appears in the process's output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.telegram_rig import OPERATOR, STRANGER, Switchboard, write_config
from tests.fakes.fake_telegram import FakeTelegram


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.mark.timeout(300)  # a start on a possibly loaded machine; every wait is on an event
async def test_operator_chat_to_reviewed_result_over_telegram(tmp_path: Path, fake: FakeTelegram) -> None:
    switchboard = Switchboard(tmp_path, write_config(tmp_path, fake), fake.token)
    await switchboard.start()
    try:
        await fake.wait_for_calls("getUpdates", 1, timeout_s=30)
        assert "research" in [c["command"] for c in fake.commands()] or fake.commands(), "setMyCommands ran"
        assert [c["command"] for c in fake.commands()][:3] == ["start", "help", "status"]

        fake.operator_sends_text(OPERATOR, OPERATOR, "research the best SQLite settings")
        await fake.wait_for(lambda: any("Queued #" in m.text for m in fake.sent), 60, "the queued notice")
        reply, queued = fake.messages_to(OPERATOR)[:2]
        assert "research" in reply.text.lower() and "Queued #" in queued.text
        job_id = int(queued.text.split("#", 1)[1].split()[0])
        assert queued.callback_data == [f"job:{job_id}", f"cancel:{job_id}"]
        assert any(a.action == "typing" for a in fake.chat_actions)

        await fake.wait_for(lambda: any(f"Job #{job_id} done" in m.text for m in fake.sent), 120, "the result")
        done = next(m for m in fake.sent if f"Job #{job_id} done" in m.text)
        assert "review" in done.text and "cost $" in done.text
        [review] = switchboard.query("SELECT * FROM reviews WHERE job_id = ?", (job_id,))
        assert review["passed"] == 1 and review["reviewer_family"] != review["maker_family"]

        # A stranger gets nothing, and is counted (checked below, once /status, handled after it, is answered).
        fake.stranger_sends(STRANGER, "research how to get into this bot")

        # A flood wait: the answer waits retry_after, then arrives once.
        fake.script_flood_wait("sendMessage", retry_after=1)
        before = len(fake.messages_to(OPERATOR))
        calls = fake.calls["sendMessage"]
        started = asyncio.get_running_loop().time()
        fake.sends_command(OPERATOR, OPERATOR, "status")
        messages = await fake.wait_for_messages(OPERATOR, before + 1, timeout_s=60)
        waited_s = asyncio.get_running_loop().time() - started
        status = messages[before]
        assert "Strangers turned away: 1" in status.text
        # Updates are handled one at a time, in order: with /status answered, the stranger's was handled too.
        assert fake.messages_to(STRANGER) == []
        assert waited_s >= 0.9, f"answered {waited_s:.2f}s after a 1 s flood wait"
        assert fake.calls["sendMessage"] == calls + 2  # the refused call, then the one that went through

        code = await switchboard.terminate()
    finally:
        await switchboard.ensure_stopped()
    # After the exit nothing more can arrive: the flood-waited answer was sent once, the stranger got nothing.
    assert len(fake.messages_to(OPERATOR)) == before + 1
    assert fake.messages_to(STRANGER) == []
    stderr = switchboard.stderr.decode(errors="replace")
    assert code == 0, stderr
    assert "stopped cleanly" in stderr
    assert fake.token not in stderr and fake.token.split(":")[1] not in stderr
    assert fake.pending_updates == []


async def test_refuses_to_start_without_an_operator(tmp_path: Path, fake: FakeTelegram) -> None:
    config = write_config(tmp_path, fake)
    config.write_text(config.read_text().replace(f"operator_ids = [{OPERATOR}]", "operator_ids = []"))
    switchboard = Switchboard(tmp_path, config, fake.token)
    await switchboard.start(wait_ready=False)  # it must refuse, so it never gets ready
    try:
        assert switchboard.process is not None
        _, stderr = await asyncio.wait_for(switchboard.process.communicate(), 120)
    finally:
        await switchboard.ensure_stopped()
    assert switchboard.process.returncode == 1
    assert b"operator_ids is empty" in stderr
    assert fake.calls["getUpdates"] == 0
