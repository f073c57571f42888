"""The codex_cli JSONL parser and classifier, on streams built from the documented event shapes and on lines
captured from the real pinned ``codex exec --json`` (0.169.0; tests/integration/test_codex_real.py runs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest, Usage
from engine.backends.codex_cli import (
    CodexCliBackend,
    CodexState,
    classify_codex_error,
    codex_result,
    describe_codex_event,
    last_answer_headers,
    parse_codex_event,
    usage_since,
)
from engine.clock import FakeClock
from engine.failures import FailureClass
from engine.settings import BackendConfig

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CONFIG = BackendConfig(name="codex", kind="codex_cli", model="gpt-5-codex", family="openai",
                       price_in_per_mtok=1.25, price_out_per_mtok=10.0, price_cache_read_per_mtok=0.125)

SUCCESS = [
    {"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Planning** the fix"}},
    {"type": "item.started", "item": {"id": "item_1", "type": "command_execution", "command": "bash -lc 'pytest -q'",
                                      "aggregated_output": "", "exit_code": None, "status": "in_progress"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution",
                                        "command": "bash -lc 'pytest -q'", "aggregated_output": "3 passed\n",
                                        "exit_code": 0, "status": "completed"}},
    {"type": "item.completed", "item": {"id": "item_2", "type": "file_change", "status": "completed",
                                        "changes": [{"path": "app.py", "kind": "update"}]}},
    {"type": "item.updated", "item": {"id": "item_3", "type": "todo_list",
                                      "items": [{"text": "fix", "completed": True}]}},
    {"type": "item.completed", "item": {"id": "item_4", "type": "agent_message", "text": "Fixed; tests pass."}},
    {"type": "turn.completed", "usage": {"input_tokens": 24763, "cached_input_tokens": 24448,
                                         "output_tokens": 122}},
]


def feed(events: list[dict | str]) -> tuple[CodexState, list[str]]:
    state = CodexState()
    progress = []
    for raw in events:
        event = parse_codex_event(raw if isinstance(raw, str) else json.dumps(raw))
        if event is not None:
            state.feed(event)
            progress.append(describe_codex_event(event))
    return state, progress


def finish(state: CodexState, **kw: object):
    fields: dict[str, object] = {"now": NOW, "timed_out": False, "exit_code": 0, "stderr": "", "config": CONFIG,
                                 "secrets": []}
    fields.update(kw)
    return codex_result(state, **fields)  # type: ignore[arg-type]


def test_success_text_usage_session_cost():
    state, progress = feed(SUCCESS)
    result = finish(state)
    assert result.ok
    assert result.text == "Fixed; tests pass."
    assert result.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert (result.usage.input_tokens, result.usage.cache_read_tokens, result.usage.output_tokens) == (
        315, 24448, 122)
    assert result.cost_usd == pytest.approx((315 * 1.25 + 24448 * 0.125 + 122 * 10.0) / 1e6)
    assert "$ bash -lc 'pytest -q' (completed)" in progress
    assert "files: app.py" in progress
    assert progress[-1] == "turn completed"


def test_tolerates_junk_and_unknown_events_and_fields():
    state, _ = feed(["", "warning: not json", "[]", '{"type":"future.event","new_field":1}',
                     '{"type":"item.completed","item":{"id":"x","type":"agent_message","text":"hi","extra":[1]}}',
                     '{"type":"turn.completed","usage":{"input_tokens":5,"cached_input_tokens":0,'
                     '"output_tokens":1,"reasoning_output_tokens":9}}'])
    result = finish(state)
    assert result.ok and result.text == "hi" and result.usage.input_tokens == 5


@pytest.mark.parametrize(("events", "expected"), [
    ([{"type": "turn.failed", "error": {"message": "exceeded retry limit, last status: 429 Too Many Requests"}}],
     FailureClass.RATE_LIMITED),
    ([{"type": "error", "message": "You've hit your usage limit. Try again in 2 hours 5 minutes."}],
     FailureClass.RATE_LIMITED),
    ([{"type": "turn.failed", "error": {"message": "unexpected status 401 Unauthorized: Missing bearer"}}],
     FailureClass.AUTH),
    ([{"type": "error", "message": "stream disconnected before completion: error sending request"}],
     FailureClass.OVERLOADED),
    ([{"type": "turn.failed", "error": {"message": "unexpected status 500 Internal Server Error"}}],
     FailureClass.SERVER_ERROR),
    ([{"type": "turn.failed", "error": {"message": "unexpected status 503 Service Unavailable"}}],
     FailureClass.OVERLOADED),
    ([{"type": "turn.failed", "error": {"message": "Quota exceeded. Check your plan and billing details."}}],
     FailureClass.QUOTA),
    ([{"type": "turn.failed", "error": {"message": "Your input exceeds the context window of this model"}}],
     FailureClass.CONTEXT_OVERFLOW),
    ([{"type": "turn.failed", "error": {"message": "a brand new failure mode"}}], FailureClass.UNKNOWN),
])
def test_failures(events, expected):
    state, progress = feed([{"type": "thread.started", "thread_id": "t-1"}, *events])
    result = finish(state, exit_code=1)
    assert result.failure is not None and result.failure.failure_class == expected, result.failure
    assert result.session_id == "t-1"
    assert progress[-1].startswith("error: ")


def test_usage_limit_resume_times():
    relative = classify_codex_error("You've hit your usage limit. Try again in 2 hours 5 minutes.", NOW)
    assert relative.resume_at == NOW + 2 * 3600 + 300
    absolute = classify_codex_error("You've hit your usage limit. Upgrade to Pro or try again at 5:45 PM.", NOW)
    assert absolute.resume_at == NOW + 17 * 3600 + 45 * 60
    bare = classify_codex_error("rate limit reached", NOW)
    assert bare.resume_at == NOW + 60


def test_status_numbers_only_when_they_are_statuses():
    assert classify_codex_error("wrote 450 lines then failed oddly", NOW).failure_class == FailureClass.UNKNOWN


def test_no_completion_is_timeout_or_crash_and_empty_is_empty():
    started, _ = feed([{"type": "thread.started", "thread_id": "t"}, {"type": "turn.started"}])
    timed_out = finish(started, timed_out=True, exit_code=-15)
    assert timed_out.failure is not None and timed_out.failure.failure_class == FailureClass.TIMEOUT
    crashed = finish(started, exit_code=2)
    assert crashed.failure is not None and crashed.failure.signature == "codex:no_result:exit_2"
    logged_out = finish(started, exit_code=1, stderr="Error: Not logged in. Run `codex login`.")
    assert logged_out.failure is not None and logged_out.failure.failure_class == FailureClass.AUTH
    empty, _ = feed([{"type": "turn.completed", "usage": {"input_tokens": 1, "cached_input_tokens": 0,
                                                          "output_tokens": 0}}])
    assert finish(empty).failure.failure_class == FailureClass.EMPTY_OUTPUT  # type: ignore[union-attr]


def test_secrets_are_redacted():
    state, _ = feed([{"type": "turn.failed", "error": {"message": "bad key sk-proj-abcdefghijklmnopqrstu"}}])
    result = finish(state, secrets=["sk-proj-abcdefghijklmnopqrstu"])
    assert "sk-proj-abcdefghijklmnopqrstu" not in result.failure.message  # type: ignore[union-attr]


def test_command_line():
    backend = CodexCliBackend(CONFIG.model_copy(update={"extra_args": ["-c", "model_reasoning_effort=high"]}),
                              clock=FakeClock(), env={"PATH": ""})
    request = BackendRequest(job_id=1, job_type="coding", prompt="-fix it", system='Say "hi"\nthen stop',
                             workspace=Path("/w"), permission_mode="acceptEdits")
    assert backend.build_command("codex", request) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "--cd", "/w", "--model", "gpt-5-codex",
        "--sandbox", "workspace-write", "-c", 'developer_instructions="Say \\"hi\\"\\nthen stop"',
        "-c", "model_reasoning_effort=high", "--", "-fix it"]
    resumed = backend.build_command("codex", request.model_copy(update={"session_id": "t-1", "system": ""}))
    assert resumed[-5:] == ["model_reasoning_effort=high", "resume", "t-1", "--", "-fix it"]


async def test_missing_binary_is_reported(monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_CODEX_BIN", raising=False)  # `make test` points it at the real binary
    backend = CodexCliBackend(CONFIG, clock=FakeClock(), env={"PATH": "/nonexistent"})
    status = await backend.check_credentials()
    assert not status.ok and "not found" in status.message
    result = await backend.run(BackendRequest(job_id=1, job_type="coding", prompt="x"))
    assert result.failure is not None and result.failure.signature == "codex:binary_missing"


# Captured from codex 0.169.0 against a local Responses API: its own retry after one 429, then success.
RECOVERED = [
    '{"type":"thread.started","thread_id":"01a21e5c-586e-7252-b680-548ac2d94bf4"}',
    '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `gpt-test` not '
    'found. Defaulting to fallback metadata; this can degrade performance and cause issues."}}',
    '{"type":"turn.started"}',
    '{"type":"error","message":"Reconnecting... 1/2 (exceeded retry limit, last status: 429 Too Many Requests)"}',
    '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Hello from fake"}}',
    '{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":200,"cache_write_input_tokens":0,'
    '"output_tokens":50,"reasoning_output_tokens":10}}',
]
HARD_429 = [*RECOVERED[:3], '{"type":"error","message":"exceeded retry limit, last status: 429 Too Many Requests"}',
            '{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}']


def test_a_completed_turn_wins_over_earlier_errors():
    state, progress = feed(RECOVERED)
    result = codex_result(state, now=NOW, timed_out=False, exit_code=0, stderr="", config=CONFIG, secrets=[])
    assert result.ok and result.text == "Hello from fake"
    assert "error: Reconnecting... 1/2 (exceeded retry limit, last status: 429 Too Many Requests)" in progress
    assert result.cost_usd == pytest.approx((800 * 1.25 + 50 * 10.0 + 200 * 0.125) / 1e6)


def test_a_failed_turn_is_classified_by_its_own_text():
    state, _ = feed(HARD_429)
    result = codex_result(state, now=NOW, timed_out=False, exit_code=1, stderr="", config=CONFIG, secrets=[])
    assert result.failure is not None and result.failure.failure_class is FailureClass.RATE_LIMITED
    assert result.failure.resume_at == NOW + 60  # a plain 429 prints no reset: the default pause


def test_resumed_usage_is_the_difference_from_the_previous_total():
    total = Usage(input_tokens=1600, output_tokens=100, cache_read_tokens=400)
    before = Usage(input_tokens=800, output_tokens=50, cache_read_tokens=200)
    assert usage_since(total, before) == before
    assert usage_since(total, None) == total
    # A total below the previous one (a new thread under the same id, a compaction): the run's own.
    assert usage_since(before, total) == before
    state, _ = feed(RECOVERED)
    result = codex_result(state, now=NOW, timed_out=False, exit_code=0, stderr="", config=CONFIG, secrets=[],
                          session_usage=Usage(input_tokens=500, output_tokens=20, cache_read_tokens=100))
    assert result.usage == Usage(input_tokens=300, output_tokens=30, cache_read_tokens=100)
    assert result.session_total == Usage(input_tokens=800, output_tokens=50, cache_read_tokens=200)


def test_usage_limit_text_of_the_real_cli_gives_its_reset():
    text = ("You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
            "https://chatgpt.com/settings/usage to purchase more credits or try again at 8:06 PM.")
    failure = classify_codex_error(text, NOW)
    assert failure.failure_class is FailureClass.RATE_LIMITED
    assert failure.resume_at == NOW + 20 * 3600 + 6 * 60


def test_provider_of_our_own_turns_the_cli_retries_off():
    config = CONFIG.model_copy(update={"api_key_env": "MY_OPENAI_KEY", "base_url": "http://127.0.0.1:9/v1"})
    backend = CodexCliBackend(config, clock=FakeClock(), env={"PATH": "/usr/bin", "MY_OPENAI_KEY": "sk-x"})
    argv = backend.provider_args()
    assert argv[:2] == ["-c", 'model_provider="switchboard"']
    assert "request_max_retries=0" in argv[3] and "stream_max_retries=0" in argv[3]
    assert 'base_url="http://127.0.0.1:9/v1"' in argv[3] and 'env_key="OPENAI_API_KEY"' in argv[3]
    # A ChatGPT login keeps the built-in provider (it cannot be overridden).
    assert CodexCliBackend(CONFIG, clock=FakeClock(), env={"PATH": "/usr/bin"}).provider_args() == []


@pytest.mark.parametrize(("text", "expected"), [
    # As codex 0.169.0 printed them for a local Responses API's answers.
    ('{"error": {"message": "No connected db.", "type": "no_db_connection", "param": null, "code": "400"}}',
     FailureClass.BACKEND_REJECTED),
    ("The model `gpt-test` does not exist or you do not have access to it.", FailureClass.BACKEND_REJECTED),
    ("Quota exceeded. Check your plan and billing details.", FailureClass.QUOTA),
    ("We\u2019re currently experiencing high demand, which may cause temporary errors.", FailureClass.OVERLOADED),
    ("unexpected status 401 Unauthorized: Incorrect API key provided: sk-bad., url: http://127.0.0.1:1/v1/responses",
     FailureClass.AUTH),
])
def test_real_cli_error_texts(text, expected):
    assert classify_codex_error(text, NOW).failure_class is expected


def test_the_reset_time_comes_from_the_clis_own_log_of_the_answer():
    # Captured from codex 0.169.0 with RUST_LOG=error,codex_http_client::client=debug (what the backend sets).
    stderr = (
        "Reading additional input from stdin...\n"
        "2026-11-27T19:16:31.021657Z DEBUG codex_http_client::client: Request completed method=POST "
        "url=http://127.0.0.1:18796/v1/responses status=429 Too Many Requests headers={\"server\": "
        "\"BaseHTTP/0.6 Python/3.11.7\", \"content-type\": \"application/json\", \"retry-after\": \"37\", "
        "\"content-length\": \"108\"} version=HTTP/1.1\n")
    assert last_answer_headers(stderr)["retry-after"] == "37"
    assert last_answer_headers("no log at all") == {}
    state, _ = feed(HARD_429)
    result = codex_result(state, now=NOW, timed_out=False, exit_code=1, stderr=stderr, config=CONFIG, secrets=[])
    assert result.failure is not None and result.failure.resume_at == NOW + 37
