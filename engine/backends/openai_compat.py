"""The ``openai`` backend: any OpenAI-compatible chat-completions API through httpx.

Covers OpenAI, OpenRouter, DeepSeek, Moonshot/Kimi, Gemini's compatible endpoint and a local Ollama:
``base_url`` is the API root ending in ``/v1``; the key (if any) comes from ``api_key_env`` as a Bearer token.
Cached prompt tokens are read from ``usage.prompt_tokens_details.cached_tokens`` (DeepSeek:
``prompt_cache_hit_tokens``) and split out of ``prompt_tokens`` so they are priced as cache reads.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, ValidationError

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, Usage, price_usage
from engine.backends.http_common import (
    Progress,
    error_result,
    judge_answer,
    make_client,
    missing_key_result,
    probe_credentials,
    request_timeout,
    run_with_deadline,
)
from engine.backends.sse import iter_sse
from engine.backends.wire import Loose
from engine.clock import Clock
from engine.failures import Failure, FailureClass, classify_http
from engine.redaction import redact
from engine.settings import BackendConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _PromptDetails(Loose):
    cached_tokens: int | None = None


class OpenAIUsage(Loose):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek

    def to_usage(self) -> Usage:
        prompt = self.prompt_tokens or 0
        cached = (self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else None) \
            or self.prompt_cache_hit_tokens or 0
        cached = min(cached, prompt)
        return Usage(input_tokens=prompt - cached, output_tokens=self.completion_tokens or 0,
                     cache_read_tokens=cached)


class _Message(Loose):
    content: str | None = None
    refusal: str | None = None


class _Choice(Loose):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _ErrorInBody(Loose):
    message: str | None = None
    code: int | str | None = None
    type: str | None = None


class ChatCompletion(Loose):
    """A whole completion, or one streamed chunk of it."""

    model: str | None = None
    choices: list[_Choice] = Field(default_factory=list)
    usage: OpenAIUsage | None = None
    # Some gateways (OpenRouter) report upstream failures inside a 200 body or a stream chunk.
    error: _ErrorInBody | None = None


class OpenAICompatBackend:
    def __init__(self, config: BackendConfig, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 stream: bool | None = None) -> None:
        self.config = config
        self._clock = clock
        self._stream = stream  # None: stream whenever the caller passes a progress callback
        self._client = make_client(transport)
        self._base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")

    def _key(self) -> str | None:
        key = self.config.api_key()
        return key.get_secret_value() if key is not None else None

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def build_body(self, request: BackendRequest, stream: bool) -> dict[str, Any]:
        messages = []
        if request.system:
            # First and byte-identical between calls, so providers with automatic prefix caching hit it.
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                "max_tokens": request.max_output_tokens}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        key = self._key()
        if key is None and self.config.api_key_env:
            return missing_key_result(self.config.api_key_env, self.config.model)
        secrets = [key] if key else []
        stream = self._stream if self._stream is not None else progress is not None
        timeout_s = min(request.timeout_s, self.config.timeout_s)
        return await run_with_deadline(
            lambda: self._call(request, key, stream, Progress(progress, secrets), timeout_s),
            timeout_s=timeout_s, secrets=secrets, model=self.config.model)

    async def _call(self, request: BackendRequest, key: str | None, stream: bool, progress: Progress,
                    timeout_s: float) -> BackendResult:
        secrets = [key] if key else []
        http_request = self._client.build_request(
            "POST", f"{self._base}/chat/completions", headers=self._headers(key),
            json=self.build_body(request, stream), timeout=request_timeout(timeout_s))
        response = await self._client.send(http_request, stream=True)
        try:
            if response.status_code != 200:
                return await error_result(response, self._clock.now(), secrets, self.config.model)
            if stream:
                return await self._read_stream(response, secrets, progress)
            try:
                completion = ChatCompletion.model_validate_json(await response.aread())
            except ValidationError as exc:
                return self._failure(FailureClass.UNKNOWN, f"malformed response: {exc.errors()[:1]}",
                                     "openai:malformed_response", secrets)
            return self._result(completion, secrets)
        finally:
            await response.aclose()

    async def _read_stream(self, response: httpx.Response, secrets: list[str], progress: Progress) -> BackendResult:
        parts: list[str] = []
        refusal: list[str] = []
        finish: str | None = None
        usage: OpenAIUsage | None = None
        model: str | None = None
        await progress("streaming", force=True)
        async for _, data in iter_sse(response):
            if data.strip() == "[DONE]":
                break
            try:
                chunk = ChatCompletion.model_validate_json(data)
            except ValidationError:
                continue
            if chunk.error is not None:
                return self._body_error(chunk.error, data, secrets)
            model = chunk.model or model
            usage = chunk.usage or usage
            for choice in chunk.choices:
                delta = choice.delta or choice.message
                if delta is not None:
                    parts.append(delta.content or "")
                    refusal.append(delta.refusal or "")
                finish = choice.finish_reason or finish
            await progress(f"writing ({sum(len(p) for p in parts)} chars)")
        message = _Message(content="".join(parts), refusal="".join(refusal) or None)
        completion = ChatCompletion(model=model, usage=usage,
                                    choices=[_Choice(message=message, finish_reason=finish)])
        return self._result(completion, secrets)

    def _body_error(self, error: _ErrorInBody, raw: str, secrets: list[str]) -> BackendResult:
        status = error.code if isinstance(error.code, int) and 400 <= error.code <= 599 else 500
        failure = classify_http(status, raw, {}, self._clock.now(), secrets=secrets)
        return BackendResult(model=self.config.model, failure=failure.model_copy(
            update={"signature": f"body:{failure.signature}"}))

    def _failure(self, cls: FailureClass, message: str, signature: str, secrets: list[str]) -> BackendResult:
        return BackendResult(model=self.config.model, failure=Failure(
            failure_class=cls, message=redact(message, secrets), signature=signature))

    def _result(self, completion: ChatCompletion, secrets: list[str]) -> BackendResult:
        if completion.error is not None:
            return self._body_error(completion.error, completion.error.model_dump_json(), secrets)
        choice = completion.choices[0] if completion.choices else _Choice()
        message = choice.message or _Message()
        text = message.content or ""
        usage = completion.usage.to_usage() if completion.usage else Usage()
        result = BackendResult(text=text, usage=usage, cost_usd=price_usage(self.config, usage),
                               model=completion.model or self.config.model)
        refused = None
        if message.refusal or choice.finish_reason == "content_filter":
            refused = redact(message.refusal or "finish_reason content_filter", secrets)
        return judge_answer(result, refusal=refused, stop=choice.finish_reason, api="openai")

    async def check_credentials(self) -> CredentialStatus:
        """``GET /models`` with the key: 200 is ok; 401/403 (or anything else) is not."""
        key = self._key()
        if key is None and self.config.api_key_env:
            return CredentialStatus(ok=False, message=f"${self.config.api_key_env} is not set")
        return await probe_credentials(self._client, f"{self._base}/models", headers=self._headers(key),
                                       secrets=[key] if key else [], clock=self._clock,
                                       accepted="API key accepted" if key else "reachable (no key needed)")

    async def aclose(self) -> None:
        await self._client.aclose()
