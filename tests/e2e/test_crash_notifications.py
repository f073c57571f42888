"""kill -9 while notifications are pending, restart: every notification arrives exactly once.

The first process is killed while Telegram holds the sender in a flood wait: one outbox row is 'sending' (its
request was refused with 429 and the rate limiter is waiting), others are 'pending', jobs may be mid-run. The
second process recovers the 'sending' row, re-runs the orphaned jobs (their notifications are deduplicated by
key) and drains the outbox. What the fake received must equal, message for message, the rows of the outbox.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.telegram_rig import OPERATOR, Switchboard, eventually, write_config
from tests.fakes.fake_telegram import FakeTelegram

REQUESTS = [
    "research the best SQLite settings",
    "write a note about WAL checkpoints",
    "research busy_timeout values",
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.mark.timeout(300)  # two starts on a possibly loaded machine; every wait is on an event
async def test_kill_9_with_pending_notifications_then_each_arrives_exactly_once(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    config = write_config(tmp_path, fake)
    first = Switchboard(tmp_path, config, fake.token)
    fake.script_flood_wait("sendMessage", retry_after=30)  # the first send is held for 30 s
    await first.start()  # returns at the readiness line: polling has started
    try:
        await fake.wait_for_calls("getUpdates", 1, timeout_s=30)
        for text in REQUESTS:
            fake.operator_sends_text(OPERATOR, OPERATOR, text)
        await fake.wait_for_calls("sendMessage", 1, timeout_s=60)  # the 429
        states = await eventually(
            lambda: _states(first) if _states(first).get("pending", 0) >= 4 else None, 60, "pending notifications"
        )
        assert states.get("sending") == 1, states  # the refused request, its limiter waiting out retry_after
        assert not fake.sent
        await first.kill()
    finally:
        await first.ensure_stopped()
    assert first.process is not None and first.process.returncode == -9

    second = Switchboard(tmp_path, config, fake.token)
    await second.start()
    try:
        await eventually(lambda: _all_settled(second), 120, "every job finished and every notification sent")
        code = await second.terminate()
    finally:
        await second.ensure_stopped()
    assert code == 0
    # Read after the exit: nothing can be sent any more, so a message sent twice would be in fake.sent by now.
    rows = second.query("SELECT dedupe_key, kind, text, state FROM outbox ORDER BY id")

    assert all(row["state"] == "sent" for row in rows), [dict(r) for r in rows if r["state"] != "sent"]
    keys = collections.Counter(row["dedupe_key"] for row in rows)
    assert max(keys.values()) == 1  # the store's dedupe keys hold across the restart
    dones = [r for r in rows if r["kind"] == "job_done"]
    assert len(dones) == len(REQUESTS), [dict(r) for r in rows]
    # What the operator received, message for message, is what the outbox holds: nothing lost, nothing twice.
    received = collections.Counter(m.text for m in fake.sent)
    expected = collections.Counter(row["text"].strip() for row in rows)
    assert received == expected, {"missing": expected - received, "extra": received - expected}


def _states(switchboard: Switchboard) -> dict[str, int]:
    return {r[0]: r[1] for r in switchboard.query("SELECT state, COUNT(*) FROM outbox GROUP BY state")}


def _all_settled(switchboard: Switchboard) -> bool:
    jobs = switchboard.query("SELECT COUNT(*) FROM jobs WHERE state NOT IN ('done', 'failed', 'cancelled')")
    unsent = switchboard.query("SELECT COUNT(*) FROM outbox WHERE state != 'sent'")
    done = switchboard.query("SELECT COUNT(*) FROM outbox WHERE kind = 'job_done'")
    return jobs[0][0] == 0 and unsent[0][0] == 0 and done[0][0] == len(REQUESTS)
