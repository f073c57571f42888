"""The claude_cli backend driving the REAL pinned Claude Code CLI against the fake Anthropic server.

Each run is a real ``claude -p`` process talking HTTP to tests/fakes/fake_anthropic.py on 127.0.0.1, so the
parser and the classifier are checked against what the client actually prints, not against our assumptions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest
from engine.backends.claude_cli import ClaudeCliBackend
from engine.clock import SystemClock
from engine.failures import FailureClass
from engine.settings import BackendConfig
from tests.fakes.fake_anthropic import ApiError, FakeAnthropic, Hang, Reply, ToolUse
from tests.processes import pinned_cli, processes_in

REPO = Path(__file__).resolve().parents[2]


def _claude_binary() -> str:
    return pinned_cli("SWITCHBOARD_CLAUDE_BIN", "claude")


@pytest.fixture
def claude_bin() -> str:
    return _claude_binary()


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path


def cli_env(tmp_path: Path, fake: FakeAnthropic, *, key: str | None = "x", retries: int = 0) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": fake.url,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(retries),
        "DISABLE_AUTOUPDATER": "1",
    }
    if key is not None:
        env["ANTHROPIC_API_KEY"] = key
    return env


def backend(claude_bin: str, env: dict[str, str], **config: object) -> ClaudeCliBackend:
    cfg = BackendConfig(name="claude", kind="claude_cli", model="claude-fake-1", family="anthropic",
                        binary=claude_bin, **config)  # type: ignore[arg-type]
    return ClaudeCliBackend(cfg, clock=SystemClock(), env=env)


def request(workspace: Path, prompt: str = "Say hello.", **kw: object) -> BackendRequest:
    fields: dict[str, object] = {"job_id": 1, "job_type": "chat", "prompt": prompt, "workspace": workspace,
                                 "timeout_s": 30.0, "permission_mode": "acceptEdits"}
    fields.update(kw)
    return BackendRequest(**fields)  # type: ignore[arg-type]


def user_texts(body: dict) -> list[str]:
    out = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            out += [b.get("text", "") for b in content if b.get("type") == "text"]
    return out


async def test_success_text_usage_cost_session_and_progress(claude_bin, fake, workspace, tmp_path):
    fake.script(Reply("The answer is 42.", input_tokens=300, output_tokens=20, cache_read_tokens=1000,
                      cache_write_tokens=200))
    seen: list[str] = []

    async def progress(line: str) -> None:
        seen.append(line)

    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(
        request(workspace, "-starts with a dash", system="STABLE-PREFIX-MARKER"), progress)

    assert result.ok, result.failure
    assert result.text == "The answer is 42."
    assert result.usage.input_tokens == 300 and result.usage.output_tokens == 20
    assert result.usage.cache_read_tokens == 1000 and result.usage.cache_write_tokens == 200
    assert result.cost_usd > 0
    assert re.fullmatch(r"[0-9a-f-]{36}", result.session_id or "")
    assert result.model == "claude-fake-1"
    assert seen[0].startswith("started") and any("42" in s for s in seen) and seen[-1].startswith("finished")
    [call] = fake.model_calls()
    assert "STABLE-PREFIX-MARKER" in json.dumps(call.body["system"])
    assert "-starts with a dash" in user_texts(call.body)
    assert call.headers["x-api-key"] == "<redacted>"  # the fake's log never holds the key
    assert processes_in(workspace) == []


@pytest.mark.parametrize(
    ("scripted", "expected", "status"),
    [
        (ApiError.rate_limited(retry_after=120), FailureClass.RATE_LIMITED, 429),
        (ApiError.of(401), FailureClass.AUTH, 401),
        (ApiError.of(403), FailureClass.AUTH, 403),
        (ApiError.of(500), FailureClass.SERVER_ERROR, 500),
        (ApiError.of(529), FailureClass.OVERLOADED, 529),
        (ApiError.of(400), FailureClass.CONTEXT_OVERFLOW, 400),
        (ApiError.of(400, "messages: field required"), FailureClass.BAD_REQUEST, 400),
    ],
    ids=["429", "401", "403", "500", "529", "400-too-long", "400-other"],
)
async def test_api_errors_are_classified(claude_bin, fake, workspace, tmp_path, scripted, expected, status):
    fake.default = scripted  # every call fails: the CLI retries some 400s in other shapes even without retries
    clock = SystemClock()
    before = clock.now()
    result = await backend(claude_bin, cli_env(tmp_path, fake, key="sk-ant-secret-value-123456789")).run(
        request(workspace))
    assert result.failure is not None
    assert result.failure.failure_class == expected, result.failure
    assert result.failure.http_status == status
    assert "sk-ant-secret-value-123456789" not in result.failure.message
    if expected == FailureClass.RATE_LIMITED:
        # The CLI does not pass the server's retry-after through: the default pause applies.
        assert result.failure.resume_at is not None and result.failure.resume_at >= before + 59
    if scripted.message != "messages: field required":
        assert fake.count("/v1/messages") == 1  # CLAUDE_CODE_MAX_RETRIES=0: no retries


async def test_engine_turns_the_cli_retries_off_unless_the_operator_set_them(claude_bin, fake, workspace, tmp_path):
    """Issue 14: the engine retries and reroutes, so a 429 must come back at once, not after ten retries."""
    env = cli_env(tmp_path, fake)
    del env["CLAUDE_CODE_MAX_RETRIES"]
    fake.default = ApiError.of(529)
    started = SystemClock().now()
    result = await backend(claude_bin, env).run(request(workspace))
    assert result.failure is not None and result.failure.failure_class == FailureClass.OVERLOADED
    assert fake.count("/v1/messages") == 1 and SystemClock().now() - started < 30
    assert backend(claude_bin, {**env, "CLAUDE_CODE_MAX_RETRIES": "3"}).child_env()["CLAUDE_CODE_MAX_RETRIES"] == "3"


async def test_a_subscription_run_costs_nothing_and_reports_its_list_price(claude_bin, fake, workspace, tmp_path):
    """Issue 14: the CLI's total_cost_usd of a subscription run is what the subscription saved, not thrown away."""
    fake.script(Reply("ok", input_tokens=300, output_tokens=20), Reply("ok", input_tokens=300, output_tokens=20))
    paid = await backend(claude_bin, cli_env(tmp_path, fake)).run(request(workspace))
    sub = await backend(claude_bin, cli_env(tmp_path, fake), subscription=True).run(request(workspace))
    assert paid.ok and sub.ok
    assert paid.cost_usd > 0 and paid.list_price_usd == 0
    assert sub.cost_usd == 0 and sub.list_price_usd == pytest.approx(paid.cost_usd)


