"""Keeping the subscription windows (engine/quota.py) up to date, and what their changes tell the operator.

After every call to a subscription backend, ``after_call`` applies what the backend reported (the CLI's
``rate_limit_event``, or a rate limit with a reset time) and Switchboard's own count of the run's tokens, in one
transaction per backend. A reset time in the past or too far ahead is clamped and logged once per window kind.
A window that enters warning while the operator's own work is queued sends one warning. Jobs passed over for a
window are counted (moved, deferred); when a window with deferred jobs reopens, one notice covers the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from engine import notices
from engine.backends.base import Backend, BackendRequest, BackendResult
from engine.clock import Clock
from engine.failures import FailureClass
from engine.models import NewOutbox
from engine.quota import (
    HOUR_S,
    WINDOW_LENGTH_S,
    QuotaWindow,
    WindowReport,
    WindowStatus,
    add_usage,
    clamp_resets_at,
    ends_at,
    fresh,
    observe,
    plan_of,
    roll,
)
from engine.routing import RoutePlan
from engine.settings import BackendConfig, Settings
from engine.store import Store

log = logging.getLogger(__name__)

# A backend that reports no windows still gets Switchboard's own count, in a window of this kind.
OWN_COUNT_KIND = "five_hour"
# Warming a window: a request as small as a request can be, to the CLI backends that have windows.
WARMABLE_KINDS = ("claude_cli", "codex_cli")
WARM_PROMPT = "Reply with the single word OK."
WARM_TIMEOUT_S = 120.0
# A rate limit that lifts sooner than this is a burst limit, not a usage window running out.
MIN_WINDOW_WAIT_S = 900.0


def tokens_of(result: BackendResult) -> int:
    """What a run costs a window: tokens in and out and cache writes (cache reads are nearly free)."""
    usage = result.usage
    return usage.input_tokens + usage.output_tokens + usage.cache_write_tokens


def reports_of(result: BackendResult, now: float) -> list[WindowReport]:
    """The windows a run reported; a rate limit with a reset time some way off and no report of its own is an
    exhausted window (of the kind its reset time suggests: within five hours, the five-hour one). A short one is
    a burst limit, not a window: it says nothing of the window's size."""
    reports = list(result.windows)
    failure = result.failure
    if failure is not None and failure.failure_class is FailureClass.RATE_LIMITED and failure.resume_at \
            and failure.resume_at - now >= MIN_WINDOW_WAIT_S \
            and not any(r.status is WindowStatus.REJECTED for r in reports):
        kind = OWN_COUNT_KIND if failure.resume_at - now <= WINDOW_LENGTH_S[OWN_COUNT_KIND] else "seven_day"
        reports.append(WindowReport(kind=kind, status=WindowStatus.REJECTED, resets_at=failure.resume_at))
    return reports


