"""The operator's slash commands, shared by Telegram and the console. Each answers usefully with no
arguments and with bad ones."""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from typing import TypedDict

from bot import render
from bot.drill_command import DrillCommand
from engine.control import Control, parse_duration, parse_job_id
from engine.errors import OPERATOR_ERRORS, describe_error
from engine.models import JobState
from engine.store.stats import saved_key
from engine.vocab import QUESTION_PREFIX
from engine.workspace import sanitize_name

COMMANDS: dict[str, str] = {
    "start": "introduce yourself",
    "help": "what I can do",
    "status": "slots, queue, backpressure, backends",
    "jobs": "recent jobs (optionally: a state)",
    "job": "one job in detail: /job 12",
    "cancel": "cancel a job: /cancel 12",
    "retry": "retry a failed job: /retry 12",
    "reroute": "retry a job avoiding the backend that made it: /reroute 12",
    "approve": "approve a job waiting for you: /approve 12",
    "cost": "spend today and this week",
    "stats": "numbers and a chart: /stats 7d",
    "backends": "backends and their state",
    "pause": "pause a backend: /pause NAME",
    "resume": "resume a backend: /resume NAME",
    "memory": "search memory: /memory QUERY",
    "remember": "store a memory: /remember TEXT",
    "forget": "forget a memory: /forget ID",
    "projects": "projects and their state",
    "diff": "the change a coding job made: /diff 12",
    "merge": "merge a done job's branch: /merge 12",
    "schedule": "recurring jobs: /schedule list",
    "answer": "answer a job's question: /answer 12 TEXT",
    "digest": "the digest of the last 24 hours",
    "drill": "replay a day of incidents on simulated twins: /drill seed-day",
}

SCHEDULE_USAGE = (
    "Schedules: /schedule list · /schedule remove NAME · /schedule add [NAME] every 30m TYPE: TEXT · "
    "/schedule add [NAME] daily 07:00 TYPE: TEXT (add --no-catch-up to skip missed runs after downtime). "
    "Example: /schedule add every 30m triage: check email"
)
PROJECTS_USAGE = (
    "Projects: /projects · /projects NAME (with its jobs) · /projects add NAME GOAL · "
    '/projects add NAME --path /your/repo --test "pytest -q" GOAL (jobs then work on a branch of your repository)'
)
DIFF_CHARS = 3500

Extra = Callable[[str], Awaitable[str]]


class _ScheduleSpec(TypedDict):
    """``/schedule add`` as read: the arguments of ``Control.add_schedule``."""

    name: str
    text: str
    type: str
    every: str | None
    daily: str | None
    catch_up: bool


