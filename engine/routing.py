"""Routing: which backends may take a job now, in which order, and why the others may not.

The chain comes from the settings (a job type's configured chain, else its tier's default chain). Each
backend is then checked: disabled (auth), paused (rate limit, quota, circuit open, operator), the maker's own
family for reviews, context window, per-backend concurrency, the daily USD cap. The reasons are written to
the job's events so every routing decision can be read back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from engine.backends.base import Backend
from engine.clock import Clock
from engine.models import BackendState
from engine.settings import BackendConfig, Settings

CHARS_PER_TOKEN = 4


@dataclass
class RoutePlan:
    candidates: list[BackendConfig]
    skipped: dict[str, str] = field(default_factory=dict)
    # Earliest moment a paused backend of the chain comes back (for snoozing).
    earliest_resume: float | None = None
    blocked_by_family: bool = False
    blocked_by_budget: bool = False
    blocked_by_concurrency: bool = False


class Router:
    def __init__(self, settings: Settings, backends: dict[str, Backend], clock: Clock) -> None:
        self._settings = settings
        self._backends = backends
        self._clock = clock
        self.running: Counter[str] = Counter()
        # The rate-limit cache as last read from backend_state; the engine refreshes it on every dispatch.
        self.states: dict[str, BackendState] = {}
        # Estimated price of pay-per-token calls in flight, counted against the daily cap until they finish.
        self.in_flight_usd = 0.0

    def backend(self, name: str) -> Backend:
        return self._backends[name]

    def plan(
        self,
        job_type: str,
        states: dict[str, BackendState],
        *,
        prompt_chars: int,
        exclude_family: str | None = None,
        spent_today_usd: float = 0.0,
        avoid_backend: str | None = None,
    ) -> RoutePlan:
        now = self._clock.now()
        plan = RoutePlan(candidates=[])
        needed_tokens = prompt_chars // CHARS_PER_TOKEN
        over_budget = spent_today_usd >= self._settings.engine.daily_budget_usd
        for name in self._settings.chain_for(job_type):
            if name not in self._backends:
                plan.skipped[name] = "not configured"
                continue
            if name == avoid_backend:
                plan.skipped[name] = "the operator asked for another backend"
                continue
            config = self._backends[name].config
            state = states.get(name)
            reason = self._unavailable(config, state, now, needed_tokens, exclude_family, over_budget)
            if reason is None:
                plan.candidates.append(config)
                continue
            plan.skipped[name] = reason
            if reason.startswith("paused") and state is not None and state.paused_until is not None:
                plan.earliest_resume = min(plan.earliest_resume or state.paused_until, state.paused_until)
            plan.blocked_by_family |= reason == "same family as the maker"
            plan.blocked_by_budget |= reason == "daily budget reached"
            plan.blocked_by_concurrency |= reason == "at its concurrency limit"
        return plan

    def _unavailable(
        self,
        config: BackendConfig,
        state: BackendState | None,
        now: float,
        needed_tokens: int,
        exclude_family: str | None,
        over_budget: bool,
    ) -> str | None:
        if not config.enabled:
            return "disabled in config"
        if state is not None and state.disabled:
            return f"disabled: {state.pause_reason or 'credentials'}"
        if state is not None and state.paused_until is not None and state.paused_until > now:
            return f"paused ({state.pause_reason}) until {state.paused_until:.0f}"
        if exclude_family is not None and config.family == exclude_family:
            return "same family as the maker"
        if needed_tokens > config.context_window:
            return "context window too small"
        if self.running[config.name] >= config.max_concurrency:
            return "at its concurrency limit"
        if over_budget and config.pay_per_token:
            return "daily budget reached"
        return None
