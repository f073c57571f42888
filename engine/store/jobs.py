"""Jobs: enqueue and read them, claim them for a worker, renew their lease, change their state (operator
actions, the gate, the pulse), sweep the orphans of a dead worker, and list stuck work."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from engine import notices
from engine.errors import GateRefused
from engine.models import Attempt, Event, Job, JobState, NewJob, NewOutbox, Priority, Review
from engine.store.core import StoreCore
from engine.store.rows import _event, _job, _job_or_none, _review, _written_job
from engine.store.transitions import _CLEAR_LEASE, _set_state
from engine.store.writes import _add_event, _add_outbox, _enqueue


class JobsMixin(StoreCore):
    """The ``Store`` methods on jobs (ending a run is in ``completion.py``)."""

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
        clauses: list[str] = []
        params: list[str | int] = []
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

    async def recent_jobs(
        self, states: Iterable[JobState], *, limit: int, exclude_types: Iterable[str] = ("chat", "review")
    ) -> list[Job]:
        """Jobs in ``states`` most recently changed first, without the persona's own turns and reviews (what the
        persona's live snapshot shows)."""
        wanted = [s.value for s in states]
        skipped = list(exclude_types) or [""]
        sql = (
            f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(wanted))}) "
            f"AND type NOT IN ({','.join('?' * len(skipped))}) ORDER BY updated_at DESC, id DESC LIMIT ?"
        )
        params = [*wanted, *skipped, limit]
        return await self._read(lambda conn, _: [_job(r) for r in conn.execute(sql, params)])

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

    # ---- jobs: claim, heartbeat, state changes ----------------------------------------------------

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

    async def transition(
        self,
        job_id: int,
        to_state: JobState,
        reason: str,
        *,
        fields: dict[str, Any] | None = None,
        expected: Iterable[JobState] | None = None,
        outbox: Iterable[NewOutbox] = (),
        owner: str | None = None,
    ) -> Job:
        """A state change (operator actions, the gate, the pulse), unfenced unless ``owner`` is given: then it
        applies only while ``owner`` holds the job's lease, else raises LeaseLost. Raises IllegalTransition."""
        extra = dict(fields or {})
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> Job:
            job = _job_or_none(conn, job_id)
            if job is None:
                raise KeyError(job_id)
            if expected is not None and job.state not in set(expected):
                raise ValueError(f"job {job_id} is {job.state.value}")
            _set_state(conn, job, to_state, reason, now, extra, owner=owner)
            for message in messages:
                _add_outbox(conn, message, now)
            return _written_job(conn, job_id)

        try:
            return await self._tx(run)
        except sqlite3.IntegrityError as exc:
            if "quality gate" not in str(exc):
                raise  # e.g. a retry whose idempotency key another live job holds: not a gate refusal
            raise GateRefused(str(exc)) from exc

    async def release(self, job_id: int) -> Job:
        """Let a queued job held by ``run_after`` run now (a job whose files were still being written)."""

        def run(conn: sqlite3.Connection, now: float) -> Job:
            conn.execute(
                "UPDATE jobs SET run_after = ?, updated_at = ? WHERE id = ? AND state = 'queued' AND run_after > ?",
                (now, now, job_id, now),
            )
            return _written_job(conn, job_id)

        return await self._tx(run)

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
            swept: list[Job] = []
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
                swept.append(_written_job(conn, job.id))
            return swept

        return await self._tx(run)

    async def add_event(self, job_id: int | None, kind: str, reason: str, data: dict[str, Any] | None = None) -> None:
        await self._tx(lambda conn, now: _add_event(conn, job_id, now, kind, None, None, reason, data))

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
