"""All of Switchboard's SQL. Every public method is one transaction and one hop to the store's thread.

Read-then-write transactions start with ``BEGIN IMMEDIATE`` (a deferred transaction that upgrades to a
write fails with SQLITE_BUSY without waiting). Every job state change goes through ``_set_state``, which
checks the transition table and writes an event row in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from engine import notices
from engine.clock import Clock
from engine.models import (
    Attempt,
    BackendState,
    ChatMessage,
    Event,
    Job,
    JobState,
    NewAttempt,
    NewJob,
    NewOutbox,
    NewReview,
    OutboxMessage,
    Priority,
    Project,
    Review,
    Schedule,
)
from engine.states import check_transition
from engine.store.db import Busy, Database, StoreError

T = TypeVar("T")

JOB_COLUMNS = frozenset(Job.model_fields) - {"id"}
_SECONDS_PER_DAY = 86_400.0


class LeaseLost(Exception):
    """The worker no longer owns the job (lease expired and swept, or the job was cancelled)."""


class GateRefused(Exception):
    """The database refused to mark a reviewed job done without a passing review by another family."""


class Completion(BaseModel):
    """Everything that ends (or pauses) one run of a job, written in one transaction."""

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


class ParentUpdate(BaseModel):
    job_id: int
    to_state: JobState
    reason: str
    fields: dict[str, Any] = Field(default_factory=dict)


class ReviewStats(BaseModel):
    """The quality gate's numbers. Deterministic-check rejections are counted apart from model reviews."""

    reviews: int = 0
    first_drafts: int = 0
    catch_rate: float = 0.0  # share of first drafts the reviewer rejected
    pass_rate_by_maker_family: dict[str, float] = Field(default_factory=dict)
    mean_score_by_reviewer_family: dict[str, float] = Field(default_factory=dict)
    revisions_per_job: float = 0.0
    check_rejections: int = 0


class Stats(BaseModel):
    since: float
    total_jobs: int
    done: int
    failed: int
    cancelled: int
    active: int
    completion_rate: float
    active_projects: int
    peak_daily: int
    average_daily: float
    cost_usd: float
    cost_per_job: float
    tokens_in: int
    tokens_out: int
    by_day: list[dict[str, Any]]
    reviews: ReviewStats = Field(default_factory=ReviewStats)


Completion.model_rebuild()


