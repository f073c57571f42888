"""The job state table: every pair of states is either legal or raises, exactly as the table says."""

from __future__ import annotations

import itertools

import pytest

from engine.errors import IllegalTransition
from engine.models import TERMINAL_STATES, JobState
from engine.states import TRANSITIONS, check_transition, is_legal

S = JobState
ALL_PAIRS = list(itertools.product(JobState, JobState))
# The lifecycle of DESIGN.md section 3, written out independently of engine/states.py.
EXPECTED_LEGAL = {
    (S.QUEUED, S.RUNNING), (S.QUEUED, S.CANCELLED), (S.QUEUED, S.SNOOZED), (S.QUEUED, S.FAILED),
    (S.RUNNING, S.DONE), (S.RUNNING, S.REVIEWING), (S.RUNNING, S.QUEUED), (S.RUNNING, S.RETRY_WAIT),
    (S.RUNNING, S.SNOOZED), (S.RUNNING, S.NEEDS_INPUT), (S.RUNNING, S.NEEDS_HUMAN), (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.REVIEWING, S.DONE), (S.REVIEWING, S.REVISING), (S.REVIEWING, S.NEEDS_HUMAN), (S.REVIEWING, S.SNOOZED),
    (S.REVIEWING, S.FAILED), (S.REVIEWING, S.CANCELLED), (S.REVIEWING, S.REVIEWING),
    (S.REVISING, S.QUEUED), (S.REVISING, S.CANCELLED),
    (S.SNOOZED, S.QUEUED), (S.SNOOZED, S.REVIEWING), (S.SNOOZED, S.CANCELLED), (S.SNOOZED, S.FAILED),
    (S.RETRY_WAIT, S.QUEUED), (S.RETRY_WAIT, S.CANCELLED), (S.RETRY_WAIT, S.FAILED),
    (S.NEEDS_INPUT, S.QUEUED), (S.NEEDS_INPUT, S.CANCELLED),
    (S.NEEDS_HUMAN, S.DONE), (S.NEEDS_HUMAN, S.QUEUED), (S.NEEDS_HUMAN, S.REVISING), (S.NEEDS_HUMAN, S.CANCELLED),
    (S.NEEDS_HUMAN, S.FAILED),
    (S.FAILED, S.QUEUED), (S.CANCELLED, S.QUEUED),
}


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_table_is_the_designed_lifecycle() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == EXPECTED_LEGAL


@pytest.mark.parametrize(("from_state", "to_state"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair(from_state: JobState, to_state: JobState) -> None:
    legal = (from_state, to_state) in EXPECTED_LEGAL
    assert is_legal(from_state, to_state) is legal
    if legal:
        check_transition(7, from_state, to_state)
    else:
        with pytest.raises(IllegalTransition) as caught:
            check_transition(7, from_state, to_state)
        assert caught.value.job_id == 7
        assert (caught.value.from_state, caught.value.to_state) == (from_state, to_state)
        assert f"{from_state.value} -> {to_state.value}" in str(caught.value)


def test_done_is_final_and_only_retry_leaves_failed_or_cancelled() -> None:
    assert TRANSITIONS[S.DONE] == frozenset()
    for state in TERMINAL_STATES - {S.DONE}:
        assert TRANSITIONS[state] == frozenset({S.QUEUED})


def test_every_live_state_can_be_cancelled() -> None:
    for state in set(JobState) - TERMINAL_STATES:
        assert is_legal(state, S.CANCELLED), state
