"""Ending one run of a job: a ``Completion`` (state, fields, attempts, reviews, outbox rows, follow-up jobs,
the assistant's message, parent updates) written in one transaction, fenced on the lease owner."""

from __future__ import annotations

import sqlite3
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine import notices
from engine.errors import GateRefused, LeaseLost
from engine.models import Job, JobState, NewAttempt, NewJob, NewOutbox, NewReview
from engine.store.core import StoreCore
from engine.store.rows import _job_or_none
from engine.store.transitions import _CLEAR_LEASE, _set_state
from engine.store.writes import _add_event, _add_outbox, _add_review, _enqueue


class Completion(BaseModel):
    """Everything that ends (or pauses) one run of a job, written in one transaction."""
    model_config = ConfigDict(defer_build=True)  # built on first use: the CLI's commands import it

    job_id: int
    owner: str | None  # fence: the lease owner that must still hold the job; None for operator actions
    to_state: JobState
    reason: str
    fields: dict[str, Any] = Field(default_factory=dict)
    add_usage: bool = True
    attempts: list[NewAttempt] = Field(default_factory=list)
    outbox: list[NewOutbox] = Field(default_factory=list)
    reviews: list[NewReview] = Field(default_factory=list)
    new_jobs: list[NewJob] = Field(default_factory=list)
    # Tell the operator at once what was queued (id, type, tier), with buttons.
    announce_new_jobs: bool = False
    # The persona's answer, kept in the conversation (``messages``) for context and /history.
    assistant_message: str | None = None
    parent_updates: list[ParentUpdate] = Field(default_factory=list)
    # The job as its owner claimed it. With an owner, the finish is fenced in the UPDATE itself (state running,
    # same lease owner) and the job is not read again: fields that change while a job runs are not used here.
    snapshot: Job | None = None


class ParentUpdate(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use: the CLI's commands import it

    job_id: int
    to_state: JobState
    reason: str
    fields: dict[str, Any] = Field(default_factory=dict)



class CompletionsMixin(StoreCore):
    """The ``Store`` methods that end a run of a job."""

    async def complete(self, completion: Completion) -> Job:
        """Apply a completion fenced on its owner. Raises LeaseLost or GateRefused."""
        result = (await self.complete_many([completion]))[0]
        if isinstance(result, Exception):  # complete_many already raises a lone completion's failure
            raise result
        return result

    async def complete_many(self, completions: list[Completion]) -> list[Job | Exception]:
        """Apply several completions in one transaction; each fails alone (savepoint per completion)."""

        def run(conn: sqlite3.Connection, now: float) -> list[Job | Exception]:
            results: list[Job | Exception] = []
            for index, completion in enumerate(completions):
                conn.execute(f"SAVEPOINT c{index}")
                try:
                    results.append(_complete(conn, completion, now))
                    conn.execute(f"RELEASE c{index}")
                except (LeaseLost, GateRefused, ValueError) as exc:
                    conn.execute(f"ROLLBACK TO c{index}")
                    conn.execute(f"RELEASE c{index}")
                    results.append(exc)
            return results

        results = await self._tx(run)
        if len(completions) == 1 and isinstance(results[0], Exception):
            raise results[0]
        return results


def _complete(conn: sqlite3.Connection, c: Completion, now: float) -> Job:
    fenced = c.owner is not None and c.snapshot is not None and c.snapshot.state == JobState.RUNNING
    job = c.snapshot if fenced else _job_or_none(conn, c.job_id)
    if job is None:
        raise ValueError(f"job {c.job_id} does not exist")
    if c.owner is not None and (job.state != JobState.RUNNING or job.lease_owner != c.owner):
        raise LeaseLost(f"job {c.job_id}: lease lost (now {job.state.value})")
    fields = dict(c.fields)
    for attempt in c.attempts:
        _add_attempt(conn, c.job_id, attempt)
    if c.add_usage and c.attempts:
        for key, attr in (
            ("tokens_in", "tokens_in"),
            ("tokens_out", "tokens_out"),
            ("cache_read", "cache_read"),
            ("cache_write", "cache_write"),
            ("cost_usd", "cost_usd"),
        ):
            fields[key] = getattr(job, key) + sum(getattr(a, attr) for a in c.attempts)
    for review in c.reviews:
        _add_review(conn, review, now)
    if c.owner is not None:
        fields.update(_CLEAR_LEASE)
    try:
        finished = _set_state(conn, job, c.to_state, c.reason, now, fields, owner=c.owner)
        for update in c.parent_updates:
            parent = _job_or_none(conn, update.job_id)
            if parent is not None:
                _set_state(conn, parent, update.to_state, update.reason, now, update.fields)
    except sqlite3.IntegrityError as exc:
        raise GateRefused(str(exc)) from exc
    for message in c.outbox:
        _add_outbox(conn, message, now)
    if c.assistant_message is not None and job.chat_id is not None:
        conn.execute(
            "INSERT INTO messages(chat_id, role, text, job_id, created_at) VALUES (?, 'assistant', ?, ?, ?)",
            (job.chat_id, c.assistant_message, job.id, now),
        )
    for new in c.new_jobs:
        queued, created = _enqueue(conn, new, now)
        if created and c.announce_new_jobs:
            _add_outbox(conn, notices.job_queued(queued), now)
    return finished


def _add_attempt(conn: sqlite3.Connection, job_id: int, a: NewAttempt) -> None:
    conn.execute(
        "INSERT INTO attempts(job_id, backend, model, family, purpose, started_at, finished_at, outcome, "
        "http_status, retry_after_s, tokens_in, tokens_out, cache_read, cache_write, cost_usd, latency_ms, error) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            a.backend,
            a.model,
            a.family,
            a.purpose,
            a.started_at,
            a.finished_at,
            a.outcome,
            a.http_status,
            a.retry_after_s,
            a.tokens_in,
            a.tokens_out,
            a.cache_read,
            a.cache_write,
            a.cost_usd,
            a.latency_ms,
            a.error,
        ),
    )
    _add_event(
        conn,
        job_id,
        a.finished_at,
        "attempt",
        None,
        None,
        f"{a.backend}: {a.outcome}",
        {"backend": a.backend, "purpose": a.purpose, "outcome": a.outcome},
    )
