"""The anthropic backend against the fake Messages API over real HTTP on 127.0.0.1 (plus one MockTransport
case for an error event in the middle of a stream, which the fake does not produce)."""

from __future__ import annotations

import httpx
import pytest

from engine.backends.anthropic_api import AnthropicApiBackend
from engine.backends.base import BackendRequest
from engine.clock import FakeClock, iso
from engine.failures import FailureClass
from engine.settings import BackendConfig
from tests.fakes.fake_anthropic import ApiError, FakeAnthropic, Hang, Reply, ToolUse

KEY = "sk-ant-test-key-0123456789abcdef"
KEY_ENV = "SB_TEST_ANTHROPIC_KEY"


@pytest.fixture
def fake():
    with FakeAnthropic(require_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def config(url: str, **overrides: object) -> BackendConfig:
    fields: dict[str, object] = dict(
        name="sonnet-api", kind="anthropic", model="claude-fake-1", family="anthropic", base_url=url,
        api_key_env=KEY_ENV, price_in_per_mtok=3.0, price_out_per_mtok=15.0, price_cache_read_per_mtok=0.3,
        price_cache_write_per_mtok=3.75)
    fields.update(overrides)
    return BackendConfig(**fields)  # type: ignore[arg-type]


def req(**kw: object) -> BackendRequest:
    fields: dict[str, object] = {"job_id": 3, "job_type": "writing", "prompt": "Draft a haiku.",
                                 "system": "PERSONA AND CORE MEMORY", "timeout_s": 10.0, "max_output_tokens": 512}
    fields.update(kw)
    return BackendRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_success_with_cache_tokens_and_cost(fake, stream):
    fake.script(Reply("Autumn moonlight", input_tokens=50, output_tokens=12, cache_read_tokens=4000,
                      cache_write_tokens=100))
    backend = AnthropicApiBackend(config(fake.url), clock=FakeClock(), stream=stream)
    seen: list[str] = []

    async def progress(line: str) -> None:
        seen.append(line)

    result = await backend.run(req(), progress)
    await backend.aclose()
    assert result.ok, result.failure
    assert result.text == "Autumn moonlight"
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        50, 12, 4000, 100)
    assert result.cost_usd == pytest.approx((50 * 3.0 + 12 * 15.0 + 4000 * 0.3 + 100 * 3.75) / 1e6)
    [call] = fake.model_calls()
    assert call.path == "/v1/messages"
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert call.headers["x-api-key"] == "<redacted>"
    assert call.body["system"] == [{"type": "text", "text": "PERSONA AND CORE MEMORY",
                                    "cache_control": {"type": "ephemeral"}}]
    assert call.body["messages"] == [{"role": "user", "content": "Draft a haiku."}]
    assert call.body["max_tokens"] == 512 and call.body["model"] == "claude-fake-1"
    assert call.body.get("stream", False) is stream
    assert bool(seen) is stream


async def test_base_url_with_v1_suffix_and_tool_use_progress(fake):
    fake.script(Reply("Done.", tool_uses=[ToolUse("lookup", {"q": "x"})], stop_reason="end_turn"))
    backend = AnthropicApiBackend(config(fake.url + "/v1"), clock=FakeClock())
    seen: list[str] = []

    async def progress(line: str) -> None:
        seen.append(line)

    result = await backend.run(req(), progress)
    await backend.aclose()
    assert result.ok and result.text == "Done."
    assert "tool lookup" in seen


@pytest.mark.parametrize(
    ("scripted", "expected"),
    [
        (ApiError.of(401), FailureClass.AUTH),
        (ApiError.of(403), FailureClass.AUTH),
        (ApiError.of(402), FailureClass.QUOTA),
        (ApiError.of(400, "Your credit balance is too low to access the Anthropic API."), FailureClass.QUOTA),
        (ApiError.of(500), FailureClass.SERVER_ERROR),
        (ApiError.of(529), FailureClass.OVERLOADED),
        (ApiError.of(400), FailureClass.CONTEXT_OVERFLOW),
        (ApiError.of(400, "messages.0.content: Field required"), FailureClass.BAD_REQUEST),
        (ApiError.of(404, "model: claude-nope"), FailureClass.BACKEND_REJECTED),  # issue 14: the backend's own
        (Reply(""), FailureClass.EMPTY_OUTPUT),
        (Reply("", stop_reason="refusal"), FailureClass.CONTENT_REFUSED),
    ],
    ids=["401", "403", "402", "credit", "500", "529", "400-too-long", "400-other", "404", "empty", "refusal"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_failures(fake, scripted, expected, stream):
    fake.script(scripted)
    backend = AnthropicApiBackend(config(fake.url), clock=FakeClock(), stream=stream)
    result = await backend.run(req())
    await backend.aclose()
    assert result.failure is not None and result.failure.failure_class == expected, result.failure
    assert KEY not in result.failure.message
    assert result.failure.signature
    assert fake.count("/v1/messages") == 1


async def test_rate_limit_takes_the_latest_reset(fake):
    clock = FakeClock()
    headers = {"anthropic-ratelimit-requests-reset": iso(clock.now() + 30) or "",
               "anthropic-ratelimit-tokens-reset": iso(clock.now() + 300) or ""}
    fake.script(ApiError.rate_limited(retry_after=120, headers=headers))
    backend = AnthropicApiBackend(config(fake.url), clock=clock)
    result = await backend.run(req())
    await backend.aclose()
    assert result.failure is not None and result.failure.failure_class == FailureClass.RATE_LIMITED
    assert result.failure.resume_at == clock.now() + 300
    assert result.failure.http_status == 429


async def test_retry_after_ms(fake):
    clock = FakeClock()
    fake.script(ApiError.rate_limited(retry_after_ms=2500))
    backend = AnthropicApiBackend(config(fake.url), clock=clock)
    result = await backend.run(req())
    await backend.aclose()
    assert result.failure is not None and result.failure.resume_at == clock.now() + 2.5


async def test_hang_times_out(fake):
    fake.script(Hang(max_s=30))
    backend = AnthropicApiBackend(config(fake.url), clock=FakeClock(), stream=True)
    result = await backend.run(req(timeout_s=0.5))
    fake.release()
    await backend.aclose()
    assert result.failure is not None and result.failure.failure_class == FailureClass.TIMEOUT


async def test_missing_key(fake, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    backend = AnthropicApiBackend(config(fake.url), clock=FakeClock())
    result = await backend.run(req())
    assert result.failure is not None and result.failure.failure_class == FailureClass.AUTH
    assert fake.count() == 0
    await backend.aclose()


async def test_check_credentials(fake, monkeypatch):
    backend = AnthropicApiBackend(config(fake.url), clock=FakeClock())
    assert (await backend.check_credentials()).ok
    monkeypatch.setenv(KEY_ENV, "sk-ant-wrong-0123456789abcdef")
    bad = await backend.check_credentials()
    assert not bad.ok and "wrong" not in bad.message
    await backend.aclose()


async def test_error_event_mid_stream_is_classified():
    def handler(request: httpx.Request) -> httpx.Response:
        body = (
            'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"x","content":[],'
            '"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
            'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
        )
        return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})

    backend = AnthropicApiBackend(config("http://fake.invalid"), clock=FakeClock(),
                                  transport=httpx.MockTransport(handler), stream=True)
    result = await backend.run(req())
    await backend.aclose()
    assert result.failure is not None and result.failure.failure_class == FailureClass.OVERLOADED
    assert result.failure.signature.startswith("stream:")