class WindowTracker:
    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._clamp_logged: set[tuple[str, str]] = set()
        # Subscription backends by plan: the backends of one CLI login and model family share its windows.
        self._plans: dict[str, list[str]] = {}
        for config in settings.backends:
            if config.subscription:
                self._plans.setdefault(plan_of(config.kind, config.family), []).append(config.name)

    def plan(self, name: str) -> str | None:
        """The plan of a subscription backend (None: not a subscription, no window)."""
        return next((plan for plan, names in self._plans.items() if name in names), None)

    def plans(self) -> dict[str, list[str]]:
        """The subscription plans and their backends, in the configuration's order."""
        return {plan: list(names) for plan, names in self._plans.items()}

    def label(self, plan: str) -> str:
        """How the operator reads a plan: its backends' names."""
        return ", ".join(self._plans.get(plan, [plan]))

    async def by_backend(self, names: list[str]) -> dict[str, list[QuotaWindow]]:
        """The windows of the named subscription backends (none read when the chain has no subscription)."""
        plans = {name: plan for name in names if (plan := self.plan(name)) is not None}
        if not plans:
            return {}
        by_plan: dict[str, list[QuotaWindow]] = {}
        for window in await self._store.quota_windows():
            by_plan.setdefault(window.plan, []).append(window)
        return {name: by_plan[plan] for name, plan in plans.items() if plan in by_plan}

    async def after_call(self, config: BackendConfig, result: BackendResult) -> None:
        """Apply one run's reports and own count to the windows of the backend's plan."""
        plan = self.plan(config.name)
        if plan is None:
            return
        now = self._clock.now()
        reports = [(r, self._clamped(plan, r, now)) for r in reports_of(result, now)]
        operator_waiting = any(r.status is WindowStatus.WARNING for r, _ in reports) and \
            await self._store.operator_work_waiting() > 0
        tokens, label = tokens_of(result), self.label(plan)

        def change(current: dict[str, QuotaWindow], at: float) -> tuple[list[QuotaWindow], list[NewOutbox]]:
            windows = {k: roll(w, at) for k, w in current.items()}
            messages = _all_resumed(current.values(), at, label)
            for report, resets_at in reports:
                before = windows.get(report.kind) or fresh(plan, report.kind, at)
                after = observe(before, report, resets_at, at)
                if operator_waiting and _entered_warning(before, after):
                    messages.append(_warning(after, label, routing=self._settings.quota.enabled))
                windows[report.kind] = after
            if not windows:
                windows[OWN_COUNT_KIND] = fresh(plan, OWN_COUNT_KIND, at)
            for kind, window in windows.items():
                windows[kind] = add_usage(window, tokens, at)
            return list(windows.values()), messages

        await self._store.update_quota_windows(plan, change)

    async def after_routing(self, plan: RoutePlan, moved: list[str]) -> None:
        """Count the job on the windows it was moved off or deferred for (once per plan)."""
        deferred = {p for n in plan.window_waits if (p := self.plan(n)) is not None}
        touched = deferred | {p for n in moved if (p := self.plan(n)) is not None}
        for name in touched:
            field, label = "deferred" if name in deferred else "moved", self.label(name)

            def change(current: dict[str, QuotaWindow], at: float, field: str = field,
                       label: str = label) -> tuple[list[QuotaWindow], list[NewOutbox]]:
                windows = [roll(w, at) for w in current.values()]
                messages = _all_resumed(current.values(), at, label)
                return [w.model_copy(update={field: getattr(w, field) + 1}) for w in windows], messages

            await self._store.update_quota_windows(name, change)

    async def resume_due(self) -> int:
        """Windows with deferred jobs whose reset has come: one notice each, and the window starts again.
        Returns how many plans reopened (the pulse calls this every tick)."""
        now = self._clock.now()
        due = {w.plan for w in await self._store.quota_windows() if w.deferred and (ends_at(w) or now + 1) <= now}
        for name in due:
            label = self.label(name)

            def change(current: dict[str, QuotaWindow], at: float,
                       label: str = label) -> tuple[list[QuotaWindow], list[NewOutbox]]:
                return [roll(w, at) for w in current.values()], _all_resumed(current.values(), at, label)

            await self._store.update_quota_windows(name, change)
        return len(due)

    async def next_resume_at(self) -> float | None:
        """The earliest reset of a window that has jobs waiting for it."""
        resets = [ends_at(w) for w in await self._store.quota_windows() if w.deferred]
        return min((r for r in resets if r is not None), default=None)

    async def warm(self, backends: dict[str, Backend]) -> list[str]:
        """``[quota] warm_windows``: a tiny request to one CLI backend of each subscription plan whose five-hour
        window is not running, so a fresh one starts now (at ``warm_at``) and lines up with the operator's day.
        Returns the backends asked; what they reported is recorded like any run's."""
        now = self._clock.now()
        current = await self.by_backend(list(backends))
        warmed: list[str] = []
        plans: set[str] = set()
        for name, backend in backends.items():
            config, plan = backend.config, self.plan(name)
            if plan is None or plan in plans or not config.enabled or config.kind not in WARMABLE_KINDS:
                continue
            five = [w for w in current.get(name, []) if w.kind == OWN_COUNT_KIND]
            if any((end := ends_at(roll(w, now))) is not None and end > now for w in five):
                continue  # a window is already running: a request now would not start a fresh one
            plans.add(plan)
            result = await backend.run(BackendRequest(job_id=0, job_type="maintenance", prompt=WARM_PROMPT,
                                                      max_turns=1, permission_mode="default", timeout_s=WARM_TIMEOUT_S))
            await self.after_call(config, result)
            warmed.append(name)
            outcome = "ok" if result.ok else f"{result.failure.failure_class.value}" if result.failure else "?"
            await self._store.add_event(None, "quota", f"warmed the five-hour window of {self.label(plan)} "
                                                       f"through {name} ({outcome})")
        return warmed

    def _clamped(self, plan: str, report: WindowReport, now: float) -> float | None:
        clamped = clamp_resets_at(report.resets_at, report.kind, now)
        key = (plan, report.kind)
        if clamped.clamped and key not in self._clamp_logged:
            self._clamp_logged.add(key)
            log.warning("subscription %s: the %s window's reset time %s is in the past or too far ahead; using %s "
                        "(said once)", self.label(plan), report.kind, report.resets_at, _hm(clamped.value))
        return clamped.value


def _all_resumed(windows: Iterable[QuotaWindow], now: float, label: str) -> list[NewOutbox]:
    return [m for w in windows if (m := _resumed(w, now, label)) is not None]


def _resumed(window: QuotaWindow, now: float, label: str) -> NewOutbox | None:
    """The one notice for the jobs that waited for this window, once its reset has come."""
    reset = ends_at(window)
    if not window.deferred or reset is None or reset > now:
        return None
    return notices.info(
        f"quota:resumed:{window.plan}:{window.kind}:{int(reset)}",
        f"The {window.kind.replace('_', '-')} usage window of {label} reopened at "
        f"{_hm(reset)}: {window.deferred} deferred job(s) start now.",
    )


def _entered_warning(before: QuotaWindow, after: QuotaWindow) -> bool:
    """The window is in warning now and was not, or this is a new window (its reset an hour or more later)."""
    new = (after.resets_at or 0.0) - (before.resets_at or 0.0) > HOUR_S
    return after.status is WindowStatus.WARNING and (before.status is not WindowStatus.WARNING or new)


def _warning(window: QuotaWindow, label: str, *, routing: bool) -> NewOutbox:
    share = f" ({window.utilization:.0%} used)" if window.utilization is not None else ""
    then = ("Your own work keeps it; background work moves to other backends or waits for the reset." if routing
            else "Quota-aware routing is off ([quota] enabled = false): all work goes on using it until it runs out.")
    return notices.alert(
        f"quota:warning:{window.plan}:{window.kind}:{int(window.resets_at or 0)}",
        f"The {window.kind.replace('_', '-')} usage window of {label} is in warning{share}; it resets "
        f"{_hm(window.resets_at)}. {then}",
        urgent=False,
    )


def _hm(ts: float | None) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ts)) if ts is not None else "at an unknown time"
