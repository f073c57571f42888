"""Every job state change goes through ``_set_state``, which checks the transition table and writes an event
row in the same transaction. The errors a state change raises (``LeaseLost``, ``GateRefused``) live in
``engine.errors``."""

from __future__ import annotations

import sqlite3
from typing import Any

from engine import notices
from engine.errors import LeaseLost
from engine.models import Job, JobState, Priority
from engine.states import check_transition
from engine.store.rows import _job_or_none
from engine.store.writes import _add_event, _add_outbox

JOB_COLUMNS = frozenset(Job.model_fields) - {"id"}


_CLEAR_LEASE: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


def _set_state(
    conn: sqlite3.Connection,
    job: Job,
    to_state: JobState,
    reason: str,
    now: float,
    fields: dict[str, Any],
    *,
    owner: str | None = None,
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
    fence, fence_params = ("AND lease_owner = ?", (owner,)) if owner is not None else ("", ())
    cur = conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ? {fence}",
        (*params, job.id, job.state.value, *fence_params),
    )
    if cur.rowcount != 1:
        raise LeaseLost(f"job {job.id}: lease lost or state changed concurrently")
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
        parent, "(none: no review was completed)", None, why=f"No reviewer could finish: {why}.",
        result=parent.result_summary,
    )
    _add_outbox(conn, message, now)


def _to_sql(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (JobState, Priority)):
        return value.value
    return value
