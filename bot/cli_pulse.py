"""``switchboard schedule|projects|digest`` and ``switchboard jobs answer``: schedules, projects, the digest and
answers to workers' questions from the command line.

``register(subparsers)`` adds the commands; each sets ``func`` to ``async handler(args, settings) -> int``. With
``--json`` stdout carries exactly one JSON document. Errors (ValueError, NotFound, ...) are turned into one line
on stderr and exit code 1 by ``bot.cli.main``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bot.cli_common import emit, json_flag, with_control
from bot.render import job_line, project_line, schedule_line
from engine.errors import NotFound

if TYPE_CHECKING:  # annotations only: registering the commands loads neither the settings nor the engine
    from engine.control import Control
    from engine.settings import Settings


def register(subparsers: Any) -> None:
    schedule = subparsers.add_parser("schedule", help="recurring jobs: add, list, remove")
    actions = schedule.add_subparsers(dest="schedule_command", required=True, metavar="{add,list,remove}")
    add = actions.add_parser("add", help="add a recurring job")
    add.add_argument("name", help="a name to list and remove it by")
    add.add_argument("text", help="what the job does each time")
    add.add_argument("--type", required=True, help="job type (triage, research, ...)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval: 30m, 2h, 1d")
    when.add_argument("--daily", metavar="HH:MM", help="daily at this time (pulse.timezone)")
    add.add_argument("--project", help="the project its jobs belong to")
    add.add_argument("--no-catch-up", action="store_true", help="after downtime, record missed runs, do not run")
    json_flag(add).set_defaults(func=_schedule_add)
    json_flag(actions.add_parser("list", help="list schedules")).set_defaults(func=_schedule_list)
    remove = actions.add_parser("remove", help="remove a schedule by name or id")
    remove.add_argument("name", help="the schedule's name or id")
    json_flag(remove).set_defaults(func=_schedule_remove)

    projects = subparsers.add_parser("projects", help="projects: add, list, show")
    verbs = projects.add_subparsers(dest="projects_command", required=True, metavar="{add,list,show}")
    padd = verbs.add_parser("add", help="add a project (on a folder of yours, or with its own folder)")
    padd.add_argument("name", help="a short name (also its folder's name)")
    padd.add_argument("--goal", default="", help="what the project is for, in a sentence")
    padd.add_argument("--path", help="your folder it works on (a git repository: each job in a worktree of its own)")
    padd.add_argument("--test", help='the test command the engine runs after each job, e.g. "pytest -q"')
    json_flag(padd).set_defaults(func=_projects_add)
    json_flag(verbs.add_parser("list", help="list projects")).set_defaults(func=_projects_list)
    show = verbs.add_parser("show", help="a project with its jobs")
    show.add_argument("name", help="the project's name")
    json_flag(show).set_defaults(func=_projects_show)

    json_flag(subparsers.add_parser("digest", help="print the digest of the last 24 hours")).set_defaults(func=_digest)

    jobs = _subcommands(subparsers.choices.get("jobs"))
    answer_parser = jobs.add_parser("answer", help="answer a job's question") if jobs else subparsers.add_parser(
        "answer", help="answer a job's question"
    )
    answer_parser.add_argument("id", type=int, help="the number of the job that asked")
    answer_parser.add_argument("text", help="your answer")
    json_flag(answer_parser).set_defaults(func=_answer)


def _subcommands(parser: argparse.ArgumentParser | None) -> Any:
    """The sub-command group of an existing command (``jobs``), to add ``answer`` next to cancel and retry."""
    if parser is None:
        return None
    for action in parser._actions:  # argparse keeps no public handle on an existing sub-command group
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


async def _schedule_add(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        schedule = await control.add_schedule(
            args.name, args.text, type=args.type, every=args.every, daily=args.daily, project=args.project,
            catch_up=not args.no_catch_up,
        )
        emit(args, schedule.model_dump(), f"schedule added: {schedule_line(schedule)}")
        return 0

    return await with_control(settings, go)


async def _schedule_list(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        schedules = await control.store.list_schedules()
        emit(args, [s.model_dump() for s in schedules], "\n".join(map(schedule_line, schedules)) or "no schedules")
        return 0

    return await with_control(settings, go)


async def _schedule_remove(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        if not await control.store.remove_schedule(args.name):
            raise NotFound(f"no schedule named {args.name!r}")
        emit(args, {"removed": args.name}, f"schedule {args.name} removed")
        return 0

    return await with_control(settings, go)


async def _projects_add(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        project = await control.add_project(args.name, args.goal, path=args.path, test=args.test)
        emit(args, project.model_dump(), f"project added: {project_line(project)} ({project.path or project.workspace})"
             + (f"; tests: {project.test_command}" if project.test_command else ""))
        return 0

    return await with_control(settings, go)


async def _projects_list(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        projects = await control.store.list_projects()
        emit(args, [p.model_dump() for p in projects], "\n".join(map(project_line, projects)) or "no projects")
        return 0

    return await with_control(settings, go)


async def _projects_show(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        project = await control.store.get_project(args.name)
        if project is None:
            raise NotFound(f"no project named {args.name!r}")
        jobs = await control.store.list_jobs(project=project.name, limit=100)
        details = await control.project_details(project)
        data = {"project": project.model_dump(), **details,
                "jobs": [j.model_dump(mode="json", exclude={"result_text"}) for j in jobs]}
        lines = [project_line(project), f"folder {project.path or project.workspace}"]
        if project.path:
            lines.append(f"branch {details['branch'] or '(not a git repository)'}")
        lines += [f"tests {project.test_command or '(none)'}", f"open jobs {details['open_jobs']}", ""]
        text = "\n".join(lines + ([job_line(j) for j in jobs] or ["no jobs yet"]))
        emit(args, data, text)
        return 0

    return await with_control(settings, go)


async def _digest(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        from engine.pulse import Pulse  # the pulse's modules: only for the digest

        digest = await Pulse(settings, control.store, control.clock, {}).build_digest()
        emit(args, {"date": digest.date, "since": digest.since, "until": digest.until, "text": digest.text,
                     "numbers": digest.numbers}, digest.text)
        return 0

    return await with_control(settings, go)


async def _answer(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        job = await control.answer(args.id, args.text)
        emit(args, job.model_dump(mode="json"), f"#{job.id} answered; queued again (session {job.session_id})")
        return 0

    return await with_control(settings, go)


__all__ = ["register"]
