"""A fake Anthropic Messages API, good enough for the real ``claude`` CLI and for our own httpx backend.

Speaks ``POST /v1/messages`` (also ``?beta=true``), streaming (SSE: message_start, content_block_start,
content_block_delta, content_block_stop, message_delta, message_stop) and not, with text and ``tool_use``
blocks; ``POST /v1/messages/count_tokens``; ``GET /v1/models``; ``HEAD /`` and ``GET /``. Unknown paths
answer 404 and stay in the request log.

Each model call takes the next scripted item: ``Reply`` (text, usage with cache tokens, tool uses),
``ApiError`` (status, error type, headers: 429 with retry-after etc.), ``Hang`` or ``Reply(text="")``
for an empty answer. Usage::

    with FakeAnthropic() as fake:
        fake.script(ApiError.rate_limited(retry_after=120), Reply("hi"))
        ... ANTHROPIC_BASE_URL=fake.url ...
        assert fake.count("/v1/messages") == 2
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.scripted_http import Hang, RecordedRequest, Response, ScriptedServer

__all__ = ["ApiError", "FakeAnthropic", "Hang", "Reply", "ToolUse"]


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: f"toolu_fake_{uuid.uuid4().hex[:20]}")


@dataclass
class Reply:
    text: str = "Hello from the fake Anthropic server."
    input_tokens: int = 123
    output_tokens: int = 45
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tool_uses: list[ToolUse] = field(default_factory=list)
    # None: "tool_use" when tool uses are scripted, else "end_turn". "refusal" and "max_tokens" also work.
    stop_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiError:
    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, retry_after_ms: float | None = None,
                     headers: dict[str, str] | None = None, message: str = "Rate limited (fake)") -> ApiError:
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            extra["retry-after-ms"] = f"{retry_after_ms:g}"
        return cls(429, "rate_limit_error", message, extra)

    @classmethod
    def of(cls, status: int, message: str | None = None, headers: dict[str, str] | None = None) -> ApiError:
        """The error Anthropic sends for a status: 400, 401, 402, 403, 404, 413, 500, 503, 529."""
        kinds = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 529: "overloaded_error"}
        texts = {400: "prompt is too long: 250000 tokens > 200000 maximum", 401: "invalid x-api-key",
                 402: "Your credit balance is too low", 403: "Your API key does not have permission (fake)",
                 500: "Internal server error (fake)", 529: "Overloaded"}
        return cls(status, kinds.get(status, "api_error"), message or texts.get(status, f"error {status}"),
                   dict(headers or {}))


class FakeAnthropic(ScriptedServer):
    def __init__(self, default: Reply | ApiError | Hang | None = None, *, require_key: str | None = None,
                 model: str = "claude-fake-1") -> None:
        super().__init__(default if default is not None else Reply())
        # When set, a request whose x-api-key differs gets 401, as the real API would answer.
        self.require_key = require_key
        self.model = model
        self._ids = itertools.count(1)

    # The CLI sends the whole conversation on every turn; tests read it back to check what was sent.
    def model_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/messages"]

    def handle(self, request: RecordedRequest, raw_headers: dict[str, str]) -> Response | Hang:
        route, method = request.route, request.method
        if route in ("/", "") and method in ("HEAD", "GET"):
            return Response.json(200, {"ok": True})
        if self.require_key is not None and route.startswith("/v1/") \
                and raw_headers.get("x-api-key") != self.require_key:
            return Response.json(401, _error_body("authentication_error", "invalid x-api-key"))
        if route == "/v1/messages/count_tokens" and method == "POST":
            return Response.json(200, {"input_tokens": _rough_tokens(request.body)})
        if route == "/v1/models" and method == "GET":
            return Response.json(200, {"data": [{"type": "model", "id": self.model, "display_name": self.model}],
                                       "has_more": False, "first_id": self.model, "last_id": self.model})
        if route != "/v1/messages" or method != "POST":
            return Response.json(404, _error_body("not_found_error", f"unknown path {method} {route}"))
        item = self.next_scripted()
        if isinstance(item, Hang):
            return item
        if isinstance(item, ApiError):
            headers = {"request-id": f"req_fake_{next(self._ids)}", **item.headers}
            return Response.json(item.status, _error_body(item.error_type, item.message), headers)
        assert isinstance(item, Reply), f"cannot script {item!r}"
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model") or self.model)
        message = self._message(item, model)
        headers = {"request-id": f"req_fake_{next(self._ids)}", **item.headers}
        if body.get("stream"):
            return Response(200, _sse(message, item), headers, content_type="text/event-stream")
        return Response.json(200, message, headers)

    def _message(self, reply: Reply, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for tool in reply.tool_uses:
            content.append({"type": "tool_use", "id": tool.id, "name": tool.name, "input": tool.input})
        stop = reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn")
        return {
            "id": f"msg_fake_{uuid.uuid4().hex[:16]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                      "cache_creation_input_tokens": reply.cache_write_tokens,
                      "cache_read_input_tokens": reply.cache_read_tokens},
        }


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _rough_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body)) // 4) if body else 1


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _sse(message: dict[str, Any], reply: Reply) -> bytes:
    """The message as the stream the real API sends: text in a few deltas, tool input as JSON deltas."""
    start = dict(message, content=[], stop_reason=None)
    start["usage"] = dict(message["usage"], output_tokens=1)
    parts = [_event("message_start", {"type": "message_start", "message": start}),
             _event("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            parts.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": {"type": "text", "text": ""}}))
            text = block["text"]
            step = max(1, len(text) // 3)
            for i in range(0, len(text), step):
                parts.append(_event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text[i:i + step]}}))
        else:
            parts.append(_event("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            parts.append(_event("content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
        parts.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    parts.append(_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": reply.output_tokens}}))
    parts.append(_event("message_stop", {"type": "message_stop"}))
    return "".join(parts).encode()
