"""Routing: which backends may take a job now, in which order, and why the others may not.

The chain comes from the settings (a job type's configured chain, else its tier's default chain). Each
backend is then checked: disabled (auth), paused (rate limit, quota, circuit open, operator), the maker's own
family for reviews, context window, per-backend concurrency, the daily USD cap. Each backend passed over gets
a ``SkipReason``; the ones about a backend's state (paused, disabled, budget) are written to the job's events so
the routing can be read back. The plan keeps the chain and the backend states it was made from:
``engine.policy`` decides the end of a run from them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from engine.backends.base import Backend
from engine.clock import Clock
from engine.models import BackendState
from engine.settings import BackendConfig, Settings

CHARS_PER_TOKEN = 4
# Backends that act on files in a job's folder or worktree (the CLI workers; the simulated ones stand in for them).
FILE_CAPABLE_KINDS = frozenset({"claude_cli", "codex_cli", "sim"})


class SkipReason(Enum):
    """Why routing passed a backend over. The value is the text written to the job's events."""

    NOT_CONFIGURED = "not configured"
    OPERATOR_AVOIDED = "the operator asked for another backend"
    DISABLED_IN_CONFIG = "disabled in config"
    DISABLED = "disabled"  # by the engine: its credentials failed
    PAUSED = "paused"  # rate limit, quota, circuit open, operator
    SAME_FAMILY = "same family as the maker"
    CONTEXT_TOO_SMALL = "context window too small"
    AT_CONCURRENCY_LIMIT = "at its concurrency limit"
    DAILY_BUDGET = "daily budget reached"
    WINDOW_KEPT = "its usage window is kept for operator work"  # quota-aware routing (engine.policy)
    WINDOW_TOO_SHORT = "its usage window will likely not last this job"
    NEEDS_WORKSPACE = "cannot act on files, and this job needs a workspace"

    @property
    def noteworthy(self) -> bool:
        """A skip for the backend's state is part of the job's routing history; a routine one (busy, off in the
        config) is not, so a healthy job costs no extra write."""
        return self in (SkipReason.PAUSED, SkipReason.DISABLED, SkipReason.DAILY_BUDGET, SkipReason.NEEDS_WORKSPACE,
                        SkipReason.WINDOW_KEPT, SkipReason.WINDOW_TOO_SHORT)


@dataclass(frozen=True)
class Skip:
    """One backend passed over: the reason, and for a pause or a disable what the backend state says."""

    reason: SkipReason
    note: str = ""  # the pause reason (paused) or what disabled it (disabled)
    until: float | None = None  # paused: when it comes back

    @property
    def text(self) -> str:
        """The display text, as the job's routing event has always carried it."""
        if self.reason is SkipReason.PAUSED:
            return f"paused ({self.note}) until {self.until or 0:.0f}"
        if self.reason is SkipReason.DISABLED:
            return f"disabled: {self.note}"
        if self.note:
            return f"{self.reason.value} ({self.note})"
        return str(self.reason.value)  # str already; narrowed past two members, mypy loses the value's type


@dataclass
class RoutePlan:
    """The backends that may take a job now, in order, and the facts the plan was made from: the chain and the
    backend states. The policy decides the end of a run from these, without reading the database again."""

    chain: list[str]
    states: dict[str, BackendState]
    candidates: list[BackendConfig] = field(default_factory=list)
    skipped: dict[str, Skip] = field(default_factory=dict)
    # Quota-aware routing deferred the job: the subscription windows it waits for reset then (backend -> time).
    window_waits: dict[str, float] = field(default_factory=dict)

    def blocked_by(self, reason: SkipReason) -> bool:
        """True if some backend of the chain was passed over for ``reason``."""
        return any(skip.reason is reason for skip in self.skipped.values())

    def none_can_act_on_files(self) -> bool:
        """No candidate, and no backend of the chain can act on files: waiting will not help this job."""
        static = (SkipReason.NEEDS_WORKSPACE, SkipReason.NOT_CONFIGURED, SkipReason.DISABLED_IN_CONFIG)
        reasons = [skip.reason for skip in self.skipped.values()]
        return not self.candidates and SkipReason.NEEDS_WORKSPACE in reasons and all(r in static for r in reasons)

    def noteworthy_skips(self) -> dict[str, str]:
        """The skips worth an event of the job (name -> display text)."""
        return {name: skip.text for name, skip in self.skipped.items() if skip.reason.noteworthy}


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
        needs_files: bool = False,
    ) -> RoutePlan:
        now = self._clock.now()
        plan = RoutePlan(chain=self._settings.chain_for(job_type), states=states)
        needed_tokens = prompt_chars // CHARS_PER_TOKEN
        over_budget = spent_today_usd >= self._settings.engine.daily_budget_usd
        for name in plan.chain:
            if name not in self._backends:
                plan.skipped[name] = Skip(SkipReason.NOT_CONFIGURED)
                continue
            if name == avoid_backend:
                plan.skipped[name] = Skip(SkipReason.OPERATOR_AVOIDED)
                continue
            config = self._backends[name].config
            if needs_files and config.kind not in FILE_CAPABLE_KINDS:
                plan.skipped[name] = Skip(SkipReason.NEEDS_WORKSPACE)
                continue
            skip = self._unavailable(config, states.get(name), now, needed_tokens, exclude_family, over_budget)
            if skip is None:
                plan.candidates.append(config)
            else:
                plan.skipped[name] = skip
        return plan

    def _unavailable(
        self,
        config: BackendConfig,
        state: BackendState | None,
        now: float,
        needed_tokens: int,
        exclude_family: str | None,
        over_budget: bool,
    ) -> Skip | None:
        if not config.enabled:
            return Skip(SkipReason.DISABLED_IN_CONFIG)
        if state is not None and state.disabled:
            return Skip(SkipReason.DISABLED, state.pause_reason or "credentials")
        if state is not None and state.paused_until is not None and state.paused_until > now:
            return Skip(SkipReason.PAUSED, str(state.pause_reason), state.paused_until)
        if exclude_family is not None and config.family == exclude_family:
            return Skip(SkipReason.SAME_FAMILY)
        if needed_tokens > config.context_window:
            return Skip(SkipReason.CONTEXT_TOO_SMALL)
        if self.running[config.name] >= config.max_concurrency:
            return Skip(SkipReason.AT_CONCURRENCY_LIMIT)
        if over_budget and config.pay_per_token:
            return Skip(SkipReason.DAILY_BUDGET)
        return None
