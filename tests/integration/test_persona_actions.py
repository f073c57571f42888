"""The persona acting on the system, end to end: a scripted model on a local OpenAI-compatible server answers
the persona's turns with each action verb; the Telegram channel runs on the fake Bot API over the services the
composition root builds; the engine runs the rest of the work on simulated backends, except ``writing`` jobs,
which go to a second local server that never answers (so they stay running, or wait where a test puts them).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from telegram import Update

from engine.models import Job, JobState, Priority
from engine.settings import BackendConfig
from tests.fakes.fake_openai import Completion, FakeOpenAI
from tests.fakes.fake_telegram import BotMessage
from tests.integration.telegram_rig import OPERATOR, Rig, TelegramRigs


@pytest.fixture
def persona_llm() -> Any:
    with FakeOpenAI(Completion("(no scripted answer)")) as server:
        yield server


@pytest.fixture
async def rig(telegram_rigs: TelegramRigs, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI) -> AsyncIterator[Rig]:
    def backend(name: str, url: str) -> BackendConfig:
        return BackendConfig(name=name, kind="openai", model="gpt-fake-1", family="openai", tier=2,
                             base_url=url + "/v1", timeout_s=60)

    yield await telegram_rigs.start(
        engine=True,
        telegram={},
        settings={"engine": {"shutdown_grace_s": 0}, "routing": {"chat": ["persona"], "writing": ["slow"]}},
        poll_timeout_s=1.0,
        live_tick_s=0.05,
        extra_backends=[backend("persona", persona_llm.url), backend("slow", slow_llm.url)],
    )


def persona_says(prose: str, *actions: dict[str, Any]) -> Completion:
    block = actions[0] if len(actions) == 1 else {"actions": list(actions)}
    return Completion(f"{prose}\n\n```json\n{json.dumps(block)}\n```")


async def _writing_job(rig: Rig, slow_llm: FakeOpenAI, title: str, eventually: Any) -> Job:
    """A job that runs on the silent server: running until a test moves it."""
    calls = len(slow_llm.completion_calls())
    job, _ = await rig.control.add_job(f"Write: {title}", type="writing", title=title)
    await eventually(lambda: _true(len(slow_llm.completion_calls()) > calls))
    return await rig.job(job.id)


async def _true(value: bool) -> bool:
    return value


async def _turn(rig: Rig, persona_llm: FakeOpenAI, text: str, answer: Completion) -> BotMessage:
    """The operator writes ``text``; the model answers ``answer``; the persona's reply as the operator saw it."""
    persona_llm.script(answer)
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.operator_sends_text(OPERATOR, OPERATOR, text)
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the persona's reply")
    return rig.fake.messages_to(OPERATOR)[before]


async def _press(rig: Rig, message: BotMessage, data: str) -> str:
    return (await _pressed(rig, message, data))[0]


async def _pressed(rig: Rig, message: BotMessage, data: str) -> tuple[str, Any]:
    """The operator presses the button: the answer they saw, and the update (to deliver it again)."""
    before = len(rig.fake.messages_to(OPERATOR))
    update = rig.fake.presses_button(OPERATOR, message.message_id, data)
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the button's answer")
    return rig.fake.messages_to(OPERATOR)[before].text, update


def _events(kind: str) -> Callable[[Rig, int], Awaitable[int]]:
    async def count(rig: Rig, job_id: int) -> int:
        return sum(1 for e in await rig.store.job_events(job_id) if e.to_state == kind)

    return count


cancellations = _events("cancelled")


# ---- the snapshot ---------------------------------------------------------------------------------------


