"""The warm persona for real: the pinned ``claude`` binary, scripted by the fake Anthropic server, answers chat
turns in the chat's own folder; the second turn resumes the first turn's session (the model sees the first turn
as earlier messages, not only as quoted conversation); a session past ``[chat] session_max_tokens``, a day old
on the injected clock, or lost by the CLI is replaced by a fresh one without failing the turn; ``stats`` shows
the cached and uncached input tokens of the turns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.render import stats_text
from engine.backends.base import BackendRequest, BackendResult
from engine.backends.claude_cli import ClaudeCliBackend
from engine.chat_session import ChatSession, ChatSessions, chat_dir, system_hash
from engine.clock import FakeClock
from engine.control import Control
from engine.job_factory import new_job
from engine.loop import Engine
from engine.models import Job, JobState, NewAttempt
from engine.sandbox import Sandbox
from engine.settings import BackendConfig, Settings, default_sim_backends
from engine.store import Completion, Store
from tests.conftest import instant, sim_backends
from tests.fakes.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.fakes.scenario import wait_for
from tests.integration.test_claude_cli import _claude_binary, cli_env, user_texts
from tests.integration.test_workspace_claude import _sandbox_mode


def _settings_and_claude(tmp_path: Path, fake: FakeAnthropic, clock: FakeClock) -> tuple[Settings, ClaudeCliBackend]:
    """Chat turns on the real claude, in a sandbox that hides the data folder and the CLI's home."""
    data = tmp_path / "data"
    config = BackendConfig(name="claude", kind="claude_cli", model="claude-fake-1", family="anthropic",
                           binary=_claude_binary(), subscription=True)
    settings = Settings(home=data, backends=[config, *instant(default_sim_backends())], routing={"chat": ["claude"]},
                        engine={"sandbox": _sandbox_mode()}, chat={"session_max_tokens": 2_000},
                        job_types={"chat": {"timeout_s": 300, "allowed_tools": ["Bash"]}})
    env = cli_env(tmp_path, fake)
    sandbox = Sandbox.detect(settings.engine.sandbox, hidden=[data, Path(env["HOME"])])
    return settings, ClaudeCliBackend(config, clock=clock, env=env, sandbox=sandbox)


def _assistant_texts(body: dict[str, Any]) -> list[str]:
    return [b.get("text", "") for m in body["messages"] if m["role"] == "assistant"
            for b in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}])]


async def test_chat_turns_resume_one_session_and_rotate_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = FakeClock()
    (data / "chats" / "7").mkdir(parents=True)
    (data / "chats" / "7" / "notes.md").write_text("ANOTHER-CHATS-NOTES")
    (data / "core.md").write_text("CORE-MEMORY-OF-THE-OPERATOR")
    look = f"cat {data}/core.md {data}/chats/7/notes.md 2>&1; ls {data}/jobs 2>&1; echo CWD=$(pwd)"
    with FakeAnthropic() as fake:
        fake.script(
            Reply("", tool_uses=[ToolUse("Bash", {"command": look})]),  # the first turn looks around first
            Reply("Noted: PINEAPPLE.", input_tokens=50, cache_write_tokens=400),
            Reply("You said PINEAPPLE.", input_tokens=60, cache_read_tokens=400, cache_write_tokens=100),
            Reply("A big one.", input_tokens=70, cache_read_tokens=5_000),  # now past session_max_tokens
            Reply("Fresh start.", input_tokens=80, cache_write_tokens=300),
            Reply("Next day, fresh again."),
            Reply("Lost it; fresh."),
        )
        settings, claude = _settings_and_claude(tmp_path, fake, clock)
        store = await Store.open(settings.db_path, clock)
        engine = Engine(settings, store, {**sim_backends(settings, clock),
                                          "claude": claude},
                        clock)
        control = Control(settings, store, clock, engine)

        async def turn(text: str) -> Job:
            job = await control.chat(42, text)
            assert job is not None

            async def finished() -> Job | None:
                found = await store.get_job(job.id)
                return found if found and found.state in (JobState.DONE, JobState.FAILED) else None

            done: Job = await wait_for(finished, timeout_s=90, what=f"chat turn {job.id}")
            assert done.state is JobState.DONE, (done.last_error, fake.model_calls()[-1].body)
            return done

        async def kept() -> ChatSession:
            raw = await store.kv_get("chat_session:42")
            assert raw is not None
            return ChatSession.model_validate_json(raw)

        try:
            await engine.start()
            first = await turn("Remember the word PINEAPPLE.")
            second = await turn("Which word did I ask you to remember?")
            # One session: the second request carries the first turn as the conversation's earlier messages.
            assert first.session_id and second.session_id == first.session_id
            body = fake.model_calls()[-1].body
            assert "Noted: PINEAPPLE." in _assistant_texts(body)
            assert any("Operator: Remember the word PINEAPPLE." in t for t in user_texts(body))
            assert not (data / "jobs" / str(first.id) / ".home").exists()  # not the job's folder
            assert (await kept()).turns == 2
            looked = json.dumps(fake.model_calls()[1].body["messages"])  # the shell's output, as the model saw it
            assert f"CWD={chat_dir(data, 42)}" in looked and "No such file" in looked
            if settings.engine.sandbox == "bwrap":  # the chat's folder shows nothing else of the data folder
                assert "CORE-MEMORY-OF-THE-OPERATOR" not in looked and "ANOTHER-CHATS-NOTES" not in looked

            third = await turn("Tell me something big.")  # resumed; it leaves 5,070+ tokens of context
            assert third.session_id == first.session_id and (await kept()).tokens > 2_000
            fourth = await turn("And now?")  # past the size: a fresh session, without the earlier turns
            assert fourth.session_id not in (None, first.session_id)
            assert _assistant_texts(fake.model_calls()[-1].body) == []
            assert (await kept()).session_id == fourth.session_id

            clock.advance(25 * 3600)  # a day later: the session is too old
            fifth = await turn("Good morning.")
            assert fifth.session_id not in (None, fourth.session_id)
            assert _assistant_texts(fake.model_calls()[-1].body) == []

            lost = (await kept()).model_copy(update={"session_id": "0b7e3c8e-1111-4222-8333-444455556666"})
            await store.kv_put("chat_session:42", lost.model_dump_json())  # the CLI has no such session
            sixth = await turn("Still there?")
            assert sixth.session_id not in (None, lost.session_id)
            assert sixth.result_text == "Lost it; fresh."
            events = [e.reason for e in await store.job_events(sixth.id)]
            assert any("could not be resumed" in r for r in events), events
        finally:
            await engine.stop(grace_s=0)

        stats = await store.stats(0.0)
        await store.close()
    assert stats.chat_turns == 6
    assert stats.chat_warm_turns == 2  # the second and third turns read the first turns from the cache
    assert stats.chat_cache_read == 5_400 and stats.chat_cache_write == 800
    assert "5400 cached, 800 written to cache" in stats_text(stats) and "2 of 6 turns warm" in stats_text(stats)


