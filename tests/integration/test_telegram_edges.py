"""The Telegram edges, over real HTTP against the spec-checked fake Bot API: which chats are served, and ids
that do not fit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.telegram_rig import OPERATOR, Rig, TelegramRigs

GROUP = -100123


@pytest.fixture
def make_rig(telegram_rigs: TelegramRigs) -> Callable[..., Awaitable[Rig]]:
    """``await make_rig(**telegram_settings)``: a running channel on the fake's real HTTP adapter."""

    async def make(**telegram: Any) -> Rig:
        return await telegram_rigs.start(http=True, telegram=telegram, poll_timeout_s=0.5, live_tick_s=0.05)

    return make


# ---- which chats are served ---------------------------------------------------------------------------


async def test_the_operator_in_a_group_is_not_answered_there(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    rig.fake.sends_command(OPERATOR, GROUP, "status")
    rig.fake.operator_sends_text(OPERATOR, GROUP, "research something for the group")
    rig.fake.sends_command(OPERATOR, OPERATOR, "status")  # the private chat is served as before
    [reply] = await rig.fake.wait_for_messages(OPERATOR, 1)
    assert "slots" in reply.text.lower()
    # Updates are handled one at a time, in order: with the private /status answered, the group's two were
    # handled before it, and they got nothing.
    assert rig.fake.messages_to(GROUP) == []
    assert await rig.store.list_jobs() == [], "nothing said in a group became a job"
    assert [row for row in await rig.store.outbox_all() if row.chat_id == GROUP] == []


async def test_a_group_named_in_allowed_chats_is_served(make_rig: Any) -> None:
    rig: Rig = await make_rig(allowed_chats=[GROUP])
    rig.fake.sends_command(OPERATOR, GROUP, "status")
    [reply] = await rig.fake.wait_for_messages(GROUP, 1)
    assert "slots" in reply.text.lower()
    other = GROUP - 1
    rig.fake.sends_command(OPERATOR, other, "status")  # another group still is not
    rig.fake.sends_command(OPERATOR, GROUP, "status")
    await rig.fake.wait_for_messages(GROUP, 2)  # handled in order: the other group's update came first
    assert rig.fake.messages_to(other) == []


# ---- ids and durations that do not fit ----------------------------------------------------------------

HUGE = "99999999999999999999"  # 20 digits: more than SQLite's largest integer


async def test_out_of_range_ids_get_a_clear_answer_in_chat_and_on_buttons(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    commands = [("job", HUGE), ("retry", HUGE), ("cancel", f"#{HUGE}"), ("approve", HUGE), ("answer", f"{HUGE} yes"),
                ("job", "9" * 5000)]
    for command, args in commands:
        rig.fake.sends_command(OPERATOR, OPERATOR, command, args)
    replies = await rig.fake.wait_for_messages(OPERATOR, len(commands))
    for reply in replies:
        assert reply.text.startswith("Cannot do that: no job #") and "job ids go" in reply.text, reply.text
        assert len(reply.text) < 200  # a 5,000-digit id is not echoed back

    for verb in ("retry", "reroute", "approve", "revise", "cancel", "job"):
        rig.fake.presses_button(OPERATOR, replies[0].message_id, f"{verb}:{HUGE}", check_button=False)
    await rig.fake.wait_for(lambda: len(rig.fake.callback_answers) == 6, what="every callback answered")
    assert {a["text"] for a in rig.fake.callback_answers} <= {"Cannot do that", f"Job #{HUGE}"}
    more = await rig.fake.wait_for_messages(OPERATOR, len(commands) + 6)
    assert all("no job #" in m.text for m in more[len(commands):])


async def test_a_schedule_interval_over_a_year_is_refused_and_the_list_still_works(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    rig.fake.sends_command(OPERATOR, OPERATOR, "schedule", "add every 99999999999999999999999d triage: check mail")
    [refused] = await rig.fake.wait_for_messages(OPERATOR, 1)
    assert "too long: at most 366 days" in refused.text
    rig.fake.sends_command(OPERATOR, OPERATOR, "schedule", "list")
    rig.fake.sends_command(OPERATOR, OPERATOR, "stats", "99999999999999999999d")
    _, listed, stats = await rig.fake.wait_for_messages(OPERATOR, 3)
    assert listed.text.startswith("No schedules yet.")
    assert "at most 366 days" in stats.text
    assert await rig.store.list_schedules() == []


# ---- text normalised at the edge; project names that would collide ------------------------------------


async def test_invisible_characters_are_removed_and_a_cut_is_stated(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    rig.fake.operator_sends_text(OPERATOR, OPERATOR, "research\u202e the\x00 logs\u200b\u2066 please\ufeff")
    long_text = "research " + "y" * 20_491  # 20,500 characters; the console and the CLI read the same 20,000
    rig.fake.operator_sends_text(OPERATOR, OPERATOR, long_text)
    [note] = await rig.fake.wait_for_messages(OPERATOR, 1)
    assert note.text == "Your message was 20,500 characters; I read only the first 20,000."
    jobs = sorted(await rig.store.list_jobs(), key=lambda j: j.id)
    assert [j.prompt for j in jobs] == ["research the logs please", long_text[:20_000]]
    history = await rig.store.recent_messages(OPERATOR)
    assert "research the logs please" in [m.text for m in history]


async def test_project_names_that_share_a_folder_are_refused_with_one_message(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    for name in ("a/b", "a-b", "A-B", "\u202egnp.exe"):
        rig.fake.sends_command(OPERATOR, OPERATOR, "projects", f"add {name} a goal")
    first, second, third, shown = await rig.fake.wait_for_messages(OPERATOR, 4)
    assert first.text.startswith("Project a/b added.")
    for refused, name in ((second, "a-b"), (third, "A-B")):
        assert refused.text == (
            f"Cannot do that: a project named 'a/b' already exists, and {name!r} would share its folder (names "
            "are compared as folder names: case, spaces and punctuation aside); choose another name"
        )
    assert shown.text.startswith("Project gnp.exe added.")  # displays as written, not reversed
    assert [p.name for p in await rig.store.list_projects()] == ["a/b", "gnp.exe"]
