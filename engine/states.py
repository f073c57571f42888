"""The job state machine: one explicit table of legal transitions.

``check_transition`` is the only gate; the store calls it before every state write and records an event.
An illegal transition raises ``IllegalTransition`` and nothing is written.
"""

from __future__ import annotations

from engine.errors import IllegalTransition
from engine.models import JobState

S = JobState

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.SNOOZED, S.FAILED}),
    S.RUNNING: frozenset(
        {S.DONE, S.REVIEWING, S.QUEUED, S.RETRY_WAIT, S.SNOOZED, S.NEEDS_INPUT, S.NEEDS_HUMAN, S.FAILED, S.CANCELLED}
    ),
    S.REVIEWING: frozenset({S.DONE, S.REVISING, S.NEEDS_HUMAN, S.SNOOZED, S.FAILED, S.CANCELLED, S.REVIEWING}),
    S.REVISING: frozenset({S.QUEUED, S.CANCELLED}),
    S.SNOOZED: frozenset({S.QUEUED, S.REVIEWING, S.CANCELLED, S.FAILED}),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.CANCELLED, S.FAILED}),
    S.NEEDS_INPUT: frozenset({S.QUEUED, S.CANCELLED}),
    S.NEEDS_HUMAN: frozenset({S.DONE, S.QUEUED, S.REVISING, S.CANCELLED, S.FAILED}),
    S.DONE: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),  # operator retry
    S.CANCELLED: frozenset({S.QUEUED}),  # operator retry
}


def is_legal(from_state: JobState, to_state: JobState) -> bool:
    return to_state in TRANSITIONS[from_state]


def check_transition(job_id: int, from_state: JobState, to_state: JobState) -> None:
    if not is_legal(from_state, to_state):
        raise IllegalTransition(job_id, from_state, to_state)
