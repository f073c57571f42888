"""A drill's report: what was submitted, what survived, what it cost, how long things waited, what the operator
was told (and whether anything twice), read from the store after the run.

``build_report`` merges the dicts of ``SECTIONS`` in order; a new measure is one more function over
``DrillFacts`` appended there. ``report_text`` renders the report for a terminal or a chat.

Definitions:

- ``failed_another_could_do``: failed work jobs whose chain held a backend no incident touched at the time.
- work jobs: every job but the persona's chat turns and the gate's review jobs (the workload's jobs and the
  jobs the persona queued for the operator). ``submitted``, ``done``, ``failed``, ``needs_human`` and
  ``still_open`` count work jobs; ``completion_rate`` is done / submitted.
- ``cost_usd``: every backend call (makers, reviewers, the persona); ``cost_per_job_usd``: that per done job.
  ``subscription_saved_usd``: what the calls on subscription backends would have cost at their prices.
- ``queue_wait_s``: from creation to the first start, per lane (operator, high, normal, low; reviews apart).
- ``reroutes``: jobs that reached a second backend within a run or across runs.
- ``duplicate_notifications``: messages to the operator repeating an earlier one (same kind, job and text),
  and any second "done" for one job.
- subscription windows (``quota`` incidents): ``operator_jobs_hit_wall``, operator jobs (the operator's lane:
  chats and the work they asked for) with a call on a subscription that met its exhausted window or was cut off
  by it; ``cut_off_by_window``, jobs with a call cut off mid-run when the window filled; ``deferred``, jobs
  quota-aware routing held for a window's reset, and ``resumed``, those of them that started again after it;
  ``moved_off_window``, jobs it sent elsewhere to spare a window; ``extra_paid_usd``, what the jobs the window
  pushed off the subscription (met the wall, passed over while it was exhausted, moved or deferred) spent on
  priced backends.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.drill.scenario import Scenario
from engine.drill.twins import CUT_TEXT, Window
from engine.models import Attempt, Event, Job, JobState, OutboxMessage, Priority, Source
from engine.routing import SkipReason
from engine.settings import Settings
from engine.store import ReviewStats, Store

_OPEN_STATES = {JobState.QUEUED, JobState.RUNNING, JobState.REVIEWING, JobState.REVISING, JobState.SNOOZED,
                JobState.RETRY_WAIT}
# The subscription-window measures (0 where the scenario has no window).
QUOTA_KEYS = ("operator_jobs_hit_wall", "cut_off_by_window", "deferred", "resumed", "extra_paid_usd")
# How quota-aware routing's decisions read in a job's events (engine.policy).
DEFERRED_PREFIX = "deferred for the usage window"
WINDOW_SKIPS = (SkipReason.WINDOW_KEPT.value, SkipReason.WINDOW_TOO_SHORT.value)
WALL_PAUSES = ("paused (rate_limited)", "paused (quota)")


@dataclass
class DrillFacts:
    scenario: Scenario
    settings: Settings
    windows: list[Window]
    seed: int
    day0: float
    ended_at: float
    jobs: list[Job]
    attempts: dict[int, list[Attempt]]
    outbox: list[OutboxMessage]
    reviews: ReviewStats
    workload_ids: list[int]
    pulse_runs: int
    without: list[str] = field(default_factory=list)
    # Each job's events, read only when a backend is a subscription (the routing decisions on its windows).
    events: dict[int, list[Event]] = field(default_factory=dict)

    @classmethod
    async def gather(cls, store: Store, settings: Settings, scenario: Scenario, windows: list[Window], seed: int,
                     day0: float, ended_at: float, workload_ids: list[int], pulse_runs: int) -> DrillFacts:
        jobs = sorted(await store.list_jobs(limit=10_000_000), key=lambda j: j.id)
        attempts = {job.id: await store.job_attempts(job.id) for job in jobs}
        stats = await store.stats(day0 - 1)
        events = {job.id: await store.job_events(job.id) for job in jobs} if any(
            b.subscription for b in settings.backends) else {}
        return cls(scenario, settings, windows, seed, day0, ended_at, jobs, attempts, await store.outbox_all(),
                   stats.reviews, workload_ids, pulse_runs, events=events)

    def at(self, ts: float | None) -> str | None:
        """A moment as HH:MM of the simulated day (past midnight: 24:10, ...)."""
        if ts is None:
            return None
        minutes = int((ts - self.day0) // 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    @property
    def work(self) -> list[Job]:
        return [j for j in self.jobs if j.type not in ("chat", "review")]

    def all_attempts(self) -> list[Attempt]:
        return [a for job in self.jobs for a in self.attempts[job.id]]


def _header(facts: DrillFacts) -> dict[str, Any]:
    return {
        "scenario": facts.scenario.name,
        "seed": facts.seed,
        "hours": facts.scenario.hours,
        "backends": [b.name for b in facts.settings.backends],
        "without": facts.without,
        "simulated_end": facts.at(facts.ended_at),
    }


def _outcomes(facts: DrillFacts) -> dict[str, Any]:
    work = facts.work
    states = Counter(j.state for j in work)
    failed = [j for j in work if j.state == JobState.FAILED]
    done = states[JobState.DONE]
    return {
        "submitted": len(work),
        "submitted_by_workload": len(facts.workload_ids),
        "submitted_by_persona": sum(1 for j in work if j.source == Source.CHAT),
        "done": done,
        "failed": len(failed),
        "failed_by_class": dict(sorted(Counter(j.last_failure_class or "unknown" for j in failed).items())),
        "failed_another_could_do": sum(1 for j in failed if _another_could_do(facts, j)),
        "needs_human": states[JobState.NEEDS_HUMAN],
        "needs_input": states[JobState.NEEDS_INPUT],
        "cancelled": states[JobState.CANCELLED],
        "still_open": sum(n for s, n in states.items() if s in _OPEN_STATES),
        "completion_rate": round(done / len(work), 4) if work else 0.0,
    }


def _another_could_do(facts: DrillFacts, job: Job) -> bool:
    """A twin can do any job: one of its chain that no incident touched when it failed could have done it."""
    when = job.finished_at or facts.ended_at
    hit = {name for w in facts.windows if w.active(when) for name in w.names}
    return any(name not in hit for name in facts.settings.chain_for(job.type))


def _money(facts: DrillFacts) -> dict[str, Any]:
    attempts = facts.all_attempts()
    cost = sum(a.cost_usd for a in attempts)
    done = sum(1 for j in facts.work if j.state == JobState.DONE)
    configs = {b.name: b for b in facts.settings.backends}
    saved = sum(
        (a.tokens_in * configs[a.backend].price_in_per_mtok + a.tokens_out * configs[a.backend].price_out_per_mtok)
        / 1e6
        for a in attempts
        if a.backend in configs and configs[a.backend].subscription
    )
    by_backend: dict[str, dict[str, Any]] = {}
    for a in attempts:
        row = by_backend.setdefault(a.backend, {"calls": 0, "ok": 0, "cost_usd": 0.0})
        row["calls"] += 1
        row["ok"] += a.outcome == "success"
        row["cost_usd"] += a.cost_usd
    for row in by_backend.values():
        row["cost_usd"] = round(row["cost_usd"], 4)
    return {
        "cost_usd": round(cost, 4),
        "cost_per_job_usd": round(cost / done, 5) if done else 0.0,
        "subscription_saved_usd": round(saved, 4),
        "calls_by_backend": dict(sorted(by_backend.items())),
    }


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95)}


def _waits(facts: DrillFacts) -> dict[str, Any]:
    lanes: dict[str, list[float]] = {name: [] for name in [*(p.name.lower() for p in Priority), "review"]}
    for job in facts.jobs:
        if job.started_at is None:
            continue
        lane = "review" if job.type == "review" else Priority(job.priority).name.lower()
        lanes[lane].append(job.started_at - job.created_at)
    chats = [j for j in facts.jobs if j.type == "chat"]
    answered = [j.finished_at - j.created_at for j in chats if j.state == JobState.DONE and j.finished_at]
    return {
        "queue_wait_s": {lane: _percentiles(values) for lane, values in lanes.items()},
        "operator_messages": len(chats),
        "operator_answered": len(answered),
        "operator_answer_s": _percentiles(answered),
    }


def _routing(facts: DrillFacts) -> dict[str, Any]:
    attempts = facts.all_attempts()
    return {
        "attempts": len(attempts),
        "failed_attempts": sum(1 for a in attempts if a.outcome != "success"),
        "reroutes": sum(1 for job in facts.jobs if len({a.backend for a in facts.attempts[job.id]}) > 1),
    }


def _notifications(facts: DrillFacts) -> dict[str, Any]:
    seen: set[tuple[str, int | None, str]] = set()
    done_jobs: set[int] = set()
    duplicates: list[str] = []
    for message in facts.outbox:
        key = (message.kind, message.job_id, message.text)
        if key in seen or (message.kind == "job_done" and message.job_id in done_jobs):
            duplicates.append(f"{facts.at(message.created_at)} {message.kind} {message.text.splitlines()[0][:120]}")
        seen.add(key)
        if message.kind == "job_done" and message.job_id is not None:
            done_jobs.add(message.job_id)
    alerts = [m for m in facts.outbox if m.kind == "alert"]
    return {
        "notifications": len(facts.outbox),
        "notifications_by_kind": dict(sorted(Counter(m.kind for m in facts.outbox).items())),
        "alerts": len(alerts),
        "alert_log": [f"{facts.at(m.created_at)} {m.text.splitlines()[0][:150]}" for m in alerts],
        "duplicate_notifications": len(duplicates),
        "duplicate_log": duplicates[:20],
    }


def _reviews(facts: DrillFacts) -> dict[str, Any]:
    return {"reviews": facts.reviews.reviews, "review_catch_rate": round(facts.reviews.catch_rate, 4)}


def _incidents(facts: DrillFacts) -> dict[str, Any]:
    attempts = facts.all_attempts()
    alerts = [m for m in facts.outbox if m.kind == "alert"]
    rows = []
    for w in facts.windows:
        hit = sorted(a.started_at for a in attempts
                     if a.backend in w.names and a.outcome != "success" and w.start <= a.started_at < w.end)
        told = sorted(m.created_at for m in alerts if any(name in m.text for name in w.names)
                      and m.created_at >= w.start - 86_400)
        rows.append({
            "target": w.target,
            "backends": sorted(w.names),
            "kind": w.kind,
            "start": facts.at(w.start),
            "end": facts.at(w.end),
            "failed_calls": len(hit),
            "first_failure": facts.at(hit[0]) if hit else None,
            "first_alert": facts.at(told[0]) if told else None,
            "alerted_by_first_failure": bool(told) and (not hit or told[0] <= hit[0]),
        })
    return {"incidents": rows}


def _pulse(facts: DrillFacts) -> dict[str, Any]:
    return {"pulse_runs": facts.pulse_runs}


def _quota(facts: DrillFacts) -> dict[str, Any]:
    walls = [w for w in facts.windows if w.kind == "quota"]
    subscriptions = {b.name for b in facts.settings.backends if b.subscription}
    # Priced and not a subscription (a simulated backend's prices count here: the twins stand for real ones).
    paying = {b.name for b in facts.settings.backends
              if not b.subscription and (b.price_in_per_mtok > 0 or b.price_out_per_mtok > 0)}
    hit: set[int] = set()
    cut: set[int] = set()
    moved: set[int] = set()
    walled: set[int] = set()
    deferred_at: dict[int, float] = {}
    for job in facts.jobs:
        for a in facts.attempts[job.id]:
            if a.backend in subscriptions and a.outcome in ("rate_limited", "quota") and any(
                    a.backend in w.names and w.start <= a.started_at < w.end for w in walls):
                hit.add(job.id)
                if a.error == CUT_TEXT:
                    cut.add(job.id)
        for event in facts.events.get(job.id, []):
            skipped = event.data.get("skipped", {}) if event.kind == "routing" else {}
            if event.reason.startswith(DEFERRED_PREFIX):
                deferred_at.setdefault(job.id, event.at)
            elif any(skip in text for text in skipped.values() for skip in WINDOW_SKIPS):
                moved.add(job.id)
            elif any(name in subscriptions and text.startswith(WALL_PAUSES) and any(
                    name in w.names and w.start <= event.at < w.end for w in walls) for name, text in skipped.items()):
                walled.add(job.id)  # passed over while the window was exhausted (the backend paused until its reset)
    moved -= set(deferred_at)  # a deferral is passed over too, but it waited rather than moved
    resumed = {j for j, at in deferred_at.items() if any(a.started_at > at for a in facts.attempts[j])}
    touched = hit | moved | walled | set(deferred_at)
    extra = sum(a.cost_usd for j in touched for a in facts.attempts[j] if a.backend in paying)
    operator = {j.id for j in facts.jobs if j.priority == Priority.OPERATOR}
    return {
        "operator_jobs_hit_wall": len(hit & operator),
        "jobs_hit_wall": len(hit),
        "cut_off_by_window": len(cut),
        "deferred": len(deferred_at),
        "resumed": len(resumed),
        "moved_off_window": len(moved),
        "extra_paid_usd": round(extra, 4),
    }


def _timeline(facts: DrillFacts) -> dict[str, Any]:
    """Per simulated hour: work jobs submitted, done and failed (the chart's series)."""
    hours = max(1, math.ceil((facts.ended_at - facts.day0) / 3600))
    rows = [{"hour": h, "submitted": 0, "done": 0, "failed": 0} for h in range(hours)]

    def bucket(ts: float) -> int:
        return min(hours - 1, max(0, int((ts - facts.day0) // 3600)))

    for job in facts.work:
        rows[bucket(job.created_at)]["submitted"] += 1
        if job.finished_at is not None and job.state in (JobState.DONE, JobState.FAILED):
            rows[bucket(job.finished_at)][job.state.value] += 1
    return {"timeline": rows}


Section = Callable[[DrillFacts], dict[str, Any]]
SECTIONS: list[Section] = [_header, _outcomes, _money, _waits, _routing, _notifications, _reviews, _incidents,
                           _pulse, _quota, _timeline]


def build_report(facts: DrillFacts, *, wall_s: float) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for section in SECTIONS:
        report.update(section(facts))
    report["wall_s"] = round(wall_s, 2)
    return report


def report_text(report: dict[str, Any]) -> str:
    """The report for a terminal or a chat message: the headline numbers, the incidents, the alerts."""
    waits = report["queue_wait_s"]
    lanes = ", ".join(f"{lane} {w['p50']}/{w['p95']} s" for lane, w in waits.items() if w["n"])
    answer = report["operator_answer_s"]
    failed = ", ".join(f"{k} {v}" for k, v in report["failed_by_class"].items()) or "none"
    lines = [
        f"Drill {report['scenario']} (seed {report['seed']}, {report['hours']:g} h simulated, ended "
        f"{report['simulated_end']}; {report['wall_s']:.1f} s wall)",
        f"backends: {', '.join(report['backends'])}" + (f" (without {', '.join(report['without'])})"
                                                        if report["without"] else ""),
        f"submitted {report['submitted']}: done {report['done']}, failed {report['failed']} ({failed}), "
        f"needs_human {report['needs_human']}, still open {report['still_open']}; completion "
        f"{report['completion_rate']:.1%}",
        f"cost ${report['cost_usd']:.2f} (${report['cost_per_job_usd']:.4f} per done job; subscriptions saved "
        f"${report['subscription_saved_usd']:.2f})",
        f"queue wait p50/p95: {lanes or 'none'}",
        f"operator: {report['operator_answered']}/{report['operator_messages']} answered, p50 {answer['p50']} s, "
        f"p95 {answer['p95']} s",
        f"routing: {report['attempts']} calls, {report['failed_attempts']} failed, {report['reroutes']} reroutes; "
        f"reviews {report['reviews']}, catch rate {report['review_catch_rate']:.0%}",
        f"told the operator: {report['notifications']} messages, {report['alerts']} alerts, "
        f"{report['duplicate_notifications']} duplicates; pulse ran {report['pulse_runs']} times",
    ]
    if any(row["kind"] == "quota" for row in report["incidents"]):
        lines.append(
            f"subscription windows: {report['operator_jobs_hit_wall']} operator jobs hit the wall "
            f"({report['jobs_hit_wall']} jobs in all), {report['cut_off_by_window']} cut off mid-run, "
            f"{report['moved_off_window']} moved, {report['deferred']} deferred ({report['resumed']} resumed), "
            f"extra pay-per-token ${report['extra_paid_usd']:.2f}"
        )
    for row in report["incidents"]:
        lines.append(
            f"incident {row['kind']} on {row['target']} ({', '.join(row['backends']) or 'nothing left'}) "
            f"{row['start']}-{row['end']}: {row['failed_calls']} failed calls, first at {row['first_failure']}, "
            f"first alert {row['first_alert']}"
        )
    lines += [f"alert {line}" for line in report["alert_log"]]
    return "\n".join(lines)
