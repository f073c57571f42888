"""The failure taxonomy: HTTP answers, exceptions and the Claude CLI's own output, each to one class.

The CLI cases replay the real captures in tests/fixtures/claude-code/ (see tests/fixtures/README.md); the
constructed cases below them cover the same ground with hand-written lines.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from engine.backends.anthropic_api import AnthropicApiBackend
from engine.backends.base import BackendRequest
from engine.backends.claude_cli import (
    StreamState,
    classify_cli_result,
    describe_event,
    parse_event,
    result_from_stream,
)
from engine.backends.codex_cli import CodexState, codex_result, parse_codex_event
from engine.backends.openai_compat import OpenAICompatBackend
from engine.clock import FakeClock
from engine.failures import (
    DEFAULT_RATE_LIMIT_PAUSE_S,
    FAILURE_PHRASES,
    FailureClass,
    classify_exception,
    classify_http,
    classify_text,
    normalise_signature,
)
from engine.settings import BackendConfig
from tests.fakes import litellm_captures

NOW = 1_795_620_000.0
LITELLM_NO_DB = litellm_captures.load("wrong_key_no_db")
REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code"


def anthropic_body(kind: str, message: str) -> str:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}})


def openai_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


# --- classify_http ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, anthropic_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
     FailureClass.RATE_LIMITED),
    (429, openai_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
     FailureClass.QUOTA),
    (402, openai_body("Insufficient credits"), FailureClass.QUOTA),
    (400, anthropic_body("invalid_request_error", "Your credit balance is too low to access the Anthropic API"),
     FailureClass.QUOTA),
    (403, openai_body("You have reached your spend limit"), FailureClass.QUOTA),
    (401, anthropic_body("authentication_error", "invalid x-api-key"), FailureClass.AUTH),
    (403, anthropic_body("permission_error", "Your API key does not have permission"), FailureClass.AUTH),
    (529, anthropic_body("overloaded_error", "Overloaded"), FailureClass.OVERLOADED),
    (503, "Service Unavailable", FailureClass.OVERLOADED),
    (500, anthropic_body("api_error", "Internal server error"), FailureClass.SERVER_ERROR),
    (502, "<html>Bad gateway</html>", FailureClass.SERVER_ERROR),
    (504, "", FailureClass.SERVER_ERROR),
    (408, "", FailureClass.TIMEOUT),
    (400, anthropic_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
     FailureClass.CONTEXT_OVERFLOW),
    (400, openai_body("This model's maximum context length is 8192 tokens", code="context_length_exceeded"),
     FailureClass.CONTEXT_OVERFLOW),
    (413, anthropic_body("request_too_large", "Request exceeds the maximum size"), FailureClass.CONTEXT_OVERFLOW),
    (400, openai_body("Your request was rejected as a result of our safety system", code="content_policy_violation"),
     FailureClass.CONTENT_REFUSED),
    (400, anthropic_body("invalid_request_error", "messages: field required"), FailureClass.BAD_REQUEST),
    (422, json.dumps({"detail": "temperature must be <= 2"}), FailureClass.BAD_REQUEST),
    # Issue 14: a 4xx about the backend itself (an unknown model, a proxy without its database, a config it
    # lacks) is that backend's failure: the chain goes on, not the job's end.
    (404, anthropic_body("not_found_error", "model: claude-nope"), FailureClass.BACKEND_REJECTED),
    (404, openai_body("The model `gpt-nope` does not exist or you do not have access to it.", code="model_not_found"),
     FailureClass.BACKEND_REJECTED),
    # LiteLLM, wrong key, no database (captured: tests/fixtures/litellm/wrong_key_no_db.json)
    (LITELLM_NO_DB["status"], json.dumps(LITELLM_NO_DB["body"]), FailureClass.BACKEND_REJECTED),
    (400, openai_body("Invalid model name passed in model=gpt-x. Call `/v1/models` to view available models"),
     FailureClass.BACKEND_REJECTED),  # LiteLLM's router for a model it does not serve
    (400, anthropic_body("invalid_request_error", "messages.0.content: Field required"), FailureClass.BAD_REQUEST),
    (409, "conflict", FailureClass.UNKNOWN),
])
def test_classify_http(status, body, expected):
    failure = classify_http(status, body, {}, NOW)
    assert failure.failure_class == expected
    assert failure.http_status == status
    assert failure.signature.startswith(f"http_{status}:")
    assert failure.message.startswith(f"HTTP {status}")


def test_rate_limited_resume_at_from_headers_or_default():
    body = anthropic_body("rate_limit_error", "slow down")
    with_header = classify_http(429, body, {"retry-after": "120", "x-ratelimit-reset-tokens": "6m0s"}, NOW)
    assert with_header.resume_at == NOW + 360
    without = classify_http(429, body, {}, NOW)
    assert without.resume_at == NOW + DEFAULT_RATE_LIMIT_PAUSE_S


def test_overload_keeps_a_retry_after_hint_and_quota_has_none_by_default():
    assert classify_http(529, "", {"retry-after": "5"}, NOW).resume_at == NOW + 5
    assert classify_http(529, "", {}, NOW).resume_at is None
    assert classify_http(402, "", {}, NOW).resume_at is None


def test_signature_is_stable_across_occurrences():
    a = classify_http(418, "teapot 1234 at req_abcdef0123456789", {}, NOW)
    b = classify_http(418, "teapot 98 at req_0123456789abcdef", {}, NOW)
    assert a.failure_class == FailureClass.UNKNOWN
    assert a.signature == b.signature
    assert classify_http(418, "", {}, NOW).signature == "http_418:no_body"
    assert normalise_signature("Error 42: id 0123456789abcdef") == "error_#_id_#"


def test_secrets_never_reach_the_message():
    body = openai_body("Incorrect API key provided: sk-proj-abcdefghijklmnop1234. Bearer sk-abcdefghijklmnop12345")
    failure = classify_http(401, body, {}, NOW, secrets=["hunter2-secret"])
    assert "sk-proj-abcdefghijklmnop1234" not in failure.message
    assert "sk-abcdefghijklmnop12345" not in failure.message
    echoed = classify_http(400, "bad key hunter2-secret", {}, NOW, secrets=[SecretStr("hunter2-secret")])
    assert "hunter2-secret" not in echoed.message


def test_message_is_bounded():
    failure = classify_http(500, "x" * 10_000, {}, NOW)
    assert len(failure.message) <= 500


# --- classify_exception -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "expected"), [
    (httpx.ReadTimeout("read timed out"), FailureClass.TIMEOUT),
    (httpx.ConnectTimeout("connect timed out"), FailureClass.TIMEOUT),
    (httpx.PoolTimeout("pool"), FailureClass.TIMEOUT),
    (TimeoutError(), FailureClass.TIMEOUT),
    (httpx.ConnectError("connection refused"), FailureClass.OVERLOADED),
    (httpx.ReadError("connection reset by peer"), FailureClass.OVERLOADED),
    (httpx.RemoteProtocolError("peer closed connection"), FailureClass.OVERLOADED),
    (ConnectionResetError(), FailureClass.OVERLOADED),
    (asyncio.CancelledError(), FailureClass.CANCELLED),
    (ValueError("odd"), FailureClass.UNKNOWN),
])
def test_classify_exception(exc, expected):
    failure = classify_exception(exc)
    assert failure.failure_class == expected
    assert failure.signature.startswith("exc:")


def test_exception_message_is_redacted():
    exc = httpx.ConnectError("failed for https://x/?key=sk-abcdefghijklmnop123456")
    assert "sk-abcdefghijklmnop123456" not in classify_exception(exc).message


# --- the Claude CLI's output: the real captures --------------------------------------------------------------

CAPTURES = {
    "success.json": (None, None),
    "success.stream.jsonl": (None, None),
    "tool_default.json": (None, None),
    "r0_429.json": (FailureClass.RATE_LIMITED, 429),
    "r0_401.json": (FailureClass.AUTH, 401),
    "r0_403.json": (FailureClass.AUTH, 403),
    "r0_500.json": (FailureClass.SERVER_ERROR, 500),
    "r0_529.json": (FailureClass.OVERLOADED, 529),
    "r0_400.json": (FailureClass.CONTEXT_OVERFLOW, 400),
    "hang_t3.json": (FailureClass.TIMEOUT, None),
    "maxturns.json": (FailureClass.BUDGET_EXCEEDED, None),
    "budget.json": (FailureClass.BUDGET_EXCEEDED, None),
    "no_api_key.json": (FailureClass.AUTH, None),
    "429_retries.stream.jsonl": (FailureClass.RATE_LIMITED, 429),
    "429_retry_after_60.stream.jsonl": (FailureClass.RATE_LIMITED, 429),
    "529_fallback_model.stream.jsonl": (FailureClass.OVERLOADED, 529),
    "oauth_usage_limit_429.stream.jsonl": (FailureClass.RATE_LIMITED, 429),
}


def _replay(path: Path) -> tuple[StreamState, list[str]]:
    state = StreamState()
    progress: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        event = parse_event(line)
        if event is not None:
            state.feed(event)
            progress.append(describe_event(event))
    return state, progress


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_reference_capture(name):
    expected, status = CAPTURES[name]
    state, progress = _replay(REFERENCE / name)
    assert state.result is not None, "every capture ends with a result line"
    result = result_from_stream(state, now=NOW, secrets=["x"])
    assert result.session_id and len(result.session_id) == 36
    assert all(progress), "every event gives a progress line"
    if expected is None:
        assert result.ok, result.failure
        assert result.text == "Hello from the fake Anthropic server."
        assert result.usage.input_tokens > 0 and result.cost_usd > 0
    else:
        assert result.failure is not None
        assert result.failure.failure_class == expected, result.failure
        assert result.failure.http_status == status
        assert result.failure.signature.startswith("cli:")


def test_reference_usage_limit_resumes_at_resets_at():
    state, progress = _replay(REFERENCE / "oauth_usage_limit_429.stream.jsonl")
    failure = result_from_stream(state, now=NOW).failure
    assert failure is not None and failure.resume_at == 1795628715
    assert failure.signature == "cli:usage_limit_reached"
    assert any(line.startswith("rate limit rejected (five_hour)") for line in progress)


def test_reference_retries_and_fallback_are_reported():
    _, retries = _replay(REFERENCE / "429_retries.stream.jsonl")
    assert sum(line.startswith("API retry") for line in retries) == 2
    _, fallback = _replay(REFERENCE / "529_fallback_model.stream.jsonl")
    assert any("fallback model my-fallback-model" in line for line in fallback)


def test_reference_subscription_costs_nothing():
    state, _ = _replay(REFERENCE / "success.json")
    assert result_from_stream(state, now=NOW, subscription=True).cost_usd == 0.0


# --- the Claude CLI's output: constructed cases ---------------------------------------------------------------

def _result(**fields: object) -> str:
    base: dict[str, object] = {"type": "result", "subtype": "success", "is_error": False, "session_id": "s-1",
                               "result": "ok", "total_cost_usd": 0.01,
                               "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7,
                                         "cache_creation_input_tokens": 3, "server_tool_use": {}}}
    base.update(fields)
    return json.dumps(base)


def _classify(*lines: str, **kw: object):
    state = StreamState()
    for line in lines:
        event = parse_event(line)
        if event is not None:
            state.feed(event)
    return result_from_stream(state, now=NOW, **kw)  # type: ignore[arg-type]


def test_cli_success_with_cache_usage():
    result = _classify('{"type":"system","subtype":"init","model":"m1","session_id":"s-1"}', _result())
    assert result.ok and result.text == "ok" and result.model == "m1"
    assert (result.usage.cache_read_tokens, result.usage.cache_write_tokens) == (7, 3)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"is_error": True, "api_error_status": 429, "api_error_type": "rate_limit_error", "result": "API Error"},
     FailureClass.RATE_LIMITED),
    ({"is_error": True, "api_error_status": 402, "result": "billing"}, FailureClass.QUOTA),
    ({"is_error": True, "terminal_reason": "prompt_too_long", "result": "Prompt is too long"},
     FailureClass.CONTEXT_OVERFLOW),
    ({"is_error": True, "subtype": "error_max_budget_usd", "result": None}, FailureClass.BUDGET_EXCEEDED),
    ({"is_error": True, "subtype": "error_max_turns", "result": None}, FailureClass.BUDGET_EXCEEDED),
    ({"is_error": True, "result": "OAuth token has expired. Please run /login"}, FailureClass.AUTH),
    ({"is_error": True, "stop_reason": "refusal", "result": "API Error: safeguards flagged this message"},
     FailureClass.CONTENT_REFUSED),
    ({"is_error": True, "result": "Request timed out."}, FailureClass.TIMEOUT),
    ({"result": "   "}, FailureClass.EMPTY_OUTPUT),
    ({"is_error": True, "subtype": "error_during_execution", "result": None,
      "errors": ["something new happened"]}, FailureClass.UNKNOWN),
])
def test_cli_result_classes(fields, expected):
    failure = _classify(_result(**fields)).failure
    assert failure is not None and failure.failure_class == expected


def test_cli_usage_limit_text_fallback_when_no_resets_at():
    result = _classify('{"type":"rate_limit_event","rate_limit_info":{"status":"rejected"}}',
                       _result(is_error=True, api_error_status=429, api_error="usage_limit_reached",
                               result="You've hit your 5-hour limit · resets 5:45pm (UTC)"))
    assert result.failure is not None and result.failure.failure_class == FailureClass.RATE_LIMITED
    expected = NOW - NOW % 86400 + 17 * 3600 + 45 * 60  # 17:45 UTC on NOW's day, still ahead of NOW
    assert expected > NOW
    assert result.failure.resume_at == expected


def test_cli_no_result_line():
    killed = classify_cli_result(None, rate_limit=None, now=NOW, timed_out=True)
    assert killed is not None and killed.failure_class == FailureClass.TIMEOUT
    crashed = classify_cli_result(None, rate_limit=None, now=NOW, exit_code=1, stderr="Segmentation fault")
    assert crashed is not None and crashed.failure_class == FailureClass.UNKNOWN
    assert crashed.signature == "cli:no_result:exit_1"
    logged_out = classify_cli_result(None, rate_limit=None, now=NOW, exit_code=1,
                                     stderr="Not logged in · Please run /login")
    assert logged_out is not None and logged_out.failure_class == FailureClass.AUTH


def test_cli_parser_tolerates_junk_and_unknown_events():
    assert parse_event("") is None
    assert parse_event("not json") is None
    assert parse_event("[1, 2]") is None
    assert parse_event('{"type": "result", "usage": "weird"}') is None
    event = parse_event('{"type":"brand_new","subtype":"x","whatever":{"a":1},"errors":null}')
    assert event is not None and describe_event(event) == "brand_new/x"
    tool = parse_event('{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash",'
                       '"input":{"command":"pytest -q"}}]}}')
    assert tool is not None and describe_event(tool) == "tool Bash pytest -q"


def test_cli_error_text_is_redacted():
    failure = _classify(_result(is_error=True, result="Invalid API key sk-ant-abcdefghijklmnop1234")).failure
    assert failure is not None and "sk-ant-abcdefghijklmnop1234" not in failure.message


# --- one phrase table, every backend kind ------------------------------------------------------------------

def test_every_phrase_is_reachable():
    """The first phrase found wins, so no phrase may be shadowed by an earlier one of another class."""
    for phrase, cls in FAILURE_PHRASES:
        assert classify_text(f"Error: {phrase.upper()} (request 42)") == cls, phrase
    assert classify_text("something nobody has seen before") is None


# The HTTP backends let the status decide where it can: a phrase of these classes arrives with its own status.
_STATUS_OF = {FailureClass.AUTH: 401, FailureClass.RATE_LIMITED: 429, FailureClass.TIMEOUT: 408}
# Texts as providers and CLIs word them, each with the class every backend must give it.
_TEXTS = [
    ("Your credit balance is too low to access the Anthropic API", FailureClass.QUOTA),
    ("You exceeded your current quota, please check your plan and billing details.", FailureClass.QUOTA),
    ("You have reached your spending limit", FailureClass.QUOTA),
    ("You have reached your specified API usage limits", FailureClass.QUOTA),
    ("prompt is too long: 210000 tokens > 200000 maximum", FailureClass.CONTEXT_OVERFLOW),
    ("This model's maximum context length is 8192 tokens", FailureClass.CONTEXT_OVERFLOW),
    ("Your input exceeds the context window of this model", FailureClass.CONTEXT_OVERFLOW),
    ("Your request was rejected as a result of our safety system", FailureClass.CONTENT_REFUSED),
    ("This request violates our usage policy", FailureClass.CONTENT_REFUSED),
    ("Overloaded", FailureClass.OVERLOADED),
    ("stream disconnected before completion: connection reset", FailureClass.OVERLOADED),
    ("Invalid API key · Fix external API key", FailureClass.AUTH),
    ("OAuth token has expired. Please run /login", FailureClass.AUTH),
    ("Number of request tokens has exceeded your per-minute rate limit", FailureClass.RATE_LIMITED),
    ("Request timed out.", FailureClass.TIMEOUT),
]


def _via_claude_cli(text: str, status: int | None) -> FailureClass | None:
    state = StreamState()
    event = parse_event(_result(is_error=True, result=text, api_error_status=status))
    assert event is not None
    state.feed(event)
    failure = result_from_stream(state, now=NOW).failure
    return failure.failure_class if failure else None


def _via_codex_cli(text: str, status: int | None) -> FailureClass | None:
    state = CodexState()
    event = parse_codex_event(json.dumps({"type": "turn.failed", "error": {"message": text}}))
    assert event is not None
    state.feed(event)
    config = BackendConfig(name="c", kind="codex_cli", family="openai")
    failure = codex_result(state, now=NOW, timed_out=False, exit_code=1, stderr="", config=config,
                           secrets=[]).failure
    return failure.failure_class if failure else None


async def _via_http(kind: str, text: str, status: int, monkeypatch: pytest.MonkeyPatch) -> FailureClass | None:
    monkeypatch.setenv("SB_TEST_KEY", "k-0123456789")
    body = anthropic_body("error", text) if kind == "anthropic" else openai_body(text)
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text=body))
    config = BackendConfig(name="h", kind=kind, family="f", model="m", base_url="http://mock/v1",  # type: ignore[arg-type]
                           api_key_env="SB_TEST_KEY")
    backend_type = AnthropicApiBackend if kind == "anthropic" else OpenAICompatBackend
    backend = backend_type(config, clock=FakeClock(NOW), transport=transport, stream=False)
    try:
        failure = (await backend.run(BackendRequest(job_id=1, job_type="chat", prompt="hi"))).failure
    finally:
        await backend.aclose()
    return failure.failure_class if failure else None


@pytest.mark.parametrize(("text", "expected"), _TEXTS)
async def test_same_text_same_class_for_every_backend_kind(text, expected, monkeypatch):
    assert classify_text(text) == expected
    status = _STATUS_OF.get(expected, 400)
    got = {
        "claude_cli (text only)": _via_claude_cli(text, None),
        "claude_cli (with API status)": _via_claude_cli(text, status),
        "codex_cli": _via_codex_cli(text, None),
        "anthropic": await _via_http("anthropic", text, status, monkeypatch),
        "openai": await _via_http("openai", text, status, monkeypatch),
    }
    assert got == dict.fromkeys(got, expected)


def test_spending_limit_is_quota_for_http_and_the_clis_alike():
    """The case that had three answers before the table was one: a CLI said unknown, an HTTP API quota."""
    text = "You have reached your spending limit"
    assert classify_http(403, openai_body(text), {}, NOW).failure_class == FailureClass.QUOTA
    assert _via_claude_cli(text, None) == FailureClass.QUOTA
    assert _via_codex_cli(text, None) == FailureClass.QUOTA