class Store:
    """The durable job store. Open with ``await Store.open(path, clock)``."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    @classmethod
    async def open(cls, path: Path, clock: Clock) -> Store:
        db = Database(path)
        await db.open()
        return cls(db, clock)

    async def close(self) -> None:
        await self._db.close()

    @property
    def path(self) -> Path:
        return self._db.path

    async def _tx(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT in the store's thread."""
        now = self._clock.now()

        def run(conn: sqlite3.Connection) -> T:
            with _transaction(conn):
                return fn(conn, now)

        return await self._db.call(run)

    async def _read(self, fn: Callable[[sqlite3.Connection, float], T], *, heavy: bool = False) -> T:
        """A read. ``heavy`` ones (scans for stats and listings) always run in the store's thread."""
        now = self._clock.now()

        def run(conn: sqlite3.Connection) -> T:
            try:
                return fn(conn, now)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise Busy(str(exc)) from exc
                raise

        return await self._db.call(run, inline=not heavy)

    # ---- jobs: enqueue and read -------------------------------------------------------------------

    async def enqueue(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a job, or return the live job with the same idempotency key. (job, created)"""
        return await self._tx(lambda conn, now: _enqueue(conn, new, now))

    async def enqueue_many(self, jobs: Iterable[NewJob]) -> list[Job]:
        batch = list(jobs)
        return await self._tx(lambda conn, now: [_enqueue(conn, new, now)[0] for new in batch])

    async def get_job(self, job_id: int) -> Job | None:
        return await self._read(lambda conn, _: _job_or_none(conn, job_id))

    async def list_jobs(
        self,
        *,
        states: Iterable[JobState] | None = None,
        project: str | None = None,
        limit: int = 50,
        parent_id: int | None = None,
    ) -> list[Job]:
        clauses, params = [], []
        if states is not None:
            wanted = [s.value for s in states]
            clauses.append(f"state IN ({','.join('?' * len(wanted))})")
            params.extend(wanted)
        if project is not None:
            clauses.append("project = ?")
            params.append(project)
        if parent_id is not None:
            clauses.append("parent_id = ?")
            params.append(parent_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return await self._read(lambda conn, _: [_job(r) for r in conn.execute(sql, params)], heavy=limit > 200)

    async def job_attempts(self, job_id: int) -> list[Attempt]:
        sql = "SELECT * FROM attempts WHERE job_id = ? ORDER BY id"
        return await self._read(lambda conn, _: [Attempt(**dict(r)) for r in conn.execute(sql, (job_id,))])

    async def job_events(self, job_id: int) -> list[Event]:
        sql = "SELECT * FROM events WHERE job_id = ? ORDER BY id"
        return await self._read(lambda conn, _: [_event(r) for r in conn.execute(sql, (job_id,))])

    async def job_reviews(self, job_id: int) -> list[Review]:
        sql = "SELECT * FROM reviews WHERE job_id = ? ORDER BY id"
        return await self._read(lambda conn, _: [_review(r) for r in conn.execute(sql, (job_id,))])

    async def counts_by_state(self) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM jobs GROUP BY state"
        return await self._read(lambda conn, _: {r[0]: r[1] for r in conn.execute(sql)})

    async def events_since(self, after_id: int, limit: int = 500) -> list[Event]:
        sql = "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?"
        return await self._read(lambda conn, _: [_event(r) for r in conn.execute(sql, (after_id, limit))])

    # ---- jobs: claim, heartbeat, finish -----------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        free_slots: int,
        background_limit: int,
        lease_s: float,
        background_max_priority: Priority = Priority.LOW,
    ) -> list[Job]:
        """Claim up to the free slots in one transaction: operator jobs may take any free slot; background
        work at most ``background_limit`` (the slots not reserved for the operator) and, under
        backpressure, only up to ``background_max_priority``."""

        def run(conn: sqlite3.Connection, now: float) -> list[Job]:
            _wake_waiting(conn, now)
            claimed: list[Job] = []
            if free_slots > 0:
                claimed += _claim(conn, now, owner, lease_s, free_slots, "priority = 0", ())
            remaining_bg = min(background_limit, free_slots - len(claimed))
            if remaining_bg > 0:
                claimed += _claim(
                    conn,
                    now,
                    owner,
                    lease_s,
                    remaining_bg,
                    "priority > 0 AND priority <= ?",
                    (int(background_max_priority),),
                )
            return claimed

        return await self._tx(run)

    async def heartbeat(self, job_id: int, owner: str, lease_s: float, progress: str | None = None) -> bool:
        """Renew the lease. False when the worker lost the job (swept, cancelled): it must stop."""

        def run(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = ?, heartbeat_at = ?, progress = COALESCE(?, progress), "
                "updated_at = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (now + lease_s, now, progress, now, job_id, owner),
            )
            return cur.rowcount == 1

        return await self._tx(run)

    async def complete(self, completion: Completion) -> Job:
        """Apply a completion fenced on its owner. Raises LeaseLost or GateRefused."""
        return (await self.complete_many([completion]))[0]

    async def complete_many(self, completions: list[Completion]) -> list[Job | Exception]:  # type: ignore[misc]
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

    async def transition(
        self,
        job_id: int,
        to_state: JobState,
        reason: str,
        *,
        fields: dict[str, Any] | None = None,
        expected: Iterable[JobState] | None = None,
        outbox: Iterable[NewOutbox] = (),
    ) -> Job:
        """An unfenced state change (operator actions, the gate, the pulse). Raises IllegalTransition."""
        extra = dict(fields or {})
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> Job:
            job = _job_or_none(conn, job_id)
            if job is None:
                raise KeyError(job_id)
            if expected is not None and job.state not in set(expected):
                raise ValueError(f"job {job_id} is {job.state.value}")
            _set_state(conn, job, to_state, reason, now, extra)
            for message in messages:
                _add_outbox(conn, message, now)
            return _job_or_none(conn, job_id)  # type: ignore[return-value]

        try:
            return await self._tx(run)
        except sqlite3.IntegrityError as exc:
            if "quality gate" not in str(exc):
                raise  # e.g. a retry whose idempotency key another live job holds: not a gate refusal
            raise GateRefused(str(exc)) from exc

    async def cancel(self, job_id: int, reason: str = "cancelled by operator") -> Job:
        return await self.transition(job_id, JobState.CANCELLED, reason, fields=_CLEAR_LEASE)

    async def retry(self, job_id: int, reason: str = "retried by operator", *, avoid_backend: str | None = None) -> Job:
        fields = {**_CLEAR_LEASE, "attempt": 0, "run_after": self._clock.now(), "avoid_backend": avoid_backend}
        return await self.transition(
            job_id,
            JobState.QUEUED,
            reason,
            fields=fields,
            expected=(JobState.FAILED, JobState.CANCELLED, JobState.NEEDS_HUMAN),
        )

    async def sweep_orphans(self, *, everything_running: bool = False) -> list[Job]:
        """Return jobs whose lease expired (or, at start, every running job) to the queue, or fail them."""

        def run(conn: sqlite3.Connection, now: float) -> list[Job]:
            if everything_running:
                rows = conn.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < ?", (now,)
                ).fetchall()
            swept = []
            for row in rows:
                job = _job(row)
                exhausted = job.attempt + 1 >= job.max_attempts
                target = JobState.FAILED if exhausted else JobState.QUEUED
                fields = {
                    **_CLEAR_LEASE,
                    "attempt": job.attempt + 1,
                    "last_failure_class": "worker_lost",
                    "last_error": "worker lost its lease (crash or restart)",
                    "run_after": now,
                }
                if exhausted:
                    fields["finished_at"] = now
                _set_state(conn, job, target, "orphan sweep: lease expired", now, fields)
                if exhausted and job.type != "review":  # told like any failure (a review's through its job)
                    error = "the worker was lost (crash or restart) on every attempt"
                    _add_outbox(conn, notices.job_failed(job, "worker_lost", error, []), now)
                swept.append(_job_or_none(conn, job.id))
            return swept

        return await self._tx(run)  # type: ignore[arg-type]

    async def record_review(self, review: NewReview) -> None:
        await self._tx(lambda conn, now: _add_review(conn, review, now))

    async def add_event(self, job_id: int | None, kind: str, reason: str, data: dict[str, Any] | None = None) -> None:
        await self._tx(lambda conn, now: _add_event(conn, job_id, now, kind, None, None, reason, data))

    async def data_version(self) -> int:
        """Changes whenever another connection (another process) commits."""
        return await self._db.call(lambda conn: conn.execute("PRAGMA data_version").fetchone()[0])

    # ---- capacity and money -----------------------------------------------------------------------

    async def tokens_since(self, since: float) -> int:
        sql = "SELECT COALESCE(SUM(tokens_in + tokens_out), 0) FROM attempts WHERE finished_at >= ?"
        return await self._read(lambda conn, _: conn.execute(sql, (since,)).fetchone()[0])

    async def spend_since(self, since: float, backends: Iterable[str] | None = None) -> float:
        names = list(backends) if backends is not None else None
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE finished_at >= ?"
        params: list[Any] = [since]
        if names is not None:
            if not names:
                return 0.0
            sql += f" AND backend IN ({','.join('?' * len(names))})"
            params += names
        return await self._read(lambda conn, _: float(conn.execute(sql, params).fetchone()[0]))

    async def queue_depth(self, cap: int = 1_000_000) -> int:
        """Jobs ready to run now, counted up to ``cap`` (counting stops there: the loop asks this often)."""
        sql = "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after <= ? LIMIT ?)"
        return await self._read(lambda conn, now: conn.execute(sql, (now, cap)).fetchone()[0])

    # ---- backend state (the rate-limit cache) -----------------------------------------------------

    async def backend_states(self) -> dict[str, BackendState]:
        sql = "SELECT * FROM backend_state"
        return await self._read(lambda conn, _: {r["name"]: _backend_state(r) for r in conn.execute(sql)})

    async def pause_backend(self, name: str, until: float, reason: str, error: str | None = None) -> BackendState:
        """Pause a backend until ``until``. A later pause never shortens an earlier one."""

        def run(conn: sqlite3.Connection, now: float) -> BackendState:
            _ensure_backend(conn, name, now)
            conn.execute(
                "UPDATE backend_state SET paused_until = MAX(COALESCE(paused_until, 0), ?), "
                "pause_reason = CASE WHEN COALESCE(paused_until, 0) > ? THEN pause_reason ELSE ? END, "
                "last_error = COALESCE(?, last_error), updated_at = ? WHERE name = ?",
                (until, until, reason, error, now, name),
            )
            return _backend_state(conn.execute("SELECT * FROM backend_state WHERE name = ?", (name,)).fetchone())

        return await self._tx(run)

    async def resume_backend(self, name: str) -> None:
        await self._tx(
            lambda conn, now: _update_backend(
                conn, name, now, paused_until=None, pause_reason=None, disabled=0, consecutive_failures=0
            )
        )

    async def disable_backend(self, name: str, reason: str, error: str | None = None) -> bool:
        """Disable (auth failures). True when this call disabled it (so the alert goes out once)."""

        def run(conn: sqlite3.Connection, now: float) -> bool:
            _ensure_backend(conn, name, now)
            cur = conn.execute(
                "UPDATE backend_state SET disabled = 1, pause_reason = ?, last_error = ?, updated_at = ? "
                "WHERE name = ? AND disabled = 0",
                (reason, error, now, name),
            )
            return cur.rowcount == 1

        return await self._tx(run)

    async def record_backend_result(self, name: str, ok: bool, error: str | None = None) -> int:
        """Count consecutive failures (for the circuit breaker). Returns the new count."""

        def run(conn: sqlite3.Connection, now: float) -> int:
            _ensure_backend(conn, name, now)
            if ok:  # a success closes an open circuit whose pause has run out
                conn.execute(
                    "UPDATE backend_state SET consecutive_failures = 0, last_ok_at = ?, updated_at = ?, "
                    "pause_reason = CASE WHEN pause_reason = 'circuit_open' AND COALESCE(paused_until, 0) <= ? "
                    "THEN NULL ELSE pause_reason END WHERE name = ?",
                    (now, now, now, name),
                )
                return 0
            conn.execute(
                "UPDATE backend_state SET consecutive_failures = consecutive_failures + 1, last_error = ?, "
                "updated_at = ? WHERE name = ?",
                (error, now, name),
            )
            return conn.execute("SELECT consecutive_failures FROM backend_state WHERE name = ?", (name,)).fetchone()[0]

        return await self._tx(run)

    async def reenable_backend(self, name: str, outbox: Iterable[NewOutbox] = ()) -> bool:
        """Re-enable a backend disabled for its credentials, with its announcement in the same transaction.
        True only for the call that re-enabled it (so recovery is announced once)."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute(
                "UPDATE backend_state SET disabled = 0, pause_reason = NULL, consecutive_failures = 0, "
                "last_ok_at = ?, updated_at = ? WHERE name = ? AND disabled = 1",
                (now, now, name),
            )
            if cur.rowcount != 1:
                return False
            for message in messages:
                _add_outbox(conn, message, now)
            return True

        return await self._tx(run)

    # ---- outbox, inbox, conversation --------------------------------------------------------------

    async def add_outbox(self, message: NewOutbox) -> bool:
        """Queue a message to the operator. False when its dedupe key was already used."""
        return await self._tx(lambda conn, now: _add_outbox(conn, message, now))

    async def outbox_due(self, limit: int = 20, *, include_non_urgent: bool = True) -> list[OutboxMessage]:
        sql = "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
        if not include_non_urgent:
            sql += " AND urgent = 1"
        sql += " ORDER BY urgent DESC, id LIMIT ?"
        return await self._read(lambda conn, now: [_outbox(r) for r in conn.execute(sql, (now, limit))])

    async def outbox_mark_sent(self, message_id: int, telegram_message_id: int | None) -> None:
        await self._tx(
            lambda conn, now: conn.execute(
                "UPDATE outbox SET state = 'sent', sent_at = ?, telegram_message_id = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                (now, telegram_message_id, message_id),
            )
        )

    async def outbox_claim(self, message_id: int) -> bool:
        """Mark a due message 'sending' (its own transaction) just before the API call. False when another
        sender took it or it is no longer pending. A crash leaves it 'sending': see ``outbox_recover_sending``."""
        return await self._tx(
            lambda conn, now: (
                conn.execute(
                    "UPDATE outbox SET state = 'sending' WHERE id = ? AND state = 'pending'", (message_id,)
                ).rowcount
                == 1
            )
        )

    async def outbox_recover_sending(self) -> list[int]:
        """At a sender's start: messages a previous process left 'sending' (it died mid-request, or while
        waiting out a flood wait) go back to 'pending'. Returns their ids."""

        def run(conn: sqlite3.Connection, now: float) -> list[int]:
            rows = conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, "
                "last_error = 'interrupted while sending; resent after a restart' "
                "WHERE state = 'sending' RETURNING id",
                (now,),
            ).fetchall()
            return sorted(r[0] for r in rows)

        return await self._tx(run)

    async def outbox_mark_retry(self, message_id: int, delay_s: float, error: str, *, give_up_after: int = 8) -> None:
        def run(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
                "state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END WHERE id = ?",
                (now + delay_s, error[:500], give_up_after, message_id),
            )

        await self._tx(run)

    async def outbox_counts(self) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM outbox GROUP BY state"
        return await self._read(lambda conn, _: {r[0]: r[1] for r in conn.execute(sql)})

    async def outbox_all(self) -> list[OutboxMessage]:
        return await self._read(lambda conn, _: [_outbox(r) for r in conn.execute("SELECT * FROM outbox ORDER BY id")])

    async def inbox_claim(self, update_id: int) -> bool:
        """Record an update id before handling it. False when it was already handled."""
        return await self._tx(
            lambda conn, now: (
                conn.execute(
                    "INSERT OR IGNORE INTO inbox(update_id, received_at) VALUES (?, ?)", (update_id, now)
                ).rowcount
                == 1
            )
        )

    async def accept_operator_message(self, update_id: int | None, chat_id: int, text: str, job: NewJob) -> Job | None:
        """The operator's message, the conversation row and its chat job in one transaction, so a crash can
        neither lose the message nor let a redelivered update create a second job. None when the update
        was already handled."""

        def run(conn: sqlite3.Connection, now: float) -> Job | None:
            if (
                update_id is not None
                and conn.execute(
                    "INSERT OR IGNORE INTO inbox(update_id, received_at) VALUES (?, ?)", (update_id, now)
                ).rowcount
                != 1
            ):
                return None
            created, _ = _enqueue(conn, job, now)
            conn.execute(
                "INSERT INTO messages(chat_id, role, text, job_id, created_at) VALUES (?, 'operator', ?, ?, ?)",
                (chat_id, text, created.id, now),
            )
            return created

        return await self._tx(run)

    async def add_message(self, chat_id: int, role: str, text: str, job_id: int | None = None) -> None:
        await self._tx(
            lambda conn, now: conn.execute(
                "INSERT INTO messages(chat_id, role, text, job_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (chat_id, role, text, job_id, now),
            )
        )

    async def recent_messages(self, chat_id: int, limit: int = 12) -> list[ChatMessage]:
        sql = "SELECT * FROM (SELECT * FROM messages WHERE chat_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id"
        return await self._read(lambda conn, _: [ChatMessage(**dict(r)) for r in conn.execute(sql, (chat_id, limit))])

    # ---- key/value facts --------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        sql = "SELECT value FROM kv WHERE key = ?"
        return await self._read(lambda conn, _: row[0] if (row := conn.execute(sql, (key,)).fetchone()) else None)

    async def kv_set_if_changed(self, key: str, value: str, outbox: Iterable[NewOutbox] = ()) -> bool:
        """Set a fact; when it changed, also queue the given messages (same transaction). True if changed."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == value:
                return False
            conn.execute(
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, now),
            )
            for message in messages:
                _add_outbox(conn, message, now)
            return True

        return await self._tx(run)

    # ---- schedules and projects -------------------------------------------------------------------

    async def add_schedule(
        self,
        name: str,
        job_type: str,
        prompt: str,
        *,
        next_run_at: float,
        interval_s: float | None = None,
        daily_at: str | None = None,
        project: str | None = None,
        catch_up: bool = True,
    ) -> Schedule:
        def run(conn: sqlite3.Connection, now: float) -> Schedule:
            cur = conn.execute(
                "INSERT INTO schedules(name, job_type, prompt, project, interval_s, daily_at, catch_up, "
                "next_run_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, job_type, prompt, project, interval_s, daily_at, int(catch_up), next_run_at, now),
            )
            return _schedule(conn.execute("SELECT * FROM schedules WHERE id = ?", (cur.lastrowid,)).fetchone())

        try:
            return await self._tx(run)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a schedule named {name!r} already exists") from exc

    async def list_schedules(self) -> list[Schedule]:
        sql = "SELECT * FROM schedules ORDER BY id"
        return await self._read(lambda conn, _: [_schedule(r) for r in conn.execute(sql)])

    async def remove_schedule(self, name_or_id: str) -> bool:
        return await self._tx(
            lambda conn, _: (
                conn.execute(
                    "DELETE FROM schedules WHERE name = ? OR CAST(id AS TEXT) = ?", (name_or_id, name_or_id)
                ).rowcount
                > 0
            )
        )

    async def fire_schedule(
        self,
        schedule_id: int,
        expected_next_run_at: float,
        new_next_run_at: float,
        jobs: list[NewJob],
        missed: int = 0,
        outbox: Iterable[NewOutbox] = (),
        missed_note: str = "",
    ) -> list[Job]:
        """Advance a schedule and enqueue its run(s) in one transaction, fenced on next_run_at so a
        schedule never fires twice for the same slot. ``outbox`` messages are written only when it fires."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> list[Job]:
            cur = conn.execute(
                "UPDATE schedules SET last_run_at = ?, next_run_at = ? WHERE id = ? AND next_run_at = ?",
                (now, new_next_run_at, schedule_id, expected_next_run_at),
            )
            if cur.rowcount != 1:
                return []
            if missed:
                _add_event(
                    conn,
                    None,
                    now,
                    "schedule_missed",
                    None,
                    None,
                    f"schedule {schedule_id}: {missed} run(s) missed while down{missed_note}",
                    {"schedule_id": schedule_id, "missed": missed, "slot": expected_next_run_at},
                )
            for message in messages:
                _add_outbox(conn, message, now)
            return [_enqueue(conn, new, now)[0] for new in jobs]

        return await self._tx(run)

    async def add_project(self, name: str, goal: str = "", workspace: str | None = None) -> Project:
        def run(conn: sqlite3.Connection, now: float) -> Project:
            cur = conn.execute(
                "INSERT INTO projects(name, goal, workspace, created_at, last_advanced_at) VALUES (?, ?, ?, ?, ?)",
                (name, goal, workspace, now, now),
            )
            return Project(**dict(conn.execute("SELECT * FROM projects WHERE id = ?", (cur.lastrowid,)).fetchone()))

        try:
            return await self._tx(run)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a project named {name!r} already exists") from exc

    async def list_projects(self, status: str | None = None) -> list[Project]:
        sql = "SELECT * FROM projects" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        params = (status,) if status else ()
        return await self._read(lambda conn, _: [Project(**dict(r)) for r in conn.execute(sql, params)])

    async def get_project(self, name: str) -> Project | None:
        sql = "SELECT * FROM projects WHERE name = ?"
        return await self._read(
            lambda conn, _: Project(**dict(r)) if (r := conn.execute(sql, (name,)).fetchone()) else None
        )

    async def touch_project(self, name: str, status: str | None = None) -> None:
        await self._tx(
            lambda conn, now: conn.execute(
                "UPDATE projects SET last_advanced_at = ?, status = COALESCE(?, status) WHERE name = ?",
                (now, status, name),
            )
        )

    async def open_project_jobs(self, name: str) -> int:
        """Jobs of a project that are not finished (queued, running, waiting for a backend or the operator)."""
        sql = "SELECT COUNT(*) FROM jobs WHERE project = ? AND state NOT IN ('done', 'failed', 'cancelled')"
        return await self._read(lambda conn, _: conn.execute(sql, (name,)).fetchone()[0])

    # ---- statistics -------------------------------------------------------------------------------

    async def stats(self, since: float) -> Stats:
        return await self._read(lambda conn, now: _stats(conn, since, now), heavy=True)

    async def digest_numbers(self, since: float, *, list_limit: int = 20) -> dict[str, Any]:
        """The daily digest's facts for jobs created since ``since`` (the same window as ``stats``): done and
        failed jobs (with why), failure classes, attempts per backend, and what waits for the operator."""
        return await self._read(lambda conn, _: _digest_numbers(conn, since, list_limit))

    async def stale_jobs(self, *, heartbeat_before: float, queued_before: float, limit: int = 50) -> list[Job]:
        """Running jobs whose heartbeat is older than ``heartbeat_before`` and queued jobs claimable since
        before ``queued_before``: work that is stuck."""
        sql = (
            "SELECT * FROM jobs WHERE (state = 'running' AND COALESCE(heartbeat_at, started_at, created_at) < ?) "
            "OR (state = 'queued' AND run_after < ?) ORDER BY id LIMIT ?"
        )
        return await self._read(
            lambda conn, _: [_job(r) for r in conn.execute(sql, (heartbeat_before, queued_before, limit))]
        )


