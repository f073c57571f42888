"""A fake OpenAI-compatible API: ``POST /v1/chat/completions`` (plain and streamed) and ``GET /v1/models``.

Scripted like the Anthropic fake: ``Completion`` (text, usage incl. cached tokens, finish reason, headers),
``OpenAIError`` (status with the provider's error body and rate-limit headers), ``Hang``. Usage::

    with FakeOpenAI(require_key="sk-test") as fake:
        fake.script(OpenAIError.rate_limited(retry_after=120, reset_requests="6m0s"), Completion("hi"))
        ... base_url=fake.url + "/v1" ...
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.scripted_http import Hang, RecordedRequest, Response, ScriptedServer

__all__ = ["Completion", "FakeOpenAI", "Hang", "OpenAIError"]


@dataclass
class Completion:
    text: str | None = "Hello from the fake OpenAI server."
    prompt_tokens: int = 100
    completion_tokens: int = 20
    cached_tokens: int = 0
    finish_reason: str = "stop"
    refusal: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class OpenAIError:
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, retry_after_ms: float | None = None,
                     reset_requests: str | None = None, reset_tokens: str | None = None) -> OpenAIError:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            headers["retry-after-ms"] = f"{retry_after_ms:g}"
        if reset_requests is not None:
            headers["x-ratelimit-reset-requests"] = reset_requests
        if reset_tokens is not None:
            headers["x-ratelimit-reset-tokens"] = reset_tokens
        return cls(429, "Rate limit reached for requests (fake)", "requests", "rate_limit_exceeded", headers)

    @classmethod
    def of(cls, status: int, message: str | None = None) -> OpenAIError:
        known = {
            400: ("This model's maximum context length is 128000 tokens. However, your messages resulted in "
                  "130000 tokens.", "invalid_request_error", "context_length_exceeded"),
            401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
            402: ("Insufficient credits.", "payment_required", None),
            403: ("Country, region, or territory not supported.", "invalid_request_error", "unsupported_region"),
            429: ("You exceeded your current quota, please check your plan and billing details.",
                  "insufficient_quota", "insufficient_quota"),
            500: ("The server had an error while processing your request.", "server_error", None),
            503: ("The engine is currently overloaded, please try again later.", "server_error", None),
        }
        text, kind, code = known.get(status, (f"error {status}", "invalid_request_error", None))
        return cls(status, message or text, kind, code)


class FakeOpenAI(ScriptedServer):
    def __init__(self, default: Completion | OpenAIError | Hang | None = None, *, require_key: str | None = None,
                 model: str = "gpt-fake-1") -> None:
        super().__init__(default if default is not None else Completion())
        self.require_key = require_key
        self.model = model
        self._ids = itertools.count(1)

    def completion_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/chat/completions"]

    def _authorised(self, raw_headers: dict[str, str]) -> bool:
        if self.require_key is None:
            return True
        return raw_headers.get("authorization") == f"Bearer {self.require_key}"

    def handle(self, request: RecordedRequest, raw_headers: dict[str, str]) -> Response | Hang:
        route, method = request.route, request.method
        if not self._authorised(raw_headers) and route.startswith("/v1/"):
            return _error(OpenAIError.of(401))
        if route == "/v1/models" and method == "GET":
            return Response.json(200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})
        if route != "/v1/chat/completions" or method != "POST":
            return Response.json(404, {"error": {"message": f"unknown path {method} {route}",
                                                 "type": "invalid_request_error", "code": "not_found"}})
        item = self.next_scripted()
        if isinstance(item, Hang):
            return item
        if isinstance(item, OpenAIError):
            return _error(item)
        assert isinstance(item, Completion), f"cannot script {item!r}"
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model") or self.model)
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return Response(200, _sse(item, model, completion_id, include_usage), dict(item.headers),
                            content_type="text/event-stream")
        message = {"role": "assistant", "content": item.text, "refusal": item.refusal}
        return Response.json(200, {
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": item.finish_reason}],
            "usage": _usage(item)}, dict(item.headers))


def _usage(item: Completion) -> dict[str, Any]:
    return {"prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens,
            "total_tokens": item.prompt_tokens + item.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": item.cached_tokens}}


def _error(item: OpenAIError) -> Response:
    return Response.json(item.status, {"error": {"message": item.message, "type": item.type, "param": None,
                                                 "code": item.code}}, dict(item.headers))


def _sse(item: Completion, model: str, completion_id: str, include_usage: bool) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None,
              choices: bool = True) -> str:
        payload: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": 0,
                                   "model": model, "choices": [], "usage": usage}
        if choices:
            payload["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return f"data: {json.dumps(payload)}\n\n"

    text = item.text or ""
    parts = [chunk({"role": "assistant", "content": ""}, None)]
    step = max(1, len(text) // 3)
    parts += [chunk({"content": text[i:i + step]}, None) for i in range(0, len(text), step)]
    if item.refusal:
        parts.append(chunk({"refusal": item.refusal}, None))
    parts.append(chunk({}, item.finish_reason))
    if include_usage:
        parts.append(chunk({}, None, _usage(item), choices=False))
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()