async def test_the_snapshot_sent_to_the_model_names_running_and_waiting_work(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    running = await _writing_job(rig, slow_llm, "Migrate the billing database", eventually)
    waiting = await _writing_job(rig, slow_llm, "Draft the investor letter", eventually)
    await rig.store.transition(waiting.id, JobState.NEEDS_HUMAN, "review failed twice")
    await _turn(rig, persona_llm, "what's running?", Completion("Two things, see above."))
    body = persona_llm.completion_calls()[-1].body
    prompt = body["messages"][-1]["content"]
    snapshot = prompt.split("## Live snapshot", 1)[1]
    assert f"#{running.id} running" in snapshot and "Migrate the billing database" in snapshot
    assert f"#{waiting.id} needs_human (waiting for approval)" in snapshot and "Draft the investor letter" in snapshot
    assert "Spend today" in snapshot
    assert prompt.rstrip().endswith("Operator: what's running?")


# ---- destructive actions wait for the button ---------------------------------------------------------------


async def test_cancel_waits_for_the_button_and_happens_exactly_once(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    job = await _writing_job(rig, slow_llm, "Blog post about queues", eventually)
    reply = await _turn(rig, persona_llm, "cancel the blog post",
                        persona_says("I'll cancel it once you confirm.", {"action": "cancel", "job": job.id}))
    assert "Waiting for your OK" in reply.text and f"cancel job #{job.id}" in reply.text
    [confirm, drop] = reply.callback_data
    assert confirm.startswith("act:") and drop.startswith("drop:")
    assert (await rig.job(job.id)).state == JobState.RUNNING  # nothing done before the button

    assert f"Job #{job.id} cancelled." in await _press(rig, reply, confirm)
    assert (await rig.job(job.id)).state == JobState.CANCELLED
    # Pressed again (a second update), and the first press redelivered by Telegram: nothing more happens.
    again, update = await _pressed(rig, reply, confirm)
    assert "already done" in again
    sent = len(rig.fake.sent)
    await rig.channel.app.process_update(Update.de_json(update, rig.channel.app.bot))
    assert len(rig.fake.sent) == sent
    assert await cancellations(rig, job.id) == 1
    assert "already decided" in await _press(rig, reply, drop)


async def test_approve_after_the_button_marks_the_job_done_by_the_operator(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    job = await _writing_job(rig, slow_llm, "Draft the press release", eventually)
    await rig.store.transition(job.id, JobState.NEEDS_HUMAN, "review failed twice")
    reply = await _turn(rig, persona_llm, f"approve {job.id}",
                        persona_says("Asking for your OK.", {"action": "approve", "job": job.id}))
    assert (await rig.job(job.id)).state == JobState.NEEDS_HUMAN
    assert "approved by you" in await _press(rig, reply, reply.callback_data[0])
    approved = await rig.job(job.id)
    assert approved.state == JobState.DONE and approved.operator_approved


async def test_drop_leaves_the_job_alone(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    job = await _writing_job(rig, slow_llm, "Newsletter", eventually)
    reply = await _turn(rig, persona_llm, "cancel the newsletter",
                        persona_says("Confirm?", {"action": "cancel", "job": job.id}))
    assert "Dropped: cancel job" in await _press(rig, reply, reply.callback_data[1])
    assert "already done" in await _press(rig, reply, reply.callback_data[0])
    assert (await rig.job(job.id)).state == JobState.RUNNING


# ---- actions that run at once ------------------------------------------------------------------------------


async def test_answer_resumes_the_waiting_job_once_even_when_the_update_is_redelivered(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    job = await _writing_job(rig, slow_llm, "Write the launch email", eventually)
    await rig.store.transition(job.id, JobState.NEEDS_INPUT, "the worker asked",
                               fields={"progress": "Question for the operator: which launch date?"})
    persona_llm.script(persona_says("Passing it on.", {"action": "answer", "job": job.id, "text": "March 3rd"}))
    update = rig.fake.operator_sends_text(OPERATOR, OPERATOR, "tell it March 3rd")
    await rig.fake.wait_for(lambda: any("continues with your answer" in m.text for m in rig.fake.sent),
                            what="the answer's outcome")
    await rig.channel.app.process_update(Update.de_json(update, rig.channel.app.bot))
    answered = await rig.job(job.id)
    assert answered.prompt.count("March 3rd") == 1
    assert len(persona_llm.completion_calls()) == 1  # the redelivery started no second turn
    assert [e.to_state for e in await rig.store.job_events(job.id)].count("queued") == 2  # enqueue + answer


async def test_several_actions_in_one_reply_schedule_and_enqueue_in_the_operator_lane(
    rig: Rig, persona_llm: FakeOpenAI
) -> None:
    reply = await _turn(rig, persona_llm, "check the mail every 2 hours, and triage the inbox now; "
                        "also research SQLite backups whenever", persona_says(
                            "Done: a schedule, a triage now and research when there is room.",
                            {"action": "schedule", "type": "triage", "prompt": "Check the mail", "every": "2h"},
                            {"action": "enqueue", "type": "triage", "title": "Triage the inbox", "prompt": "Triage."},
                            {"action": "enqueue", "type": "research", "title": "SQLite backups",
                             "prompt": "Research SQLite backup options.", "priority": "low"},
                        ))
    assert "Schedule triage-check-the-mail added" in reply.text and not reply.callback_data
    [schedule] = await rig.store.list_schedules()
    assert (schedule.job_type, schedule.interval_s) == ("triage", 7200)
    jobs = {j.title: j for j in await rig.store.list_jobs() if j.type != "chat"}
    assert jobs["Triage the inbox"].priority == Priority.OPERATOR  # quick work the operator asked for now
    assert jobs["SQLite backups"].priority == Priority.LOW  # "whenever"


async def test_a_frequent_schedule_waits_for_the_button(rig: Rig, persona_llm: FakeOpenAI) -> None:
    reply = await _turn(rig, persona_llm, "check the mail every 10 minutes", persona_says(
        "Confirm?", {"action": "schedule", "type": "triage", "prompt": "Check the mail", "every": "10m"}))
    assert "more often than hourly" in reply.text and await rig.store.list_schedules() == []
    assert "added" in await _press(rig, reply, reply.callback_data[0])
    assert [s.interval_s for s in await rig.store.list_schedules()] == [600]


async def test_retry_project_ask_and_memory_without_memory(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    failed = await _writing_job(rig, slow_llm, "Flaky export", eventually)
    await rig.store.transition(failed.id, JobState.FAILED, "backend failed")
    reply = await _turn(rig, persona_llm, "retry it, start the garden project, and remember I like tulips",
                        persona_says(
                            "On it.",
                            {"action": "retry", "job": failed.id},
                            {"action": "project", "name": "garden", "goal": "A vegetable garden",
                             "next": "Plan the beds for spring.", "type": "research"},
                            {"action": "remember", "text": "The operator likes tulips."},
                            {"action": "ask", "question": "Which month do you want to plant?"},
                        ))
    assert f"Job #{failed.id} queued again." in reply.text
    assert "Project garden created." in reply.text and "next step of garden" in reply.text
    assert "Memory is not available" in reply.text or "Memory is off" in reply.text
    assert "Which month do you want to plant?" in reply.text
    assert (await rig.store.get_project("garden")) is not None
    assert any(j.project == "garden" for j in await rig.store.list_jobs())


# ---- what is refused ----------------------------------------------------------------------------------------


async def test_a_malformed_or_unknown_action_is_reported_and_nothing_is_done(
    rig: Rig, persona_llm: FakeOpenAI, slow_llm: FakeOpenAI, eventually: Any
) -> None:
    job = await _writing_job(rig, slow_llm, "Keep running", eventually)
    reply = await _turn(rig, persona_llm, "do things", persona_says(
        "Doing two things.",
        {"action": "retry", "job": job.id},
        {"action": "explode", "job": job.id},
    ))
    assert "I did not act on this" in reply.text and "unknown action 'explode'" in reply.text
    assert "Nothing was done" in reply.text and not reply.callback_data
    reply = await _turn(rig, persona_llm, "cancel it", Completion('Sure.\n```json\n{"action": "cancel", "job": }\n```'))
    assert "not valid JSON" in reply.text
    assert (await rig.job(job.id)).state == JobState.RUNNING
    assert await cancellations(rig, job.id) == 0


async def test_a_refused_action_says_why_in_the_slash_command_words(rig: Rig, persona_llm: FakeOpenAI) -> None:
    reply = await _turn(rig, persona_llm, "retry 999", persona_says("Retrying.", {"action": "retry", "job": 999}))
    assert "Cannot retry: no job #999" in reply.text