# ---- transaction helpers (run in the store's thread) -------------------------------------------------

_CLEAR_LEASE: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise Busy(str(exc)) from exc
        raise StoreError(f"database is unwritable: {exc}") from exc
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:  # disk full, I/O error: nothing was written
        conn.execute("ROLLBACK")
        raise StoreError(f"cannot write to the database: {exc}") from exc


def _enqueue(conn: sqlite3.Connection, new: NewJob, now: float) -> tuple[Job, bool]:
    if new.tier is None or new.max_attempts is None or new.max_revisions is None or new.review_required is None:
        raise ValueError("NewJob must be resolved (tier, max_attempts, max_revisions, review_required)")
    if new.idempotency_key is not None:
        row = conn.execute(
            "SELECT * FROM jobs WHERE idempotency_key = ? AND state NOT IN ('failed', 'cancelled')",
            (new.idempotency_key,),
        ).fetchone()
        if row is not None:
            return _job(row), False
    title = new.title or _title_from(new.prompt)
    cur = conn.execute(
        "INSERT INTO jobs(type, title, prompt, project, source, priority, state, tier, run_after, max_attempts, "
        "max_revisions, idempotency_key, parent_id, chat_id, deadline, review_required, session_id, maker_family, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.type,
            title,
            new.prompt,
            new.project,
            new.source.value,
            int(new.priority),
            new.tier,
            new.run_after if new.run_after is not None else now,
            new.max_attempts,
            new.max_revisions,
            new.idempotency_key,
            new.parent_id,
            new.chat_id,
            new.deadline,
            int(new.review_required),
            new.session_id,
            new.maker_family,
            now,
            now,
        ),
    )
    job_id = int(cur.lastrowid)  # type: ignore[arg-type]
    _add_event(
        conn,
        job_id,
        now,
        "enqueued",
        None,
        JobState.QUEUED.value,
        f"from {new.source.value}",
        {"type": new.type, "priority": new.priority.name.lower()},
    )
    return _job_or_none(conn, job_id), True  # type: ignore[return-value]


