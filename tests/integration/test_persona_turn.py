"""The persona's turn completed (engine.persona_actions) on a real store: which actions wait for a button, the
lane of queued work, and a turn completed twice (a crash, a redelivery) acting once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.backends.base import BackendResult
from engine.clock import FakeClock
from engine.control import Control
from engine.job_factory import new_job
from engine.models import Job, JobState, Priority
from engine.persona import read_reply
from engine.persona_actions import PersonaActions, complete_chat, confirmation_needed, lane
from engine.settings import BackendConfig, Settings
from engine.store import Store


def _action(data: dict[str, Any]) -> Any:
    reply = read_reply(json.dumps(data))
    assert reply.errors == [], reply.errors
    return reply.actions[0]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"action": "cancel", "job": 3}, "cannot be undone"),
        ({"action": "approve", "job": "#3"}, "cannot be undone"),
        ({"action": "forget", "id": "abc123"}, "cannot be undone"),
        ({"action": "schedule", "type": "triage", "prompt": "p", "every": "30m"}, "more often than hourly"),
        ({"action": "schedule", "type": "triage", "prompt": "p", "every": "1h"}, None),
        ({"action": "schedule", "type": "triage", "prompt": "p", "daily": "07:00"}, None),
        ({"action": "retry", "job": 3}, None),
        ({"action": "answer", "job": 3, "text": "yes"}, None),
        ({"action": "remember", "text": "x"}, None),
        ({"action": "enqueue", "type": "research", "title": "t", "prompt": "p"}, None),  # simulated: free
    ],
)
def test_what_waits_for_the_button(settings: Settings, data: dict[str, Any], why: str | None) -> None:
    found = confirmation_needed(_action(data), settings)
    assert (found is None) if why is None else (found is not None and why in found)


def test_an_expensive_job_waits_for_the_button(make_settings: Any) -> None:
    paid = BackendConfig(name="opus", kind="openai", model="o", family="anthropic", tier=3, base_url="http://x/v1",
                         price_in_per_mtok=15.0, price_out_per_mtok=75.0)
    settings = make_settings(backends=[paid], chat={"confirm_cost_usd": 0.5}, detect_backends=False)
    research = _action({"action": "enqueue", "type": "research", "title": "t", "prompt": "p"})
    assert "may cost up to $0.90" in (confirmation_needed(research, settings) or "")
    triage = _action({"action": "enqueue", "type": "triage", "title": "t", "prompt": "p"})
    assert confirmation_needed(triage, settings) is None  # tier 1: no paid backend of its tier


def test_the_operator_lane(settings: Settings) -> None:
    def of(**fields: Any) -> Priority:
        return lane(_action({"action": "enqueue", "title": "t", "prompt": "p", **fields}), settings)

    assert of(type="triage") == Priority.OPERATOR
    assert of(type="coding") == Priority.HIGH
    assert of(type="coding", priority="low") == Priority.LOW
    assert of(type="coding", priority="normal") == Priority.NORMAL


async def test_a_turn_completed_twice_acts_once(store: Store, settings: Settings, clock: FakeClock) -> None:
    failed, _ = await store.enqueue(new_job(settings, type="analysis", prompt="p", title="Export"))
    await store.claim("w", free_slots=1, background_limit=1, lease_s=60)
    await store.transition(failed.id, JobState.FAILED, "broke")
    other, _ = await store.enqueue(new_job(settings, type="analysis", prompt="p", title="Other"))
    chat, _ = await store.enqueue(new_job(settings, type="chat", prompt="retry it", chat_id=7))
    actions = PersonaActions(Control(settings, store, clock))
    text = 'Retrying.\n```json\n{"actions": [{"action": "retry", "job": %d}, {"action": "cancel", "job": %d}]}\n```'
    result = BackendResult(text=text % (failed.id, other.id))

    first = await complete_chat(settings, chat, [], result, "w", actions)
    assert f"Job #{failed.id} queued again." in first.fields["result_text"]
    assert first.outbox[0].payload["buttons"][0][1] == f"act:{chat.id}.1"
    await store.transition(failed.id, JobState.FAILED, "broke again")
    second = await complete_chat(settings, chat, [], result, "w", actions)
    assert "(already done: retry)" in second.fields["result_text"]
    assert (await _job(store, failed.id)).state == JobState.FAILED  # not retried a second time
    assert f"Job #{other.id} cancelled." in await actions.confirm(f"{chat.id}.1")
    assert "already done" in await actions.confirm(f"{chat.id}.1")
    assert "Nothing waits" in await actions.confirm("999.0")
    assert "Nothing waits" in await actions.drop("")


async def _job(store: Store, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None
    return job
