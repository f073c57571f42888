"""A worker's question and the operator's answer, end to end with the REAL pinned Claude Code CLI against the fake
Anthropic server: the worker writes question.md with its Write tool, the job waits in needs_input, the answer
requeues it, and the next run resumes the same session (``--resume``) carrying the operator's answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.backends.claude_cli import ClaudeCliBackend
from engine.clock import SystemClock
from engine.control import Control
from engine.models import JobState
from engine.settings import BackendConfig, JobTypeConfig, Settings
from engine.store import Store
from tests.fakes.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.integration.test_claude_cli import _claude_binary, cli_env, user_texts


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


async def test_question_goes_to_the_operator_and_the_answer_resumes_the_same_session(
    make_settings: Callable[..., Settings], make_engine: Any, eventually: Any, fake: FakeAnthropic, tmp_path: Path
) -> None:
    claude_bin = _claude_binary()
    config = BackendConfig(name="claude", kind="claude_cli", model="claude-fake-1", family="anthropic", tier=2,
                           binary=claude_bin)
    settings = make_settings(
        backends=[config], job_types={"analysis": JobTypeConfig(tier=2, allowed_tools=["Write"], timeout_s=60)}
    )
    clock = SystemClock()
    store = await Store.open(settings.db_path, clock)
    engine = None
    try:
        control = Control(settings, store, clock)
        job, _ = await control.add_job("Set up the cache layer for the app.", type="analysis")
        question_file = settings.home / "jobs" / str(job.id) / "question.md"
        fake.script(
            Reply("", tool_uses=[ToolUse("Write", {"file_path": str(question_file),
                                                   "content": "Which database should the cache use?\n"})]),
            Reply("I need your decision; the question is in question.md."),
            Reply("Done: the cache uses SQLite, as the operator said."),
        )
        backend = ClaudeCliBackend(config, clock=clock, env=cli_env(tmp_path, fake))
        engine = await make_engine(settings, store, clock, {"claude": backend})
        control = Control(settings, store, clock, engine)

        async def in_state(state: JobState) -> Any:
            found = await store.get_job(job.id)
            return found if found.state == state else None

        asked = await eventually(lambda: in_state(JobState.NEEDS_INPUT), timeout_s=60)
        assert asked.session_id, "the CLI's session id is kept for the resume"
        [question] = [m for m in await store.outbox_all() if m.kind == "question"]
        assert "Which database should the cache use?" in question.text
        assert question.urgent and question.payload == {"job_id": job.id, "kind": "question"}
        assert not question_file.exists()  # archived (question-1.md), so it is not asked again

        await control.answer(job.id, "Use SQLite, nothing else.")
        done = await eventually(lambda: in_state(JobState.DONE), timeout_s=60)

        assert done.session_id == asked.session_id
        assert done.result_text == "Done: the cache uses SQLite, as the operator said."
        calls = fake.model_calls()
        assert len(calls) == 3
        resumed = calls[-1].body
        texts = user_texts(resumed)
        assert any("Operator's answer:\nUse SQLite, nothing else." in t for t in texts), texts
        # The same session: the resumed request carries the first run's conversation, tool call included.
        history = json.dumps(resumed["messages"])
        assert "I need your decision" in history and "question.md" in history
    finally:
        if engine is not None:
            await engine.stop(grace_s=0)
        await store.close()
