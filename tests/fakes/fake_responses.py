"""A fake OpenAI Responses API (``POST /v1/responses``, streamed; ``GET /v1/models``) for the real Codex CLI.

Built from what the pinned ``@openai/codex@0.169.0`` sends and accepts, captured on loopback: it posts
``/v1/responses`` with ``stream: true``, ``accept: text/event-stream``, ``originator: codex_exec`` and the key as
a Bearer token, and reads the SSE events ``response.created``, ``response.output_item.added``,
``response.output_text.delta``, ``response.output_item.done`` and ``response.completed`` (whose ``usage`` it
reports as ``turn.completed``; on a resumed thread it adds it to the thread's running total). Errors are plain
JSON bodies with the status; the CLI prints their text. Usage::

    with FakeResponses(require_key="sk-test") as fake:
        fake.script(ResponsesError.rate_limited(retry_after=7), Answer("hi"))
        ... model_providers.x.base_url = fake.url + "/v1" ...
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.scripted_http import Hang, RecordedRequest, Response, ScriptedServer

__all__ = ["Answer", "FakeResponses", "Hang", "ResponsesError"]


@dataclass
class Answer:
    text: str = "Hello from the fake Responses API."
    input_tokens: int = 1000
    cached_tokens: int = 200
    output_tokens: int = 50
    reasoning_tokens: int = 10


@dataclass
class ResponsesError:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> ResponsesError:
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        return cls(429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                   "code": "rate_limit_exceeded"}}, headers)

    @classmethod
    def bad_key(cls) -> ResponsesError:
        return cls(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                   "code": "invalid_api_key"}})


class FakeResponses(ScriptedServer):
    def __init__(self, default: Answer | ResponsesError | Hang | None = None, *, require_key: str | None = None,
                 model: str = "gpt-fake-codex") -> None:
        super().__init__(default if default is not None else Answer())
        self.require_key = require_key
        self.model = model
        self._ids = itertools.count(1)

    def model_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/responses"]

    def handle(self, request: RecordedRequest, raw_headers: dict[str, str]) -> Response | Hang:
        route, method = request.route, request.method
        if self.require_key is not None and raw_headers.get("authorization") != f"Bearer {self.require_key}":
            return _error(ResponsesError.bad_key())
        if route == "/v1/models" and method == "GET":
            return Response.json(200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})
        if route != "/v1/responses" or method != "POST":
            return Response.json(404, {"error": {"message": f"unknown path {method} {route}",
                                                 "type": "invalid_request_error", "code": "not_found"}})
        item = self.next_scripted()
        if isinstance(item, Hang):
            return item
        if isinstance(item, ResponsesError):
            return _error(item)
        assert isinstance(item, Answer), f"cannot script {item!r}"
        return Response(200, _sse(item, next(self._ids)), content_type="text/event-stream")


def _error(item: ResponsesError) -> Response:
    return Response.json(item.status, item.body, dict(item.headers))


def _sse(answer: Answer, n: int) -> bytes:
    response_id, message_id = f"resp_fake{n}", f"msg_fake{n}"
    message = {"type": "message", "id": message_id, "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": answer.text, "annotations": []}]}
    usage = {"input_tokens": answer.input_tokens, "input_tokens_details": {"cached_tokens": answer.cached_tokens},
             "output_tokens": answer.output_tokens,
             "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
             "total_tokens": answer.input_tokens + answer.output_tokens}
    events = [
        {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.output_text.delta", "item_id": message_id, "output_index": 0, "content_index": 0,
         "delta": answer.text},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed",
         "response": {"id": response_id, "status": "completed", "output": [message], "usage": usage}},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