async def test_no_api_key_is_auth(claude_bin, fake, workspace, tmp_path):
    result = await backend(claude_bin, cli_env(tmp_path, fake, key=None)).run(request(workspace))
    assert result.failure is not None and result.failure.failure_class == FailureClass.AUTH
    assert "not logged in" in result.failure.message.lower()
    assert fake.count("/v1/messages") == 0


async def test_hang_is_killed_as_timeout_and_group_is_gone(claude_bin, fake, workspace, tmp_path):
    fake.script(Hang(max_s=60))
    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(request(workspace, timeout_s=2.0))
    assert result.failure is not None and result.failure.failure_class == FailureClass.TIMEOUT
    assert result.failure.signature == "cli:killed_timeout"
    assert processes_in(workspace) == []


async def test_checkpoint_written_by_the_cli_write_tool(claude_bin, fake, workspace, tmp_path):
    checkpoint = workspace / "checkpoints" / "step-1.md"
    fake.script(Reply("", tool_uses=[ToolUse("Write", {"file_path": str(checkpoint), "content": "# step 1\ndone\n"})]),
                Reply("Checkpoint saved."))
    seen: list[str] = []

    async def progress(line: str) -> None:
        seen.append(line)

    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(
        request(workspace, "Write the checkpoint.", allowed_tools=["Write"]), progress)

    assert result.ok, result.failure
    assert result.text == "Checkpoint saved."
    assert checkpoint.read_text() == "# step 1\ndone\n"
    assert any(line.startswith("tool Write") for line in seen)
    # The second model call carries the tool result back.
    assert "tool_result" in json.dumps(fake.model_calls()[-1].body["messages"])


async def test_cancel_kills_the_process_group(claude_bin, fake, workspace, tmp_path):
    fake.script(Hang(max_s=60))
    task = asyncio.create_task(backend(claude_bin, cli_env(tmp_path, fake)).run(request(workspace)))
    for _ in range(1000):  # wait (up to 20 s under load) until the CLI is blocked on the model call
        if fake.count("/v1/messages"):
            break
        await asyncio.sleep(0.02)
    assert processes_in(workspace), "the CLI should be running in the job's workspace"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_in(workspace) == []


