"""Row -> model mapping: each table's ``sqlite3.Row`` turned into its pydantic model (JSON columns decoded)."""

from __future__ import annotations

import json
import sqlite3

from engine.models import BackendState, Event, Job, OutboxMessage, Review, Schedule


def _job(row: sqlite3.Row) -> Job:
    # Validation (pydantic-core, compiled) is both safer and faster here than model_construct.
    return Job.model_validate(dict(row))


def _job_or_none(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row is not None else None


def _written_job(conn: sqlite3.Connection, job_id: int) -> Job:
    """A job this transaction has just written (so it exists), read back."""
    return _job(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


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
