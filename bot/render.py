"""Plain-text views of jobs, schedules, projects, status and stats, shared by the CLI, the console and Telegram."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the command line imports this module before it loads any model
    from engine.models import Attempt, Event, Job, Project, Review, Schedule
    from engine.store import Stats


def when(ts: float | None) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"
    except (OverflowError, OSError, ValueError):  # a row stored before durations were bounded
        return "out of range"


def job_line(job: Job) -> str:
    return f"#{job.id:<5} {job.state.value:<11} {job.type:<10} {job.title[:60]}"


def job_detail(job: Job, attempts: list[Attempt], events: list[Event], reviews: list[Review]) -> str:
    lines = [
        f"Job #{job.id}: {job.title}",
        f"type {job.type} · tier {job.tier} · priority {job.priority.name.lower()} · state {job.state.value}",
        f"attempt {job.attempt}/{job.max_attempts} · revision {job.revision}/{job.max_revisions}"
        + (f" · project {job.project}" if job.project else ""),
        f"created {when(job.created_at)} · finished {when(job.finished_at)}",
        f"tokens {job.tokens_in:,} in / {job.tokens_out:,} out · cost ${job.cost_usd:.4f}",
    ]
    if job.maker_backend:
        lines.append(f"made by {job.maker_backend} ({job.maker_family})")
    if job.last_failure_class:
        lines.append(f"last failure: {job.last_failure_class}: {job.last_error or ''}"[:300])
    if job.result_summary:
        lines += ["", "Result:", job.result_summary]
    if reviews:
        lines += ["", "Reviews:"]
        lines += [
            f"  r{r.revision} {r.reviewer_backend} ({r.reviewer_family}): {r.score:g} {r.verdict}" for r in reviews
        ]
    if attempts:
        lines += ["", "Attempts:"]
        lines += [
            f"  {when(a.started_at)} {a.purpose:<6} {a.backend:<16} {a.outcome or '?':<14} "
            f"{(a.latency_ms or 0) / 1000:.1f}s ${a.cost_usd:.4f}"
            for a in attempts
        ]
    if events:
        lines += ["", "Events:"]
        lines += [f"  {when(e.at)} {e.from_state or '':>9} -> {e.to_state or e.kind:<11} {e.reason}" for e in events]
    return "\n".join(lines)


def backend_line(b: dict[str, Any]) -> str:
    status = "ok"
    if b["disabled"]:
        status = f"DISABLED ({b['pause_reason']})"
    elif b["paused_until"]:
        status = f"paused ({b['pause_reason']}) until {when(b['paused_until'])}"
    label = " [simulated]" if b["simulated"] else ""
    line = f"{b['name']:<18} {b['kind']:<10} tier {b['tier']} {b['family']:<10} {status}{label}"
    # A subscription's usage windows, one line each ("window unknown" where it never reported one).
    return "\n".join([line, *(f"{'':<20}{w}" for w in b.get("windows", []))])


def stats_text(stats: Stats) -> str:
    return "\n".join(
        [
            f"Since {when(stats.since)}:",
            f"  jobs {stats.total_jobs} · done {stats.done} · failed {stats.failed} · cancelled {stats.cancelled} "
            f"· active {stats.active}",
            f"  completion rate {stats.completion_rate:.1%}",
            f"  throughput: peak {stats.peak_daily}/day · average {stats.average_daily:.1f}/day",
            f"  chat turns {stats.chat_turns} (${stats.chat_cost_usd:.2f}) · reviews {stats.review_jobs} "
            f"(${stats.review_cost_usd:.2f}), counted apart from jobs; their cost is in the total",
            _chat_cache_line(stats),
            f"  cost ${stats.cost_usd:.2f} · ${stats.cost_per_job:.4f} per job"
            + (f" · ${stats.simulated_cost_usd:.2f} of it simulated" if stats.simulated_cost_usd else ""),
            f"  active projects {stats.active_projects}",
            *_review_lines(stats),
            f"  uncertain sends {stats.uncertain_sends} (timed out after sending: may have arrived, not resent)",
        ]
    )


def _chat_cache_line(stats: Stats) -> str:
    """The persona's input tokens, cached or not: a warm session reads most of each turn from the cache."""
    read, write, fresh = stats.chat_cache_read, stats.chat_cache_write, stats.chat_tokens_in
    total = read + write + fresh
    share = f" ({read / total:.0%} from cache)" if total else ""
    return (f"  persona input tokens: {read} cached, {write} written to cache, {fresh} uncached{share} · "
            f"{stats.chat_warm_turns} of {stats.chat_turns} turns warm")


def _review_lines(stats: Stats) -> list[str]:
    r = stats.reviews
    if not r.reviews and not r.check_rejections:
        return ["  reviews: none yet"]
    by_maker = ", ".join(f"{family} {rate:.0%}" for family, rate in r.pass_rate_by_maker_family.items())
    scores = ", ".join(f"{family} {score:.1f}" for family, score in r.mean_score_by_reviewer_family.items())
    return [
        f"  reviews {r.reviews} · catch rate {r.catch_rate:.0%} of {r.first_drafts} first drafts · "
        f"{r.revisions_per_job:.2f} revisions per reviewed job · {r.check_rejections} stopped by checks",
        f"  pass rate by maker family: {by_maker or '-'}",
        f"  mean reviewer score by family: {scores or '-'}",
    ]


def status_text(status: dict[str, Any]) -> str:
    engine = status.get("engine") or {}
    seen = engine.get("last_seen")
    state = "running" if engine.get("alive") else "stopped cleanly" if engine.get("stopped") else "NOT running"
    lines = [
        f"Engine: {state}"
        + (f" (last seen {when(seen)})" if seen else " (never seen on this data folder)")
        + (f"\nChannel: {problem['text']} (since {when(problem['since'])})"
           if engine.get("alive") and (problem := engine.get("channel_problem")) else ""),
        f"Slots: {status['slots']['running']} running of {status['slots']['max']} "
        f"({status['slots']['reserved_operator']} reserved for you)",
        "Queue: " + (", ".join(f"{k} {v}" for k, v in sorted(status["jobs"].items())) or "empty"),
        f"Backpressure: {'ON' if status['backpressure'] else 'off'} · tokens in 5 min: {status['tokens_5min']:,}"
        f" of {status['token_budget_5min']:,}",
        "Backends:",
    ]
    lines += ["  " + backend_line(b).replace("\n", "\n  ") for b in status["backends"]]
    if status.get("strangers"):
        lines.append(f"Strangers turned away: {status['strangers']}")
    return "\n".join(lines)


def schedule_line(schedule: Schedule) -> str:
    cadence = f"every {_interval(schedule.interval_s)}" if schedule.interval_s else f"daily {schedule.daily_at}"
    flags = "" if schedule.catch_up else " (no catch-up)"
    project = f" [{schedule.project}]" if schedule.project else ""
    return (
        f"{schedule.name:<16} {cadence:<12} {schedule.job_type:<10} next {when(schedule.next_run_at)}"
        f"{flags}{project}  {schedule.prompt[:60]}"
    )


def project_line(project: Project) -> str:
    goal = f": {project.goal[:70]}" if project.goal else ""
    return f"{project.name:<20} {project.status:<7} advanced {when(project.last_advanced_at)}{goal}"


def _interval(seconds: float | None) -> str:
    seconds = seconds or 0
    if not math.isfinite(seconds) or seconds > 10**12:  # a row stored before intervals were bounded
        return "out of range"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
