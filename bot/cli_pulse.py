"""``switchboard schedule|projects|digest`` and ``switchboard jobs answer``: schedules, projects, the digest and
answers to workers' questions from the command line.

``commands()`` names the commands and what builds them (``add_answer`` adds ``jobs answer``). Those that only
touch the database run on the store without an event loop (``on_store``); adding a project (git) and the digest
(the pulse) need one. With ``--json`` stdout carries exactly one JSON document. Errors (ValueError, NotFound,
...) are turned into one line on stderr and exit code 1 by ``bot.cli.main``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bot.cli_common import CommandSpec, emit, json_flag, on_store, with_control
from bot.render import job_line, project_line, schedule_line
from engine.errors import NotFound

if TYPE_CHECKING:  # annotations only: registering the commands loads neither the settings nor the engine
    from engine.control import Control
    from engine.settings import Settings


def commands() -> dict[str, CommandSpec]:
    return {
        "schedule": ("recurring jobs: add, list, remove", _build_schedule),
        "projects": ("projects: add, list, show", _build_projects),
        "digest": ("print the digest of the last 24 hours", _build_digest),
    }


def _build_schedule(schedule: argparse.ArgumentParser) -> None:
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
    json_flag(add).set_defaults(func=on_store(_schedule_add))
    json_flag(actions.add_parser("list", help="list schedules")).set_defaults(func=on_store(_schedule_list))
    remove = actions.add_parser("remove", help="remove a schedule by name or id")
    remove.add_argument("name", help="the schedule's name or id")
    json_flag(remove).set_defaults(func=on_store(_schedule_remove))


def _build_projects(projects: argparse.ArgumentParser) -> None:
    verbs = projects.add_subparsers(dest="projects_command", required=True, metavar="{add,list,show}")
    padd = verbs.add_parser("add", help="add a project (on a folder of yours, or with its own folder)")
    padd.add_argument("name", help="a short name (also its folder's name)")
    padd.add_argument("--goal", default="", help="what the project is for, in a sentence")
    padd.add_argument("--path", help="your folder it works on (a git repository: each job in a worktree of its own)")
    padd.add_argument("--test", help='the test command the engine runs after each job, e.g. "pytest -q"')
    json_flag(padd).set_defaults(func=_projects_add)
    json_flag(verbs.add_parser("list", help="list projects")).set_defaults(func=on_store(_projects_list))
    show = verbs.add_parser("show", help="a project with its jobs")
    show.add_argument("name", help="the project's name")
    json_flag(show).set_defaults(func=_projects_show)


def _build_digest(digest: argparse.ArgumentParser) -> None:
    json_flag(digest).set_defaults(func=_digest)


def add_answer(jobs: Any) -> None:
    """``jobs answer``, added to the ``jobs`` command's actions."""
    answer_parser = jobs.add_parser("answer", help="answer a job's question")
    answer_parser.add_argument("id", type=int, help="the number of the job that asked")
    answer_parser.add_argument("text", help="your answer")
    json_flag(answer_parser).set_defaults(func=on_store(_answer))


async def _schedule_add(args: argparse.Namespace, control: Control) -> int:
    schedule = await control.add_schedule(
        args.name, args.text, type=args.type, every=args.every, daily=args.daily, project=args.project,
        catch_up=not args.no_catch_up,
    )
    emit(args, schedule.model_dump(), f"schedule added: {schedule_line(schedule)}")
    return 0


async def _schedule_list(args: argparse.Namespace, control: Control) -> int:
    schedules = await control.store.list_schedules()
    emit(args, [s.model_dump() for s in schedules], "\n".join(map(schedule_line, schedules)) or "no schedules")
    return 0


async def _schedule_remove(args: argparse.Namespace, control: Control) -> int:
    if not await control.store.remove_schedule(args.name):
        raise NotFound(f"no schedule named {args.name!r}")
    emit(args, {"removed": args.name}, f"schedule {args.name} removed")
    return 0


async def _projects_add(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        project = await control.add_project(args.name, args.goal, path=args.path, test=args.test)
        emit(args, project.model_dump(), f"project added: {project_line(project)} ({project.path or project.workspace})"
             + (f"; tests: {project.test_command}" if project.test_command else ""))
        return 0

    return await with_control(settings, go)


async def _projects_list(args: argparse.Namespace, control: Control) -> int:
    projects = await control.store.list_projects()
    emit(args, [p.model_dump() for p in projects], "\n".join(map(project_line, projects)) or "no projects")
    return 0


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


async def _answer(args: argparse.Namespace, control: Control) -> int:
    job = await control.answer(args.id, args.text)
    emit(args, job.model_dump(mode="json"), f"#{job.id} answered; queued again (session {job.session_id})")
    return 0


__all__ = ["add_answer", "commands"]