def _title_from(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:57] + "..."


def _wake_waiting(conn: sqlite3.Connection, now: float) -> None:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE state IN ('snoozed', 'retry_wait') AND run_after <= ?", (now,)
    ).fetchall()
    for row in rows:
        _set_state(conn, _job(row), JobState.QUEUED, "wait over", now, {})


def _claim(
    conn: sqlite3.Connection, now: float, owner: str, lease_s: float, limit: int, where: str, params: tuple[Any, ...]
) -> list[Job]:
    rows = conn.execute(
        "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires_at = ?, heartbeat_at = ?, "
        "started_at = COALESCE(started_at, ?), updated_at = ? "
        f"WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= ? AND {where} "
        "ORDER BY priority, run_after, id LIMIT ?) RETURNING *",
        (owner, now + lease_s, now, now, now, now, *params, limit),
    ).fetchall()
    jobs = sorted((_job(r) for r in rows), key=lambda j: (j.priority, j.run_after, j.id))
    conn.executemany(
        "INSERT INTO events(job_id, at, kind, from_state, to_state, reason, data) "
        "VALUES (?, ?, 'transition', 'queued', 'running', 'claimed', ?)",
        [(job.id, now, json.dumps({"owner": owner})) for job in jobs],
    )
    return jobs


def _complete(conn: sqlite3.Connection, c: Completion, now: float) -> Job:
    job = _job_or_none(conn, c.job_id)
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
        finished = _set_state(conn, job, c.to_state, c.reason, now, fields)
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


