"""The pulse and schedules: what Switchboard does without being asked (DESIGN.md section 11).

Three activities, each a plain async method driven by the injected clock and decided from the database, so a
restart or a long outage is handled by data, not by in-memory timers:

- ``fire_due_schedules()``: every schedule whose ``next_run_at`` has passed enqueues exactly one job (fenced on
  ``next_run_at`` in ``Store.fire_schedule``); runs missed while the process was down become one catch-up run
  (``catch_up``) or are recorded as missed (an event and a message), never silently skipped.
- ``run_once()`` (every ``pulse.interval_min``): health snapshot, credential checks ahead of expiry (and
  re-enabling a backend disabled for its credentials once its check passes), stuck jobs, project advancement,
  memory maintenance. Each step's failure is alerted through the outbox, never silent.
- ``digest_if_due()`` (daily at ``pulse.digest_time``): the last 24 hours from the store's numbers.
- ``warm_windows()`` (daily at ``quota.warm_at`` when ``quota.warm_windows``): a tiny request to each
  subscription CLI backend whose five-hour window is not running starts a fresh one, lined up with the day.
- ``resume_windows()``: a subscription window with deferred jobs that has reopened gets one notice for the batch
  (the jobs themselves wake at its reset: they were snoozed until then).

``tick()`` runs whatever is due now. The scheduler only enqueues: the pulse writes jobs and outbox rows, the
engine runs the jobs. APScheduler (``PulseTrigger``) is only the real-clock trigger that calls ``tick()``;
tests drive the same methods on a ``FakeClock`` with ``advance_to``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import shutil
import time as _time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import prompts
from engine import notices
from engine.backends.base import Backend, CredentialStatus
from engine.clock import Clock
from engine.errors import InvalidJob, describe_error
from engine.job_factory import new_job
from engine.models import Job, JobState, Priority, Schedule, Source
from engine.quota import QuotaWindow, summary
from engine.sandbox import Sandbox
from engine.schedule_times import (
    due_slots,
    in_quiet_hours,
    latest_daily_at_or_before,
    local_date,
    next_daily_after,
    zone,
)
from engine.settings import Settings
from engine.store import NewOutbox, Stats, Store
from engine.store.stats import saved_key
from engine.windows import WindowTracker
from engine.workspace import Workspace
from engine.worktrees import ProjectWork

__all__ = ["Digest", "Pulse", "PulseReport", "PulseTrigger"]

log = logging.getLogger(__name__)

# Memory maintenance (prune, optimize) is heavier than a health check: at most once per this period.
MEMORY_MAINTENANCE_EVERY_S = 6 * 3600.0
# A schedule slot served within this long of its time is on time; later means the process was down.
SCHEDULE_GRACE_S = 300.0
# A running job whose heartbeat is this many leases old is stuck (the orphan sweep should have caught it).
STALE_HEARTBEAT_LEASES = 5
DISK_LOW_BYTES = 1 << 30
DISK_LOW_FRACTION = 0.05
PROJECT_JOB_TYPE = "analysis"
CREDENTIAL_CHECK_TIMEOUT_S = 60.0
# Warming a subscription window later than this after quota.warm_at (the process was down) would no longer line
# the window up with the operator's day: that day is skipped.
WARM_LATE_S = 3600.0
MaintainMemory = Callable[[], Awaitable[str | None]]


@dataclass
class PulseReport:
    at: float
    health: dict[str, Any] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    advanced: dict[str, int] = field(default_factory=dict)  # project -> job id
    memory: str | None = None
    pruned: list[int] = field(default_factory=list)  # jobs whose finished worktree was removed
    failures: list[str] = field(default_factory=list)


@dataclass
class Digest:
    date: str
    since: float
    until: float
    text: str
    numbers: dict[str, Any]


class Pulse:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        backends: dict[str, Backend],
        *,
        maintain_memory: MaintainMemory | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.backends = backends
        self.maintain_memory = maintain_memory
        self._wake = wake
        self.tz = zone(settings.pulse.timezone)
        self.interval_s = settings.pulse.interval_min * 60.0
        self._windows = WindowTracker(settings, store, clock)

    # ---- driving ------------------------------------------------------------------------------------

    async def tick(self) -> list[str]:
        """Run every activity that is due now, by the database's record. Returns the names of those that ran."""
        ran: list[str] = []
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("schedules", self.fire_due_schedules),
            ("digest", self.digest_if_due),
            ("pulse", self._pulse_if_due),
            ("windows", self.resume_windows),
            ("warm", self.warm_windows),
        ]
        for name, step in steps:
            try:
                if await step():
                    ran.append(name)
            except Exception as exc:  # the trigger must keep going; the operator hears about it
                await self._alert_failure(name, exc)
        return ran

    async def next_due_at(self) -> float:
        """The earliest moment something becomes due (now, if something already is)."""
        now = self.clock.now()
        slot = await self.store.kv_get("pulse:slot")
        current = self._slot(now)
        candidates = [now if slot is None or int(slot) < current else (current + 1) * self.interval_s]
        candidates += [s.next_run_at for s in await self.store.list_schedules() if s.enabled]
        digest_day = await self.store.kv_get("digest:last")
        latest = latest_daily_at_or_before(now, self.settings.pulse.digest_time, self.tz)
        if digest_day is not None and digest_day < local_date(latest, self.tz).isoformat():
            candidates.append(now)
        candidates.append(next_daily_after(now, self.settings.pulse.digest_time, self.tz))
        if self.settings.quota.enabled and self.settings.quota.warm_windows:
            candidates.append(next_daily_after(now, self.settings.quota.warm_at, self.tz))
        reopens = await self._windows.next_resume_at()
        if reopens is not None:
            candidates.append(reopens)
        return max(now, min(candidates))

    async def advance_to(self, when: float) -> int:
        """For tests and the simulator on a ``FakeClock``: move time to ``when`` stopping at every moment
        something is due, in time order, and tick there. Returns the number of ticks."""
        set_time = getattr(self.clock, "set", None)
        if set_time is None:
            raise TypeError("advance_to needs a clock that can be set (FakeClock)")
        ticks = 0
        while True:
            await self.tick()
            ticks += 1
            now = self.clock.now()
            upcoming = max(await self.next_due_at(), now + 1.0)  # a failing activity retries, never spins
            if upcoming > when:
                break
            set_time(upcoming)
        if self.clock.now() < when:
            set_time(when)
            await self.tick()
            ticks += 1
        return ticks

    def _slot(self, now: float) -> int:
        return math.floor(now / self.interval_s)

    async def _pulse_if_due(self) -> bool:
        slot = self._slot(self.clock.now())
        if not await self.store.kv_set_if_changed("pulse:slot", str(slot)):
            return False
        await self.run_once()
        return True

    # ---- the pulse ------------------------------------------------------------------------------------

    async def run_once(self) -> PulseReport:
        """One pulse: each step runs even when an earlier one failed; failures are alerted."""
        report = PulseReport(at=self.clock.now())
        steps: list[tuple[str, Callable[[PulseReport], Awaitable[None]]]] = [
            ("health", self._health),
            ("credentials", self._credentials),
            ("stuck jobs", self._stuck_jobs),
            ("projects", self._advance_projects),
            ("worktrees", self._prune_worktrees),
            ("memory", self._memory),
        ]
        for name, step in steps:
            try:
                await step(report)
            except Exception as exc:
                report.failures.append(name)
                await self._alert_failure(name, exc)
        summary = (
            f"pulse: {len(report.alerts)} alert(s), {len(report.stuck)} stuck, "
            f"{len(report.advanced)} project(s) advanced" + (f", failed: {', '.join(report.failures)}" if
                                                              report.failures else "")
        )
        try:
            await self.store.add_event(None, "pulse", summary, {"health": report.health, "failures": report.failures})
        except Exception as exc:  # the pulse did its work; only its record is missing
            log.warning("pulse: could not record its summary event (%s)", describe_error(exc))
        if report.advanced and self._wake is not None:
            self._wake()
        return report

    async def _health(self, report: PulseReport) -> None:
        now = self.clock.now()
        counts = await self.store.counts_by_state()
        states = await self.store.backend_states()
        home = self.settings.home if self.settings.home.exists() else self.settings.home.parent
        disk = await asyncio.to_thread(shutil.disk_usage, home)
        report.health = {
            "at": now,
            "jobs": counts,
            "queue_depth": await self.store.queue_depth(),
            "backends": {
                name: ("disabled" if s.disabled else f"paused ({s.pause_reason})" if (s.paused_until or 0) > now
                       else "ok")
                for name, s in states.items()
            },
            "disk_free_bytes": disk.free,
            "disk_free_fraction": round(disk.free / disk.total, 4) if disk.total else None,
        }
        if disk.free < DISK_LOW_BYTES or (disk.total and disk.free / disk.total < DISK_LOW_FRACTION):
            day = local_date(now, self.tz).isoformat()
            text = f"Disk almost full: {disk.free / 2**30:.1f} GiB free under {home}. Jobs and the database need room."
            if await self.store.add_outbox(notices.alert(f"disk:{day}", text)):
                report.alerts.append("disk")

    async def _credentials(self, report: PulseReport) -> None:
        states = await self.store.backend_states()
        for name, backend in self.backends.items():
            if not backend.config.enabled:
                continue
            try:
                status = await asyncio.wait_for(backend.check_credentials(), CREDENTIAL_CHECK_TIMEOUT_S)
            except Exception as exc:  # a check that crashes is a failed check, not a failed pulse
                status = CredentialStatus(ok=False, message=f"check crashed: {type(exc).__name__}: {exc}"[:300])
            state = states.get(name)
            if status.ok and not status.checked:
                continue  # nothing was asked: neither a pass that re-enables it nor a failure to alert
            if status.ok:
                await self._credential_ok(report, name, status, disabled=bool(state and state.disabled))
            else:
                text = (f"Credential check for backend {name} failed: {status.message[:300]}. "
                        "Jobs continue on the fallback chain.")
                key = f"credential-failed:{name}:{int(self.clock.now())}"
                if await self.store.kv_set_if_changed(f"credential:{name}", "failed",
                                                      outbox=[notices.alert(key, text)]):
                    report.alerts.append(f"credential-failed:{name}")

    async def _credential_ok(self, report: PulseReport, name: str, status: CredentialStatus, *, disabled: bool) -> None:
        now = self.clock.now()
        await self.store.kv_set_if_changed(f"credential:{name}", "ok")
        if disabled:
            text = f"✅ Backend {name} is back: its credential check passed ({status.message[:200]}). Re-enabled."
            message = NewOutbox(dedupe_key=f"backend-recovered:{name}:{int(now)}", kind="info", text=text)
            if await self.store.reenable_backend(name, outbox=[message]):
                report.recovered.append(name)
                if self._wake is not None:
                    self._wake()
        if status.expires_at is None:
            return
        left = status.expires_at - now
        if left >= self.settings.pulse.credential_warn_hours * 3600:
            return
        when = _time.strftime("%Y-%m-%d %H:%M UTC", _time.gmtime(status.expires_at))
        text = (
            f"The credential of backend {name} expires at {when} (in {_span(left)}). Renew it before then "
            "(for Claude Code: `claude login` as the switchboard user)."
            if left > 0 else f"The credential of backend {name} expired at {when}. Renew it now."
        )
        if await self.store.add_outbox(notices.alert(f"credential-expiry:{name}:{int(status.expires_at)}", text)):
            report.alerts.append(f"credential-expiry:{name}")

    async def _stuck_jobs(self, report: PulseReport) -> None:
        now = self.clock.now()
        stale_s = self.settings.pulse.stale_job_hours * 3600
        heartbeat_s = max(STALE_HEARTBEAT_LEASES * self.settings.engine.lease_s, 600.0)
        stuck = await self.store.stale_jobs(heartbeat_before=now - heartbeat_s, queued_before=now - stale_s)
        running = await self.store.list_jobs(states=[JobState.RUNNING], limit=1000)
        seen = {j.id for j in stuck}
        stuck += [j for j in running if j.started_at and now - j.started_at > stale_s and j.id not in seen]
        report.stuck = sorted({j.id for j in stuck})
        if not stuck:
            return
        lines = [f"#{j.id} {j.state.value} since {_span(now - _since(j))}: {j.title[:60]}" for j in stuck[:15]]
        key = hashlib.sha1(",".join(map(str, report.stuck)).encode()).hexdigest()[:12]
        text = f"{len(stuck)} job(s) look stuck:\n" + "\n".join(lines)
        if await self.store.add_outbox(notices.alert(f"stuck:{key}", text, urgent=False)):
            report.alerts.append("stuck")

    async def _advance_projects(self, report: PulseReport) -> None:
        now = self.clock.now()
        idle_s = self.settings.pulse.project_idle_hours * 3600
        for project in await self.store.list_projects("active"):
            last = project.last_advanced_at or project.created_at
            if now - last < idle_s or await self.store.open_project_jobs(project.name):
                continue
            recent = await self.store.list_jobs(project=project.name, limit=10)
            job, _ = await self.store.enqueue(
                new_job(
                    self.settings,
                    type=PROJECT_JOB_TYPE,
                    prompt=_next_step_prompt(project.name, project.goal, recent),
                    title=f"Next step for project {project.name}",
                    project=project.name,
                    priority=Priority.LOW,
                    source=Source.PULSE,
                    idempotency_key=f"project:{project.id}:{int(last)}",
                )
            )
            await self.store.touch_project(project.name)
            report.advanced[project.name] = job.id
            done = [j for j in recent if j.state == JobState.DONE and (j.finished_at or 0) > last]
            text = (f"📈 Project {project.name}: {len(done)} job(s) done since {_span(now - last)} ago. "
                    f"Nobody touched it lately, so I queued the next step as #{job.id}.")
            await self.store.add_outbox(notices.info(f"project:{project.id}:advance:{int(last)}", text, job_id=job.id))

    async def _memory(self, report: PulseReport) -> None:
        if self.maintain_memory is None:
            return
        slot = math.floor(self.clock.now() / MEMORY_MAINTENANCE_EVERY_S)
        if await self.store.kv_set_if_changed("memory:maintenance_slot", str(slot)):
            report.memory = await self.maintain_memory() or "done"

    async def _prune_worktrees(self, report: PulseReport) -> None:
        """Remove the worktrees of jobs finished more than ``engine.worktree_keep_hours`` ago; branches stay."""
        before = self.clock.now() - self.settings.engine.worktree_keep_hours * 3600
        jobs = await self.store.prunable_worktrees(before)
        if not jobs:
            return
        work = ProjectWork(Workspace(self.settings.home), lambda: Sandbox.for_settings(self.settings))
        for job in jobs:
            project = await self.store.get_project(job.project) if job.project else None
            await work.prune(job, project)
            await self.store.mark_worktree_pruned(job.id)
            report.pruned.append(job.id)

    async def _alert_failure(self, activity: str, exc: BaseException) -> None:
        log.error("pulse: %s failed", activity, exc_info=exc)
        day = local_date(self.clock.now(), self.tz).isoformat()
        text = f"The pulse's {activity} step failed: {type(exc).__name__}: {str(exc)[:300]}"
        try:
            await self.store.add_outbox(notices.alert(f"pulse-failure:{activity}:{type(exc).__name__}:{day}", text))
        except Exception:  # the store itself is down: the log is all that is left
            log.exception("pulse: cannot even record the failure of %s", activity)

    # ---- schedules ------------------------------------------------------------------------------------

    async def fire_due_schedules(self) -> list[Job]:
        """Enqueue one job per due schedule; catch up or record missed runs. Returns the jobs enqueued."""
        now = self.clock.now()
        fired: list[Job] = []
        for schedule in await self.store.list_schedules():
            if not schedule.enabled or schedule.next_run_at > now:
                continue
            try:
                fired += await self._fire(schedule, now)
            except Exception as exc:
                await self._alert_failure(f"schedule {schedule.name}", exc)
        if fired and self._wake is not None:
            self._wake()
        return fired

    async def _fire(self, schedule: Schedule, now: float) -> list[Job]:
        due = due_slots(
            schedule.next_run_at, now, interval_s=schedule.interval_s, daily_at=schedule.daily_at, tz=self.tz
        )
        grace = min(SCHEDULE_GRACE_S, (schedule.interval_s or SCHEDULE_GRACE_S * 2) / 2)
        late = now - due.latest > grace
        run = schedule.catch_up or not late
        missed = due.count - 1 if run else due.count
        jobs = []
        outbox: list[NewOutbox] = []
        if run:
            try:
                jobs.append(
                    new_job(
                        self.settings,
                        type=schedule.job_type,
                        prompt=schedule.prompt,
                        title=f"{schedule.name}: {schedule.prompt}"[:120],
                        project=schedule.project,
                        source=Source.SCHEDULE,
                        idempotency_key=f"schedule:{schedule.id}:{int(due.latest)}",
                    )
                )
            except InvalidJob as exc:
                missed = due.count
                outbox.append(notices.alert(f"schedule-invalid:{schedule.id}:{int(due.latest)}",
                                            f"Schedule {schedule.name} cannot run: {exc}"))
        note = ""
        if missed:
            caught = "; caught up with one run now" if jobs else "; not caught up (catch-up is off for it)"
            note = caught
            next_at = _time.strftime("%H:%M UTC", _time.gmtime(due.next_run_at))
            outbox.append(notices.info(
                f"schedule:{schedule.id}:missed:{int(schedule.next_run_at)}",
                f"⏰ Schedule {schedule.name} missed {missed} run(s) while Switchboard was down{caught}. "
                f"Next run {next_at}.",
            ))
        return await self.store.fire_schedule(
            schedule.id, schedule.next_run_at, due.next_run_at, jobs, missed=missed, outbox=outbox, missed_note=note
        )

    async def resume_windows(self) -> bool:
        """One notice per reopened window that had deferred jobs; wake the engine for them."""
        reopened = await self._windows.resume_due()
        if reopened and self._wake is not None:
            self._wake()
        return reopened > 0

    async def warm_windows(self) -> list[str]:
        """``[quota] warm_windows``: once a day at ``warm_at`` (not later than an hour after it, after downtime),
        start a fresh five-hour window on each subscription CLI backend whose window is not running."""
        quota, now = self.settings.quota, self.clock.now()
        if not (quota.enabled and quota.warm_windows):
            return []
        latest = latest_daily_at_or_before(now, quota.warm_at, self.tz)
        if now - latest > WARM_LATE_S:
            return []
        if not await self.store.kv_set_if_changed("quota:warm:last", local_date(latest, self.tz).isoformat()):
            return []
        return await self._windows.warm(self.backends)

    # ---- the digest -----------------------------------------------------------------------------------

    async def digest_if_due(self) -> Digest | None:
        """Queue the daily digest once per local day, at or after ``pulse.digest_time`` (late after downtime,
        never twice). On the very first start only the baseline is recorded: there is nothing to report yet."""
        now = self.clock.now()
        latest = latest_daily_at_or_before(now, self.settings.pulse.digest_time, self.tz)
        day = local_date(latest, self.tz).isoformat()
        last = await self.store.kv_get("digest:last")
        if last is None:
            await self.store.kv_set_if_changed("digest:last", day)
            return None
        if last >= day:
            return None
        digest = await self.build_digest(now)
        message = NewOutbox(dedupe_key=f"digest:{day}", kind="digest", text=digest.text, payload={"date": day})
        if await self.store.kv_set_if_changed("digest:last", day, outbox=[message]):
            return digest
        return None

    async def build_digest(self, until: float | None = None) -> Digest:
        """The last 24 hours, from the store's numbers (``Store.stats`` and ``Store.digest_numbers``)."""
        until = self.clock.now() if until is None else until
        since = until - 86_400
        stats = await self.store.stats(since, [b.name for b in self.settings.backends if b.simulated])
        numbers = await self.store.digest_numbers(since)
        quiet = self.settings.pulse.quiet_hours
        held = sum(1 for t in numbers.pop("non_urgent_message_times") if in_quiet_hours(quiet, t, self.tz))
        numbers |= {"held_messages": held, **stats.model_dump(include={
            "total_jobs", "done", "failed", "cancelled", "active", "cost_usd", "tokens_in", "tokens_out"})}
        text = prompts.render(
            "digest",
            date=local_date(until, self.tz).isoformat(),
            total=stats.total_jobs,
            succeeded=stats.done,
            failed=stats.failed,
            open=stats.active,
            cost_usd=f"{stats.cost_usd:.2f}",
            needs_operator=_waiting_lines(numbers),
            succeeded_list=_job_lines(numbers["done_jobs"], stats.done, why=False),
            failed_list=_failed_lines(numbers),
            backends=_backend_lines(numbers["backends"]),
            windows=await self._window_lines(until),
        ).rstrip()
        text += _cost_notes(stats, float(await self.store.kv_get(saved_key(until)) or 0.0))
        if held:
            text += f"\n\nHeld during quiet hours: {held} non-urgent message(s)."
        return Digest(local_date(until, self.tz).isoformat(), since, until, text, numbers)


    async def _window_lines(self, now: float) -> str:
        """The subscription plans' usage windows: state, reset, Switchboard's use, jobs moved or deferred."""
        plans = self._windows.plans()
        if not plans:
            return ""
        windows: dict[str, list[QuotaWindow]] = {}
        for window in await self.store.quota_windows():
            windows.setdefault(window.plan, []).append(window)
        lines = [f"- {', '.join(names)}: {line}" for plan, names in plans.items()
                 for line in summary(windows.get(plan, []), now)]
        return "\n\nSubscription windows:\n" + "\n".join(lines)


