"""The failure taxonomy: every failure gets exactly one class, and the class decides the action.

Classes (see DESIGN.md section 6)::

    rate_limited      pause backend until reset, fall through, snooze if the whole chain is paused
    overloaded        short retry with jitter, then fall through; circuit breaker on repeats
    server_error      as overloaded
    timeout           retry once, then fall through
    auth              disable backend, alert at once, fall through
    quota             pause backend until reset or operator clears it, alert, fall through
    context_overflow  only backends with a larger context window, else fail
    content_refused   another provider family, else needs_human
    bad_request       fail the job now, alert
    empty_output      fall through
    worker_lost       orphan sweep requeues
    review_rejected   revision loop
    budget_exceeded   park the job, alert
    unknown           fail the attempt, alert on first sight of the signature
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from engine.ratelimit import resume_at_from_headers
from engine.redaction import redact


class FailureClass(StrEnum):
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    AUTH = "auth"
    QUOTA = "quota"
    CONTEXT_OVERFLOW = "context_overflow"
    CONTENT_REFUSED = "content_refused"
    BAD_REQUEST = "bad_request"
    EMPTY_OUTPUT = "empty_output"
    WORKER_LOST = "worker_lost"
    REVIEW_REJECTED = "review_rejected"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class Failure(BaseModel):
    """A classified failure of one backend attempt."""

    failure_class: FailureClass
    message: str = ""
    http_status: int | None = None
    # Absolute epoch seconds until which the backend should not be asked again (rate limits, quota).
    resume_at: float | None = None
    # A short stable string identifying the kind of failure, for "first sight" alerts on unknown failures.
    signature: str = ""


# --- Classification -----------------------------------------------------------------------------------------
#
# Functions below turn what a provider said (an HTTP status and body, an exception) into a ``Failure``. They
# never raise and never put a secret into a message: every message goes through ``redact``.

# With no reset header at all, a 429 still has to pause the backend for something: a minute is the common
# per-minute window of every provider we talk to.
DEFAULT_RATE_LIMIT_PAUSE_S = 60.0
_MAX_MESSAGE_CHARS = 500
_QUOTA_HINTS = (
    "insufficient_quota", "exceeded your current quota", "spend limit", "spending limit", "credit balance",
    "billing", "payment required", "insufficient credits", "insufficient balance", "api usage limits",
)
_CONTEXT_HINTS = (
    "prompt is too long", "context length", "context_length", "maximum context", "context window",
    "too many tokens", "input is too long", "reduce the length", "tokens exceeds", "request too large",
)
_REFUSAL_HINTS = (
    "content policy", "content_policy", "content_filter", "content management policy", "flagged",
    "moderation", "safety system", "refus",
)


class _ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str | None = None
    code: str | int | None = None
    message: str | None = None


class _ErrorBody(BaseModel):
    """Error bodies of Anthropic (``{"type": "error", "error": {...}}``) and OpenAI-compatible APIs."""

    model_config = ConfigDict(extra="ignore")
    error: _ErrorDetail | str | None = None
    message: str | None = None
    detail: str | None = None


def _parse_error_body(body_text: str) -> tuple[str, str]:
    """(error type or code, human message) from a provider's error body; tolerant of anything."""
    try:
        body = _ErrorBody.model_validate_json(body_text)
    except ValidationError:
        return "", body_text.strip()
    if isinstance(body.error, _ErrorDetail):
        kind = body.error.type or (str(body.error.code) if body.error.code is not None else "")
        return kind, body.error.message or body.message or body.detail or ""
    if isinstance(body.error, str):
        return "", body.error
    return "", body.message or body.detail or body_text.strip()


def normalise_signature(text: str) -> str:
    """A short stable form of an error text: numbers, ids and quoting removed, so one kind of failure keeps
    one signature across occurrences."""
    lowered = text.lower()
    lowered = re.sub(r"[0-9a-f]{8,}", "#", lowered)
    lowered = re.sub(r"\d+", "#", lowered)
    lowered = re.sub(r"[^a-z#]+", "_", lowered).strip("_")
    return lowered[:60]


def _short(text: str, secrets: Iterable[str | SecretStr | None]) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return redact(text, secrets)


def _has(text: str, hints: tuple[str, ...]) -> bool:
    return any(hint in text for hint in hints)


def classify_http(
    status: int,
    body_text: str,
    headers: Mapping[str, str],
    now: float,
    *,
    secrets: Iterable[str | SecretStr | None] = (),
) -> Failure:
    """Classify a non-success HTTP answer from a model API. Pure: ``now`` is epoch seconds."""
    secrets = list(secrets)
    kind, detail = _parse_error_body(body_text)
    haystack = f"{kind} {detail}".lower()
    head = f"HTTP {status} {kind}".strip()
    message = _short(f"{head}: {detail}" if detail else head, secrets)
    # From the redacted text: a signature lands in kv keys and dedupe keys, so an echoed key must not.
    signature = f"http_{status}:{normalise_signature(redact(kind or detail, secrets)) or 'no_body'}"
    hinted_resume = resume_at_from_headers(headers, now)

    def make(cls: FailureClass, resume_at: float | None = None) -> Failure:
        return Failure(failure_class=cls, message=message, http_status=status, resume_at=resume_at,
                       signature=signature)

    # Quota before rate limits: OpenAI reports an exhausted balance as 429 insufficient_quota, Anthropic an
    # empty credit balance as 400. Neither goes away by waiting a minute.
    if status == 402 or (status in (400, 403, 429) and _has(haystack, _QUOTA_HINTS)):
        return make(FailureClass.QUOTA, hinted_resume)
    if status == 429:
        return make(FailureClass.RATE_LIMITED, hinted_resume or now + DEFAULT_RATE_LIMIT_PAUSE_S)
    if status in (401, 403):
        return make(FailureClass.AUTH)
    if status in (503, 529) or "overloaded" in haystack:
        return make(FailureClass.OVERLOADED, hinted_resume)
    if 500 <= status <= 599:
        return make(FailureClass.SERVER_ERROR, hinted_resume)
    if status == 408:
        return make(FailureClass.TIMEOUT)
    if status == 413 or (status in (400, 422) and _has(haystack, _CONTEXT_HINTS)):
        return make(FailureClass.CONTEXT_OVERFLOW)
    if status in (400, 422) and _has(haystack, _REFUSAL_HINTS):
        return make(FailureClass.CONTENT_REFUSED)
    if status in (400, 422):
        return make(FailureClass.BAD_REQUEST)
    return make(FailureClass.UNKNOWN)


def classify_exception(exc: BaseException, *, secrets: Iterable[str | SecretStr | None] = ()) -> Failure:
    """Classify a transport exception (httpx, asyncio) raised while talking to a backend."""
    secrets = list(secrets)
    name = type(exc).__name__
    message = _short(f"{name}: {exc}" if str(exc) else name, secrets)
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return Failure(failure_class=FailureClass.TIMEOUT, message=message, signature=f"exc:{name}")
    # Refused or reset connections and half-closed streams: the other side is down or shedding load.
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | ConnectionError):
        return Failure(failure_class=FailureClass.OVERLOADED, message=message, signature=f"exc:{name}")
    if isinstance(exc, asyncio.CancelledError):
        return Failure(failure_class=FailureClass.CANCELLED, message=message, signature=f"exc:{name}")
    return Failure(failure_class=FailureClass.UNKNOWN, message=message,
                   signature=f"exc:{name}:{normalise_signature(redact(str(exc), secrets))}")
