"""Capacity: slots, the reserved operator slot, the 5-minute token budget and backpressure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.clock import Clock
from engine.settings import EngineSettings

TOKEN_WINDOW_S = 300.0


@dataclass(frozen=True)
class SlotLimits:
    free_slots: int  # any job of the operator may take one of these
    background_limit: int  # at most this many non-operator jobs may start now


class Capacity:
    def __init__(self, settings: EngineSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def add_tokens(self, tokens: int) -> None:
        if tokens > 0:
            self._tokens.append((self._clock.now(), tokens))
            self._token_sum += tokens

    def tokens_in_window(self) -> int:
        horizon = self._clock.now() - TOKEN_WINDOW_S
        while self._tokens and self._tokens[0][0] < horizon:
            self._token_sum -= self._tokens.popleft()[1]
        return self._token_sum

    def limits(self, running_operator: int, running_background: int) -> SlotLimits:
        s = self._settings
        free = max(0, s.max_slots - running_operator - running_background)
        background_room = max(0, s.max_slots - s.reserved_operator_slots - running_background)
        if self.tokens_in_window() >= s.token_budget_5min:
            background_room = 0  # the budget is spent: only the operator's own work starts
        return SlotLimits(free_slots=free, background_limit=min(free, background_room))

    def backpressure(self, queue_depth: int) -> bool:
        s = self._settings
        return (
            queue_depth > s.backpressure_queue_depth
            or self.tokens_in_window() >= s.backpressure_token_pct * s.token_budget_5min
        )
