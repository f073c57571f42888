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

from enum import StrEnum

from pydantic import BaseModel


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