async def test_resume_session(claude_bin, fake, workspace, tmp_path):
    env = cli_env(tmp_path, fake)
    fake.script(Reply("Noted: PINEAPPLE."), Reply("You said PINEAPPLE."))
    first = await backend(claude_bin, env).run(request(workspace, "Remember the word PINEAPPLE."))
    assert first.ok and first.session_id
    second = await backend(claude_bin, env).run(
        request(workspace, "Which word did I ask you to remember?", session_id=first.session_id))
    assert second.ok, second.failure
    assert second.text == "You said PINEAPPLE."
    texts = user_texts(fake.model_calls()[-1].body)
    assert "Remember the word PINEAPPLE." in texts and "Which word did I ask you to remember?" in texts
    assert "Noted: PINEAPPLE." in json.dumps(fake.model_calls()[-1].body["messages"])


async def test_max_turns_is_budget_exceeded_and_keeps_session(claude_bin, fake, workspace, tmp_path):
    fake.default = Reply("", tool_uses=[ToolUse("Write", {"file_path": str(workspace / "a.txt"), "content": "a"})])
    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(
        request(workspace, allowed_tools=["Write"], max_turns=1))
    assert result.failure is not None and result.failure.failure_class == FailureClass.BUDGET_EXCEEDED
    assert result.failure.signature == "cli:max_turns"
    assert result.session_id


async def test_max_budget_is_budget_exceeded(claude_bin, fake, workspace, tmp_path):
    fake.default = Reply("", tool_uses=[ToolUse("Write", {"file_path": str(workspace / "a.txt"), "content": "a"})],
                         input_tokens=100_000)
    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(
        request(workspace, allowed_tools=["Write"], max_budget_usd=0.0001))
    assert result.failure is not None and result.failure.failure_class == FailureClass.BUDGET_EXCEEDED
    assert result.failure.signature == "cli:max_budget_usd"
    assert result.cost_usd > 0


async def test_refusal_is_content_refused(claude_bin, fake, workspace, tmp_path):
    fake.default = Reply("", stop_reason="refusal")
    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(request(workspace))
    assert result.failure is not None and result.failure.failure_class == FailureClass.CONTENT_REFUSED


async def test_empty_answer_is_empty_output(claude_bin, fake, workspace, tmp_path):
    fake.default = Reply("")  # the CLI asks again once after an empty answer
    result = await backend(claude_bin, cli_env(tmp_path, fake)).run(request(workspace))
    assert result.failure is not None and result.failure.failure_class == FailureClass.EMPTY_OUTPUT


async def test_check_credentials(claude_bin, fake, tmp_path):
    env = cli_env(tmp_path, fake)
    status = await backend(claude_bin, env).check_credentials()
    assert status.ok and "2.1.332" in status.message

    keyless = cli_env(tmp_path, fake, key=None)
    missing_key = await backend(claude_bin, keyless, api_key_env="SB_TEST_UNSET_KEY").check_credentials()
    assert not missing_key.ok and "SB_TEST_UNSET_KEY" in missing_key.message

    not_logged_in = await backend(claude_bin, keyless).check_credentials()
    assert not not_logged_in.ok and "not logged in" in not_logged_in.message

    (tmp_path / "home/.claude/.credentials.json").write_text(
        json.dumps({"claudeAiOauth": {"accessToken": "t", "expiresAt": 1_900_000_000_000}}))
    oauth = await backend(claude_bin, keyless).check_credentials()
    assert oauth.ok and oauth.expires_at == 1_900_000_000.0

    gone = await backend(str(tmp_path / "no-such-claude"), env).check_credentials()
    assert not gone.ok


async def test_api_key_env_and_base_url_from_config(claude_bin, fake, workspace, tmp_path, monkeypatch):
    fake.require_key = "sk-ant-from-config-0123456789"
    env = cli_env(tmp_path, fake, key=None)
    env.pop("ANTHROPIC_BASE_URL")
    env["SB_TEST_CLAUDE_KEY"] = "sk-ant-from-config-0123456789"
    result = await backend(claude_bin, env, api_key_env="SB_TEST_CLAUDE_KEY", base_url=fake.url).run(
        request(workspace))
    assert result.ok, result.failure
