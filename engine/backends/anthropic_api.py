"""The ``anthropic`` backend: the Messages API through httpx, prompt caching on the stable prefix.

The system prompt (persona, core memory, job-type instructions: byte-identical between calls of a job type)
goes first as a block marked ``cache_control: ephemeral``, so later calls read it from the cache; the variable
part is the user message. Streams (SSE) when asked to or when a progress callback wants signs of life.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, ValidationError

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, price_usage
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
from engine.backends.wire import AnthropicUsage, Loose
from engine.clock import Clock
from engine.failures import Failure, FailureClass, classify_http
from engine.redaction import redact
from engine.settings import BackendConfig

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
# Mid-stream error events carry only a type; the status each type has as a response.
_STREAM_ERROR_STATUS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500,
                        "authentication_error": 401, "permission_error": 403, "invalid_request_error": 400}


class AnthropicBlock(Loose):
    type: str = ""
    text: str | None = None
    name: str | None = None


class AnthropicMessage(Loose):
    id: str = ""
    model: str = ""
    content: list[AnthropicBlock] = Field(default_factory=list)
    stop_reason: str | None = None
    usage: AnthropicUsage = Field(default_factory=AnthropicUsage)


class _StreamEvent(Loose):
    type: str = ""
    index: int = 0
    message: AnthropicMessage | None = None
    content_block: AnthropicBlock | None = None
    delta: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class AnthropicApiBackend:
    def __init__(self, config: BackendConfig, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 stream: bool | None = None) -> None:
        self.config = config
        self._clock = clock
        # None: stream whenever the caller passes a progress callback.
        self._stream = stream
        self._client = make_client(transport)
        base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._base = base.removesuffix("/v1")

    def _headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": API_VERSION, "content-type": "application/json"}

    def build_body(self, request: BackendRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_output_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.system:
            body["system"] = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
        if stream:
            body["stream"] = True
        return body

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        key = self.config.api_key()
        if key is None:
            return missing_key_result(self.config.api_key_env, self.config.model)
        secret = key.get_secret_value()
        stream = self._stream if self._stream is not None else progress is not None
        timeout_s = min(request.timeout_s, self.config.timeout_s)
        return await run_with_deadline(
            lambda: self._call(request, secret, stream, Progress(progress, [secret]), timeout_s),
            timeout_s=timeout_s, secrets=[secret], model=self.config.model)

    async def _call(self, request: BackendRequest, key: str, stream: bool, progress: Progress,
                    timeout_s: float) -> BackendResult:
        http_request = self._client.build_request(
            "POST", f"{self._base}/v1/messages", headers=self._headers(key),
            json=self.build_body(request, stream), timeout=request_timeout(timeout_s))
        response = await self._client.send(http_request, stream=True)
        try:
            if response.status_code != 200:
                return await error_result(response, self._clock.now(), [key], self.config.model)
            if stream:
                return await self._read_stream(response, key, progress)
            try:
                message = AnthropicMessage.model_validate_json(await response.aread())
            except ValidationError as exc:
                return self._malformed(exc, key)
            return self._result(message)
        finally:
            await response.aclose()

    async def _read_stream(self, response: httpx.Response, key: str, progress: Progress) -> BackendResult:
        message = AnthropicMessage()
        texts: dict[int, list[str]] = {}
        await progress("streaming", force=True)
        async for name, data in iter_sse(response):
            try:
                event = _StreamEvent.model_validate_json(data)
            except ValidationError:
                continue  # a frame we do not know: skip it rather than lose the answer
            kind = event.type or name
            if kind == "message_start" and event.message is not None:
                message = event.message
            elif kind == "content_block_start":
                if event.content_block is not None and event.content_block.type == "tool_use":
                    await progress(f"tool {event.content_block.name or '?'}", force=True)
            elif kind == "content_block_delta" and event.delta.get("type") == "text_delta":
                texts.setdefault(event.index, []).append(str(event.delta.get("text", "")))
                await progress(f"writing ({sum(len(t) for p in texts.values() for t in p)} chars)")
            elif kind == "message_delta":
                message.stop_reason = event.delta.get("stop_reason") or message.stop_reason
                merged = message.usage.model_dump() | {k: v for k, v in (event.usage or {}).items() if v is not None}
                message.usage = AnthropicUsage.model_validate(merged)
            elif kind == "error":
                return self._stream_error(event.error or {}, data, key)
            elif kind == "message_stop":
                break
        message.content = [AnthropicBlock(type="text", text="".join(parts)) for _, parts in sorted(texts.items())]
        return self._result(message)

    def _stream_error(self, error: dict[str, Any], raw: str, key: str) -> BackendResult:
        status = _STREAM_ERROR_STATUS.get(str(error.get("type")), 500)
        failure = classify_http(status, raw, {}, self._clock.now(), secrets=[key])
        return BackendResult(model=self.config.model, failure=failure.model_copy(
            update={"signature": f"stream:{failure.signature}"}))

    def _malformed(self, exc: ValidationError, key: str) -> BackendResult:
        return BackendResult(model=self.config.model, failure=Failure(
            failure_class=FailureClass.UNKNOWN, message=redact(f"malformed response: {exc.errors()[:1]}", [key]),
            signature="anthropic:malformed_response"))

    def _result(self, message: AnthropicMessage) -> BackendResult:
        text = "".join(b.text or "" for b in message.content if b.type == "text")
        usage = message.usage.to_usage()
        result = BackendResult(text=text, usage=usage, cost_usd=price_usage(self.config, usage),
                               model=message.model or self.config.model)
        refused = "the model refused (stop_reason refusal)" if message.stop_reason == "refusal" else None
        return judge_answer(result, refusal=refused, stop=message.stop_reason, api="anthropic")

    async def check_credentials(self) -> CredentialStatus:
        """The key is set and the API accepts it (``GET /v1/models``)."""
        key = self.config.api_key()
        if key is None:
            return CredentialStatus(ok=False, message=f"${self.config.api_key_env} is not set")
        secret = key.get_secret_value()
        return await probe_credentials(self._client, f"{self._base}/v1/models", params={"limit": 1},
                                       headers=self._headers(secret), secrets=[secret], clock=self._clock)

    async def aclose(self) -> None:
        await self._client.aclose()