def _set_state(
    conn: sqlite3.Connection, job: Job, to_state: JobState, reason: str, now: float, fields: dict[str, Any]
) -> Job:
    """Check the transition, write it with its event, and return the job as it now is (no re-read)."""
    check_transition(job.id, job.state, to_state)
    unknown = set(fields) - JOB_COLUMNS
    if unknown:
        raise ValueError(f"unknown job fields: {sorted(unknown)}")
    values = {**fields, "state": to_state.value, "updated_at": now}
    if to_state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED) and "finished_at" not in values:
        values["finished_at"] = now
    assignments = ", ".join(f"{key} = ?" for key in values)
    params = [_to_sql(v) for v in values.values()]
    cur = conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ?", (*params, job.id, job.state.value))
    if cur.rowcount != 1:
        raise LeaseLost(f"job {job.id} changed state concurrently")
    _add_event(conn, job.id, now, "transition", job.state.value, to_state.value, reason, None)
    if job.type == "review" and job.parent_id is not None and to_state in _REVIEW_GAVE_UP:
        _review_gave_up(conn, job.parent_id, f"its review ended {to_state.value}: {reason}", now)
    return job.model_copy(update={**values, "state": to_state})


_REVIEW_GAVE_UP = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.NEEDS_HUMAN})


def _review_gave_up(conn: sqlite3.Connection, parent_id: int, why: str, now: float) -> None:
    """A review that cannot finish must not leave its job waiting in ``reviewing`` forever: the operator
    decides (approve, revise again, discard), and is told in the same transaction."""
    parent = _job_or_none(conn, parent_id)
    if parent is None or parent.state != JobState.REVIEWING:
        return
    _set_state(conn, parent, JobState.NEEDS_HUMAN, why, now, {})
    message = notices.needs_human(
        parent, "(none: no review was completed)", None, why=f"No reviewer could finish: {why}."
    )
    _add_outbox(conn, message, now)


