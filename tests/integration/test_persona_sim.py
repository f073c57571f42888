"""The simulated persona (what `make run` users talk to without credentials) with the new verbs, end to end on the
fake Bot API: "what's running?" answered from the live snapshot, "cancel 12" and "approve 3" behind the button,
a request it cannot place answered with a question instead of "Noted". ``writing`` jobs go to a local server that
never answers, so they stay running where a test needs them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.app import open_services
from engine.models import JobState
from engine.settings import BackendConfig, Settings, default_sim_backends
from tests.conftest import instant, sim_backends
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.fake_telegram import BotMessage
from tests.integration.telegram_rig import OPERATOR, Rig, TelegramRigs


@pytest.fixture
async def rig(telegram_rigs: TelegramRigs, slow_llm: FakeOpenAI) -> AsyncIterator[Rig]:
    slow = BackendConfig(name="slow", kind="openai", model="m", family="openai", tier=2,
                         base_url=slow_llm.url + "/v1", timeout_s=60)
    yield await telegram_rigs.start(
        engine=True, telegram={}, settings={"engine": {"shutdown_grace_s": 0}, "routing": {"writing": ["slow"]}},
        poll_timeout_s=1.0, live_tick_s=0.05, extra_backends=[slow],
    )


async def _says(rig: Rig, text: str) -> BotMessage:
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.operator_sends_text(OPERATOR, OPERATOR, text)
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the persona's reply")
    return rig.fake.messages_to(OPERATOR)[before]


async def _running(rig: Rig, slow_llm: FakeOpenAI, title: str, eventually: Any) -> int:
    calls = len(slow_llm.completion_calls())
    job, _ = await rig.control.add_job(f"Write: {title}", type="writing", title=title)

    async def started() -> bool:
        return len(slow_llm.completion_calls()) > calls

    await eventually(started)
    return job.id


async def _press(rig: Rig, message: BotMessage, data: str) -> str:
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.presses_button(OPERATOR, message.message_id, data)
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the button's answer")
    return rig.fake.messages_to(OPERATOR)[before].text


async def test_whats_running_cancel_and_approve(rig: Rig, slow_llm: FakeOpenAI, eventually: Any) -> None:
    running = await _running(rig, slow_llm, "Blog post about queues", eventually)
    waiting = await _running(rig, slow_llm, "Investor letter", eventually)
    await rig.store.transition(waiting, JobState.NEEDS_HUMAN, "review failed twice")

    status = await _says(rig, "what's running?")
    assert "simulated" in status.text and "Blog post about queues" in status.text
    assert f"#{waiting} needs_human (waiting for approval)" in status.text

    cancel = await _says(rig, f"cancel {running}")
    assert f"cancel job #{running}" in cancel.text and cancel.callback_data[0].startswith("act:")
    assert (await rig.job(running)).state == JobState.RUNNING
    assert f"Job #{running} cancelled." in await _press(rig, cancel, cancel.callback_data[0])

    approve = await _says(rig, f"approve {waiting}")
    assert "approved by you" in await _press(rig, approve, approve.callback_data[0])
    assert (await rig.job(waiting)).operator_approved


async def test_an_unplaceable_request_gets_a_question_and_a_fix_gets_a_job(rig: Rig, eventually: Any) -> None:
    taxes = await _says(rig, "can you help me with my taxes?")
    assert "What exactly should I do" in taxes.text and "Noted" not in taxes.text
    backup = await _says(rig, "The backup failed last night, please fix it")
    assert "queued that as a coding job" in backup.text

    async def queued_jobs() -> list[Any]:
        return [j for j in await rig.store.list_jobs() if j.type == "coding"]

    [job] = await eventually(queued_jobs)
    assert job.title.startswith("The backup failed")


async def test_on_the_console_the_confirmation_is_a_command(tmp_path: Any, clock: Any, eventually: Any) -> None:
    """No buttons on the console: the persona's reply names /confirm KEY, which runs the staged action once."""
    settings = Settings(home=tmp_path / "home", backends=instant(default_sim_backends()), memory={"enabled": False},
                        engine={"shutdown_grace_s": 0})
    async with open_services(settings, clock=clock, engine=True, backends=sim_backends(settings, clock)) as services:
        target, _ = await services.control.add_job("later", type="analysis", run_after=clock.now() + 86_400)
        chat = await services.control.chat(1, f"cancel {target.id}")
        assert chat is not None

        async def reply() -> str | None:
            job = await services.store.get_job(chat.id)
            return job.result_text if job is not None and job.state == JobState.DONE else None

        text = await eventually(reply)
        key = re.search(r"/confirm (\S+?)\)", text)
        assert key is not None, text
        assert f"Job #{target.id} cancelled." in await services.commands.handle(f"/confirm {key.group(1)}")
        assert "already done" in await services.commands.handle(f"/confirm {key.group(1)}")
        assert (await services.control.job(target.id)).state == JobState.CANCELLED
