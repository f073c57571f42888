"""The openai backend against the fake OpenAI-compatible server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from engine.backends.base import BackendRequest
from engine.backends.openai_compat import OpenAICompatBackend
from engine.clock import FakeClock
from engine.failures import FailureClass
from engine.settings import BackendConfig
from tests.fakes.fake_openai import Completion, FakeOpenAI, Hang, OpenAIError

KEY = "sk-test-openai-0123456789abcdef"
KEY_ENV = "SB_TEST_OPENAI_KEY"


@pytest.fixture
def fake():
    with FakeOpenAI(require_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def make(url: str, clock: FakeClock | None = None, **overrides: object) -> OpenAICompatBackend:
    fields: dict[str, object] = dict(
        name="oa", kind="openai", model="gpt-fake-1", family="openai", base_url=url + "/v1", api_key_env=KEY_ENV,
        price_in_per_mtok=1.0, price_out_per_mtok=2.0, price_cache_read_per_mtok=0.5)
    fields.update(overrides)
    return OpenAICompatBackend(BackendConfig(**fields), clock=clock or FakeClock())  # type: ignore[arg-type]


def req(**kw: object) -> BackendRequest:
    fields: dict[str, object] = {"job_id": 7, "job_type": "chat", "prompt": "What is 6*7?",
                                 "system": "You are terse.", "timeout_s": 10.0, "max_output_tokens": 256}
    fields.update(kw)
    return BackendRequest(**fields)  # type: ignore[arg-type]


async def test_success_usage_cache_and_cost(fake):
    fake.script(Completion("42", prompt_tokens=1000, completion_tokens=10, cached_tokens=800))
    backend = make(fake.url)
    result = await backend.run(req())
    await backend.aclose()
    assert result.ok, result.failure
    assert result.text == "42"
    assert (result.usage.input_tokens, result.usage.cache_read_tokens, result.usage.output_tokens) == (200, 800, 10)
    assert result.cost_usd == pytest.approx((200 * 1.0 + 800 * 0.5 + 10 * 2.0) / 1e6)
    [call] = fake.completion_calls()
    assert call.headers["authorization"] == "<redacted>"
    assert call.body["model"] == "gpt-fake-1" and call.body["max_tokens"] == 256
    assert call.body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert call.body["messages"][1] == {"role": "user", "content": "What is 6*7?"}
    assert "stream" not in call.body


async def test_streaming_with_progress(fake):
    fake.script(Completion("The answer is forty-two.", prompt_tokens=50, completion_tokens=7, cached_tokens=10))
    seen: list[str] = []

    async def progress(line: str) -> None:
        seen.append(line)

    backend = make(fake.url)
    result = await backend.run(req(), progress)
    await backend.aclose()
    assert result.ok and result.text == "The answer is forty-two."
    assert (result.usage.input_tokens, result.usage.cache_read_tokens, result.usage.output_tokens) == (40, 10, 7)
    assert seen and seen[0] == "streaming"
    assert fake.completion_calls()[0].body["stream"] is True


@pytest.mark.parametrize(
    ("scripted", "expected", "resume_in_s"),
    [
        (OpenAIError.rate_limited(retry_after=120), FailureClass.RATE_LIMITED, 120),
        (OpenAIError.rate_limited(retry_after_ms=1500), FailureClass.RATE_LIMITED, 1.5),
        (OpenAIError.rate_limited(retry_after=20, reset_requests="6m0s", reset_tokens="1.5s"),
         FailureClass.RATE_LIMITED, 360),
        (OpenAIError.rate_limited(), FailureClass.RATE_LIMITED, 60),
        (OpenAIError.of(429), FailureClass.QUOTA, None),
        (OpenAIError.of(402), FailureClass.QUOTA, None),
        (OpenAIError.of(401), FailureClass.AUTH, None),
        (OpenAIError.of(403), FailureClass.AUTH, None),
        (OpenAIError.of(500), FailureClass.SERVER_ERROR, None),
        (OpenAIError.of(503), FailureClass.OVERLOADED, None),
        (OpenAIError.of(400), FailureClass.CONTEXT_OVERFLOW, None),
        (OpenAIError.of(422, "temperature: must be <= 2"), FailureClass.BAD_REQUEST, None),
        (Completion(""), FailureClass.EMPTY_OUTPUT, None),
        (Completion(None), FailureClass.EMPTY_OUTPUT, None),
        (Completion(None, refusal="I can't help with that."), FailureClass.CONTENT_REFUSED, None),
        (Completion("partial", finish_reason="content_filter"), FailureClass.CONTENT_REFUSED, None),
    ],
    ids=["429-retry-after", "429-retry-after-ms", "429-reset-latest", "429-no-header", "429-quota", "402",
         "401", "403", "500", "503", "400-context", "422", "empty", "null", "refusal", "content-filter"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_failures(fake, scripted, expected, resume_in_s, stream):
    clock = FakeClock()
    fake.script(scripted)
    backend = OpenAICompatBackend(make(fake.url).config, clock=clock, stream=stream)
    result = await backend.run(req())
    await backend.aclose()
    assert result.failure is not None
    assert result.failure.failure_class == expected, result.failure
    if resume_in_s is not None:
        assert result.failure.resume_at == pytest.approx(clock.now() + resume_in_s)
    assert KEY not in result.failure.message
    assert fake.count("/v1/chat/completions") == 1


async def test_hang_times_out(fake):
    fake.script(Hang(max_s=30))
    backend = make(fake.url)
    result = await backend.run(req(timeout_s=0.5))
    fake.release()
    await backend.aclose()
    assert result.failure is not None and result.failure.failure_class == FailureClass.TIMEOUT


async def test_missing_key_fails_without_a_request(fake, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    backend = make(fake.url)
    result = await backend.run(req())
    assert result.failure is not None and result.failure.failure_class == FailureClass.AUTH
    assert fake.count() == 0
    assert not (await backend.check_credentials()).ok
    await backend.aclose()


async def test_connection_refused_is_overloaded():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = make(f"http://127.0.0.1:{port}")
    result = await backend.run(req())
    await backend.aclose()
    assert result.failure is not None and result.failure.failure_class == FailureClass.OVERLOADED


async def test_check_credentials(fake, monkeypatch):
    backend = make(fake.url)
    status = await backend.check_credentials()
    assert status.ok, status.message
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-0123456789abcdef")
    bad = await backend.check_credentials()
    assert not bad.ok and "sk-wrong-key" not in bad.message
    await backend.aclose()
    assert [r.route for r in fake.requests] == ["/v1/models", "/v1/models"]


async def test_local_server_without_key(fake):
    fake.require_key = None
    backend = make(fake.url, api_key_env=None)
    result = await backend.run(req())
    assert result.ok
    assert "authorization" not in fake.completion_calls()[0].headers
    assert (await backend.check_credentials()).ok
    await backend.aclose()
