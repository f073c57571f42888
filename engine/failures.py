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
    bad_request       the request itself is bad (it would fail anywhere): fail the job now, alert
    backend_rejected  a 400/404/422 about this backend (its state, an unknown model, its config): fall through,
                      count toward the circuit breaker, alert on first sight of the signature
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

from engine.ratelimit import retry_hint
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
    BACKEND_REJECTED = "backend_rejected"
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


# --- The phrase table -----------------------------------------------------------------------------------------
#
# One table for every backend: a phrase found in a failure's text (compared lowercased) gives its class. It is
# read top to bottom and the first phrase found wins, so a more specific phrase comes before a broader one of
# another class ("api usage limits" is quota, before the rate limit's "usage limit"; "prompt is too long"
# before anything else a long error text may mention). The text only refines what the structure says: an HTTP
# status decides first (``classify_http`` reads the text for quota, overload, context and refusal), the CLIs'
# structured fields decide first (``classify_cli_result``, ``classify_codex_error``), and the table decides
# when nothing else does.
FAILURE_PHRASES: tuple[tuple[str, FailureClass], ...] = (
    # Money: an exhausted balance or a spend cap does not go away by waiting a minute.
    ("insufficient_quota", FailureClass.QUOTA),
    ("exceeded your current quota", FailureClass.QUOTA),
    ("spend limit", FailureClass.QUOTA),
    ("spending limit", FailureClass.QUOTA),
    ("credit balance", FailureClass.QUOTA),
    ("billing", FailureClass.QUOTA),
    ("payment required", FailureClass.QUOTA),
    ("insufficient credits", FailureClass.QUOTA),
    ("insufficient balance", FailureClass.QUOTA),
    ("api usage limits", FailureClass.QUOTA),
    # The prompt does not fit the model.
    ("prompt is too long", FailureClass.CONTEXT_OVERFLOW),
    ("context length", FailureClass.CONTEXT_OVERFLOW),
    ("context_length", FailureClass.CONTEXT_OVERFLOW),
    ("maximum context", FailureClass.CONTEXT_OVERFLOW),
    ("context window", FailureClass.CONTEXT_OVERFLOW),
    ("too many tokens", FailureClass.CONTEXT_OVERFLOW),
    ("input is too long", FailureClass.CONTEXT_OVERFLOW),
    ("reduce the length", FailureClass.CONTEXT_OVERFLOW),
    ("tokens exceeds", FailureClass.CONTEXT_OVERFLOW),
    ("request too large", FailureClass.CONTEXT_OVERFLOW),
    # The model or its provider refused the content.
    ("safeguards flagged", FailureClass.CONTENT_REFUSED),
    ("usage policy", FailureClass.CONTENT_REFUSED),
    ("content policy", FailureClass.CONTENT_REFUSED),
    ("content_policy", FailureClass.CONTENT_REFUSED),
    ("content_filter", FailureClass.CONTENT_REFUSED),
    ("content management policy", FailureClass.CONTENT_REFUSED),
    ("moderation", FailureClass.CONTENT_REFUSED),
    ("safety system", FailureClass.CONTENT_REFUSED),
    # This backend cannot serve the request, whatever the request: an unknown model, a proxy without its database.
    ("model_not_found", FailureClass.BACKEND_REJECTED),
    ("does not exist", FailureClass.BACKEND_REJECTED),
    ("no_db_connection", FailureClass.BACKEND_REJECTED),
    # The credential is missing, wrong or expired.
    ("not logged in", FailureClass.AUTH),
    ("login", FailureClass.AUTH),
    ("invalid api key", FailureClass.AUTH),
    ("oauth token has expired", FailureClass.AUTH),
    ("oauth token revoked", FailureClass.AUTH),
    ("authentication_error", FailureClass.AUTH),
    ("failed to authenticate", FailureClass.AUTH),
    ("invalid bearer token", FailureClass.AUTH),
    ("unauthorized", FailureClass.AUTH),
    # A rate or subscription-window limit: wait for the reset.
    ("usage limit", FailureClass.RATE_LIMITED),
    ("rate limit", FailureClass.RATE_LIMITED),
    ("too many requests", FailureClass.RATE_LIMITED),
    # The other side is down or shedding load; a plain timeout, or a connection that failed some other way.
    ("overloaded", FailureClass.OVERLOADED),
    ("high demand", FailureClass.OVERLOADED),  # codex 0.169.0's words for a 5xx from the Responses API
    ("stream disconnected", FailureClass.OVERLOADED),
    ("timed out", FailureClass.TIMEOUT),
    ("timeout", FailureClass.TIMEOUT),
    ("connection", FailureClass.OVERLOADED),
    # Broad refusal words last: "flagged" and "refus" also occur in texts that say something more specific.
    ("flagged", FailureClass.CONTENT_REFUSED),
    ("refus", FailureClass.CONTENT_REFUSED),
)