async def test_stats_count_the_persona_turns_tokens_by_cache_use(store: Store, settings: Settings,
                                                                 clock: FakeClock) -> None:
    """A cold turn (written to the cache), two warm turns (read from it), and a job that is not a chat turn."""
    spec = [("chat", 900, 0, 3_000), ("chat", 40, 3_000, 200), ("chat", 30, 3_200, 0), ("analysis", 500, 700, 0)]
    for job_type, tokens_in, cache_read, cache_write in spec:
        job, _ = await store.enqueue(new_job(settings, type=job_type, prompt="p", chat_id=42))
        await store.transition(job.id, JobState.RUNNING, "seeded")
        attempt = NewAttempt(backend="claude", family="anthropic", started_at=clock.now(), finished_at=clock.now(),
                             outcome="success", tokens_in=tokens_in, tokens_out=20, cache_read=cache_read,
                             cache_write=cache_write)
        await store.complete(Completion(job_id=job.id, owner=None, to_state=JobState.DONE, reason="seeded",
                                        attempts=[attempt]))
    stats = await store.stats(clock.now() - 3600)
    assert (stats.chat_turns, stats.chat_warm_turns) == (3, 2)
    assert (stats.chat_tokens_in, stats.chat_cache_read, stats.chat_cache_write) == (970, 6_200, 3_200)
    line = next(x for x in stats_text(stats).splitlines() if "persona input tokens" in x)
    assert line.strip() == ("persona input tokens: 6200 cached, 3200 written to cache, 970 uncached (60% from cache)"
                            " · 2 of 3 turns warm")


async def test_a_second_turn_of_the_same_chat_at_once_runs_fresh_and_is_not_kept(
        store: Store, settings: Settings, clock: FakeClock) -> None:
    config = BackendConfig(name="claude", kind="claude_cli", model="m", family="anthropic")
    sessions = ChatSessions(settings, store, clock)
    first, _ = await store.enqueue(new_job(settings, type="chat", prompt="one", chat_id=42))
    second, _ = await store.enqueue(new_job(settings, type="chat", prompt="two", chat_id=42))
    base = BackendRequest(job_id=first.id, job_type="chat", prompt="one", system="S")
    kept = ChatSession(backend="claude", session_id="s-1", started_at=clock.now(), system_hash=system_hash("S"))
    await store.kv_put("chat_session:42", kept.model_dump_json())

    running, owned = await sessions.prepare(first, config, base)
    assert (running.session_id, owned, running.workspace) == ("s-1", True, chat_dir(settings.home, 42))
    meanwhile, also_owned = await sessions.prepare(second, config, base)
    assert (meanwhile.session_id, also_owned) == (None, False)  # never two processes on one session
    await sessions.keep(first, config, running, BackendResult(text="ok", session_id="s-1"))
    sessions.release(first)
    again, owned = await sessions.prepare(second, config, base)
    assert (again.session_id, owned) == ("s-1", True)
    assert ChatSession.model_validate_json(await store.kv_get("chat_session:42") or "").turns == 2