def _to_sql(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (JobState, Priority)):
        return value.value
    return value


def _add_event(
    conn: sqlite3.Connection,
    job_id: int | None,
    now: float,
    kind: str,
    from_state: str | None,
    to_state: str | None,
    reason: str,
    data: dict[str, Any] | None,
) -> None:
    conn.execute(
        "INSERT INTO events(job_id, at, kind, from_state, to_state, reason, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (job_id, now, kind, from_state, to_state, reason, json.dumps(data) if data else "{}"),
    )


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


def _add_review(conn: sqlite3.Connection, r: NewReview, now: float) -> None:
    conn.execute(
        "INSERT INTO reviews(job_id, revision, reviewer_backend, reviewer_family, maker_family, scores, score, "
        "passed, verdict, critique, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            r.job_id,
            r.revision,
            r.reviewer_backend,
            r.reviewer_family,
            r.maker_family,
            json.dumps(r.scores),
            r.score,
            int(r.passed),
            r.verdict,
            r.critique,
            now,
        ),
    )


def _add_outbox(conn: sqlite3.Connection, m: NewOutbox, now: float) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO outbox(dedupe_key, kind, chat_id, text, urgent, payload, job_id, next_attempt_at, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (m.dedupe_key, m.kind, m.chat_id, m.text, int(m.urgent), json.dumps(m.payload), m.job_id, now, now),
    )
    return cur.rowcount == 1