class CommandRouter:
    """Maps '/name args' to an answer. Memory, projects and schedules plug in as extra handlers."""

    def __init__(self, control: Control, extra: dict[str, Extra] | None = None) -> None:
        self._control = control
        self._extra = dict(extra or {})
        self.drills = DrillCommand(control)

    async def handle(self, text: str) -> str:
        name, _, rest = text.strip().lstrip("/").partition(" ")
        name = name.split("@", 1)[0].lower()
        args = rest.strip()
        try:
            if name in self._extra:
                return await self._extra[name](args)
            method: Extra | None = getattr(self, f"_cmd_{name}", None)
            if method is None:
                return f"Unknown command /{name}. Try /help."
            return await method(args)
        except OPERATOR_ERRORS as exc:
            return f"Cannot do that: {describe_error(exc)}"

    async def _cmd_start(self, args: str) -> str:
        name = self._control.settings.persona_name
        sim = " (running on simulated backends)" if self._control.settings.simulated_only else ""
        return f"Hi, I am {name}{sim}. Tell me what you need, or send /help."

    async def _cmd_help(self, args: str) -> str:
        return "Send me any message and I will answer or queue the work.\n\n" + "\n".join(
            f"/{name} - {what}" for name, what in COMMANDS.items()
        )

    async def _cmd_status(self, args: str) -> str:
        return render.status_text(await self._control.status())

    async def _cmd_jobs(self, args: str) -> str:
        states = None
        if args:
            try:
                states = [JobState(args.lower())]
            except ValueError:
                return f"Unknown state {args!r}. States: {', '.join(s.value for s in JobState)}"
        jobs = await self._control.store.list_jobs(states=states, limit=15)
        return "\n".join(render.job_line(j) for j in jobs) or "No jobs yet."

    async def _cmd_job(self, args: str) -> str:
        job_id = _job_id(args, "job")
        job = await self._control.job(job_id)
        store = self._control.store
        return render.job_detail(job, await store.job_attempts(job_id), [], await store.job_reviews(job_id))

    async def _cmd_cancel(self, args: str) -> str:
        job = await self._control.cancel(_job_id(args, "cancel"))
        return f"Job #{job.id} cancelled."

    async def _cmd_retry(self, args: str) -> str:
        job = await self._control.retry(_job_id(args, "retry"))
        return f"Job #{job.id} queued again."

    async def _cmd_reroute(self, args: str) -> str:
        job = await self._control.reroute(_job_id(args, "reroute"))
        where = f"avoiding {job.avoid_backend}" if job.avoid_backend else "on the next backend that is up"
        return f"Job #{job.id} queued again, {where}."

    async def _cmd_digest(self, args: str) -> str:
        from engine.pulse import Pulse  # the pulse's imports load with the first digest, not with every command

        control = self._control
        return (await Pulse(control.settings, control.store, control.clock, {}).build_digest()).text

    async def _cmd_drill(self, args: str) -> str:
        return await self.drills.start(args)

    async def _cmd_approve(self, args: str) -> str:
        job = await self._control.approve(_job_id(args, "approve"))
        return f"Job #{job.id} approved by you and marked done."

    async def _cmd_cost(self, args: str) -> str:
        return await cost_text(self._control)

    async def _cmd_stats(self, args: str) -> str:
        since = self._control.clock.now() - parse_duration(args or "7d")
        simulated = [b.name for b in self._control.settings.backends if b.simulated]
        return render.stats_text(await self._control.store.stats(since, simulated))

    async def _cmd_backends(self, args: str) -> str:
        return "\n".join(render.backend_line(b) for b in (await self._control.status())["backends"])

    async def _cmd_pause(self, args: str) -> str:
        if not args:
            return "Which backend? /pause NAME. " + await self._cmd_backends("")
        await self._control.pause_backend(args.split()[0])
        return f"Backend {args.split()[0]} paused until you /resume it."

    async def _cmd_resume(self, args: str) -> str:
        if not args:
            return "Which backend? /resume NAME."
        await self._control.resume_backend(args.split()[0])
        return f"Backend {args.split()[0]} resumed."

    async def _cmd_answer(self, args: str) -> str:
        job_id = _job_id(args, "answer")
        text = args.split(None, 1)[1].strip() if len(args.split(None, 1)) > 1 else ""
        if not text:
            job = await self._control.job(job_id)
            asked = f" It asks: {job.progress.removeprefix(QUESTION_PREFIX)}" if job.progress else ""
            return f"What is your answer? /answer {job_id} YOUR ANSWER.{asked}"
        job = await self._control.answer(job_id, text)
        return f"Thanks. Job #{job.id} continues with your answer (same session)."

    async def _cmd_projects(self, args: str) -> str:
        store = self._control.store
        verb, _, rest = args.partition(" ")
        if verb.lower() == "add":
            spec = _project_spec(rest)
            if isinstance(spec, str):
                return spec
            added = await self._control.add_project(spec["name"], spec["goal"], path=spec["path"], test=spec["test"])
            tests = f"; tests: {added.test_command}" if added.test_command else ""
            return f"Project {added.name} added. Its folder: {added.path or added.workspace}{tests}"
        if args:
            project = await store.get_project(args.strip())
            if project is None:
                return f"No project named {args.strip()!r}. {PROJECTS_USAGE}"
            jobs = await store.list_jobs(project=project.name, limit=15)
            lines = [render.project_line(project)] + [render.job_line(j) for j in jobs]
            return "\n".join(lines if jobs else [*lines, "No jobs yet."])
        projects = await store.list_projects()
        if not projects:
            return f"No projects yet. {PROJECTS_USAGE}"
        return "\n".join(render.project_line(p) for p in projects)

    async def _cmd_diff(self, args: str) -> str:
        job_id = _job_id(args, "diff")
        job, stat = await self._control.job_diff(job_id, stat=True)
        _, diff = await self._control.job_diff(job_id)
        if not diff.strip():
            return f"Job #{job.id} changed nothing on {job.branch}."
        more = f"\n[... the whole diff: switchboard jobs diff {job.id}]"
        shown = diff if len(diff) <= DIFF_CHARS else diff[:DIFF_CHARS] + more
        return f"Job #{job.id} on {job.branch}:\n{stat.rstrip()}\n\n{shown}"

    async def _cmd_merge(self, args: str) -> str:
        job, outcome = await self._control.job_merge(_job_id(args, "merge"))
        if outcome.merged:
            return f"Job #{job.id}: {job.branch} merged ({outcome.how})."
        files = f" Conflicting files: {', '.join(outcome.conflicts)}." if outcome.conflicts else ""
        return f"Job #{job.id} not merged: {outcome.how}.{files} Nothing was changed."

    async def _cmd_schedule(self, args: str) -> str:
        store = self._control.store
        verb, _, rest = args.strip().partition(" ")
        verb = verb.lower()
        if verb in ("", "list"):
            schedules = await store.list_schedules()
            if not schedules:
                return f"No schedules yet. {SCHEDULE_USAGE}"
            return "\n".join(render.schedule_line(s) for s in schedules)
        if verb == "remove":
            name = rest.strip()
            if not name:
                return f"Which schedule? {SCHEDULE_USAGE}"
            removed = await store.remove_schedule(name)
            return f"Schedule {name} removed." if removed else f"No schedule named {name!r}."
        if verb != "add":
            return SCHEDULE_USAGE
        spec = await self._parse_schedule(rest)
        if isinstance(spec, str):
            return spec
        schedule = await self._control.add_schedule(**spec)
        return f"Schedule added: {render.schedule_line(schedule)}"

    async def _parse_schedule(self, rest: str) -> _ScheduleSpec | str:
        tokens = rest.split()
        catch_up = "--no-catch-up" not in tokens
        tokens = [t for t in tokens if t != "--no-catch-up"]
        name = tokens.pop(0) if tokens and tokens[0].lower() not in ("every", "daily") else None
        if len(tokens) < 3 or tokens[0].lower() not in ("every", "daily"):
            return f"I could not read that. {SCHEDULE_USAGE}"
        kind, value = tokens[0].lower(), tokens[1]
        words = tokens[2:]
        if kind == "daily" and value.lower() == "at" and words:
            value = words.pop(0)
        head, colon, tail = " ".join(words).partition(":")
        job_types = self._control.settings.job_types
        job_type, text = (head.strip().lower(), tail.strip()) if colon and head.strip().lower() in job_types else (
            "analysis", " ".join(words))
        if not text:
            return f"What should it do each time? {SCHEDULE_USAGE}"
        if name is None:
            taken = {s.name for s in await self._control.store.list_schedules()}
            base = sanitize_name(f"{job_type}-{'-'.join(text.split()[:3])}".lower())[:40]
            name = next(n for n in (base, *(f"{base}-{i}" for i in range(2, 1000))) if n not in taken)
        return {
            "name": name, "text": text, "type": job_type, "every": value if kind == "every" else None,
            "daily": value if kind == "daily" else None, "catch_up": catch_up,
        }


