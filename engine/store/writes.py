"""Inserts shared by several concerns, each run inside its caller's transaction: events, outbox messages,
reviews and new jobs (``_enqueue``, with its idempotency key and its ``enqueued`` event)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from engine.models import Job, JobState, NewJob, NewOutbox, NewReview
from engine.store.rows import _job, _written_job


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
    assert cur.lastrowid is not None  # every INSERT into a rowid table sets it
    job_id = cur.lastrowid
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
    return _written_job(conn, job_id), True


def _title_from(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:57] + "..."


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
