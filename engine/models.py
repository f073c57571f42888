"""Persisted records (the vocabulary they use, job states and priorities, is in ``engine.vocab``).

Every row the store returns is one of these pydantic models; nothing outside the store sees a tuple.
"""


from typing import Any

from pydantic import BaseModel, ConfigDict

# Re-exported: most modules take the vocabulary from here with the records.
from engine.vocab import JobState as JobState
from engine.vocab import Priority as Priority
from engine.vocab import Source as Source

TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
# States a job waits in until run_after passes, then becomes claimable again.
WAITING_STATES = frozenset({JobState.SNOOZED, JobState.RETRY_WAIT})


class _Record(BaseModel):
    # A model's validator is built when it is first used, not at import: a CLI command uses two or three of
    # these records, and building all of them cost each command about 10 ms.
    model_config = ConfigDict(defer_build=True)


class NewJob(_Record):
    """What a caller hands to ``Store.enqueue``."""

    type: str
    prompt: str
    title: str = ""
    project: str | None = None
    source: Source = Source.OPERATOR
    priority: Priority = Priority.NORMAL
    tier: int | None = None
    run_after: float | None = None
    max_attempts: int | None = None
    max_revisions: int | None = None
    idempotency_key: str | None = None
    parent_id: int | None = None
    chat_id: int | None = None
    deadline: float | None = None
    review_required: bool | None = None
    session_id: str | None = None
    # For review jobs: the family whose work is reviewed (never routed to it).
    maker_family: str | None = None


class Job(_Record):
    id: int
    type: str
    title: str
    prompt: str
    project: str | None = None
    source: Source
    priority: Priority
    state: JobState
    tier: int
    run_after: float
    attempt: int = 0
    max_attempts: int
    revision: int = 0
    max_revisions: int
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    heartbeat_at: float | None = None
    idempotency_key: str | None = None
    parent_id: int | None = None
    chat_id: int | None = None
    deadline: float | None = None
    review_required: bool = False
    maker_backend: str | None = None
    maker_family: str | None = None
    session_id: str | None = None
    workspace: str | None = None
    result_summary: str | None = None
    result_path: str | None = None
    result_text: str | None = None
    progress: str | None = None
    last_failure_class: str | None = None
    last_error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float = 0.0
    operator_approved: bool = False
    avoid_backend: str | None = None
    # A job of a git project: its branch, the commit it started from, and what its done notice shows of the work.
    branch: str | None = None
    base_commit: str | None = None
    work_summary: str | None = None
    work_documents: str | None = None  # paths of the files the done notice attaches, one a line
    worktree_pruned_at: float | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None


class _AttemptFields(_Record):
    """What ``NewAttempt`` and ``Attempt`` share; they differ in whether the call has finished."""

    backend: str
    model: str = ""
    family: str = ""
    purpose: str = "make"  # make | review
    started_at: float
    http_status: int | None = None
    retry_after_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    error: str | None = None


class NewAttempt(_AttemptFields):
    """One backend call as the runner records it (``Completion.attempts``); ``Attempt`` is the stored row."""

    finished_at: float
    outcome: str  # "success" or a FailureClass value


class Attempt(_AttemptFields):
    id: int
    job_id: int
    finished_at: float | None = None
    outcome: str | None = None


class Event(_Record):
    id: int
    job_id: int | None
    at: float
    kind: str
    from_state: str | None = None
    to_state: str | None = None
    reason: str = ""
    data: dict[str, Any] = {}


class NewReview(_Record):
    """A reviewer's verdict on one revision of a job, as the gate records it; ``Review`` is the stored row."""

    job_id: int
    revision: int
    reviewer_backend: str
    reviewer_family: str
    maker_family: str
    scores: dict[str, float] = {}
    score: float
    passed: bool
    verdict: str
    critique: str = ""


class Review(NewReview):
    id: int
    created_at: float


class BackendState(_Record):
    name: str
    paused_until: float | None = None
    pause_reason: str | None = None
    consecutive_failures: int = 0
    last_ok_at: float | None = None
    last_error: str | None = None
    disabled: bool = False
    updated_at: float | None = None


class OutboxMessage(_Record):
    id: int
    dedupe_key: str
    kind: str
    chat_id: int | None = None
    text: str
    urgent: bool = False
    payload: dict[str, Any] = {}
    state: str = "pending"  # pending | sending | sent | held | failed | uncertain (see bot/telegram/sender.py)
    attempts: int = 0
    next_attempt_at: float
    telegram_message_id: int | None = None
    job_id: int | None = None
    created_at: float
    sent_at: float | None = None


class NewOutbox(_Record):
    """A message to the operator, queued in the same transaction as the change it reports."""

    dedupe_key: str
    kind: str
    text: str
    chat_id: int | None = None
    urgent: bool = False
    payload: dict[str, Any] = {}
    job_id: int | None = None


class ChatMessage(_Record):
    id: int
    chat_id: int
    role: str  # operator | assistant
    text: str
    job_id: int | None = None
    created_at: float


class Schedule(_Record):
    id: int
    name: str
    job_type: str
    prompt: str
    project: str | None = None
    interval_s: float | None = None
    daily_at: str | None = None  # "HH:MM" in the pulse timezone
    enabled: bool = True
    catch_up: bool = True
    last_run_at: float | None = None
    next_run_at: float
    created_at: float


class Project(_Record):
    id: int
    name: str
    goal: str = ""
    status: str = "active"  # active | paused | done
    workspace: str | None = None
    # The operator's own folder the project works on (absolute), and the test command the engine runs there.
    path: str | None = None
    test_command: str | None = None
    last_advanced_at: float | None = None
    created_at: float


class TestRunRecord(_Record):
    """A test run the engine made in a job's worktree (``engine.testrun``), as stored."""

    __test__ = False  # not a pytest class

    id: int
    job_id: int
    revision: int
    command: str
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float
    output: str
    summary: str
    created_at: float