class _ProjectSpec(TypedDict):
    name: str
    goal: str
    path: str | None
    test: str | None


def _project_spec(rest: str) -> _ProjectSpec | str:
    """``NAME [--path DIR] [--test "CMD"] [GOAL]`` as read, or what to say when it cannot be read. Without
    the options the goal is taken as written (an apostrophe in it is no quote)."""
    if not re.search(r"(^|\s)--(path|test)(\s|$)", rest):
        name, _, goal = rest.strip().partition(" ")
        return {"name": name, "goal": goal.strip(), "path": None, "test": None} if name else (
            f"Which project? {PROJECTS_USAGE}")
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        return f"I could not read that ({exc}). {PROJECTS_USAGE}"
    options: dict[str, str | None] = {"--path": None, "--test": None}
    kept = []
    while words:
        word = words.pop(0)
        if word in options:
            if not words:
                return f"{word} needs a value. {PROJECTS_USAGE}"
            options[word] = words.pop(0)
        else:
            kept.append(word)
    if not kept:
        return f"Which project? {PROJECTS_USAGE}"
    return {"name": kept[0], "goal": " ".join(kept[1:]), "path": options["--path"], "test": options["--test"]}


def _job_id(args: str, command: str) -> int:
    token = args.split()[0] if args.split() else ""
    if not token.lstrip("#").isdigit():
        raise ValueError(f"which job? Use /{command} 12")
    return parse_job_id(token)


async def cost_text(control: Control) -> str:
    """Real spend today and over 7 days (the daily cap's view), simulated spend apart, and what subscription runs
    would have cost at list prices this month (saved)."""
    store, now = control.store, control.clock.now()
    real = [b.name for b in control.settings.backends if not b.simulated]
    simulated = [b.name for b in control.settings.backends if b.simulated]
    today, week_ago = now - now % 86_400, now - 7 * 86_400
    day, week = await store.spend_since(today, real), await store.spend_since(week_ago, real)
    cap = control.settings.engine.daily_budget_usd
    lines = [f"Spend today ${day:.2f} (cap ${cap:.2f} for pay-per-token backends) · last 7 days ${week:.2f}"]
    if simulated:
        sim_day, sim_week = await store.spend_since(today, simulated), await store.spend_since(week_ago, simulated)
        lines.append(f"Simulated (sim backends, not real money): today ${sim_day:.2f} · last 7 days ${sim_week:.2f}")
    saved = float(await store.kv_get(saved_key(now)) or 0.0)
    if saved:
        lines.append(f"Subscriptions this month: ${saved:.2f} at list prices, saved (not spent)")
    return "\n".join(lines)