def classify_text(text: str) -> FailureClass | None:
    """The class of the first ``FAILURE_PHRASES`` phrase found in ``text``, or None if none is."""
    lowered = text.lower()
    return next((cls for phrase, cls in FAILURE_PHRASES if phrase in lowered), None)


# --- Classification -----------------------------------------------------------------------------------------
#
# Functions below turn what a provider said (an HTTP status and body, an exception) into a ``Failure``. They
# never raise and never put a secret into a message: every message goes through ``redact``.

# With no reset header at all, a 429 still has to pause the backend for something: a minute is the common
# per-minute window of every provider we talk to.
DEFAULT_RATE_LIMIT_PAUSE_S = 60.0
_MAX_MESSAGE_CHARS = 500


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
    hinted = classify_text(f"{kind} {detail}")
    head = f"HTTP {status} {kind}".strip()
    message = _short(f"{head}: {detail}" if detail else head, secrets)
    # From the redacted text: a signature lands in kv keys and dedupe keys, so an echoed key must not.
    signature = f"http_{status}:{normalise_signature(redact(kind or detail, secrets)) or 'no_body'}"
    hinted_resume = retry_hint(headers, body_text, now)

    def make(cls: FailureClass, resume_at: float | None = None) -> Failure:
        return Failure(failure_class=cls, message=message, http_status=status, resume_at=resume_at,
                       signature=signature)

    # Quota before rate limits: OpenAI reports an exhausted balance as 429 insufficient_quota, Anthropic an
    # empty credit balance as 400. Neither goes away by waiting a minute.
    if status == 402 or (status in (400, 403, 429) and hinted == FailureClass.QUOTA):
        return make(FailureClass.QUOTA, hinted_resume)
    if status == 429:
        return make(FailureClass.RATE_LIMITED, hinted_resume or now + DEFAULT_RATE_LIMIT_PAUSE_S)
    if status in (401, 403):
        return make(FailureClass.AUTH)
    if status in (503, 529) or hinted == FailureClass.OVERLOADED:
        return make(FailureClass.OVERLOADED, hinted_resume)
    if 500 <= status <= 599:
        return make(FailureClass.SERVER_ERROR, hinted_resume)
    if status == 408:
        return make(FailureClass.TIMEOUT)
    if status == 413 or (status in (400, 422) and hinted == FailureClass.CONTEXT_OVERFLOW):
        return make(FailureClass.CONTEXT_OVERFLOW)
    if status in (400, 422) and hinted == FailureClass.CONTENT_REFUSED:
        return make(FailureClass.CONTENT_REFUSED)
    if status in (400, 404, 422):
        return make(request_or_backend(kind, detail))
    return make(FailureClass.UNKNOWN)


# A 4xx is the request's own fault only when it says so: its fields or its content, which every backend would
# refuse alike. Anything else (a provider's state, an unknown model, a proxy's config: LiteLLM answers a wrong
# key without its database with ``400 {"type": "no_db_connection"}``) is that backend's, and the chain goes on.
REQUEST_FATAL_PHRASES: tuple[str, ...] = (
    "field required",  # Anthropic and FastAPI-style schema errors: "messages.0.content: Field required"
    "must be",  # "temperature: must be <= 2"
    "messages:",  # Anthropic: "messages: text content blocks must be non-empty"
    "messages.",
    "invalid content",
    "invalid image",
    "could not process image",
    "invalid utf-8",
    "invalid unicode",
)


def request_or_backend(kind: str, detail: str) -> FailureClass:
    """A 400/404/422 that is neither a quota, a context overflow nor a refusal: bad_request when the text
    blames the request itself, else backend_rejected (this backend's failure)."""
    text = f"{kind} {detail}".lower()
    if classify_text(text) == FailureClass.BACKEND_REJECTED:
        return FailureClass.BACKEND_REJECTED
    if any(phrase in text for phrase in REQUEST_FATAL_PHRASES):
        return FailureClass.BAD_REQUEST
    return FailureClass.BACKEND_REJECTED


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
