"""The live snapshot every persona turn sees: what runs, what waits for the operator, what just finished or
failed, today's spend against the cap, backends that are paused or disabled, and the active projects.

``build_snapshot`` is the one function that builds it. It is bounded by a budget in tokens (about four
characters a token, as routing estimates them): sections come in the order the operator needs them (waiting for
you, running and queued, failed, finished, backends, projects), each newest first, and whatever does not fit is
counted ("3 more not shown"), never cut mid-line. Titles and results came from the operator, the persona and
workers: the caller wraps the snapshot as data (``prompts.untrusted``), never as instructions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.models import BackendState, Job, JobState, Project
from engine.policy import day_start
from engine.routing import CHARS_PER_TOKEN
from engine.settings import Settings
from engine.store import Store
from engine.vocab import QUESTION_PREFIX

__all__ = ["SnapshotFacts", "build_snapshot", "gather", "render"]

LINE_CHARS = 200
PER_SECTION = 12  # rows read per section; the budget decides how many are shown

_WAITING = (JobState.NEEDS_HUMAN, JobState.NEEDS_INPUT)
_ACTIVE = (JobState.RUNNING, JobState.REVIEWING, JobState.REVISING, JobState.QUEUED, JobState.SNOOZED,
           JobState.RETRY_WAIT)


@dataclass
class SnapshotFacts:
    """What the snapshot shows, as read from the store (each list newest first)."""

    now: float
    spent_today_usd: float
    daily_cap_usd: float
    waiting: list[Job] = field(default_factory=list)
    active: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    finished: list[Job] = field(default_factory=list)
    backends: dict[str, BackendState] = field(default_factory=dict)
    projects: list[Project] = field(default_factory=list)


async def gather(store: Store, settings: Settings, now: float) -> SnapshotFacts:
    paying = [b.name for b in settings.backends if b.pay_per_token]
    spent = await store.spend_since(day_start(now), paying) if paying else 0.0
    return SnapshotFacts(
        now=now,
        spent_today_usd=spent,
        daily_cap_usd=settings.engine.daily_budget_usd,
        waiting=await store.recent_jobs(_WAITING, limit=PER_SECTION),
        active=await store.recent_jobs(_ACTIVE, limit=PER_SECTION * 2),
        failed=await store.recent_jobs([JobState.FAILED], limit=PER_SECTION // 2),
        finished=await store.recent_jobs([JobState.DONE, JobState.CANCELLED], limit=PER_SECTION),
        backends=await store.backend_states(),
        projects=await store.list_projects(status="active"),
    )


async def build_snapshot(store: Store, settings: Settings, now: float, *, budget_tokens: int | None = None) -> str:
    """The live snapshot as text, at most ``budget_tokens`` (default ``[chat] snapshot_tokens``)."""
    budget = budget_tokens if budget_tokens is not None else settings.chat.snapshot_tokens
    return render(await gather(store, settings, now), budget)


def render(facts: SnapshotFacts, budget_tokens: int) -> str:
    """The snapshot within ``budget_tokens``: whole lines in section order, the overflow counted."""
    out = _Budget(budget_tokens * CHARS_PER_TOKEN)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(facts.now))
    out.add(f"Live state of Switchboard at {stamp}.")
    out.add(f"Spend today: ${facts.spent_today_usd:.2f} of the ${facts.daily_cap_usd:.2f} daily cap.")
    out.section("Waiting for the operator", [_waiting_line(j) for j in facts.waiting])
    out.section("Running and queued", [_active_line(j, facts.now) for j in facts.active])
    out.section("Recently failed", [_failed_line(j, facts.now) for j in facts.failed])
    out.section("Recently finished", [_finished_line(j, facts.now) for j in facts.finished])
    out.section("Backends paused or disabled", _backend_lines(facts.backends, facts.now))
    out.section("Active projects", [_project_line(p) for p in facts.projects])
    return out.text()


class _Budget:
    def __init__(self, chars: int) -> None:
        self._left = chars
        self._lines: list[str] = []

    def add(self, line: str) -> bool:
        if len(line) + 1 > self._left:
            return False
        self._lines.append(line)
        self._left -= len(line) + 1
        return True

    def section(self, title: str, lines: list[str]) -> None:
        if not lines:
            return
        # The heading only when its first line fits too, and room kept for the overflow note.
        note_room = 30
        if len(title) + len(lines[0]) + note_room + 3 > self._left:
            self.add(f"{title}: {len(lines)} not shown (over the snapshot's budget).")
            return
        self.add(f"{title}:")
        for shown, line in enumerate(lines):
            if len(line) + 1 + note_room > self._left:
                self.add(f"- ({len(lines) - shown} more not shown)")
                return
            self.add(line)

    def text(self) -> str:
        return "\n".join(self._lines)


def _one_line(text: str | None, limit: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _title(job: Job) -> str:
    return _one_line(job.title or job.prompt, 70) or f"untitled {job.type} job"


def _ago(now: float, then: float | None) -> str:
    seconds = max(0.0, now - (then or now))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.0f} d"


def _cap(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


def _waiting_line(job: Job) -> str:
    if job.state == JobState.NEEDS_INPUT:
        asked = _one_line((job.progress or "").removeprefix(QUESTION_PREFIX), 110) or "(question not recorded)"
        return _cap(f"- #{job.id} needs_input · {job.type} · {_title(job)} · asks: {asked}")
    why = _one_line(job.last_error, 80) or "the review did not pass; approve, revise again or cancel"
    return _cap(f"- #{job.id} needs_human (waiting for approval) · {job.type} · {_title(job)} · {why}")


def _active_line(job: Job, now: float) -> str:
    since = job.started_at if job.state == JobState.RUNNING and job.started_at else job.created_at
    backend = f" · {job.maker_backend}" if job.maker_backend else ""
    project = f" · project {job.project}" if job.project else ""
    return _cap(f"- #{job.id} {job.state.value} · {job.type} · {_title(job)} · {_ago(now, since)}{backend}{project}")


def _failed_line(job: Job, now: float) -> str:
    why = f"{job.last_failure_class or 'failed'}: {_one_line(job.last_error, 80)}"
    return _cap(f"- #{job.id} failed {_ago(now, job.finished_at or job.updated_at)} ago · {job.type} · "
                f"{_title(job)} · {why}")


def _finished_line(job: Job, now: float) -> str:
    result = _one_line(job.result_summary, 90) or "(no result text)"
    how = "approved by the operator" if job.operator_approved else job.state.value
    return _cap(f"- #{job.id} {how} {_ago(now, job.finished_at or job.updated_at)} ago · {job.type} · "
                f"{_title(job)} · {result}")


def _backend_lines(states: dict[str, BackendState], now: float) -> list[str]:
    lines = []
    for name, state in sorted(states.items()):
        if state.disabled:
            lines.append(f"- {name} disabled ({state.pause_reason or 'error'})")
        elif state.paused_until and state.paused_until > now:
            until = time.strftime("%H:%M UTC", time.gmtime(state.paused_until))
            lines.append(f"- {name} paused until {until} ({state.pause_reason or 'paused'})")
    return lines


def _project_line(project: Project) -> str:
    goal = f": {_one_line(project.goal, 100)}" if project.goal else ""
    return _cap(f"- {project.name}{goal}")
