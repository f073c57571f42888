"""One retry-hint reader (``engine.ratelimit.retry_hint``) over the shapes real providers and proxies send.

Each row names where its shape comes from. Rows marked "docs" follow the provider's published documentation of
its 429 (headers and body); rows marked "captured" were recorded from the real software on loopback.
"""

from __future__ import annotations

import json

import pytest

from engine.failures import DEFAULT_RATE_LIMIT_PAUSE_S, FailureClass, classify_http
from engine.ratelimit import parse_retry_text, retry_hint
from tests.fakes import litellm_captures

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LITELLM_429 = litellm_captures.load("rate_limited_429")


def body(payload: object) -> str:
    return json.dumps(payload)


ROWS = [
    # OpenAI (docs: platform.openai.com/docs/guides/rate-limits, "rate limits in headers"): relative resets per
    # bucket, and the wait in the message. Tokens are spent; requests are not, so their reset does not count.
    ("openai", {"x-ratelimit-remaining-requests": "499", "x-ratelimit-reset-requests": "120ms",
                "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"},
     body({"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): "
                                "Limit 30000, Used 29913, Requested 1045. Please try again in 1.916s.",
                     "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}), NOW + 360),
    # Anthropic (docs: docs.anthropic.com/en/api/rate-limits): retry-after seconds and RFC 3339 resets.
    ("anthropic", {"retry-after": "30", "anthropic-ratelimit-requests-remaining": "0",
                   "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:45Z",
                   "anthropic-ratelimit-tokens-remaining": "9000",
                   "anthropic-ratelimit-tokens-reset": "2026-01-01T00:05:00Z"},
     body({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has "
                                      "exceeded your per-minute rate limit"}}), NOW + 45),
    # OpenRouter (docs: openrouter.ai/docs/api-reference/errors): the upstream's headers copied into
    # error.metadata.headers, the reset in epoch milliseconds.
    ("openrouter", {},
     body({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min.",
                     "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
                                              "X-RateLimit-Reset": str(int((NOW + 50) * 1000))}}}}), NOW + 50),
    # LiteLLM proxy (captured: tests/fixtures/litellm/rate_limited_429.json, the real proxy passing on its
    # upstream's 429 with retry-after: 90): only the prefixed header.
    ("litellm", LITELLM_429["headers"], body(LITELLM_429["body"]), NOW + 90),
    # Gemini, OpenAI-compatible endpoint (docs: ai.google.dev/gemini-api/docs/rate-limits; google.rpc.RetryInfo):
    # a JSON list around the error, the wait as a protobuf Duration in details[].retryDelay.
    ("gemini", {},
     body([{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                      "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}]),
     NOW + 37),
    # DeepSeek (docs: api-docs.deepseek.com/quick_start/error_codes): no hint at all: the default pause applies.
    ("deepseek", {},
     body({"error": {"message": "Rate Limit Reached", "type": "rate_limit_error", "param": None,
                     "code": "rate_limit_exceeded"}}), None),
    # Groq (docs: console.groq.com/docs/rate-limits): retry-after on the 429, Go-style resets per bucket, and
    # "Please try again in" in the message; the spent bucket (tokens) decides, not the daily request bucket.
    ("groq", {"retry-after": "2", "x-ratelimit-remaining-requests": "14370", "x-ratelimit-reset-requests": "2m59.56s",
              "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "7.66s"},
     body({"error": {"message": "Rate limit reached for model `llama-3.3-70b-versatile` on tokens per minute "
                                "(TPM): Limit 6000, Used 5923, Requested 412. Please try again in 3.35s.",
                     "type": "tokens", "code": "rate_limit_exceeded"}}), NOW + 7.66),
    # Ollama (docs: github.com/ollama/ollama docs/faq.md, OLLAMA_MAX_QUEUE): a busy server, a bare string.
    ("ollama", {}, body({"error": "server busy, please try again.  maximum pending requests exceeded"}), None),
    # Azure OpenAI (docs: learn.microsoft.com, "retry-after-ms" under the x-ms- prefix).
    ("azure", {"x-ms-retry-after-ms": "2500"}, body({"error": {"code": "429", "message": "Requests exceeded"}}),
     NOW + 2.5),
    # ChatGPT login behind the Codex CLI (captured from codex 0.169.0's parsing: usage_limit_reached body).
    ("chatgpt", {}, body({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                    "resets_in_seconds": 3600}}), NOW + 3600),
]


@pytest.mark.parametrize(("source", "headers", "text", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_every_shape_gives_its_hint(source, headers, text, expected):
    assert retry_hint(headers, text, NOW) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("source", "headers", "text", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_a_429_pauses_until_the_hint_or_the_default(source, headers, text, expected):
    failure = classify_http(429, text, headers, NOW)
    assert failure.failure_class in (FailureClass.RATE_LIMITED, FailureClass.QUOTA)
    if failure.failure_class is FailureClass.RATE_LIMITED:
        assert failure.resume_at == pytest.approx(expected or NOW + DEFAULT_RATE_LIMIT_PAUSE_S)


@pytest.mark.parametrize(("text", "seconds"), [
    ("Please try again in 1.916s.", 1.916),
    ("Please try again in 20ms.", 0.02),
    ("please try again in 6m0s", 360),
    ("Try again in 5 minutes", 300),
    ("try again in 1 hour and 30 minutes", 5400),
    ("You've hit your usage limit ... or try again at 8:06 PM.", 20 * 3600 + 6 * 60),
    ("nothing to read here", None),
])
def test_hints_in_words(text, seconds):
    assert parse_retry_text(text, NOW) == (None if seconds is None else pytest.approx(NOW + seconds))


def test_garbage_never_raises():
    assert retry_hint({"retry-after": "soon"}, "{not json", NOW) is None
    assert retry_hint({}, body({"retry_after": "x", "retryDelay": "later", "resets_at": True}), NOW) is None
    deep: object = {"retry_after": 5}
    for _ in range(20):
        deep = {"error": deep}
    assert retry_hint({}, body(deep), NOW) is None  # beyond the depth read: ignored, not a recursion error