def _ensure_backend(conn: sqlite3.Connection, name: str, now: float) -> None:
    conn.execute("INSERT OR IGNORE INTO backend_state(name, updated_at) VALUES (?, ?)", (name, now))


def _update_backend(conn: sqlite3.Connection, name: str, now: float, **values: Any) -> None:
    _ensure_backend(conn, name, now)
    assignments = ", ".join(f"{key} = ?" for key in values)
    conn.execute(
        f"UPDATE backend_state SET {assignments}, updated_at = ? WHERE name = ?", (*values.values(), now, name)
    )


def _stats(conn: sqlite3.Connection, since: float, now: float) -> Stats:
    row = conn.execute(
        "SELECT COUNT(*), SUM(state = 'done'), SUM(state = 'failed'), SUM(state = 'cancelled'), "
        "SUM(state NOT IN ('done', 'failed', 'cancelled')), COALESCE(SUM(cost_usd), 0), "
        "COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0) FROM jobs WHERE created_at >= ?",
        (since,),
    ).fetchone()
    total, done, failed, cancelled, active, cost, tin, tout = (v or 0 for v in row)
    days = conn.execute(
        "SELECT CAST(finished_at / ? AS INTEGER) AS day, COUNT(*), SUM(state = 'done'), SUM(state = 'failed'), "
        "COALESCE(SUM(cost_usd), 0) FROM jobs WHERE finished_at >= ? GROUP BY day ORDER BY day",
        (_SECONDS_PER_DAY, since),
    ).fetchall()
    by_day = [
        {
            "day": int(d[0] * _SECONDS_PER_DAY),
            "finished": d[1],
            "done": d[2] or 0,
            "failed": d[3] or 0,
            "cost_usd": d[4],
        }
        for d in days
    ]
    span_days = max(1.0, (now - since) / _SECONDS_PER_DAY)
    finished = done + failed
    projects = conn.execute("SELECT COUNT(*) FROM projects WHERE status = 'active'").fetchone()[0]
    return Stats(
        since=since,
        total_jobs=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        active=active,
        completion_rate=(done / finished) if finished else 0.0,
        active_projects=projects,
        peak_daily=max((d["done"] for d in by_day), default=0),
        average_daily=done / span_days,
        cost_usd=cost,
        cost_per_job=(cost / done) if done else 0.0,
        tokens_in=tin,
        tokens_out=tout,
        by_day=by_day,
        reviews=_review_stats(conn, since),
    )


