"""Capacity on a fake clock: slots, the reserved operator slot, the 5-minute token window, backpressure."""

from __future__ import annotations

import pytest

from engine.capacity import TOKEN_WINDOW_S, Capacity
from engine.clock import FakeClock
from engine.settings import EngineSettings


def capacity(clock: FakeClock, **overrides: float) -> Capacity:
    return Capacity(EngineSettings(**overrides), clock)


def test_reserved_operator_slot() -> None:
    cap = capacity(FakeClock())  # max_slots 20, one reserved for the operator
    limits = cap.limits(running_operator=0, running_background=19)
    assert limits.free_slots == 1  # the operator may still start at once
    assert limits.background_limit == 0  # a 20th background job may not
    assert cap.limits(0, 18).background_limit == 1
    assert cap.limits(1, 19).free_slots == 0


def test_operator_jobs_may_use_every_slot() -> None:
    cap = capacity(FakeClock())
    limits = cap.limits(running_operator=19, running_background=0)
    assert (limits.free_slots, limits.background_limit) == (1, 1)
    assert cap.limits(20, 0).free_slots == 0


@pytest.mark.parametrize(("running_bg", "expected_bg"), [(0, 19), (10, 9), (19, 0), (25, 0)])
def test_background_limit_never_exceeds_free_slots(running_bg: int, expected_bg: int) -> None:
    limits = capacity(FakeClock()).limits(0, running_bg)
    assert limits.background_limit == expected_bg
    assert 0 <= limits.background_limit <= limits.free_slots


def test_token_budget_window_blocks_background_then_releases() -> None:
    clock = FakeClock()
    cap = capacity(clock, token_budget_5min=10_000)
    cap.add_tokens(6_000)
    clock.advance(60)
    cap.add_tokens(3_999)
    assert cap.limits(0, 0).background_limit == 19  # 9,999 < budget
    cap.add_tokens(1)
    assert cap.tokens_in_window() == 10_000
    blocked = cap.limits(0, 0)
    assert blocked.background_limit == 0  # budget spent: background work waits
    assert blocked.free_slots == 20  # the operator's own work still starts

    clock.advance(TOKEN_WINDOW_S - 60 + 1)  # the first 6,000 tokens leave the window
    assert cap.tokens_in_window() == 4_000
    assert cap.limits(0, 0).background_limit == 19

    clock.advance(60)
    assert cap.tokens_in_window() == 0


def test_tokens_exactly_at_the_window_edge_still_count() -> None:
    clock = FakeClock()
    cap = capacity(clock, token_budget_5min=100)
    cap.add_tokens(100)
    clock.advance(TOKEN_WINDOW_S)
    assert cap.limits(0, 0).background_limit == 0
    clock.advance(0.001)
    assert cap.limits(0, 0).background_limit == 19


def test_zero_and_negative_tokens_are_ignored() -> None:
    cap = capacity(FakeClock())
    cap.add_tokens(0)
    cap.add_tokens(-5)
    assert cap.tokens_in_window() == 0


def test_backpressure_on_queue_depth() -> None:
    cap = capacity(FakeClock(), backpressure_queue_depth=20)
    assert cap.backpressure(20) is False  # at the threshold: not yet
    assert cap.backpressure(21) is True


def test_backpressure_on_token_use_and_off_when_the_window_moves_on() -> None:
    clock = FakeClock()
    cap = capacity(clock, token_budget_5min=1_000, backpressure_token_pct=0.8)
    cap.add_tokens(799)
    assert cap.backpressure(0) is False
    cap.add_tokens(1)
    assert cap.backpressure(0) is True
    clock.advance(TOKEN_WINDOW_S + 1)
    assert cap.backpressure(0) is False