def _cost_notes(stats: Stats, saved_this_month: float) -> str:
    """What the cost line holds besides the jobs counted (chat turns and reviews), simulated spend, and what the
    subscriptions saved this month (their runs at list prices)."""
    notes = []
    if stats.chat_turns or stats.review_jobs:
        notes.append(f"Also in the cost: {stats.chat_turns} chat turn(s) (${stats.chat_cost_usd:.2f}) and "
                     f"{stats.review_jobs} review(s) (${stats.review_cost_usd:.2f}).")
    if stats.simulated_cost_usd:
        notes.append(f"Of the cost, ${stats.simulated_cost_usd:.2f} is simulated (sim backends), not real money.")
    if saved_this_month:
        notes.append(f"Subscriptions saved ${saved_this_month:.2f} this month (their runs at list prices).")
    return "".join(f"\n\n{n}" for n in notes)


class PulseTrigger:
    """APScheduler 3.x as the real-clock trigger only: ``tick()`` every ``every_s`` seconds (and once at
    start). What is due is decided by ``tick()`` from the database, so restarts and missed runs are data."""

    def __init__(self, pulse: Pulse, every_s: float = 15.0) -> None:
        self._pulse = pulse
        self._every_s = every_s
        self._scheduler: Any = None
        self._current: asyncio.Task[Any] | None = None

    def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=self._every_s, timezone=UTC),
            id="switchboard-pulse-tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(self._every_s),
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.start()

    async def _tick(self) -> None:
        self._current = asyncio.current_task()
        try:
            await self._pulse.tick()
        finally:
            self._current = None

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop triggering; let a tick in progress finish (up to ``grace_s``), then cancel it."""
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        current = self._current
        if current is not None and not current.done():
            done, _ = await asyncio.wait({current}, timeout=grace_s)
            if not done:
                current.cancel()
                await asyncio.gather(current, return_exceptions=True)


# ---- text helpers --------------------------------------------------------------------------------------


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60:02d} min"
    return f"{seconds / 86_400:.1f} days"


def _since(job: Job) -> float:
    if job.state == JobState.RUNNING:
        return job.heartbeat_at or job.started_at or job.created_at
    return job.run_after


def _next_step_prompt(name: str, goal: str, recent: list[Job]) -> str:
    history = "\n".join(
        f"- #{j.id} {j.state.value}: {j.title}" + (f" — {j.result_summary[:200]}" if j.result_summary else "")
        for j in recent
    ) or "- (no jobs yet)"
    return (
        f"Advance the project {name}.\n\nGoal: {goal or '(not stated; infer it from the project folder)'}\n\n"
        f"Recent jobs of this project, newest first:\n{history}\n\n"
        "Work in the project folder. Decide the single most useful next step toward the goal, do it, and report "
        "what you did and what should come next. If you need a decision from the operator, write your question "
        "to question.md and stop."
    )


def _job_lines(rows: list[dict[str, Any]], total: int, *, why: bool) -> str:
    if not rows:
        return "- none"
    lines = []
    for row in rows:
        line = f"- #{row['id']} {row['type']}: {row['title'][:70]} (${row['cost_usd']:.4f})"
        if why:
            line += f" — {row['last_failure_class'] or 'unknown'}: {(row['last_error'] or '')[:120]}"
        lines.append(line)
    if total > len(rows):
        lines.append(f"- … and {total - len(rows)} more")
    return "\n".join(lines)


def _failed_lines(numbers: dict[str, Any]) -> str:
    classes = ", ".join(f"{name} {count}" for name, count in numbers["failure_classes"].items())
    lines = _job_lines(numbers["failed_jobs"], numbers["failed"], why=True)
    return f"By class: {classes}\n{lines}" if classes else lines


def _waiting_lines(numbers: dict[str, Any]) -> str:
    rows = numbers["waiting_jobs"]
    if not rows:
        return "- nothing; all clear"
    verbs = {"needs_input": "asks you a question (/answer)", "needs_human": "waits for your decision (/approve)"}
    lines = [f"- #{r['id']} {r['type']}: {r['title'][:70]} — {verbs.get(r['state'], r['state'])}" for r in rows]
    if numbers["waiting_total"] > len(rows):
        lines.append(f"- … and {numbers['waiting_total'] - len(rows)} more")
    return "\n".join(lines)


def _backend_lines(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "- no calls"
    return "\n".join(
        f"- {r['backend']}: {r['calls']} call(s), {r['ok'] or 0} ok, ${r['cost_usd']:.4f}" for r in rows
    )