def _review_stats(conn: sqlite3.Connection, since: float) -> ReviewStats:
    checks = "deterministic-checks"
    rows = conn.execute(
        "SELECT revision, passed, maker_family, reviewer_family, score FROM reviews "
        "WHERE created_at >= ? AND reviewer_family <> ?",
        (since, checks),
    ).fetchall()
    first = [r for r in rows if r[0] == 0]
    by_maker: dict[str, list[int]] = {}
    by_reviewer: dict[str, list[float]] = {}
    for _, passed, maker, reviewer, score in rows:
        by_maker.setdefault(maker, []).append(passed)
        by_reviewer.setdefault(reviewer, []).append(score)
    revisions = conn.execute(
        "SELECT AVG(revision) FROM jobs WHERE review_required = 1 AND finished_at >= ?", (since,)
    ).fetchone()[0]
    rejected_by_checks = conn.execute(
        "SELECT COUNT(*) FROM reviews WHERE created_at >= ? AND reviewer_family = ?", (since, checks)
    ).fetchone()[0]
    return ReviewStats(
        reviews=len(rows),
        first_drafts=len(first),
        catch_rate=sum(1 for r in first if not r[1]) / len(first) if first else 0.0,
        pass_rate_by_maker_family={k: sum(v) / len(v) for k, v in sorted(by_maker.items())},
        mean_score_by_reviewer_family={k: sum(v) / len(v) for k, v in sorted(by_reviewer.items())},
        revisions_per_job=float(revisions or 0.0),
        check_rejections=rejected_by_checks,
    )


def _digest_numbers(conn: sqlite3.Connection, since: float, limit: int) -> dict[str, Any]:
    def rows(sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(sql, params)]

    columns = "id, type, title, cost_usd, maker_backend, last_failure_class, last_error, finished_at"
    done, failed = (
        rows(f"SELECT {columns} FROM jobs WHERE created_at >= ? AND state = ? ORDER BY id LIMIT ?", (since, s, limit))
        for s in ("done", "failed")
    )
    failure_classes = {
        r[0] or "unknown": r[1]
        for r in conn.execute(
            "SELECT last_failure_class, COUNT(*) FROM jobs WHERE created_at >= ? AND state = 'failed' "
            "GROUP BY last_failure_class ORDER BY COUNT(*) DESC",
            (since,),
        )
    }
    waiting = rows(
        "SELECT id, type, title, state, progress FROM jobs WHERE state IN ('needs_input', 'needs_human') "
        "ORDER BY id LIMIT ?",
        (limit,),
    )
    waiting_total = conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('needs_input', 'needs_human')").fetchone()[
        0
    ]
    backends = rows(
        "SELECT backend, COUNT(*) AS calls, SUM(outcome = 'success') AS ok, COALESCE(SUM(cost_usd), 0) AS cost_usd "
        "FROM attempts WHERE started_at >= ? GROUP BY backend ORDER BY calls DESC",
        (since,),
    )
    # When non-urgent messages were written: the caller counts those that fell in quiet hours (held for it).
    non_urgent = [
        r[0] for r in conn.execute("SELECT created_at FROM outbox WHERE urgent = 0 AND created_at >= ?", (since,))
    ]
    return {
        "done_jobs": done,
        "failed_jobs": failed,
        "failure_classes": failure_classes,
        "waiting_jobs": waiting,
        "waiting_total": waiting_total,
        "backends": backends,
        "non_urgent_message_times": non_urgent,
    }


# ---- row mapping -------------------------------------------------------------------------------------


def _job(row: sqlite3.Row) -> Job:
    # Validation (pydantic-core, compiled) is both safer and faster here than model_construct.
    return Job.model_validate(dict(row))


def _job_or_none(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row is not None else None


def _event(row: sqlite3.Row) -> Event:
    values = dict(row)
    values["data"] = json.loads(values["data"] or "{}")
    return Event(**values)


def _review(row: sqlite3.Row) -> Review:
    values = dict(row)
    values["scores"] = json.loads(values["scores"] or "{}")
    return Review(**values)


def _outbox(row: sqlite3.Row) -> OutboxMessage:
    values = dict(row)
    values["payload"] = json.loads(values["payload"] or "{}")
    values.pop("last_error", None)
    return OutboxMessage(**values)


def _backend_state(row: sqlite3.Row) -> BackendState:
    return BackendState(**dict(row))


def _schedule(row: sqlite3.Row) -> Schedule:
    return Schedule(**dict(row))
